"""Authorization server metadata: discovering the IdP's, and the facade's own built from it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from addon.protocol.server_metadata import (
    DiscoveryError,
    ServerMetadata,
    check_metadata,
    discover,
    discovery_urls,
    facade_discovery_paths,
    facade_metadata,
)

from .support import JsonServer, closed_port_url

PUBLIC = "https://proxy.example.com"
IDP = "https://idp.example.com/realms/r1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def idp_document(issuer: str = IDP, **extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/protocol/openid-connect/auth",
        "token_endpoint": issuer + "/protocol/openid-connect/token",
        "registration_endpoint": issuer + "/clients-registrations/openid-connect",
        "revocation_endpoint": issuer + "/protocol/openid-connect/revoke",
        "introspection_endpoint": issuer + "/protocol/openid-connect/token/introspect",
        "userinfo_endpoint": issuer + "/protocol/openid-connect/userinfo",
        "end_session_endpoint": issuer + "/protocol/openid-connect/logout",
        "pushed_authorization_request_endpoint": issuer + "/protocol/openid-connect/ext/par/request",
        "device_authorization_endpoint": issuer + "/protocol/openid-connect/auth/device",
        "backchannel_authentication_endpoint": issuer + "/protocol/openid-connect/ext/ciba/auth",
        "mtls_endpoint_aliases": {"token_endpoint": "https://mtls.idp.example.com/token"},
        "jwks_uri": issuer + "/protocol/openid-connect/certs",
        "response_types_supported": ["code", "id_token", "code id_token", "token"],
        "response_modes_supported": ["query", "fragment", "form_post", "jwt"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", "password"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post"],
        "scopes_supported": ["openid", "profile"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "require_pushed_authorization_requests": False,
    }
    document.update(extra)
    return document


# --- where metadata lives ---------------------------------------------------------------------


def test_discovery_urls_for_an_issuer_without_path() -> None:
    for issuer in ("https://idp.example.com", "https://idp.example.com/"):
        assert discovery_urls(issuer) == [
            "https://idp.example.com/.well-known/oauth-authorization-server",
            "https://idp.example.com/.well-known/openid-configuration",
        ]


def test_discovery_urls_for_an_issuer_with_path() -> None:
    assert discovery_urls("https://idp.example.com:8443/realms/r1") == [
        "https://idp.example.com:8443/.well-known/oauth-authorization-server/realms/r1",  # RFC 8414 insertion
        "https://idp.example.com:8443/.well-known/openid-configuration/realms/r1",
        "https://idp.example.com:8443/realms/r1/.well-known/openid-configuration",  # OIDC appending
    ]


def test_facade_discovery_paths_at_the_root() -> None:
    assert facade_discovery_paths("http://127.0.0.1:8000") == (
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    )


def test_facade_discovery_paths_under_a_path() -> None:
    assert facade_discovery_paths("https://gw.example.com/tenant") == (
        "/.well-known/oauth-authorization-server/tenant",
        "/.well-known/openid-configuration/tenant",
        "/tenant/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    )


# --- the facade's metadata --------------------------------------------------------------------


def facade(static: bool = False, **extra: Any) -> dict[str, Any]:
    upstream = ServerMetadata(idp_document(**extra), IDP + "/.well-known/openid-configuration")
    return facade_metadata(upstream, PUBLIC, ["mcp:tools"], static).document


def test_facade_is_its_own_issuer_with_every_endpoint_at_the_proxy() -> None:
    document = facade()
    assert document["issuer"] == PUBLIC
    assert document["authorization_endpoint"] == PUBLIC + "/authorize"
    assert document["token_endpoint"] == PUBLIC + "/token"
    assert document["registration_endpoint"] == PUBLIC + "/register"
    assert document["revocation_endpoint"] == PUBLIC + "/revoke"
    for name, value in document.items():
        if name.endswith("_endpoint"):
            assert value.startswith(PUBLIC + "/"), name


def test_facade_advertises_what_the_dance_supports() -> None:
    document = facade()
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["response_types_supported"] == ["code"]
    assert document["response_modes_supported"] == ["query"]
    assert document["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert document["scopes_supported"][0] == "mcp:tools"
    assert set(document["scopes_supported"]) == {"mcp:tools", "openid", "profile"}


@pytest.mark.parametrize(
    "name",
    [
        "pushed_authorization_request_endpoint",
        "require_pushed_authorization_requests",
        "device_authorization_endpoint",
        "introspection_endpoint",
        "end_session_endpoint",
        "userinfo_endpoint",
        "backchannel_authentication_endpoint",
        "mtls_endpoint_aliases",
    ],
)
def test_facade_leaves_out_what_would_bypass_the_proxy(name: str) -> None:
    assert name not in facade()


def test_facade_keeps_informational_fields() -> None:
    document = facade(service_documentation="https://idp.example.com/docs")
    assert document["jwks_uri"] == IDP + "/protocol/openid-connect/certs"
    assert document["subject_types_supported"] == ["public"]
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    assert document["service_documentation"] == "https://idp.example.com/docs"


def test_static_registration_advertises_only_public_clients() -> None:
    document = facade(static=True)
    assert document["token_endpoint_auth_methods_supported"] == ["none"]
    assert document["revocation_endpoint_auth_methods_supported"] == ["none"]


def test_forward_registration_offers_what_the_idp_and_the_proxy_both_support() -> None:
    assert facade()["token_endpoint_auth_methods_supported"] == ["client_secret_post", "client_secret_basic"]
    assert facade(token_endpoint_auth_methods_supported=None)["token_endpoint_auth_methods_supported"] == [
        "none",
        "client_secret_post",
        "client_secret_basic",
    ]


def test_no_revocation_without_an_upstream_one() -> None:
    document = facade(revocation_endpoint=None)
    assert "revocation_endpoint" not in document
    assert "revocation_endpoint_auth_methods_supported" not in document


def test_changes_list_what_differs() -> None:
    upstream = ServerMetadata(idp_document(), IDP + "/.well-known/openid-configuration")
    result = facade_metadata(upstream, PUBLIC, ["mcp:tools"], False)
    changes = result.changes
    assert changes["issuer"] == (IDP, PUBLIC)
    assert changes["authorization_endpoint"] == (IDP + "/protocol/openid-connect/auth", PUBLIC + "/authorize")
    assert changes["token_endpoint"][1] == PUBLIC + "/token"
    assert changes["pushed_authorization_request_endpoint"] == (
        IDP + "/protocol/openid-connect/ext/par/request",
        None,
    )
    assert changes["introspection_endpoint"][1] is None
    assert changes["code_challenge_methods_supported"] == (["plain", "S256"], ["S256"])
    assert changes["authorization_response_iss_parameter_supported"] == (None, True)
    for unchanged in ("jwks_uri", "subject_types_supported", "id_token_signing_alg_values_supported"):
        assert unchanged not in changes
    # Every change is real, and every difference is listed.
    for name, (before, after) in changes.items():
        assert before != after
        assert upstream.document.get(name) == before and result.document.get(name) == after
    for name in set(upstream.document) | set(result.document):
        if upstream.document.get(name) != result.document.get(name):
            assert name in changes


# --- checking what the IdP serves -------------------------------------------------------------


def test_check_metadata_accepts_a_good_document() -> None:
    metadata = check_metadata(idp_document(), IDP, "https://src")
    assert metadata.issuer == IDP
    assert metadata.source_url == "https://src"
    assert metadata.token_endpoint == IDP + "/protocol/openid-connect/token"
    assert metadata.jwks_uri == IDP + "/protocol/openid-connect/certs"
    assert metadata.registration_endpoint == IDP + "/clients-registrations/openid-connect"


@pytest.mark.parametrize(
    "issuer", ["https://evil.example.com/realms/r1", IDP + "/", "https://IDP.example.com/realms/r1", None]
)
def test_check_metadata_rejects_another_issuer(issuer: str | None) -> None:
    document = idp_document()
    document["issuer"] = issuer
    with pytest.raises(DiscoveryError, match="issuer"):
        check_metadata(document, IDP, "https://src")


@pytest.mark.parametrize("name", ["authorization_endpoint", "token_endpoint"])
def test_check_metadata_rejects_missing_endpoints(name: str) -> None:
    document = idp_document()
    del document[name]
    with pytest.raises(DiscoveryError, match=name):
        check_metadata(document, IDP, "https://src")
    document[name] = ["https://x"]
    with pytest.raises(DiscoveryError, match=name):
        check_metadata(document, IDP, "https://src")


@pytest.mark.parametrize("document", [None, [], "issuer", 42])
def test_check_metadata_rejects_non_objects(document: Any) -> None:
    with pytest.raises(DiscoveryError):
        check_metadata(document, IDP, "https://src")


def test_optional_endpoints_absent() -> None:
    document = idp_document(jwks_uri=None, registration_endpoint=None, revocation_endpoint="")
    metadata = check_metadata(document, IDP, "https://src")
    assert metadata.jwks_uri is None
    assert metadata.registration_endpoint is None
    assert metadata.revocation_endpoint is None


# --- discover() against a real HTTP server ----------------------------------------------------


@pytest.mark.anyio
async def test_discover_prefers_rfc8414(server: JsonServer) -> None:
    issuer = server.url + "/realms/r1"
    server.serve("/.well-known/oauth-authorization-server/realms/r1", idp_document(issuer))
    server.serve("/realms/r1/.well-known/openid-configuration", idp_document(issuer, token_endpoint="https://wrong"))
    async with httpx.AsyncClient() as client:
        metadata = await discover(client, issuer)
    assert metadata.source_url == server.url + "/.well-known/oauth-authorization-server/realms/r1"
    assert metadata.token_endpoint == issuer + "/protocol/openid-connect/token"
    assert server.count("/realms/r1/.well-known/openid-configuration") == 0


@pytest.mark.anyio
async def test_discover_falls_back_to_oidc(server: JsonServer) -> None:
    issuer = server.url + "/realms/r1"
    server.serve("/realms/r1/.well-known/openid-configuration", idp_document(issuer))
    async with httpx.AsyncClient() as client:
        metadata = await discover(client, issuer)
    assert metadata.source_url == issuer + "/.well-known/openid-configuration"
    assert server.count("/.well-known/oauth-authorization-server/realms/r1") == 1
    assert server.count("/.well-known/openid-configuration/realms/r1") == 1


@pytest.mark.anyio
async def test_discover_at_the_root_skips_an_answer_that_is_not_json(server: JsonServer) -> None:
    server.serve("/.well-known/oauth-authorization-server", b"<html>login</html>")
    server.serve("/.well-known/openid-configuration", idp_document(server.url))
    async with httpx.AsyncClient() as client:
        metadata = await discover(client, server.url)
    assert metadata.issuer == server.url
    assert metadata.source_url == server.url + "/.well-known/openid-configuration"


@pytest.mark.anyio
async def test_discover_refuses_metadata_for_another_issuer(server: JsonServer) -> None:
    server.serve("/.well-known/oauth-authorization-server", idp_document("https://evil.example.com"))
    async with httpx.AsyncClient() as client:
        with pytest.raises(DiscoveryError, match=r"evil\.example\.com"):
            await discover(client, server.url)


@pytest.mark.anyio
async def test_discover_with_nothing_served(server: JsonServer) -> None:
    server.serve("/.well-known/openid-configuration", {"error": "boom"}, status=500)
    async with httpx.AsyncClient() as client:
        with pytest.raises(DiscoveryError) as info:
            await discover(client, server.url)
    message = str(info.value)
    assert "HTTP 404" in message and "HTTP 500" in message


@pytest.mark.anyio
async def test_discover_with_connection_refused() -> None:
    issuer = closed_port_url()
    async with httpx.AsyncClient() as client:
        with pytest.raises(DiscoveryError, match="ConnectError"):
            await discover(client, issuer)
