"""Request bodies: capped at max_request_body_bytes before they are read, and never streamed past the gate.

A real mitmdump in front of a recording MCP server; tokens signed by the token lab. Raw
sockets where the point is what the proxy answers before the client has sent the body.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest
import stack
from conftest import ProxyFactory
from token_lab import CountingUpstream, TokenLab

pytestmark = pytest.mark.integration

LIMIT = 4096
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def lab() -> Iterator[TokenLab]:
    with TokenLab() as lab:
        lab.add_key("RSA", kid="limits-1")
        yield lab


@pytest.fixture(scope="module")
def upstream() -> Iterator[CountingUpstream]:
    with CountingUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def proxy(start_proxy: ProxyFactory, lab: TokenLab, upstream: CountingUpstream) -> stack.Service:
    return start_proxy(upstream.url, issuer=lab.issuer, max_request_body_bytes=LIMIT)


def raw_exchange(proxy: stack.Service, head: bytes, body_parts: list[bytes] = ()) -> tuple[int, dict[str, str], bytes]:
    """Send the request head (and any body parts), read the answer until the proxy closes."""
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head)
        for part in body_parts:
            conn.sendall(part)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head_part, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def assert_too_large(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 413
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert document["error"] == "invalid_request"
    assert f"{LIMIT} bytes" in document["error_description"]


@pytest.mark.parametrize("authorized", [False, True], ids=["no token", "valid token"])
def test_declared_body_over_the_limit_is_refused_before_it_is_sent(
    proxy: stack.Service, lab: TokenLab, upstream: CountingUpstream, authorized: bool
) -> None:
    before = upstream.count
    token = f"Authorization: Bearer {lab.mint(proxy.url + '/mcp')}\r\n" if authorized else ""
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: {proxy.url[7:]}\r\nContent-Type: application/json\r\n{token}"
        f"Content-Length: 50000000\r\n\r\n"
    ).encode()
    # Not one byte of the 50 MB is sent: the answer comes from the headers alone.
    assert_too_large(*raw_exchange(proxy, head))
    assert upstream.count == before
    proxy.wait_for_line(rf"\[rejected\] POST /mcp 413: request body over {LIMIT} bytes")


def test_chunked_body_is_refused_once_it_passes_the_limit(
    proxy: stack.Service, lab: TokenLab, upstream: CountingUpstream
) -> None:
    before = upstream.count
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: {proxy.url[7:]}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {lab.mint(proxy.url + '/mcp')}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * 1024
    # Five 1 KiB chunks and no last chunk: the proxy must not wait for an end that never comes.
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)]
    assert_too_large(*raw_exchange(proxy, head, parts))
    assert upstream.count == before


def test_body_within_the_limit_reaches_the_mcp_server_whole(
    proxy: stack.Service, lab: TokenLab, upstream: CountingUpstream
) -> None:
    before = upstream.count
    call = {**CALL, "params": {"padding": "p" * (LIMIT - 200)}}
    content = json.dumps(call).encode()
    assert len(content) <= LIMIT
    token = lab.mint(proxy.url + "/mcp")
    response = httpx.post(proxy.url + "/mcp", content=content, headers={**ACCEPT, "Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    (seen,) = upstream.since(before)
    assert seen.body == content


def test_registration_over_the_limit_is_refused(proxy: stack.Service) -> None:
    response = httpx.post(proxy.url + "/register", content=b"{" + b" " * (LIMIT * 2) + b"}", headers=ACCEPT)
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"


def test_stream_large_bodies_cannot_carry_a_call_past_the_gate(
    start_proxy: ProxyFactory, lab: TokenLab, upstream: CountingUpstream
) -> None:
    # mitmproxy's stream_large_bodies sends a body over its size upstream before the request
    # hook, where the token is checked. The addon switches it off and says why.
    proxy = start_proxy(upstream.url, issuer=lab.issuer, extra=["--set", "stream_large_bodies=1k"])
    proxy.wait_for_line(r"stream_large_bodies=1k would send large request bodies to the MCP server")
    before = upstream.count
    call = {**CALL, "params": {"padding": "p" * 5000}}
    response = httpx.post(proxy.url + "/mcp", json=call, headers=ACCEPT)
    assert response.status_code == 401
    assert upstream.count == before, f"the MCP server saw {upstream.since(before)}"
    authorized = httpx.post(
        proxy.url + "/mcp", json=call, headers={**ACCEPT, "Authorization": f"Bearer {lab.mint(proxy.url + '/mcp')}"}
    )
    assert authorized.status_code == 200
    assert len(upstream.since(before)) == 1
