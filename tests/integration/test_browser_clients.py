"""Browser clients and abuse against the real mitmdump: CORS preflights, the Origin check, rate limits.

What a browser-based MCP client (the MCP Inspector on http://localhost:6274) meets, header by
header, and what a client flooding /register gets.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
import stack
from conftest import ProxyFactory, origin
from oauth_steps import metadata, token_from

from tests.unit.support import BackgroundServer

pytestmark = pytest.mark.integration

INSPECTOR = "http://localhost:6274"
FOREIGN = "http://evil.example:6274"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "browser-clients test", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def browser_proxy(start_proxy: ProxyFactory, idp: stack.Service, demo_server: stack.Service) -> stack.Service:
    return start_proxy(
        origin(demo_server.url),
        issuer=idp.url,
        cors={"allowed_origins": [INSPECTOR]},
        rate_limits={"register": "3/second", "token": "60/minute"},
    )


@pytest.fixture(scope="module")
def token(browser_proxy: stack.Service, idp: stack.Service) -> str:
    return token_from(metadata(idp.url), browser_proxy.url + "/mcp")


def preflight(url: str, origin_: str) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin_,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": (
                "authorization, content-type, mcp-protocol-version, mcp-param-city, x-evil"
            ),
        },
    )


def test_preflight_from_an_allowed_origin(browser_proxy: stack.Service) -> None:
    since = len(browser_proxy.lines)
    response = preflight(browser_proxy.url + "/mcp", INSPECTOR)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == INSPECTOR
    assert response.headers["vary"] == "Origin"
    assert response.headers["access-control-allow-methods"] == "POST, GET, DELETE, OPTIONS"
    assert response.headers["access-control-allow-headers"] == (
        "authorization, content-type, mcp-protocol-version, mcp-session-id, last-event-id, mcp-method, mcp-name, "
        "mcp-param-city"
    )
    assert response.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in response.headers
    browser_proxy.wait_for_line(
        r"\[challenge\] OPTIONS /mcp 204: CORS preflight from http://localhost:6274 for POST allowed", since=since
    )

    response = preflight(browser_proxy.url + "/token", INSPECTOR)
    assert response.status_code == 204
    assert response.headers["access-control-allow-methods"] == "POST, OPTIONS"


@pytest.mark.parametrize("path", ["/mcp", "/register", "/token", "/revoke"])
def test_preflight_from_a_foreign_origin_is_refused_here(browser_proxy: stack.Service, path: str) -> None:
    since = len(browser_proxy.lines)
    response = preflight(browser_proxy.url + path, FOREIGN)
    assert response.status_code == 403
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]
    assert response.json() == {
        "error": "invalid_request",
        "error_description": f"origin {FOREIGN} is not allowed; add it to cors.allowed_origins",
    }
    browser_proxy.wait_for_line(
        rf"OPTIONS {path} 403: origin {re.escape(FOREIGN)} is not in cors.allowed_origins; answered 403, not forwarded",
        since=since,
    )


def test_the_challenge_is_readable_by_an_allowed_origin(browser_proxy: stack.Service) -> None:
    response = httpx.post(browser_proxy.url + "/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Origin": INSPECTOR})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == INSPECTOR
    assert response.headers["access-control-expose-headers"] == (
        "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version, Retry-After"
    )
    assert "Origin" in response.headers["vary"]
    assert response.headers["www-authenticate"].startswith("Bearer resource_metadata=")


def test_discovery_stays_public(browser_proxy: stack.Service) -> None:
    response = httpx.get(
        browser_proxy.url + "/.well-known/oauth-protected-resource/mcp", headers={"Origin": "http://anywhere.example"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


def test_an_authorized_answer_is_readable_by_an_allowed_origin(browser_proxy: stack.Service, token: str) -> None:
    response = httpx.post(
        browser_proxy.url + "/mcp",
        json=INITIALIZE,
        headers={**MCP_HEADERS, "Origin": INSPECTOR, "Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == INSPECTOR
    assert "Mcp-Session-Id" in response.headers["access-control-expose-headers"]
    assert "Origin" in response.headers["vary"]
    assert response.headers.get("mcp-session-id")  # the demo server is stateful: what the page must read


def test_a_foreign_origin_is_refused_even_with_a_valid_token(browser_proxy: stack.Service, token: str) -> None:
    since = len(browser_proxy.lines)
    response = httpx.post(
        browser_proxy.url + "/mcp",
        json=INITIALIZE,
        headers={**MCP_HEADERS, "Origin": FOREIGN, "Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403
    assert response.json()["error_description"] == f"origin {FOREIGN} is not allowed; add it to cors.allowed_origins"
    assert "access-control-allow-origin" not in response.headers
    browser_proxy.wait_for_line(r"\[rejected\] POST /mcp 403: origin .* answered 403, not forwarded", since=since)
    # The same call without Origin (not a browser) goes through.
    response = httpx.post(
        browser_proxy.url + "/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200


def test_register_flood_is_429_until_a_slot_frees(browser_proxy: stack.Service) -> None:
    body = {"client_name": "flood", "redirect_uris": ["http://127.0.0.1:47111/callback"]}
    statuses: list[int] = []
    with httpx.Client() as client:
        response = None
        for _ in range(30):
            response = client.post(browser_proxy.url + "/register", json=body)
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
        assert response is not None and response.status_code == 429, statuses
        assert statuses[:3] == [201, 201, 201]
        assert response.json()["error"] == "temporarily_unavailable"
        retry_after = int(response.headers["retry-after"])
        assert retry_after == 1  # a slot frees every third of a second, rounded up
        browser_proxy.wait_for_line(
            r"\[registration\] POST /register 429: rate limited: 127\.0\.0\.1 over rate_limits\.register \(3/second\)"
        )
        time.sleep(retry_after)
        response = client.post(browser_proxy.url + "/register", json=body)
        assert response.status_code == 201, response.text


class CountingUpstream(BackgroundServer):
    """An MCP server stand-in that counts what reaches it and answers every request with JSON."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                upstream.requests.append((self.command, self.headers.get("Origin")))
                body = b'{"jsonrpc": "2.0", "id": 1, "result": {}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Access-Control-Allow-Origin", "*")  # replaced by the proxy's
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_OPTIONS = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(Handler)


@pytest.fixture(scope="module")
def counting() -> Iterator[CountingUpstream]:
    with CountingUpstream() as upstream:
        yield upstream


def test_refused_browser_requests_never_reach_the_mcp_server(
    start_proxy: ProxyFactory, idp: stack.Service, counting: CountingUpstream
) -> None:
    proxy = start_proxy(counting.url, issuer=idp.url, cors={"allowed_origins": [INSPECTOR]})
    token = token_from(metadata(idp.url), proxy.url + "/mcp")
    authorized = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}

    assert preflight(proxy.url + "/mcp", INSPECTOR).status_code == 204
    assert preflight(proxy.url + "/mcp", FOREIGN).status_code == 403
    assert httpx.post(proxy.url + "/mcp", json=INITIALIZE, headers={**authorized, "Origin": FOREIGN}).status_code == 403
    assert httpx.post(proxy.url + "/mcp", json=INITIALIZE, headers={**authorized, "Origin": "null"}).status_code == 403
    assert counting.requests == []  # preflights and foreign origins: all answered by the proxy

    response = httpx.post(proxy.url + "/mcp", json=INITIALIZE, headers={**authorized, "Origin": INSPECTOR})
    assert response.status_code == 200
    assert counting.requests == [("POST", INSPECTOR)]
    # The MCP server's `*` is replaced: the proxy decides which origins may read.
    assert response.headers.get_list("access-control-allow-origin") == [INSPECTOR]
    assert "Mcp-Session-Id" in response.headers["access-control-expose-headers"]
