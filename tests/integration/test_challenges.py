"""The gate on the MCP path: 401/403 challenges a client can act on, and nothing forwarded."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import stack
from conftest import ProxyFactory, origin
from oauth_steps import metadata, token_from

pytestmark = pytest.mark.integration

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
SDK_CHALLENGE_FIELD = re.compile(r'(\w+)="([^"]*)"')  # how the official SDK reads WWW-Authenticate


def challenge_fields(response: httpx.Response) -> dict[str, str]:
    header = response.headers["www-authenticate"]
    assert header.startswith("Bearer ")
    return dict(SDK_CHALLENGE_FIELD.findall(header))


def assert_json_error(response: httpx.Response, error: str) -> str:
    body = response.json()
    assert body["error"] == error
    assert body["error_description"]
    return str(body["error_description"])


@pytest.fixture(scope="module")
def token(facade_proxy: stack.Service, idp: stack.Service) -> str:
    return token_from(metadata(idp.url), facade_proxy.url + "/mcp")


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
def test_no_token_gets_the_resource_metadata_challenge(facade_proxy: stack.Service, method: str) -> None:
    since = len(facade_proxy.lines)
    response = httpx.request(method, facade_proxy.url + "/mcp", json=INITIALIZE if method == "POST" else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{facade_proxy.url}/.well-known/oauth-protected-resource/mcp", scope="mcp:tools"'
    )
    assert_json_error(response, "invalid_token")
    facade_proxy.wait_for_line(rf"\[challenge\] {method} /mcp 401: no token", since=since)


def test_garbage_token_is_invalid(facade_proxy: stack.Service) -> None:
    response = httpx.post(facade_proxy.url + "/mcp", json=INITIALIZE, headers={"Authorization": "Bearer abc.def.ghi"})
    assert response.status_code == 401
    fields = challenge_fields(response)
    assert fields["error"] == "invalid_token"
    assert fields["resource_metadata"] == facade_proxy.url + "/.well-known/oauth-protected-resource/mcp"
    assert fields["error_description"] == assert_json_error(response, "invalid_token")


def test_token_for_another_resource_is_refused(facade_proxy: stack.Service, idp: stack.Service) -> None:
    foreign = token_from(metadata(idp.url), "http://127.0.0.1:1/elsewhere")
    response = httpx.post(facade_proxy.url + "/mcp", json=INITIALIZE, headers={"Authorization": f"Bearer {foreign}"})
    assert response.status_code == 401
    assert "audience" in challenge_fields(response)["error_description"]


def test_token_from_a_foreign_issuer_is_refused(facade_proxy: stack.Service, other_idp: stack.Service) -> None:
    # Same audience, same shape, signed by a real IdP: just not ours.
    foreign = token_from(metadata(other_idp.url), facade_proxy.url + "/mcp")
    response = httpx.post(facade_proxy.url + "/mcp", json=INITIALIZE, headers={"Authorization": f"Bearer {foreign}"})
    assert response.status_code == 401
    assert challenge_fields(response)["error"] == "invalid_token"


def test_valid_token_is_let_through(facade_proxy: stack.Service, token: str) -> None:
    response = httpx.post(
        facade_proxy.url + "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 200
    assert response.headers.get("mcp-session-id")


@pytest.mark.parametrize(
    ("headers", "params", "status", "error"),
    [
        ({"Authorization": "Basic dXNlcjpwYXNz"}, {}, 401, "invalid_token"),
        ({}, {"access_token": "TOKEN"}, 401, "invalid_token"),
        ({"Authorization": "Bearer TOKEN", "authorization": "Bearer TOKEN"}, {}, 400, "invalid_request"),
        ({"Authorization": "Bearer"}, {}, 401, "invalid_token"),
    ],
    ids=["basic", "query-string", "two-headers", "empty-bearer"],
)
def test_malformed_credentials_are_refused(
    facade_proxy: stack.Service, token: str, headers: dict[str, str], params: dict[str, str], status: int, error: str
) -> None:
    raw_headers = [(k, v.replace("TOKEN", token)) for k, v in headers.items()]
    raw_params = {k: v.replace("TOKEN", token) for k, v in params.items()}
    response = httpx.post(facade_proxy.url + "/mcp", json=INITIALIZE, headers=raw_headers, params=raw_params)
    assert response.status_code == status
    assert_json_error(response, error)


def test_lower_case_bearer_is_accepted(facade_proxy: stack.Service, token: str) -> None:
    response = httpx.post(
        facade_proxy.url + "/mcp", json=INITIALIZE,
        headers={"Authorization": f"bearer {token}", "Accept": "application/json, text/event-stream"},
    )
    assert response.status_code != 401


def test_missing_scope_asks_for_every_needed_scope(
    start_proxy: ProxyFactory, idp: stack.Service, demo_server: stack.Service
) -> None:
    proxy = start_proxy(origin(demo_server.url), issuer=idp.url, scopes=["mcp:tools", "mcp:admin"])
    token = token_from(metadata(idp.url), proxy.url + "/mcp", scope="mcp:tools")
    response = httpx.post(proxy.url + "/mcp", json=INITIALIZE, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    fields = challenge_fields(response)
    assert fields["error"] == "insufficient_scope"
    assert fields["scope"] == "mcp:tools mcp:admin"
    assert fields["resource_metadata"] == proxy.url + "/.well-known/oauth-protected-resource/mcp"
    assert "mcp:admin" in assert_json_error(response, "insufficient_scope")


def test_unknown_paths_are_not_forwarded(facade_proxy: stack.Service, token: str) -> None:
    for path in ["/", "/admin", "/mcp-other", "//mcp", "/MCP"]:
        response = httpx.get(facade_proxy.url + path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 404, path
        assert json.loads(response.text)["error"] == "not_found"
