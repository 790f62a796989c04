"""/token and /revoke at the facade: the client's request, rewritten into what the IdP issued."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest

from addon.protocol.authorization import seal_code
from addon.protocol.errors import OAuthError
from addon.protocol.registration import Registration, seal_client_id
from addon.protocol.sealing import Sealer
from addon.protocol.token_exchange import (
    StaticClient,
    client_authentication,
    upstream_revocation_request,
    upstream_token_request,
)

RESOURCE = "https://proxy.example.com/mcp"
CALLBACK = "https://proxy.example.com/callback"
REDIRECT = "http://127.0.0.1:33418/callback"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"


def basic(client_id: str, secret: str, encode: bool = True) -> str:
    if encode:
        client_id, secret = quote(client_id, safe=""), quote(secret, safe="")
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.fixture
def forward_client(sealer: Sealer) -> str:
    return seal_client_id(sealer, Registration("upstream-123", [REDIRECT], "App", 1700000000, static=False))


@pytest.fixture
def static_client_id(sealer: Sealer) -> str:
    return seal_client_id(sealer, Registration("static-client", [REDIRECT], "App", 1700000000, static=True))


def code_form(sealer: Sealer, client_id: str, **overrides: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": seal_code(sealer, "idp-code", client_id, REDIRECT),
        "redirect_uri": REDIRECT,
        "client_id": client_id,
        "code_verifier": VERIFIER,
        "resource": RESOURCE,
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def refused(excinfo: pytest.ExceptionInfo[OAuthError]) -> tuple[int, str]:
    return excinfo.value.status, excinfo.value.error


# --- client authentication --------------------------------------------------------------------


def test_public_client_from_the_form() -> None:
    caller = client_authentication({"client_id": "abc"}, None)
    assert (caller.client_id, caller.client_secret, caller.method) == ("abc", None, "none")


def test_secret_in_the_form() -> None:
    caller = client_authentication({"client_id": "abc", "client_secret": "s"}, None)
    assert (caller.client_id, caller.client_secret, caller.method) == ("abc", "s", "client_secret_post")


def test_basic_credentials() -> None:
    caller = client_authentication({}, basic("abc", "s3cret"))
    assert (caller.client_id, caller.client_secret, caller.method) == ("abc", "s3cret", "client_secret_basic")


def test_basic_credentials_are_url_decoded() -> None:
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64 (the MCP SDK does so).
    caller = client_authentication({}, basic("id:with/colon", "p@ss:w%rd é"))
    assert caller.client_id == "id:with/colon"
    assert caller.client_secret == "p@ss:w%rd é"


def test_basic_scheme_is_case_insensitive_and_matching_body_id_is_fine() -> None:
    header = "basic " + basic("abc", "s").split(" ", 1)[1]
    assert client_authentication({"client_id": "abc"}, header).client_id == "abc"


def test_basic_and_body_naming_different_clients() -> None:
    with pytest.raises(OAuthError) as info:
        client_authentication({"client_id": "other"}, basic("abc", "s"))
    assert refused(info) == (400, "invalid_request")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        "Digest username=x",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
    ],
)
def test_malformed_authorization_header(header: str) -> None:
    with pytest.raises(OAuthError) as info:
        client_authentication({"client_id": "abc"}, header)
    assert refused(info) == (401, "invalid_client")


@pytest.mark.parametrize("form", [{}, {"client_id": ""}, {"client_secret": "s"}])
def test_no_client_id(form: dict[str, str]) -> None:
    with pytest.raises(OAuthError) as info:
        client_authentication(form, None)
    assert refused(info) == (401, "invalid_client")


# --- authorization_code -----------------------------------------------------------------------


def test_authorization_code_is_rewritten_for_the_idp(sealer: Sealer, forward_client: str) -> None:
    request = upstream_token_request(sealer, code_form(sealer, forward_client), None, CALLBACK, RESOURCE, None)
    assert request.grant_type == "authorization_code"
    assert request.registration.upstream_client_id == "upstream-123"
    assert request.basic_auth is None
    assert request.form == {
        "grant_type": "authorization_code",
        "code": "idp-code",
        "redirect_uri": CALLBACK,
        "client_id": "upstream-123",
        "code_verifier": VERIFIER,
        "resource": RESOURCE,
    }


def test_resource_is_forced_to_ours(sealer: Sealer, forward_client: str) -> None:
    for resource in (None, RESOURCE + "/"):
        form = code_form(sealer, forward_client, resource=resource)
        request = upstream_token_request(sealer, form, None, CALLBACK, RESOURCE, None)
        assert request.form["resource"] == RESOURCE


@pytest.mark.parametrize("resource", ["https://other.example.com/mcp", "https://proxy.example.com/", ""])
def test_foreign_resource_is_invalid_target(sealer: Sealer, forward_client: str, resource: str) -> None:
    with pytest.raises(OAuthError) as info:
        upstream_token_request(
            sealer, code_form(sealer, forward_client, resource=resource), None, CALLBACK, RESOURCE, None
        )
    assert refused(info) == (400, "invalid_target")


@pytest.mark.parametrize("missing", ["code_verifier", "code"])
def test_missing_code_or_verifier_is_invalid_request(sealer: Sealer, forward_client: str, missing: str) -> None:
    for value in (None, ""):
        form = code_form(sealer, forward_client, **{missing: value})
        with pytest.raises(OAuthError) as info:
            upstream_token_request(sealer, form, None, CALLBACK, RESOURCE, None)
        assert refused(info) == (400, "invalid_request")


def test_raw_idp_code_is_not_accepted(sealer: Sealer, forward_client: str) -> None:
    with pytest.raises(OAuthError) as info:
        upstream_token_request(
            sealer, code_form(sealer, forward_client, code="idp-code"), None, CALLBACK, RESOURCE, None
        )
    assert refused(info) == (400, "invalid_grant")


def test_code_of_another_client(sealer: Sealer, forward_client: str) -> None:
    thief = seal_client_id(sealer, Registration("upstream-999", [REDIRECT], "Thief", 1700000000, static=False))
    form = code_form(sealer, forward_client)  # code sealed for forward_client
    form["client_id"] = thief
    with pytest.raises(OAuthError) as info:
        upstream_token_request(sealer, form, None, CALLBACK, RESOURCE, None)
    assert refused(info) == (400, "invalid_grant")


def test_redirect_uri_other_than_the_authorization_requests(sealer: Sealer, forward_client: str) -> None:
    form = code_form(sealer, forward_client, redirect_uri="http://127.0.0.1:1/callback")
    with pytest.raises(OAuthError) as info:
        upstream_token_request(sealer, form, None, CALLBACK, RESOURCE, None)
    assert refused(info) == (400, "invalid_grant")


def test_client_id_not_issued_here(sealer: Sealer) -> None:
    form = code_form(sealer, "upstream-123")
    with pytest.raises(OAuthError) as info:
        upstream_token_request(sealer, form, None, CALLBACK, RESOURCE, None)
    assert refused(info) == (401, "invalid_client")


# --- refresh_token and other grants -----------------------------------------------------------


def test_refresh_token(sealer: Sealer, forward_client: str) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": forward_client, "scope": "mcp:tools"}
    request = upstream_token_request(sealer, form, None, CALLBACK, RESOURCE, None)
    assert request.grant_type == "refresh_token"
    assert request.form == {
        "grant_type": "refresh_token",
        "refresh_token": "rt-1",
        "scope": "mcp:tools",
        "client_id": "upstream-123",
        "resource": RESOURCE,
    }


def test_refresh_without_token(sealer: Sealer, forward_client: str) -> None:
    with pytest.raises(OAuthError) as info:
        upstream_token_request(
            sealer, {"grant_type": "refresh_token", "client_id": forward_client}, None, CALLBACK, RESOURCE, None
        )
    assert refused(info) == (400, "invalid_request")


def test_refresh_for_a_foreign_resource(sealer: Sealer, forward_client: str) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": "rt", "client_id": forward_client, "resource": "https://x/"}
    with pytest.raises(OAuthError) as info:
        upstream_token_request(sealer, form, None, CALLBACK, RESOURCE, None)
    assert refused(info) == (400, "invalid_target")


@pytest.mark.parametrize(
    "grant_type", [None, "", "client_credentials", "password", "urn:ietf:params:oauth:grant-type:token-exchange"]
)
def test_unsupported_grant(sealer: Sealer, forward_client: str, grant_type: str | None) -> None:
    form = {"client_id": forward_client, "refresh_token": "rt"}
    if grant_type is not None:
        form["grant_type"] = grant_type
    with pytest.raises(OAuthError) as info:
        upstream_token_request(sealer, form, None, CALLBACK, RESOURCE, None)
    assert refused(info) == (400, "unsupported_grant_type")


# --- static and confidential clients ----------------------------------------------------------


def test_static_client_with_basic(sealer: Sealer, static_client_id: str) -> None:
    static = StaticClient("static-client", "static-secret", "client_secret_basic")
    form = code_form(sealer, static_client_id, client_secret="client-tries-a-secret")
    request = upstream_token_request(sealer, form, None, CALLBACK, RESOURCE, static)
    assert request.basic_auth == ("static-client", "static-secret")
    assert "client_secret" not in request.form
    assert request.form.get("client_id") in (None, "static-client")
    assert request.form["code"] == "idp-code"
    assert request.form["redirect_uri"] == CALLBACK


def test_static_client_with_post(sealer: Sealer, static_client_id: str) -> None:
    static = StaticClient("static-client", "static-secret", "client_secret_post")
    request = upstream_token_request(sealer, code_form(sealer, static_client_id), None, CALLBACK, RESOURCE, static)
    assert request.basic_auth is None
    assert request.form["client_id"] == "static-client"
    assert request.form["client_secret"] == "static-secret"


def test_public_static_client(sealer: Sealer, static_client_id: str) -> None:
    static = StaticClient("static-client", None, "none")
    form = code_form(sealer, static_client_id, client_secret="client-tries-a-secret")
    request = upstream_token_request(sealer, form, None, CALLBACK, RESOURCE, static)
    assert request.basic_auth is None
    assert request.form["client_id"] == "static-client"
    assert "client_secret" not in request.form


def test_static_registration_for_another_static_client(sealer: Sealer, static_client_id: str) -> None:
    for static in (StaticClient("reconfigured-client", "s", "client_secret_basic"), None):
        with pytest.raises(OAuthError) as info:
            upstream_token_request(sealer, code_form(sealer, static_client_id), None, CALLBACK, RESOURCE, static)
        assert refused(info) == (401, "invalid_client")


def test_forward_client_with_basic_keeps_its_secret_and_gets_the_upstream_id(
    sealer: Sealer, forward_client: str
) -> None:
    form = code_form(sealer, forward_client)
    del form["client_id"]  # the Basic header names the client
    request = upstream_token_request(
        sealer, form, basic(forward_client, "idp-issued+secret/="), CALLBACK, RESOURCE, None
    )
    assert request.basic_auth == ("upstream-123", "idp-issued+secret/=")
    assert "client_id" not in request.form
    assert "client_secret" not in request.form


def test_forward_client_with_post_keeps_its_secret_and_gets_the_upstream_id(
    sealer: Sealer, forward_client: str
) -> None:
    form = code_form(sealer, forward_client, client_secret="idp-issued-secret")
    request = upstream_token_request(sealer, form, None, CALLBACK, RESOURCE, None)
    assert request.basic_auth is None
    assert request.form["client_id"] == "upstream-123"
    assert request.form["client_secret"] == "idp-issued-secret"


def test_forward_client_is_not_given_the_static_secret(sealer: Sealer, forward_client: str) -> None:
    static = StaticClient("upstream-123", "static-secret", "client_secret_post")
    request = upstream_token_request(sealer, code_form(sealer, forward_client), None, CALLBACK, RESOURCE, static)
    assert "static-secret" not in repr(request.form)
    assert request.basic_auth is None


# --- revocation -------------------------------------------------------------------------------


def test_revocation_is_rewritten(sealer: Sealer, forward_client: str) -> None:
    form, basic_auth = upstream_revocation_request(
        sealer, {"token": "rt-1", "token_type_hint": "refresh_token", "client_id": forward_client}, None, None
    )
    assert form == {"token": "rt-1", "token_type_hint": "refresh_token", "client_id": "upstream-123"}
    assert basic_auth is None


def test_revocation_by_a_static_client(sealer: Sealer, static_client_id: str) -> None:
    static = StaticClient("static-client", "static-secret", "client_secret_basic")
    form, basic_auth = upstream_revocation_request(sealer, {"token": "t", "client_id": static_client_id}, None, static)
    assert basic_auth == ("static-client", "static-secret")
    assert form["token"] == "t"


def test_revocation_errors(sealer: Sealer, forward_client: str) -> None:
    with pytest.raises(OAuthError) as info:
        upstream_revocation_request(sealer, {"client_id": forward_client}, None, None)
    assert refused(info) == (400, "invalid_request")
    with pytest.raises(OAuthError) as info:
        upstream_revocation_request(sealer, {"token": "t", "client_id": "not-ours"}, None, None)
    assert refused(info) == (401, "invalid_client")
