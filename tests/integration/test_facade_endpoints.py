"""Each facade endpoint, one request at a time, as a client on today's spec would meet it."""

from __future__ import annotations

import httpx
import jwt
import pytest
import stack
from oauth_steps import REDIRECT_URI, Pkce, authorization_url, exchange, log_in, query_of, register

pytestmark = pytest.mark.integration


def test_resource_metadata_at_both_paths(facade_proxy: stack.Service) -> None:
    for path in ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]:
        response = httpx.get(facade_proxy.url + path)
        assert response.status_code == 200
        assert response.json() == {
            "resource": facade_proxy.url + "/mcp",
            "authorization_servers": [facade_proxy.url],
            "scopes_supported": ["mcp:tools"],
            "bearer_methods_supported": ["header"],
        }


def test_server_metadata_names_the_proxy_everywhere_a_client_looks(facade_proxy: stack.Service) -> None:
    documents = [
        httpx.get(facade_proxy.url + path).json()
        for path in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
    ]
    assert documents[0] == documents[1]
    document = documents[0]
    assert document["issuer"] == facade_proxy.url
    for name in ["authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint"]:
        assert document[name].startswith(facade_proxy.url + "/"), name
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["authorization_response_iss_parameter_supported"] is True
    # Endpoints that would take a client around the proxy are not advertised.
    for name in ["pushed_authorization_request_endpoint", "introspection_endpoint", "userinfo_endpoint",
                 "end_session_endpoint"]:
        assert name not in document
    assert "offline_access" not in document["scopes_supported"]


@pytest.fixture
def client(facade_proxy: stack.Service) -> dict[str, object]:
    return register(facade_proxy.url + "/register")


def test_registration_hands_out_a_sealed_client_id(facade_proxy: stack.Service, client: dict[str, object]) -> None:
    assert client["redirect_uris"] == [REDIRECT_URI]
    assert client["token_endpoint_auth_method"] == "none"
    assert len(str(client["client_id"])) > 60  # sealed, not the IdP's id
    facade_proxy.wait_for_line(r"\[registration\] POST /register 201: forwarded")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
        ({"client_name": "no redirect"}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://127.0.0.1/cb"], "grant_types": ["password"]}, "invalid_client_metadata"),
    ],
)
def test_bad_registrations_get_rfc7591_errors(facade_proxy: stack.Service, body: dict[str, object], error: str) -> None:
    response = httpx.post(facade_proxy.url + "/register", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.json()["error_description"]


def test_non_json_registration_is_refused(facade_proxy: stack.Service) -> None:
    response = httpx.post(facade_proxy.url + "/register", content=b"<xml/>", headers={"Content-Type": "text/xml"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"


def test_code_flow_with_iss_sealed_code_and_refresh(facade_proxy: stack.Service, client: dict[str, object]) -> None:
    client_id = str(client["client_id"])
    resource = facade_proxy.url + "/mcp"
    pkce = Pkce.make()
    code, state, iss = log_in(authorization_url(facade_proxy.url + "/authorize", client_id, pkce, "client-state",
                                                resource))
    assert state == "client-state"
    assert iss == facade_proxy.url  # RFC 9207: the issuer the client discovered, not the IdP

    response = exchange(facade_proxy.url + "/token", client_id, code, pkce, resource)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    tokens = response.json()
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["aud"] == resource
    assert "mcp:tools" in claims["scope"].split()

    refreshed = httpx.post(facade_proxy.url + "/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id,
    })
    assert refreshed.status_code == 200, refreshed.text
    new_token = refreshed.json()["access_token"]
    assert new_token != tokens["access_token"]
    call = httpx.post(resource, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                      headers={"Authorization": f"Bearer {new_token}", "MCP-Protocol-Version": "2026-07-28",
                               "Mcp-Method": "tools/list", "Accept": "application/json, text/event-stream"})
    assert call.status_code != 401

    # The code is single-use at the IdP: replaying it fails there (and revokes what it granted).
    replay = exchange(facade_proxy.url + "/token", client_id, code, pkce, resource)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"


def test_code_cannot_be_redeemed_by_another_client(facade_proxy: stack.Service, client: dict[str, object]) -> None:
    other = register(facade_proxy.url + "/register")
    pkce = Pkce.make()
    code, _, _ = log_in(authorization_url(facade_proxy.url + "/authorize", str(client["client_id"]), pkce, "s", None))
    response = exchange(facade_proxy.url + "/token", str(other["client_id"]), code, pkce, None)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(
    facade_proxy: stack.Service, client: dict[str, object]
) -> None:
    url = authorization_url(facade_proxy.url + "/authorize", str(client["client_id"]), Pkce.make(), "s", None,
                            redirect_uri="https://attacker.example/cb")
    response = httpx.get(url)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "text/html" in response.headers["content-type"]
    assert "not registered" in response.text


def test_missing_pkce_is_sent_back_to_the_client(facade_proxy: stack.Service, client: dict[str, object]) -> None:
    url = authorization_url(facade_proxy.url + "/authorize", str(client["client_id"]), Pkce.make(), "st", None)
    url = url.replace("code_challenge_method=S256", "code_challenge_method=plain")
    response = httpx.get(url)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI)
    assert query_of(location) | {"error_description": ""} == {
        "error": "invalid_request", "error_description": "", "state": "st", "iss": facade_proxy.url,
    }


def test_tampered_client_id_is_refused(facade_proxy: stack.Service, client: dict[str, object]) -> None:
    client_id = str(client["client_id"])
    tampered = client_id[:-6] + ("A" if client_id[-6] != "A" else "B") + client_id[-5:]
    response = httpx.get(authorization_url(facade_proxy.url + "/authorize", tampered, Pkce.make(), "s", None))
    assert response.status_code == 400
    assert "location" not in response.headers
    token = httpx.post(facade_proxy.url + "/token", data={
        "grant_type": "refresh_token", "refresh_token": "x", "client_id": tampered})
    assert token.status_code == 401
    assert token.json()["error"] == "invalid_client"


def test_callback_with_forged_state_is_an_error_page(facade_proxy: stack.Service) -> None:
    response = httpx.get(facade_proxy.url + "/callback", params={"code": "abc", "state": "forged"})
    assert response.status_code == 400
    assert "location" not in response.headers
