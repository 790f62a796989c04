"""Clients and servers nobody here wrote, through the proxy: the whole dance, then a tool call.

Clients: the official Python SDK (mcp, from requirements.lock) and the official TypeScript
SDK (@modelcontextprotocol/sdk, from package-lock.json here, driven by ts_client.mjs). Where a
desktop client would open a browser, the test logs in through the dev IdP's login form.
Servers: the Python SDK's Streamable HTTP (stateful and stateless) and its legacy HTTP+SSE
transport. Each test fills one cell of the README's interop matrix (conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import stack
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_session import oauth_client, text_of
from oauth_steps import log_in

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
TS_CLIENT = HERE / "ts_client.mjs"
ProxyFactory = Callable[..., stack.Service]  # the start_proxy fixture (../conftest.py)
TS_REDIRECT = "http://127.0.0.1:33418/callback"  # ts_client.mjs's; never listened on
TS_SDK = "TypeScript SDK " + json.loads((HERE / "node_modules/@modelcontextprotocol/sdk/package.json").read_text())[
    "version"
]
MCP_REMOTE_JS = HERE / "node_modules/mcp-remote/dist/proxy.js"
MCP_REMOTE = "mcp-remote " + json.loads((HERE / "node_modules/mcp-remote/package.json").read_text())["version"]
PY_SDK = "Python SDK " + __import__("importlib.metadata").metadata.version("mcp")

STATEFUL = "Streamable HTTP, stateful session"
STATELESS = "Streamable HTTP, stateless"
LEGACY_SSE = "legacy HTTP+SSE (GET /sse, POST /messages/)"


def run_ts_client(url: str, tool: str, arguments: dict[str, Any], transport: str = "streamable") -> dict[str, Any]:
    """ts_client.mjs through the dance; the test plays the person at the login form."""
    process = subprocess.Popen(
        ["node", str(TS_CLIENT), url, tool, json.dumps(arguments), transport],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killer = threading.Timer(90, process.kill)
    killer.start()
    try:
        assert process.stdout is not None and process.stdin is not None
        for line in process.stdout:
            message = json.loads(line)
            if "authorize" not in message:
                process.wait(10)
                stderr = process.stderr.read() if process.stderr else ""
                assert "error" not in message, message["error"] + "\n" + stderr
                return message
            code, _, _ = log_in(message["authorize"], TS_REDIRECT)
            process.stdin.write(json.dumps({"code": code}) + "\n")
            process.stdin.flush()
        raise AssertionError(f"ts_client.mjs ended without a result: {process.stderr.read() if process.stderr else ''}")
    finally:
        killer.cancel()
        process.kill()
        process.wait()


async def python_sdk_call(url: str, transport: str = "streamable") -> tuple[list[str], str]:
    async with oauth_client(url, transport=transport) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        return tools, text_of(await client.call_tool("hello-world", {"name": "interop"}))


def assert_python_sdk_through(url: str, transport: str = "streamable") -> None:
    tools, text = anyio.run(python_sdk_call, url, transport)
    assert {"hello-world", "count-with-progress", "whoami"} <= set(tools)
    assert "Hello, interop!" in text


def assert_ts_sdk_through(url: str, transport: str = "streamable") -> None:
    answer = run_ts_client(url, "hello-world", {"name": "interop"}, transport)
    assert {"hello-world", "count-with-progress", "whoami"} <= set(answer["tools"])
    assert "Hello, interop!" in answer["text"]
    assert answer["registered"] and answer["token_type"].lower() == "bearer"


# --- servers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sse_server() -> Iterator[stack.Service]:
    service = stack.start_demo_server(sse=True)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def sse_proxy(start_proxy: ProxyFactory, idp: stack.Service, sse_server: stack.Service) -> stack.Service:
    # The SSE stream is the MCP endpoint; its `endpoint` event sends POSTs to /messages/,
    # which the gate protects the same way.
    return start_proxy(sse_server.url.rsplit("/sse", 1)[0], issuer=idp.url, mcp_path="/sse",
                       sse_message_path="/messages/")


# --- clients by mode ------------------------------------------------------------------------


@pytest.mark.matrix("clients", PY_SDK, "facade")
def test_python_sdk_facade(facade_proxy: stack.Service) -> None:
    assert_python_sdk_through(facade_proxy.url + "/mcp")


@pytest.mark.matrix("clients", PY_SDK, "resource-server")
def test_python_sdk_resource_server(resource_server_proxy: stack.Service) -> None:
    assert_python_sdk_through(resource_server_proxy.url + "/mcp")


@pytest.mark.matrix("clients", TS_SDK, "facade")
def test_typescript_sdk_facade(facade_proxy: stack.Service) -> None:
    assert_ts_sdk_through(facade_proxy.url + "/mcp")
    facade_proxy.wait_for_line(r"\[registration\] POST /register 201")


@pytest.mark.matrix("clients", TS_SDK, "resource-server")
def test_typescript_sdk_resource_server(resource_server_proxy: stack.Service, idp: stack.Service) -> None:
    # The resource metadata sends the client to the IdP itself: it registers and logs in there.
    since = len(idp.lines)
    assert_ts_sdk_through(resource_server_proxy.url + "/mcp")
    assert any("POST /reg" in line for line in idp.lines[since:]), idp.lines[since:]


def play_the_person_for_mcp_remote(log: Path, port: int, done: threading.Event) -> None:
    """mcp-remote prints the authorization URL and waits on its callback port: log in, then call it back."""
    deadline = time.monotonic() + 60
    while not done.is_set() and time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = re.search(r"Please authorize this client by visiting:\s+(\S+)", text)
        if found:
            callback = f"http://127.0.0.1:{port}/oauth/callback"
            code, state, iss = log_in(found.group(1), callback)
            params = {"code": code, **({"state": state} if state else {}), **({"iss": iss} if iss else {})}
            httpx.get(callback, params=params, timeout=10)
            return
        time.sleep(0.1)


async def mcp_remote_call(url: str, tmp_path: Path) -> tuple[list[str], str]:
    port = stack.free_port()
    log = tmp_path / "mcp-remote.log"
    env = {**os.environ, "MCP_REMOTE_CONFIG_DIR": str(tmp_path / "mcp-auth"), "BROWSER": "true"}
    # mcp-remote is a stdio MCP server to its desktop client; the Python SDK plays that client.
    server = StdioServerParameters(
        command="node", args=[str(MCP_REMOTE_JS), url, str(port), "--host", "127.0.0.1"], env=env
    )
    done = threading.Event()
    person = threading.Thread(target=play_the_person_for_mcp_remote, args=(log, port, done), daemon=True)
    person.start()
    try:
        with anyio.fail_after(90), log.open("w") as errlog:
            # Desktop clients speak to mcp-remote with the initialize handshake.
            async with Client(stdio_client(server, errlog=errlog), mode="legacy") as client:  # type: ignore[arg-type]
                tools = [tool.name for tool in (await client.list_tools()).tools]
                return tools, text_of(await client.call_tool("hello-world", {"name": "interop"}))
    finally:
        done.set()


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("facade", marks=pytest.mark.matrix("clients", MCP_REMOTE, "facade")),
        pytest.param("resource-server", marks=pytest.mark.matrix("clients", MCP_REMOTE, "resource-server")),
    ],
)
def test_mcp_remote(mode: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    proxy: stack.Service = request.getfixturevalue("facade_proxy" if mode == "facade" else "resource_server_proxy")
    tools, text = anyio.run(mcp_remote_call, proxy.url + "/mcp", tmp_path)
    assert {"hello-world", "count-with-progress", "whoami"} <= set(tools)
    assert "Hello, interop!" in text


# --- servers by client ----------------------------------------------------------------------

SERVERS = {STATEFUL: ("facade_proxy", "/mcp", "streamable"), STATELESS: ("stateless_proxy", "/mcp", "streamable"),
           LEGACY_SSE: ("sse_proxy", "/sse", "sse")}
CLIENTS = {PY_SDK: assert_python_sdk_through, TS_SDK: assert_ts_sdk_through}


@pytest.mark.parametrize(
    ("server", "client"),
    [pytest.param(server, client, marks=pytest.mark.matrix("servers", server, client), id=f"{server} / {client}")
     for server in SERVERS for client in CLIENTS],
)
def test_server_with_client(server: str, client: str, request: pytest.FixtureRequest) -> None:
    fixture, path, transport = SERVERS[server]
    proxy: stack.Service = request.getfixturevalue(fixture)
    since = len(proxy.lines)
    CLIENTS[client](proxy.url + path, transport)
    if transport == "sse":
        # The `endpoint` event is relative, so the client's messages came to the proxy, with the token.
        proxy.wait_for_line(r"\[authorized-call\] POST /messages/ ", since=since)


def test_legacy_sse_message_endpoint_is_gated(sse_proxy: stack.Service) -> None:
    response = httpx.post(sse_proxy.url + "/messages/?session_id=0123", json={"jsonrpc": "2.0", "id": 1,
                                                                             "method": "tools/list"})
    assert response.status_code == 401
    assert "resource_metadata=" in response.headers["www-authenticate"]
