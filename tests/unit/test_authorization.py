"""/authorize, consent and /callback at the facade (RFC 6749 §4.1, RFC 7636, RFC 9207, RFC 8252)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from addon.protocol.authorization import (
    CODE_PURPOSE,
    STATE_PURPOSE,
    AuthorizationPageError,
    AuthorizationRequest,
    check_authorization_request,
    consent_page,
    consent_ticket,
    handle_callback,
    open_code,
    open_consent_ticket,
    redirect_uri_matches,
    seal_code,
    upstream_authorization_url,
)
from addon.protocol.errors import OAuthError
from addon.protocol.registration import Registration, seal_client_id
from addon.protocol.sealing import Sealer

ISSUER = "https://proxy.example.com"
RESOURCE = "https://proxy.example.com/mcp"
CALLBACK = "https://proxy.example.com/callback"
IDP_ISSUER = "https://idp.example.com"
IDP_AUTHORIZE = "https://idp.example.com/auth?tenant=t1"
LOOPBACK = "http://127.0.0.1:33418/callback"
WEB = "https://app.example.com/cb?app=1"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def query_of(url: str) -> dict[str, str]:
    parsed = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in parsed.values()), url
    return {k: v[0] for k, v in parsed.items()}


def without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


@pytest.fixture
def registration() -> Registration:
    return Registration("upstream-123", [LOOPBACK, WEB], "Test <Client>", 1700000000, static=False)


@pytest.fixture
def client_id(sealer: Sealer, registration: Registration) -> str:
    return seal_client_id(sealer, registration)


def authorize_query(client_id: str, **overrides: str | None) -> dict[str, str]:
    query: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": LOOPBACK,
        "state": "client-state-&=?",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "scope": "mcp:tools openid",
        "resource": RESOURCE,
    }
    query.update(overrides)
    return {k: v for k, v in query.items() if v is not None}


def check(query: dict[str, str], registration: Registration, client_id: str) -> AuthorizationRequest | str:
    return check_authorization_request(query, registration, client_id, RESOURCE, ISSUER)


# --- redirect_uri_matches ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "registered"),
    [
        (LOOPBACK, LOOPBACK),
        (WEB, WEB),
        ("com.example.app:/cb", "com.example.app:/cb"),
        ("http://127.0.0.1:50000/callback", "http://127.0.0.1:33418/callback"),
        ("http://127.0.0.1/callback", "http://127.0.0.1:33418/callback"),
        ("http://127.0.0.1:1/callback", "http://127.0.0.1/callback"),
        ("http://[::1]:9999/cb", "http://[::1]:8080/cb"),
        ("http://localhost:9999/cb", "http://localhost:3000/cb"),
        ("http://127.0.0.1:5000/cb?x=1", "http://127.0.0.1:4000/cb?x=1"),
    ],
)
def test_redirect_uri_matches(requested: str, registered: str) -> None:
    assert redirect_uri_matches(requested, registered)


@pytest.mark.parametrize(
    ("requested", "registered"),
    [
        ("http://127.0.0.1:33418/other", LOOPBACK),  # path
        ("http://127.0.0.1:33418/callback/", LOOPBACK),
        ("http://127.0.0.1:33418/callback?x=1", LOOPBACK),  # query
        ("http://127.0.0.1:33418/cb?x=2", "http://127.0.0.1:33418/cb?x=1"),
        ("http://localhost:33418/callback", LOOPBACK),  # host: loopback names are not interchangeable
        ("http://[::1]:33418/callback", LOOPBACK),
        ("http://127.0.0.2:33418/callback", LOOPBACK),
        ("https://127.0.0.1:33418/callback", LOOPBACK),  # scheme
        ("https://127.0.0.1:443/cb", "https://127.0.0.1:8443/cb"),  # https keeps its port
        ("https://app.example.com:8443/cb?app=1", WEB),
        ("https://app.example.com/cb?app=2", WEB),
        ("https://APP.example.com/cb?app=1", WEB),
        ("https://evil.example/cb?app=1", WEB),
        ("http://app.example.com:8080/cb", "http://app.example.com/cb"),  # http off loopback: exact only
        ("http://127.0.0.1:33418/callback#frag", LOOPBACK),
        ("http://127.0.0.1:99999/callback", LOOPBACK),  # not a port
        ("http://127.0.0.1:x/callback", LOOPBACK),
        ("com.example.app:/other", "com.example.app:/cb"),
        ("", LOOPBACK),
    ],
)
def test_redirect_uri_does_not_match(requested: str, registered: str) -> None:
    assert not redirect_uri_matches(requested, registered)


# --- /authorize checks ------------------------------------------------------------------------


def test_unregistered_redirect_uri_is_an_error_page_never_a_redirect(
    registration: Registration, client_id: str
) -> None:
    for uri in ("https://evil.example/cb", "http://127.0.0.1:33418/other", "javascript:alert(1)"):
        with pytest.raises(AuthorizationPageError) as info:
            check(authorize_query(client_id, redirect_uri=uri, response_type="token"), registration, client_id)
        assert info.value.error == "invalid_request"


def test_missing_redirect_uri_with_several_registered_is_an_error_page(
    registration: Registration, client_id: str
) -> None:
    with pytest.raises(AuthorizationPageError):
        check(authorize_query(client_id, redirect_uri=None), registration, client_id)


def test_missing_redirect_uri_with_one_registered_uses_it(sealer: Sealer) -> None:
    single = Registration("upstream-123", [WEB], None, 1700000000, static=False)
    client_id = seal_client_id(sealer, single)
    checked = check(authorize_query(client_id, redirect_uri=None), single, client_id)
    assert isinstance(checked, AuthorizationRequest)
    assert checked.redirect_uri == WEB


def test_loopback_redirect_with_another_port_is_kept_as_requested(registration: Registration, client_id: str) -> None:
    checked = check(authorize_query(client_id, redirect_uri="http://127.0.0.1:50123/callback"), registration, client_id)
    assert isinstance(checked, AuthorizationRequest)
    assert checked.redirect_uri == "http://127.0.0.1:50123/callback"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),  # RFC 7636: absent means plain
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": "s256"}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"code_challenge": "a" * 129}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"response_type": None}, "unsupported_response_type"),
        ({"resource": "https://other.example.com/mcp"}, "invalid_target"),
        ({"resource": "https://proxy.example.com/"}, "invalid_target"),
        ({"resource": "https://proxy.example.com/mcp/tools"}, "invalid_target"),
    ],
)
def test_bad_request_redirects_the_error_to_the_client(
    registration: Registration, client_id: str, overrides: dict[str, Any], error: str
) -> None:
    result = check(authorize_query(client_id, **overrides), registration, client_id)
    assert isinstance(result, str), result
    assert without_query(result) == LOOPBACK
    params = query_of(result)
    assert params["error"] == error
    assert params["error_description"]
    assert params["state"] == "client-state-&=?"
    assert params["iss"] == ISSUER
    assert "code" not in params


def test_error_redirect_keeps_the_redirect_uris_own_query_and_omits_absent_state(
    registration: Registration, client_id: str
) -> None:
    result = check(
        authorize_query(client_id, redirect_uri=WEB, state=None, code_challenge=None), registration, client_id
    )
    assert isinstance(result, str)
    params = query_of(result)
    assert params["app"] == "1"
    assert "state" not in params
    assert params["iss"] == ISSUER


def test_good_request_passes_through(registration: Registration, client_id: str) -> None:
    query = authorize_query(client_id, prompt="consent", nonce="n-1", login_hint="alice", evil="x")
    checked = check(query, registration, client_id)
    assert isinstance(checked, AuthorizationRequest)
    assert checked.client_id == client_id
    assert checked.redirect_uri == LOOPBACK
    assert checked.state == "client-state-&=?"
    assert checked.params == {
        "scope": "mcp:tools openid",
        "resource": RESOURCE,
        "prompt": "consent",
        "nonce": "n-1",
        "login_hint": "alice",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }


def test_resource_is_added_when_missing_and_normalised(registration: Registration, client_id: str) -> None:
    for resource in (None, RESOURCE + "/"):
        checked = check(authorize_query(client_id, resource=resource), registration, client_id)
        assert isinstance(checked, AuthorizationRequest)
        assert checked.params["resource"] == RESOURCE


# --- to the IdP -------------------------------------------------------------------------------


def test_upstream_authorization_url(sealer: Sealer, registration: Registration, client_id: str) -> None:
    checked = check(authorize_query(client_id), registration, client_id)
    assert isinstance(checked, AuthorizationRequest)
    url = upstream_authorization_url(sealer, checked, IDP_AUTHORIZE, CALLBACK)
    assert without_query(url) == "https://idp.example.com/auth"
    params = query_of(url)
    assert params["tenant"] == "t1"  # the IdP endpoint's own query survives
    assert params["response_type"] == "code"
    assert params["client_id"] == "upstream-123"
    assert params["redirect_uri"] == CALLBACK
    assert params["code_challenge"] == CHALLENGE
    assert params["code_challenge_method"] == "S256"
    assert params["scope"] == "mcp:tools openid"
    assert params["resource"] == RESOURCE
    # The client's state and redirect URI travel sealed: the IdP sees neither.
    assert params["state"] != "client-state-&=?"
    sealed_state = sealer.open(STATE_PURPOSE, params["state"])
    assert sealed_state.pop("exp") > 0
    assert sealed_state == {"c": client_id, "r": LOOPBACK, "s": "client-state-&=?", "g": True}
    assert LOOPBACK not in url and "33418" not in url
    assert client_id not in url


# --- /callback --------------------------------------------------------------------------------


@pytest.fixture
def upstream_state(sealer: Sealer, registration: Registration, client_id: str) -> str:
    checked = check(authorize_query(client_id), registration, client_id)
    assert isinstance(checked, AuthorizationRequest)
    return query_of(upstream_authorization_url(sealer, checked, IDP_AUTHORIZE, CALLBACK))["state"]


def test_callback_returns_a_sealed_code_with_the_clients_state_and_our_iss(
    sealer: Sealer, client_id: str, upstream_state: str
) -> None:
    result = handle_callback(
        sealer, {"code": "idp-code-1", "state": upstream_state, "iss": IDP_ISSUER}, IDP_ISSUER, ISSUER
    )
    assert result.outcome == "code"
    assert result.client_id == client_id
    assert without_query(result.redirect_url) == LOOPBACK
    params = query_of(result.redirect_url)
    assert params["state"] == "client-state-&=?"
    assert params["iss"] == ISSUER
    assert params["code"] != "idp-code-1"
    assert "idp-code-1" not in result.redirect_url
    assert open_code(sealer, params["code"], client_id, LOOPBACK) == "idp-code-1"


def test_callback_without_iss_from_the_idp_still_carries_ours(sealer: Sealer, upstream_state: str) -> None:
    result = handle_callback(sealer, {"code": "c", "state": upstream_state}, IDP_ISSUER, ISSUER)
    assert query_of(result.redirect_url)["iss"] == ISSUER


def test_callback_passes_the_idp_error_through(sealer: Sealer, upstream_state: str) -> None:
    result = handle_callback(
        sealer,
        {"error": "access_denied", "error_description": "user said no", "state": upstream_state, "iss": IDP_ISSUER},
        IDP_ISSUER,
        ISSUER,
    )
    assert result.outcome == "access_denied"
    params = query_of(result.redirect_url)
    assert params == {
        "error": "access_denied",
        "error_description": "user said no",
        "state": "client-state-&=?",
        "iss": ISSUER,
    }


def test_callback_from_another_issuer_is_an_error_to_the_client_without_the_code(
    sealer: Sealer, upstream_state: str
) -> None:
    result = handle_callback(
        sealer, {"code": "attacker-code", "state": upstream_state, "iss": "https://evil.example"}, IDP_ISSUER, ISSUER
    )
    assert result.outcome != "code"
    params = query_of(result.redirect_url)
    assert params["error"] == "server_error"
    assert "code" not in params
    assert params["state"] == "client-state-&=?"
    assert params["iss"] == ISSUER


def test_callback_with_neither_code_nor_error(sealer: Sealer, upstream_state: str) -> None:
    result = handle_callback(sealer, {"state": upstream_state}, IDP_ISSUER, ISSUER)
    params = query_of(result.redirect_url)
    assert params["error"] == "server_error"
    assert "code" not in params


@pytest.mark.parametrize("state", [None, "", "garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
def test_callback_with_bad_or_missing_state_is_an_error_page(sealer: Sealer, state: str | None) -> None:
    query = {"code": "c"} if state is None else {"code": "c", "state": state}
    with pytest.raises(AuthorizationPageError):
        handle_callback(sealer, query, IDP_ISSUER, ISSUER)


def test_callback_with_state_sealed_for_another_purpose(sealer: Sealer, client_id: str) -> None:
    # A sealed client id (purpose "registration") must not be accepted as state.
    with pytest.raises(AuthorizationPageError):
        handle_callback(sealer, {"code": "c", "state": client_id}, IDP_ISSUER, ISSUER)


def test_callback_with_expired_state(sealer: Sealer, client_id: str) -> None:
    stale = sealer.seal(STATE_PURPOSE, {"c": client_id, "r": LOOPBACK, "s": "x"}, ttl=-1)
    with pytest.raises(AuthorizationPageError, match="expired"):
        handle_callback(sealer, {"code": "c", "state": stale}, IDP_ISSUER, ISSUER)


def test_callback_with_state_from_another_key(sealer: Sealer, client_id: str) -> None:
    other = Sealer("another-secret-0123456789abcdefghijklmnop")
    foreign = other.seal(STATE_PURPOSE, {"c": client_id, "r": "https://evil.example/cb", "s": "x"}, ttl=600)
    with pytest.raises(AuthorizationPageError):
        handle_callback(sealer, {"code": "c", "state": foreign}, IDP_ISSUER, ISSUER)


# --- codes ------------------------------------------------------------------------------------


def test_open_code_round_trip(sealer: Sealer, client_id: str) -> None:
    assert open_code(sealer, seal_code(sealer, "idp-code", client_id, LOOPBACK), client_id, LOOPBACK) == "idp-code"


def test_code_issued_to_another_client(sealer: Sealer, client_id: str, registration: Registration) -> None:
    other_client = seal_client_id(sealer, registration)  # same registration, another sealed id
    code = seal_code(sealer, "idp-code", client_id, LOOPBACK)
    with pytest.raises(OAuthError) as info:
        open_code(sealer, code, other_client, LOOPBACK)
    assert (info.value.status, info.value.error) == (400, "invalid_grant")


@pytest.mark.parametrize("redirect_uri", [None, "", "http://127.0.0.1:50000/callback", WEB])
def test_code_with_another_redirect_uri(sealer: Sealer, client_id: str, redirect_uri: str | None) -> None:
    code = seal_code(sealer, "idp-code", client_id, LOOPBACK)
    with pytest.raises(OAuthError) as info:
        open_code(sealer, code, client_id, redirect_uri)
    assert (info.value.status, info.value.error) == (400, "invalid_grant")


@pytest.mark.parametrize("purpose", [STATE_PURPOSE, "registration", "consent"])
def test_value_sealed_for_another_purpose_is_not_a_code(sealer: Sealer, client_id: str, purpose: str) -> None:
    with pytest.raises(OAuthError) as info:
        open_code(sealer, sealer.seal(purpose, {"k": "x", "c": "y", "r": LOOPBACK}), client_id, LOOPBACK)
    assert info.value.error == "invalid_grant"


def test_expired_code(sealer: Sealer, client_id: str) -> None:
    from addon.protocol.authorization import client_digest

    stale = sealer.seal(CODE_PURPOSE, {"k": "x", "c": client_digest(client_id), "r": LOOPBACK}, ttl=-1)
    with pytest.raises(OAuthError) as info:
        open_code(sealer, stale, client_id, LOOPBACK)
    assert info.value.error == "invalid_grant"


def test_code_for_a_request_without_redirect_uri_needs_none_at_the_token_endpoint(sealer: Sealer) -> None:
    single = Registration("upstream-123", [WEB], None, 1700000000, static=False)
    client_id = seal_client_id(sealer, single)
    checked = check(authorize_query(client_id, redirect_uri=None), single, client_id)
    assert isinstance(checked, AuthorizationRequest)
    state = query_of(upstream_authorization_url(sealer, checked, IDP_AUTHORIZE, CALLBACK))["state"]
    result = handle_callback(sealer, {"code": "idp-code", "state": state}, IDP_ISSUER, ISSUER)
    assert open_code(sealer, query_of(result.redirect_url)["code"], client_id, None) == "idp-code"


# --- consent ----------------------------------------------------------------------------------


def test_consent_ticket_opens_in_the_same_browser(sealer: Sealer, client_id: str) -> None:
    query = authorize_query(client_id)
    assert open_consent_ticket(sealer, consent_ticket(sealer, query, "nonce-A"), "nonce-A") == query


@pytest.mark.parametrize("nonce", ["nonce-B", "", None, "nonce-A "])
def test_consent_ticket_from_another_browser_is_refused(sealer: Sealer, client_id: str, nonce: str | None) -> None:
    ticket = consent_ticket(sealer, authorize_query(client_id), "nonce-A")
    with pytest.raises(AuthorizationPageError) as info:
        open_consent_ticket(sealer, ticket, nonce)
    assert info.value.error == "access_denied"


@pytest.mark.parametrize("ticket", ["", "garbage"])
def test_consent_ticket_that_is_not_ours(sealer: Sealer, ticket: str) -> None:
    with pytest.raises(AuthorizationPageError) as info:
        open_consent_ticket(sealer, ticket, "nonce-A")
    assert info.value.error == "invalid_request"


def test_state_is_not_a_consent_ticket(sealer: Sealer, upstream_state: str) -> None:
    with pytest.raises(AuthorizationPageError):
        open_consent_ticket(sealer, upstream_state, "nonce-A")


def test_consent_page_escapes_what_the_client_chose(sealer: Sealer, client_id: str) -> None:
    registration = Registration(
        "upstream-123", ['https://app.example.com/cb?"><script>x()</script>'], "<img src=x onerror=alert(1)>", 0, True
    )
    request = AuthorizationRequest(
        client_id,
        registration,
        registration.redirect_uris[0],
        "s",
        {"scope": "<b>all</b>", "resource": RESOURCE},
    )
    page = consent_page(request, 'ticket"value', "https://proxy.example.com/authorize/consent", RESOURCE)
    assert "<img" not in page
    assert "<script>" not in page
    assert "<b>all</b>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'value="ticket&quot;value"' in page
