"""Provider profiles: what the proxy does differently for an IdP, and only for that IdP."""

from __future__ import annotations

from typing import Any

import pytest

from addon import providers
from addon.protocol.registration import check_registration_request, upstream_registration_request
from addon.protocol.server_metadata import ServerMetadata, facade_metadata
from addon.proxy.registration import refusal

CALLBACK = "http://localhost:8000/callback"
KEYCLOAK = providers.profile("keycloak")
GENERIC = providers.profile("generic")


def request(**overrides: Any) -> Any:
    body = {
        "redirect_uris": ["http://127.0.0.1:5555/callback"],
        "client_name": "Claude",
        "client_uri": "https://claude.ai",
        "logo_uri": "https://claude.ai/logo.png",
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "scope": "openid mcp:tools",
        **overrides,
    }
    return check_registration_request(body)


def test_profiles_are_listed() -> None:
    assert providers.names() == ["generic", "keycloak"]


def test_generic_registration_passes_the_client_description_on() -> None:
    upstream = upstream_registration_request(request(), CALLBACK, GENERIC)
    assert upstream["client_uri"] == "https://claude.ai"
    assert upstream["scope"] == "openid mcp:tools"


def test_keycloak_registration_drops_what_its_policies_refuse() -> None:
    upstream = upstream_registration_request(request(), CALLBACK, KEYCLOAK)
    assert "client_uri" not in upstream  # its base URL would fail the Trusted Hosts policy
    assert upstream["logo_uri"] == "https://claude.ai/logo.png"
    assert upstream["scope"] == "mcp:tools"  # openid is no client scope in Keycloak
    assert upstream["redirect_uris"] == [CALLBACK]


def test_keycloak_registration_without_any_scope_left_names_none() -> None:
    assert "scope" not in upstream_registration_request(request(scope="openid"), CALLBACK, KEYCLOAK)


KEYCLOAK_METADATA = {
    "issuer": "http://localhost:8080/realms/mcp",
    "authorization_endpoint": "http://localhost:8080/realms/mcp/protocol/openid-connect/auth",
    "token_endpoint": "http://localhost:8080/realms/mcp/protocol/openid-connect/token",
    "registration_endpoint": "http://localhost:8080/realms/mcp/clients-registrations/openid-connect",
    # Keycloak registers public clients but does not say so here.
    "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post"],
}


def test_keycloak_facade_advertises_public_clients() -> None:
    upstream = ServerMetadata(KEYCLOAK_METADATA, "http://localhost:8080/realms/mcp/.well-known/openid-configuration")
    document = facade_metadata(upstream, "http://localhost:8000", ["mcp:tools"], False,
                               KEYCLOAK.token_endpoint_auth_methods).document
    assert document["token_endpoint_auth_methods_supported"] == ["none", "client_secret_post", "client_secret_basic"]
    generic = facade_metadata(upstream, "http://localhost:8000", ["mcp:tools"], False).document
    assert generic["token_endpoint_auth_methods_supported"] == ["client_secret_post", "client_secret_basic"]


@pytest.mark.parametrize(
    ("idp_text", "expected"),
    [
        ("Policy 'Trusted Hosts' rejected request to client-registration service. Details: Host not trusted.",
         "add the address the proxy connects from"),
        ("Policy 'Allowed Client Scopes' rejected request to client-registration service. Details: Not permitted",
         "allow the scope"),
        ("Policy 'Max Clients' rejected request", "raise it"),
    ],
)
def test_keycloak_refusals_say_what_to_change(idp_text: str, expected: str) -> None:
    error = refusal(403, {"error": "insufficient_scope", "error_description": idp_text}, KEYCLOAK)
    assert (error.status, error.error) == (502, "server_error")
    assert idp_text in error.description
    assert expected in error.description
    assert "Anonymous access policies" in error.description


def test_generic_refusal_points_at_the_policies() -> None:
    error = refusal(401, {"error": "invalid_token", "error_description": "initial access token required"}, GENERIC)
    assert error.status == 502
    assert "client registration policies" in error.description


def test_client_metadata_errors_from_the_idp_pass_through_as_400() -> None:
    error = refusal(400, {"error": "invalid_redirect_uri", "error_description": "bad"}, GENERIC)
    assert (error.status, error.error) == (400, "invalid_redirect_uri")


def test_an_idp_answer_without_error_json_is_a_502() -> None:
    assert refusal(500, "<html>", GENERIC).status == 502
    assert refusal(400, ["not", "an", "object"], GENERIC).status == 502
