"""Neighbours failing (the IdP, the MCP server, the client) and secrets kept out of the output.

Real processes throughout: the dev IdP is stopped and started again on the same port (each
start signs with a new key), the MCP server is missing or slow, a client walks away mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stack
import yaml
from conftest import SECRET_KEY, ProxyFactory, origin
from mcp_session import oauth_client, text_of
from oauth_steps import Pkce, authorization_url, metadata, register, token_from

pytestmark = pytest.mark.integration

OTHER_SECRET_KEY = "integration-tests-other-sealing-key-fedcba9876543210"
ACCEPT = {"Accept": "application/json, text/event-stream"}


def initialize(proxy_url: str, token: str) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "neighbours test", "version": "1"}}}
    return httpx.post(proxy_url + "/mcp", json=body, headers={**ACCEPT, "Authorization": f"Bearer {token}"})


def session(proxy_url: str, token: str) -> dict[str, str]:
    """Headers of an initialized MCP session through the proxy (stateful demo server)."""
    response = initialize(proxy_url, token)
    assert response.status_code == 200, response.text
    headers = {**ACCEPT, "Authorization": f"Bearer {token}", "Mcp-Session-Id": response.headers["mcp-session-id"],
               "MCP-Protocol-Version": "2025-06-18"}
    note = httpx.post(proxy_url + "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                      headers=headers)
    assert note.status_code == 202, note.text
    return headers


def count_call(steps: int, interval: float, protocol: str = "2025-06-18") -> dict[str, Any]:
    meta: dict[str, Any] = {"progressToken": "p"}
    if protocol == "2026-07-28":  # each request carries what initialize used to
        meta |= {"io.modelcontextprotocol/protocolVersion": protocol, "io.modelcontextprotocol/clientCapabilities": {}}
    return {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "count-with-progress", "arguments": {"steps": steps, "interval": interval},
                       "_meta": meta}}


@contextlib.contextmanager
def idp_on(port: int) -> Iterator[stack.Service]:
    service = stack.start_idp(port)
    try:
        yield service
    finally:
        service.stop()


# --- the IdP --------------------------------------------------------------------------------


def test_proxy_recovers_by_itself_when_the_idp_comes_up(start_proxy: ProxyFactory, demo_server: stack.Service) -> None:
    idp_port = stack.free_port()
    proxy = start_proxy(origin(demo_server.url), issuer=f"http://127.0.0.1:{idp_port}")
    down = httpx.post(proxy.url + "/mcp", json={}, headers={"Authorization": "Bearer a.b.c"})
    assert down.status_code == 503
    assert down.headers["retry-after"]
    with idp_on(idp_port) as idp:
        up_at = time.monotonic()
        token = token_from(metadata(idp.url), proxy.url + "/mcp")
        # Discovery failures are remembered for 5 s (one attempt per 5 s, not one per request).
        deadline = up_at + 8
        while (response := initialize(proxy.url, token)).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.25)
        assert response.status_code == 200, response.text
        assert time.monotonic() - up_at < 8
        assert httpx.get(proxy.url + "/.well-known/oauth-authorization-server").status_code == 200


def test_idp_down_later_and_key_rotation(start_proxy: ProxyFactory, demo_server: stack.Service) -> None:
    idp_port = stack.free_port()
    with idp_on(idp_port) as idp:
        proxy = start_proxy(origin(demo_server.url), issuer=idp.url,
                            jwks_refetch_interval_seconds=1, jwks_max_age_seconds=2)
        old_token = token_from(metadata(idp.url), proxy.url + "/mcp")
        assert initialize(proxy.url, old_token).status_code == 200
        client_id = register(proxy.url + "/register")["client_id"]

    # The IdP is down: tokens keep validating against the cached keys, even once the cache
    # is older than jwks_max_age_seconds (the refresh fails, the keys stay).
    assert initialize(proxy.url, old_token).status_code == 200
    time.sleep(2.5)
    assert initialize(proxy.url, old_token).status_code == 200
    registration = httpx.post(proxy.url + "/register", json={"redirect_uris": ["http://127.0.0.1:5/cb"]})
    assert registration.status_code in (502, 503), registration.text
    assert registration.json()["error"] == "temporarily_unavailable"
    assert registration.headers["retry-after"]
    token = httpx.post(proxy.url + "/token", data={"grant_type": "refresh_token", "refresh_token": "r",
                                                   "client_id": client_id})
    assert token.status_code in (502, 503), token.text
    assert token.json()["error"] == "temporarily_unavailable"
    assert token.headers["retry-after"]

    # The IdP is back with a new signing key: its tokens work without a restart of the proxy,
    # and the old key, gone from the IdP's JWKS, is refused once the cache was refreshed.
    with idp_on(idp_port) as idp:
        time.sleep(1.1)  # jwks_refetch_interval_seconds since the failed refresh above
        new_token = token_from(metadata(idp.url), proxy.url + "/mcp")
        assert initialize(proxy.url, new_token).status_code == 200
        refused = initialize(proxy.url, old_token)
        assert refused.status_code == 401
        assert "is not in the identity provider's JWKS" in refused.headers["www-authenticate"]


def test_sealing_key_rotation_keeps_registered_clients(
    start_proxy: ProxyFactory, idp: stack.Service, demo_server: stack.Service
) -> None:
    port = stack.free_port()
    first = start_proxy(origin(demo_server.url), port=port, issuer=idp.url, secret_key=SECRET_KEY)
    client_id = str(register(first.url + "/register")["client_id"])
    first.stop()

    def authorize(proxy: stack.Service) -> httpx.Response:
        return httpx.get(authorization_url(proxy.url + "/authorize", client_id, Pkce.make(), "s", None))

    rotated = start_proxy(origin(demo_server.url), port=port, issuer=idp.url, secret_key=OTHER_SECRET_KEY,
                          previous_secret_keys=[SECRET_KEY])
    response = authorize(rotated)
    assert response.status_code == 302, response.text
    assert response.headers["location"].startswith(idp.url)
    rotated.stop()

    only_new = start_proxy(origin(demo_server.url), port=port, issuer=idp.url, secret_key=OTHER_SECRET_KEY)
    response = authorize(only_new)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "invalid_client" in response.text
    only_new.stop()


# --- the MCP server -------------------------------------------------------------------------


def test_mcp_server_down_is_a_json_rpc_error(start_proxy: ProxyFactory, idp: stack.Service) -> None:
    proxy = start_proxy(f"http://127.0.0.1:{stack.free_port()}", issuer=idp.url)
    token = token_from(metadata(idp.url), proxy.url + "/mcp")
    auth = {**ACCEPT, "Authorization": f"Bearer {token}"}
    response = httpx.post(proxy.url + "/mcp", json={"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, headers=auth)
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    assert body["id"] == 7
    assert body["error"]["code"] == -32000
    assert body["error"]["message"] == "the MCP server is unavailable"
    unreadable = httpx.post(proxy.url + "/mcp", content=b"not json", headers=auth)
    assert unreadable.status_code == 502
    assert unreadable.json()["id"] is None
    assert httpx.get(proxy.url + "/mcp", headers=auth).json()["id"] is None
    # The proxy's own endpoints keep answering.
    assert httpx.get(proxy.url + "/.well-known/oauth-protected-resource/mcp").status_code == 200
    assert httpx.post(proxy.url + "/mcp", json={}).status_code == 401
    proxy.wait_for_line(r"\[authorized-call\] POST /mcp 502: MCP server unavailable")


@pytest.mark.parametrize("protocol", ["2025-06-18", "2026-07-28"])
def test_client_disconnect_closes_the_upstream_call(
    start_proxy: ProxyFactory, idp: stack.Service, demo_server: stack.Service, protocol: str
) -> None:
    proxy = start_proxy(origin(demo_server.url), issuer=idp.url)
    token = token_from(metadata(idp.url), proxy.url + "/mcp")
    if protocol == "2026-07-28":  # one self-contained POST, no session
        headers = {**ACCEPT, "Authorization": f"Bearer {token}", "MCP-Protocol-Version": protocol,
                   "Mcp-Method": "tools/call", "Mcp-Name": "count-with-progress"}
    else:
        headers = session(proxy.url, token)
    since, proxy_since = len(demo_server.lines), len(proxy.lines)
    call = count_call(50, 0.2, protocol)
    with httpx.stream("POST", proxy.url + "/mcp", json=call, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = 0
        for line in response.iter_lines():
            events += line.startswith("data:")
            if events == 2:
                break
    # Leaving the block closed the client's connection after two progress events; the proxy
    # closes its connection to the MCP server at once, which is how the server learns of it.
    proxy.wait_for_line(r"Client disconnected", timeout=5, since=proxy_since)
    proxy.wait_for_line(r"server disconnect", timeout=5, since=proxy_since)
    if protocol == "2026-07-28":
        # A 2026-07-28 server treats the closed request as cancellation.
        line = demo_server.wait_for_line(r"count-with-progress (cancelled|stopped) at step", timeout=10,
                                         since=since)
        step = int(re.search(r"at step (\d+)/50", line).group(1))  # type: ignore[union-attr]
        assert step < 20
        assert not any("count-with-progress finished 50/50" in x for x in demo_server.lines[since:])


def test_quiet_event_stream_outlives_tcp_timeout_and_the_deadline(
    start_proxy: ProxyFactory, idp: stack.Service, demo_server: stack.Service
) -> None:
    # mitmproxy closes a connection after tcp_timeout seconds without traffic (600 by default,
    # 2 here), and the MCP server's deadline is 1.5 s. A tool quiet for 6 s between events
    # must still pass through whole: the deadline ends with the response headers, and the
    # inactivity timeout is held off while an authorized event stream runs.
    proxy = start_proxy(origin(demo_server.url), issuer=idp.url, mcp_server_timeout_seconds=1.5,
                        extra=["--set", "tcp_timeout=2"])
    headers = session(proxy.url, token_from(metadata(idp.url), proxy.url + "/mcp"))
    response = httpx.post(proxy.url + "/mcp", json=count_call(3, 6), headers=headers, timeout=60)
    assert response.status_code == 200
    assert "counted to 3" in response.text
    assert response.text.count("notifications/progress") == 3
    # Keep-alive connections without a stream still time out as mitmproxy's option says.
    with httpx.Client() as client:
        assert client.get(proxy.url + "/.well-known/oauth-protected-resource/mcp").status_code == 200
        proxy.wait_for_line(r"Closing connection due to inactivity", timeout=10)


class HungServer:
    """An MCP server that accepts connections, reads the request, and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received: list[bytes] = []
        self.closed_by_peer = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):  # b"": the proxy closed its side
                self.received.append(data)
            self.closed_by_peer.set()

    def stop(self) -> None:
        self.listener.close()


def test_hung_mcp_server_is_a_json_rpc_timeout(start_proxy: ProxyFactory, idp: stack.Service) -> None:
    hung = HungServer()
    try:
        proxy = start_proxy(hung.url, issuer=idp.url, mcp_server_timeout_seconds=1.5)
        token = token_from(metadata(idp.url), proxy.url + "/mcp")
        auth = {**ACCEPT, "Authorization": f"Bearer {token}"}
        with httpx.Client(timeout=30) as client:
            waiting = client.post(proxy.url + "/mcp", json={"jsonrpc": "2.0", "id": "call-9", "method": "tools/list"},
                                  headers=auth)
            # While the call hangs the proxy's own endpoints answer (checked after: httpx is sync).
            assert client.get(proxy.url + "/.well-known/oauth-protected-resource/mcp").status_code == 200
        assert waiting.status_code == 504
        assert waiting.headers["content-type"] == "application/json"
        body = waiting.json()
        assert body["jsonrpc"] == "2.0" and body["id"] == "call-9"
        assert body["error"]["code"] == -32001
        assert body["error"]["message"] == "the MCP server did not answer in time"
        assert "mcp_server_timeout_seconds" in body["error"]["data"]["detail"]
        # The MCP server got the call, and then its connection closed: the call is abandoned.
        assert b"tools/list" in b"".join(hung.received)
        assert hung.closed_by_peer.wait(5)
        proxy.wait_for_line(r"\[authorized-call\] POST /mcp 504: the MCP server sent no response within 1\.5 s")
    finally:
        hung.stop()


# --- secrets --------------------------------------------------------------------------------


async def dance(url: str) -> tuple[Any, Any]:
    """The SDK client's whole dance and a tool call; its tokens and client registration."""
    from mcp_client import InMemoryTokenStorage

    storage = InMemoryTokenStorage()
    async with oauth_client(url, storage=storage) as client:
        assert "Hello, joe" in text_of(await client.call_tool("hello-world", {"name": "joe"}))
    return await storage.get_tokens(), await storage.get_client_info()


def test_no_secret_in_the_output_at_full_verbosity(
    tmp_path: Path, confdir: Path, demo_server: stack.Service
) -> None:
    port = stack.free_port()
    # An IdP of its own, whose static client has this proxy's callback: static registration
    # puts a client secret in play too.
    own_idp = stack.start_idp(static_redirect_uris=[f"http://127.0.0.1:{port}/callback"])
    idp = own_idp
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "public_url": f"http://127.0.0.1:{port}", "issuer": idp.url, "secret_key": SECRET_KEY,
        "scopes": ["mcp:tools"],
        "registration": {"mode": "static", "client_id": "mcp-proxy", "client_secret": "mcp-proxy-secret"},
    }))
    proxy = stack.start_proxy(path, origin(demo_server.url), port, confdir=confdir, extra=[
        "--set", "termlog_verbosity=debug", "--set", "flow_detail=4"])
    try:
        tokens, info = asyncio.run(dance(proxy.url + "/mcp"))
        assert tokens is not None and info is not None
        # A refused call with a valid token, too: its Authorization header must not be printed.
        httpx.post(proxy.url + "/mcp", content=b"{}", headers={"Authorization": "Bearer " + tokens.access_token,
                                                                "Content-Type": "text/plain"})
        httpx.post(proxy.url + "/nowhere", headers={"Authorization": "Bearer " + tokens.access_token})
        time.sleep(0.5)
        output = proxy.output()
        secrets = {"access token": tokens.access_token, "client secret": "mcp-proxy-secret",
                   "sealed client_id": info.client_id}
        if tokens.refresh_token:
            secrets["refresh token"] = tokens.refresh_token
        codes = re.findall(r"[?&]code=([A-Za-z0-9_\-.~%]+)", output)
        assert output.count("[callback]") == 1
        for name, secret in secrets.items():
            assert secret not in output, f"the {name} is in mitmdump's output"
            # A JWT's header and claims may be shown (the views decode them), never its signature.
            part = secret.rsplit(".", 1)[1] if secret.count(".") == 2 else secret[:20]
            assert part not in output, f"(part of) the {name} is in mitmdump's output"
        assert not codes, f"an authorization code is in mitmdump's output: {codes}"
        assert "authorized-call" in output  # the dump still shows the forwarded calls
    finally:
        proxy.stop()
        own_idp.stop()


def test_mitmweb_beyond_loopback_without_password_warns(
    tmp_path: Path, confdir: Path, idp: stack.Service, demo_server: stack.Service
) -> None:
    port = stack.free_port()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"public_url": f"http://127.0.0.1:{port}", "issuer": idp.url,
                                    "secret_key": SECRET_KEY}))
    # Binds every interface on a free port; nothing is sent to a non-loopback address.
    proxy = stack.start_proxy(path, origin(demo_server.url), port, confdir=confdir, web=True, extra=[
        "--no-web-open-browser", "--web-host", "0.0.0.0",  # noqa: S104
        "--web-port", str(stack.free_port())])
    try:
        line = proxy.wait_for_line(r"mitmweb listens on 0\.0\.0\.0.*without web_password", timeout=10)
        assert "web_password" in line
    finally:
        proxy.stop()
