"""Against a real Keycloak 26 (from Maven Central, started natively) with the realm users get.

Keycloak imports config/keycloak/mcp-realm.json with `http://localhost:8000` replaced by the
proxy's URL for this run, and the proxies here all listen on that one port, one at a time.
The login goes through Keycloak's real login form and consent page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import keycloak as kc
import pytest
import stack
import yaml
from conftest import SECRET_KEY, origin
from mcp_session import oauth_client, text_of

pytestmark = [pytest.mark.integration, pytest.mark.keycloak]

MCP_SCOPE = "mcp:tools"


@pytest.fixture(scope="module")
def proxy_port() -> int:
    return stack.free_port()


@pytest.fixture(scope="module")
def keycloak(proxy_port: int) -> Iterator[kc.KeycloakService]:
    port = stack.free_port()
    service = kc.start_keycloak(port, hostname=f"http://127.0.0.1:{port}", proxy_url=f"http://127.0.0.1:{proxy_port}")
    print(f"Keycloak ready in {service.startup_seconds:.1f} s")
    yield service
    service.stop()


@pytest.fixture
def start_keycloak_proxy(
    keycloak: kc.KeycloakService, proxy_port: int, demo_server: stack.Service, confdir: Path, tmp_path: Path
) -> Iterator[object]:
    started: list[stack.Service] = []

    def start(**overrides: object) -> stack.Service:
        public_url = f"http://127.0.0.1:{proxy_port}"
        config = {"public_url": public_url, "issuer": keycloak.issuer, "provider": "keycloak",
                  "scopes": [MCP_SCOPE], "secret_key": SECRET_KEY, **overrides}
        path = tmp_path / "keycloak-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        service = stack.start_proxy(path, origin(demo_server.url), proxy_port, confdir=confdir)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def stages(proxy: stack.Service) -> list[str]:
    seen: list[str] = []
    for line in proxy.lines:
        if "] [" in line and (stage := line.split("] [", 1)[1].split("]", 1)[0]) not in seen:
            seen.append(stage)
    return seen


@pytest.mark.anyio
async def test_facade_forward_registration_through_keycloaks_login_form(start_keycloak_proxy) -> None:
    proxy = start_keycloak_proxy()
    async with oauth_client(proxy.url + "/mcp") as client:
        hello = text_of(await client.call_tool("hello-world", {"name": "joe"}))
        seen = json.loads(text_of(await client.call_tool("whoami", {})))
    assert hello.startswith("Hello, joe! Your user agent is: ")
    assert seen["authorization_present"] is False
    assert seen["x-mcp-auth-subject"]  # Keycloak's user id for testuser
    assert MCP_SCOPE in seen["x-mcp-auth-scopes"].split()
    proxy.wait_for_line(r"\[authorized-call\]")
    assert stages(proxy) == ["challenge", "resource-metadata", "as-metadata", "registration", "authorization",
                             "callback", "token", "authorized-call"]


def test_registration_details_keycloak_refuses_are_handled(start_keycloak_proxy) -> None:
    """A client home page (Keycloak's Trusted Hosts policy checks it) and `openid` (not a Keycloak client scope)."""
    proxy = start_keycloak_proxy()
    response = httpx.post(proxy.url + "/register", json={
        "client_name": "quirky client", "client_uri": "https://client.example.com",
        "redirect_uris": ["http://127.0.0.1:47000/callback"], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"], "scope": f"openid {MCP_SCOPE}",
    })
    assert response.status_code == 201, response.text
    assert response.json()["token_endpoint_auth_method"] == "none"
    metadata = httpx.get(proxy.url + "/.well-known/oauth-authorization-server").json()
    assert "none" in metadata["token_endpoint_auth_methods_supported"]


def test_registration_refused_by_a_policy_says_what_to_fix(start_keycloak_proxy) -> None:
    proxy = start_keycloak_proxy()
    response = httpx.post(proxy.url + "/register", json={
        "redirect_uris": ["http://127.0.0.1:47000/callback"], "token_endpoint_auth_method": "none",
        "scope": "not:a:scope",
    })
    assert response.status_code == 502
    description = response.json()["error_description"]
    assert "Allowed Client Scopes" in description
    assert "Anonymous access policies" in description


@pytest.mark.anyio
async def test_facade_static_registration_with_keycloak(start_keycloak_proxy) -> None:
    proxy = start_keycloak_proxy(registration={"mode": "static", "client_id": "mcp-proxy",
                                               "client_secret": "mcp-proxy-secret"})
    async with oauth_client(proxy.url + "/mcp") as client:
        hello = text_of(await client.call_tool("hello-world", {"name": "joe"}))
    assert hello.startswith("Hello, joe! Your user agent is: ")
    proxy.wait_for_line(r"\[token\] POST /token 200: authorization_code exchanged at the IdP for client mcp-proxy")


@pytest.mark.anyio
async def test_resource_server_mode_with_keycloak(start_keycloak_proxy, keycloak: kc.KeycloakService) -> None:
    proxy = start_keycloak_proxy(mode="resource-server")
    async with httpx.AsyncClient() as http:
        document = (await http.get(proxy.url + "/.well-known/oauth-protected-resource/mcp")).json()
    assert document["authorization_servers"] == [keycloak.issuer]
    async with oauth_client(proxy.url + "/mcp") as client:
        hello = text_of(await client.call_tool("hello-world", {"name": "joe"}))
    assert hello.startswith("Hello, joe! Your user agent is: ")
    assert set(stages(proxy)) == {"challenge", "resource-metadata", "authorized-call"}


def test_keycloak_token_for_another_audience_is_refused(
    start_keycloak_proxy, keycloak: kc.KeycloakService
) -> None:
    """A real Keycloak token from the same realm, minted for another API: signature and issuer fine, audience not."""
    admin = {"Authorization": f"Bearer {keycloak.admin_token()}"}
    created = httpx.post(keycloak.url + "/admin/realms/mcp/clients", headers=admin, json={
        "clientId": "reporting-service", "secret": "reporting-secret", "publicClient": False,
        "serviceAccountsEnabled": True, "standardFlowEnabled": False, "directAccessGrantsEnabled": False,
        "protocolMappers": [{
            "name": "reporting audience", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
            "config": {"included.custom.audience": "http://127.0.0.1:1/reports", "access.token.claim": "true"},
        }],
    })
    assert created.status_code == 201, created.text
    token_response = httpx.post(keycloak.issuer + "/protocol/openid-connect/token", data={
        "grant_type": "client_credentials", "client_id": "reporting-service", "client_secret": "reporting-secret",
    })
    assert token_response.status_code == 200, token_response.text
    token = token_response.json()["access_token"]

    proxy = start_keycloak_proxy()
    response = httpx.post(proxy.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "audience" in response.json()["error_description"]
    assert "http://127.0.0.1:1/reports" in response.json()["error_description"]
