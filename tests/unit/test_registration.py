"""RFC 7591 registration at the facade: what a client may register, and what the proxy registers upstream."""

from __future__ import annotations

import time
from typing import Any

import pytest

from addon.protocol.errors import OAuthError
from addon.protocol.registration import (
    MAX_REDIRECT_URIS,
    ClientRequest,
    Registration,
    check_redirect_uri,
    check_registration_request,
    check_upstream_answer,
    open_client_id,
    registration_response,
    seal_client_id,
    upstream_registration_request,
)
from addon.protocol.sealing import Sealer

CALLBACK = "https://proxy.example.com/callback"
CLIENT_REDIRECT = "http://127.0.0.1:33418/callback"


def good_request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "redirect_uris": [CLIENT_REDIRECT],
        "client_name": "Test Client",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "mcp:tools",
        "application_type": "native",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def assert_refused(body: Any, error: str) -> OAuthError:
    with pytest.raises(OAuthError) as info:
        check_registration_request(body)
    assert info.value.status == 400
    assert info.value.error == error
    return info.value


# --- redirect URIs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.com/callback",
        "https://app.example.com:8443/cb?tenant=1",
        "http://127.0.0.1/callback",
        "http://127.0.0.1:33418/callback",
        "http://[::1]:8080/cb",
        "http://[::1]/cb",
        "http://localhost:3000/oauth/callback",
        "http://localhost/cb",
        "com.example.app:/oauth2redirect",
        "com.example.app://callback",
        "io.modelcontextprotocol.inspector:/cb",
    ],
)
def test_redirect_uri_accepted(uri: str) -> None:
    assert check_redirect_uri(uri) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example.com/callback",  # plain http off loopback
        "HTTP://app.example.com/callback",
        "http://127.0.0.1.evil.example/cb",  # looks like loopback, is not
        "http://localhost.evil.example/cb",
        "http://10.0.0.1/cb",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "vbscript:msgbox(1)",
        "about:blank",
        "https://app.example.com/cb#fragment",
        "https://app.example.com/cb#",
        "https://*.example.com/cb",
        "https://app.example.com/*",
        "https://app.example.com/c b",
        " https://app.example.com/cb",
        "https://app.example.com/cb\n",
        "https://app.example.com/cb\t",
        "https://user:password@app.example.com/cb",
        "https://user@app.example.com/cb",
        "http://user@127.0.0.1/cb",
        "https:///cb",
        "https:cb",
        "http://:8080/cb",
        "/callback",
        "callback",
        "//app.example.com/cb",
        "myapp:/callback",  # private-use scheme without a reverse domain
        "https://app.example.com:99999/cb",
        "https://app.example.com:port/cb",
        "",
        "https://app.example.com/" + "a" * 2000,
    ],
)
def test_redirect_uri_refused(uri: str) -> None:
    with pytest.raises(OAuthError) as info:
        check_redirect_uri(uri)
    assert (info.value.status, info.value.error) == (400, "invalid_redirect_uri")


@pytest.mark.parametrize("value", [None, 42, ["https://app.example.com/cb"], {"uri": "x"}])
def test_redirect_uri_that_is_not_a_string_is_refused(value: Any) -> None:
    with pytest.raises(OAuthError) as info:
        check_redirect_uri(value)
    assert (info.value.status, info.value.error) == (400, "invalid_redirect_uri")


# --- registration requests --------------------------------------------------------------------


def test_good_request_is_read() -> None:
    request = check_registration_request(good_request(client_uri="https://app.example.com", contacts=["a@b.c"]))
    assert request.redirect_uris == [CLIENT_REDIRECT]
    assert request.grant_types == ["authorization_code", "refresh_token"]
    assert request.token_endpoint_auth_method == "none"
    assert request.scope == "mcp:tools"
    assert request.application_type == "native"
    assert request.descriptive == {
        "client_name": "Test Client",
        "client_uri": "https://app.example.com",
        "contacts": ["a@b.c"],
    }


def test_defaults_for_a_minimal_request() -> None:
    request = check_registration_request({"redirect_uris": ["https://app.example.com/cb"]})
    assert request.grant_types == ["authorization_code"]
    assert request.token_endpoint_auth_method == "client_secret_basic"  # RFC 7591 §2 default
    assert request.application_type == "web"  # OIDC registration default
    assert request.scope is None
    assert request.descriptive == {}


def test_duplicate_grant_types_are_collapsed() -> None:
    request = check_registration_request(good_request(grant_types=["authorization_code", "authorization_code"]))
    assert request.grant_types == ["authorization_code"]


def test_fields_the_proxy_decides_are_not_taken_from_the_client() -> None:
    request = check_registration_request(
        good_request(jwks_uri="https://evil.example/jwks", software_statement="x.y.z", client_id="chosen")
    )
    assert request.descriptive == {"client_name": "Test Client"}


@pytest.mark.parametrize("body", [None, [], "redirect_uris", 42, ["https://app.example.com/cb"]])
def test_request_that_is_not_an_object(body: Any) -> None:
    assert_refused(body, "invalid_client_metadata")


@pytest.mark.parametrize("uris", [None, [], "https://app.example.com/cb", {"a": "b"}])
def test_missing_or_empty_redirect_uris(uris: Any) -> None:
    body = good_request()
    if uris is None:
        del body["redirect_uris"]
    else:
        body["redirect_uris"] = uris
    assert_refused(body, "invalid_redirect_uri")


def test_too_many_redirect_uris() -> None:
    uris = [f"http://127.0.0.1:{3000 + i}/cb" for i in range(MAX_REDIRECT_URIS + 1)]
    assert_refused(good_request(redirect_uris=uris), "invalid_redirect_uri")
    assert check_registration_request(good_request(redirect_uris=uris[:MAX_REDIRECT_URIS])).redirect_uris == uris[:-1]


def test_one_bad_redirect_uri_among_good_ones() -> None:
    assert_refused(good_request(redirect_uris=[CLIENT_REDIRECT, "javascript:alert(1)"]), "invalid_redirect_uri")


@pytest.mark.parametrize(
    "grant_types",
    [
        ["client_credentials"],
        ["authorization_code", "client_credentials"],
        ["refresh_token"],  # no authorization_code
        ["implicit"],
        ["password"],
        ["urn:ietf:params:oauth:grant-type:device_code"],
        "authorization_code",
        [1],
        [],
    ],
)
def test_bad_grant_types(grant_types: Any) -> None:
    assert_refused(good_request(grant_types=grant_types), "invalid_client_metadata")


@pytest.mark.parametrize("response_types", [["token"], ["code", "token"], ["id_token"], "code", []])
def test_response_types_other_than_code(response_types: Any) -> None:
    assert_refused(good_request(response_types=response_types), "invalid_client_metadata")


@pytest.mark.parametrize("method", ["private_key_jwt", "client_secret_jwt", "tls_client_auth", "", 1])
def test_bad_token_endpoint_auth_method(method: Any) -> None:
    assert_refused(good_request(token_endpoint_auth_method=method), "invalid_client_metadata")


@pytest.mark.parametrize("method", [["none"], {"none": True}])
def test_unhashable_token_endpoint_auth_method(method: Any) -> None:
    # A JSON list or object here must be a 400 like any other bad value, not an internal error.
    assert_refused(good_request(token_endpoint_auth_method=method), "invalid_client_metadata")


@pytest.mark.parametrize("scope", [["mcp:tools"], 1, {"a": 1}, True])
def test_scope_that_is_not_a_string(scope: Any) -> None:
    assert_refused(good_request(scope=scope), "invalid_client_metadata")


@pytest.mark.parametrize("application_type", ["desktop", "browser", "", 1, ["native"]])
def test_bad_application_type(application_type: Any) -> None:
    assert_refused(good_request(application_type=application_type), "invalid_client_metadata")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("client_name", "x" * 501),
        ("client_name", 42),
        ("client_uri", "https://app.example.com/" + "a" * 500),
        ("logo_uri", ["https://app.example.com/logo.png"]),
        ("tos_uri", True),
        ("policy_uri", {"href": "x"}),
        ("software_id", 7),
        ("software_version", "v" * 501),
        ("contacts", "admin@example.com"),
        ("contacts", ["admin@example.com", 5]),
    ],
)
def test_oversized_or_mistyped_descriptive_fields(name: str, value: Any) -> None:
    error = assert_refused(good_request(**{name: value}), "invalid_client_metadata")
    assert name in error.description


def test_descriptive_field_at_the_limit_is_accepted() -> None:
    assert check_registration_request(good_request(client_name="x" * 500)).descriptive["client_name"] == "x" * 500


# --- sealed client ids ------------------------------------------------------------------------


def registration(static: bool = False) -> Registration:
    return Registration(
        "upstream-123", [CLIENT_REDIRECT, "https://app.example.com/cb"], "Test Client", 1700000000, static
    )


@pytest.mark.parametrize("static", [False, True])
def test_client_id_round_trip(sealer: Sealer, static: bool) -> None:
    original = registration(static)
    assert open_client_id(sealer, seal_client_id(sealer, original)) == original


def test_client_id_does_not_reveal_the_upstream_id(sealer: Sealer) -> None:
    assert "upstream-123" not in seal_client_id(sealer, registration())


@pytest.mark.parametrize(
    "mangle", [lambda s: s[:-2], lambda s: s[:10] + ("A" if s[10] != "A" else "B") + s[11:], lambda s: "x" + s]
)
def test_tampered_client_id_is_invalid_client(sealer: Sealer, mangle: Any) -> None:
    with pytest.raises(OAuthError) as info:
        open_client_id(sealer, mangle(seal_client_id(sealer, registration())))
    assert (info.value.status, info.value.error) == (401, "invalid_client")


@pytest.mark.parametrize("client_id", ["", "upstream-123", "some-idp-client-id", "a" * 300])
def test_client_id_not_issued_here_is_invalid_client(sealer: Sealer, client_id: str) -> None:
    with pytest.raises(OAuthError) as info:
        open_client_id(sealer, client_id)
    assert (info.value.status, info.value.error) == (401, "invalid_client")


def test_client_id_from_another_key_is_invalid_client(sealer: Sealer) -> None:
    other = Sealer("another-secret-0123456789abcdefghijklmnop")
    with pytest.raises(OAuthError) as info:
        open_client_id(sealer, seal_client_id(other, registration()))
    assert info.value.error == "invalid_client"


def test_value_sealed_for_another_purpose_is_not_a_client_id(sealer: Sealer) -> None:
    state = sealer.seal("state", registration().to_payload())
    with pytest.raises(OAuthError) as info:
        open_client_id(sealer, state)
    assert info.value.error == "invalid_client"


def test_sealed_registration_with_missing_fields_is_invalid_client(sealer: Sealer) -> None:
    incomplete = sealer.seal("registration", {"u": "upstream-123"})
    with pytest.raises(OAuthError) as info:
        open_client_id(sealer, incomplete)
    assert info.value.error == "invalid_client"


# --- what goes upstream and what comes back ---------------------------------------------------


def client_request(**overrides: Any) -> ClientRequest:
    return check_registration_request(
        good_request(
            redirect_uris=[CLIENT_REDIRECT, "https://app.example.com/cb"],
            logo_uri="https://app.example.com/logo.png",
            **overrides,
        )
    )


def test_upstream_registration_names_only_the_proxy_callback() -> None:
    upstream = upstream_registration_request(client_request(), CALLBACK)
    assert upstream["redirect_uris"] == [CALLBACK]
    flat = repr(upstream)
    assert CLIENT_REDIRECT not in flat
    assert "https://app.example.com/cb" not in flat


def test_upstream_registration_keeps_the_description_and_is_a_web_client() -> None:
    upstream = upstream_registration_request(client_request(), CALLBACK)
    assert upstream["client_name"] == "Test Client"
    assert upstream["logo_uri"] == "https://app.example.com/logo.png"
    assert upstream["grant_types"] == ["authorization_code", "refresh_token"]
    assert upstream["response_types"] == ["code"]
    assert upstream["token_endpoint_auth_method"] == "none"
    assert upstream["scope"] == "mcp:tools"
    # The IdP only ever redirects to the proxy's https callback: a web client, whatever the MCP client is.
    assert upstream["application_type"] == "web"


def test_upstream_registration_omits_scope_when_the_client_named_none() -> None:
    upstream = upstream_registration_request(client_request(scope=None), CALLBACK)
    assert "scope" not in upstream


def test_registration_response_echoes_the_client_with_the_sealed_id(sealer: Sealer) -> None:
    request = client_request()
    client_id = seal_client_id(sealer, registration())
    before = int(time.time())
    response = registration_response(request, client_id, "none")
    assert response["client_id"] == client_id
    assert response["redirect_uris"] == [CLIENT_REDIRECT, "https://app.example.com/cb"]
    assert response["client_name"] == "Test Client"
    assert response["logo_uri"] == "https://app.example.com/logo.png"
    assert response["grant_types"] == ["authorization_code", "refresh_token"]
    assert response["response_types"] == ["code"]
    assert response["token_endpoint_auth_method"] == "none"
    assert response["application_type"] == "native"
    assert response["scope"] == "mcp:tools"
    assert before <= response["client_id_issued_at"] <= int(time.time())
    assert CALLBACK not in repr(response)
    assert "client_secret" not in response


def test_registration_response_passes_on_the_idp_secret_but_not_its_ids() -> None:
    answer = {
        "client_id": "upstream-123",
        "client_secret": "idp-secret",
        "client_secret_expires_at": 0,
        "redirect_uris": [CALLBACK],
        "registration_access_token": "rat",
        "registration_client_uri": "https://idp.example.com/reg/upstream-123",
    }
    response = registration_response(client_request(), "sealed-id", "client_secret_basic", answer)
    assert response["client_id"] == "sealed-id"
    assert response["client_secret"] == "idp-secret"
    assert response["client_secret_expires_at"] == 0
    assert response["redirect_uris"] == [CLIENT_REDIRECT, "https://app.example.com/cb"]
    assert response["token_endpoint_auth_method"] == "client_secret_basic"
    for leaked in ("registration_access_token", "registration_client_uri"):
        assert leaked not in response
    assert "upstream-123" not in repr(response)


@pytest.mark.parametrize("answer", [None, [], {}, {"client_id": ""}, {"client_id": 5}, {"error": "x"}])
def test_upstream_answer_without_client_id(answer: Any) -> None:
    with pytest.raises(OAuthError) as info:
        check_upstream_answer(answer)
    assert info.value.status == 502


def test_upstream_answer_with_client_id() -> None:
    assert check_upstream_answer({"client_id": "abc"})["client_id"] == "abc"
