"""The demo MCP server (scripts/demo_server.py), driven directly by the official SDK client.

No proxy and no OAuth here: these tests pin down what the upstream does on
its own, so that proxy tests can tell the proxy's behaviour from the server's.
Each server mode (stateful sessions, --stateless) is exercised with each way
the SDK client can pick a protocol version: ``auto`` (server/discover probe,
which lands on 2026-07-28 against this SDK), ``legacy`` (2025 initialize
handshake) and a 2026-07-28 pin (single-exchange requests, no handshake).
"""

import json
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "demo_server.py"
READY_PREFIX = "demo-server listening url="
READY_TIMEOUT = 20.0
TOOL_NAMES = {"hello-world", "count-with-progress", "whoami"}
SERVER_MODES = ["stateful", "stateless"]
CLIENT_MODES = ["auto", "legacy", "2026-07-28"]
EXPECTED_VERSION = {"auto": "2026-07-28", "legacy": "2025-11-25", "2026-07-28": "2026-07-28"}
JSON_AND_SSE = "application/json, text/event-stream"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class DemoServer:
    url: str
    process: subprocess.Popen[str]
    stderr: IO[str]

    def stderr_text(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()


def _read_ready_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                break
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"demo server exited before it was ready (rc={process.wait(5)})")
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX) :].strip()
    raise TimeoutError(f"demo server printed no ready line within {timeout}s")


@contextmanager
def run_demo_server(*flags: str) -> Iterator[DemoServer]:
    # stderr goes to a file rather than a pipe: nobody drains it while tests
    # run, and a full pipe would stall the server's logging.
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--port", "0", "--exit-on-stdin-eof", *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            try:
                url = _read_ready_line(process, READY_TIMEOUT)
            except Exception as exc:
                stderr.seek(0)
                raise RuntimeError(f"{exc}\n--- server stderr ---\n{stderr.read()}") from exc
            yield DemoServer(url=url, process=process, stderr=stderr)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()


@pytest.fixture(scope="module")
def stateful_server() -> Iterator[DemoServer]:
    with run_demo_server() as server:
        yield server


@pytest.fixture(scope="module")
def stateless_server() -> Iterator[DemoServer]:
    with run_demo_server("--stateless") as server:
        yield server


@pytest.fixture(params=SERVER_MODES)
def server(request: pytest.FixtureRequest) -> DemoServer:
    return request.getfixturevalue(f"{request.param}_server")


@contextmanager
def _no_op() -> Iterator[None]:
    yield


def sdk_client(url: str, mode: str, http: httpx2.AsyncClient) -> Client:
    return Client(streamable_http_client(url, http_client=http), mode=mode)


def text_of(content: list[Any]) -> str:
    assert content, "tool returned no content"
    block = content[0]
    assert isinstance(block, TextContent)
    return block.text


@pytest.mark.anyio
@pytest.mark.parametrize("mode", CLIENT_MODES)
async def test_lists_the_three_tools(server: DemoServer, mode: str) -> None:
    async with httpx2.AsyncClient() as http, sdk_client(server.url, mode, http) as client:
        assert client.protocol_version == EXPECTED_VERSION[mode]
        tools = await client.list_tools()
    assert {tool.name for tool in tools.tools} == TOOL_NAMES
    by_name = {tool.name: tool for tool in tools.tools}
    assert "name" in by_name["hello-world"].input_schema["properties"]
    assert {"steps", "interval"} <= set(by_name["count-with-progress"].input_schema["properties"])


@pytest.mark.anyio
@pytest.mark.parametrize("mode", CLIENT_MODES)
async def test_hello_world_reports_the_user_agent(server: DemoServer, mode: str) -> None:
    user_agent = f"demo-server-test/{mode}"
    async with (
        httpx2.AsyncClient(headers={"User-Agent": user_agent}) as http,
        sdk_client(server.url, mode, http) as client,
    ):
        result = await client.call_tool("hello-world", {"name": "joe"})
    assert not result.is_error
    text = text_of(result.content)
    assert text.startswith("Hello, joe! Your user agent is: ")
    assert text == f"Hello, joe! Your user agent is: {user_agent}"
    assert "tool call hello-world" in server.stderr_text()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", CLIENT_MODES)
async def test_progress_arrives_in_order_before_the_result(server: DemoServer, mode: str) -> None:
    events: list[tuple[str, object]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        events.append(("progress", (progress, total, message)))

    async with httpx2.AsyncClient() as http, sdk_client(server.url, mode, http) as client:
        result = await client.call_tool(
            "count-with-progress", {"steps": 4, "interval": 0.05}, progress_callback=on_progress
        )
        events.append(("result", text_of(result.content)))

    assert events == [
        ("progress", (1.0, 4.0, "step 1/4")),
        ("progress", (2.0, 4.0, "step 2/4")),
        ("progress", (3.0, 4.0, "step 3/4")),
        ("progress", (4.0, 4.0, "step 4/4")),
        ("result", "counted to 4"),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", CLIENT_MODES)
async def test_count_without_progress_token_still_answers(server: DemoServer, mode: str) -> None:
    async with httpx2.AsyncClient() as http, sdk_client(server.url, mode, http) as client:
        result = await client.call_tool("count-with-progress", {"steps": 2, "interval": 0.01})
    assert text_of(result.content) == "counted to 2"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", CLIENT_MODES)
async def test_whoami_echoes_identity_headers_and_authorization_presence(server: DemoServer, mode: str) -> None:
    identity = {"X-MCP-Auth-User": "alice", "x-mcp-auth-email": "alice@example.com"}
    async with (
        httpx2.AsyncClient(headers={**identity, "X-Other": "ignored"}) as http,
        sdk_client(server.url, mode, http) as client,
    ):
        result = await client.call_tool("whoami", {})
    assert json.loads(text_of(result.content)) == {
        "x-mcp-auth-user": "alice",
        "x-mcp-auth-email": "alice@example.com",
        "authorization_present": False,
    }

    async with (
        httpx2.AsyncClient(headers={"Authorization": "Bearer leaked"}) as http,
        sdk_client(server.url, mode, http) as client,
    ):
        result = await client.call_tool("whoami", {})
    assert json.loads(text_of(result.content)) == {"authorization_present": True}


def _initialize_body() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "1"},
        },
    }


def test_stateful_mode_issues_a_session_id(stateful_server: DemoServer) -> None:
    response = httpx2.post(stateful_server.url, json=_initialize_body(), headers={"Accept": JSON_AND_SSE}, timeout=10)
    assert response.status_code == 200
    assert response.headers.get("mcp-session-id")


def test_stateless_mode_issues_no_session_id(stateless_server: DemoServer) -> None:
    response = httpx2.post(stateless_server.url, json=_initialize_body(), headers={"Accept": JSON_AND_SSE}, timeout=10)
    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers


@pytest.mark.parametrize("server_mode", SERVER_MODES)
def test_2026_single_exchange_needs_no_initialize(request: pytest.FixtureRequest, server_mode: str) -> None:
    """A bare 2026-07-28 POST: routing headers plus the _meta envelope, no handshake, no session."""
    server: DemoServer = request.getfixturevalue(f"{server_mode}_server")
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {
            "name": "hello-world",
            "arguments": {"name": "raw"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    headers = {
        "Accept": JSON_AND_SSE,
        "User-Agent": "raw-2026",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "hello-world",
    }
    response = httpx2.post(server.url, json=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert "mcp-session-id" not in response.headers
    assert response.headers["content-type"].startswith("application/json")
    result = response.json()["result"]
    assert result["content"][0]["text"] == "Hello, raw! Your user agent is: raw-2026"


@pytest.mark.parametrize(
    ("host", "status"),
    [
        # What the reverse proxy sends upstream: loopback with some port.
        ("127.0.0.1:8000", 200),
        ("localhost:3000", 200),
        # DNS rebinding protection still rejects foreign names.
        ("evil.example", 421),
        ("evil.example:3000", 421),
    ],
)
def test_host_check_allows_loopback_names_only(stateless_server: DemoServer, host: str, status: int) -> None:
    response = httpx2.post(
        stateless_server.url,
        json=_initialize_body(),
        headers={"Accept": JSON_AND_SSE, "Host": host},
        timeout=10,
    )
    assert response.status_code == status


def test_allowed_host_flag_admits_an_extra_host() -> None:
    with run_demo_server("--stateless", "--allowed-host", "mcp.internal:*") as server:
        response = httpx2.post(
            server.url,
            json=_initialize_body(),
            headers={"Accept": JSON_AND_SSE, "Host": "mcp.internal:9999"},
            timeout=10,
        )
    assert response.status_code == 200


def test_ready_line_is_the_only_stdout_and_sigterm_exits_cleanly() -> None:
    with run_demo_server() as server:
        # Traffic after the ready line must not add stdout lines (uvicorn's
        # access log would, by default).
        httpx2.post(server.url, json=_initialize_body(), headers={"Accept": JSON_AND_SSE}, timeout=10)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(10) == 0
        assert server.process.stdout is not None
        assert server.process.stdout.read() == ""
        assert "POST /mcp" in server.stderr_text()


def test_exits_when_stdin_closes() -> None:
    with run_demo_server() as server:
        assert server.process.stdin is not None
        server.process.stdin.close()
        assert server.process.wait(10) == 0
