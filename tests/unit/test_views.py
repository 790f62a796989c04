"""The mitmweb content views: token, metadata changes, JSON-RPC.

Flows are built as the proxy leaves them (headers, bodies, `flow.metadata`), tokens are real
JWTs signed with a generated key, and views are rendered through mitmproxy's own content view
machinery with the addon loaded, as mitmweb renders them. The last tests send flows through
the real Router against a local IdP and look at what the views make of the result.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mitmproxy import contentviews, http
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons, tflow, tutils

from addon.protocol.errors import shorten
from addon.protocol.server_metadata import ServerMetadata, facade_metadata
from addon.protocol.tokens import TokenRejected, VerifiedToken, check_report, without_signature
from addon.proxy.configuration import Configuration
from addon.proxy.router import Router
from addon.views import discovery_view, jsonrpc_view, jwt_view, render
from addon.views.content_views import ContentViews, DiscoveryView, JsonRpcView, TokenView

from .support import JsonServer, claims, public_jwk, sign

PUBLIC = "http://127.0.0.1:8000"
RESOURCE = PUBLIC + "/mcp"
IDP = "http://127.0.0.1:9000"
TOKEN_VIEW = "MCP auth: token"
DISCOVERY_VIEW = "MCP auth: metadata changes"
JSONRPC_VIEW = "MCP auth: JSON-RPC"
VIEW_NAMES = (TOKEN_VIEW, DISCOVERY_VIEW, JSONRPC_VIEW)

CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "hello-world", "arguments": {"n": 1}}}


# --- set-up ----------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def views() -> Iterator[taddons.context]:
    """mitmproxy with the Configuration addon (which declares mcp_auth_redact) and the views loaded."""
    addon = ContentViews()
    with taddons.context(Configuration(), addon) as tctx:
        yield tctx
    addon.done()


def token(key: rsa.RSAPrivateKey, **overrides: Any) -> str:
    return sign(key, claims(IDP, RESOURCE, sub="testuser", **overrides), headers={"typ": "at+jwt"})


def flow(
    stage: str | None = None,
    *,
    request_body: bytes = b"",
    request_type: str | None = "application/json",
    response_body: bytes = b"",
    response_type: str | None = "application/json",
    status: int = 200,
    path: str = "/mcp",
    authorization: str | None = None,
    **metadata: Any,
) -> http.HTTPFlow:
    f = tflow.tflow(resp=True)
    f.request.path = path
    f.request.method = "POST"
    f.request.content = request_body
    if request_type:
        f.request.headers["content-type"] = request_type
    if authorization:
        f.request.headers["authorization"] = authorization
    assert f.response is not None
    f.response.status_code = status
    f.response.content = response_body
    if response_type:
        f.response.headers["content-type"] = response_type
    if stage:
        f.metadata["mcp_auth.stage"] = stage
        f.metadata["mcp_auth.explanation"] = f"what the proxy did on {stage}"
    for name, value in metadata.items():
        f.metadata["mcp_auth." + name] = value
    return f


def show(f: http.HTTPFlow, view: str = "auto", response: bool = False) -> contentviews.ContentviewResult:
    message = f.response if response else f.request
    assert message is not None
    return contentviews.prettify_message(message, f, view_name=view)


def text(f: http.HTTPFlow, view: str, response: bool = False) -> str:
    result = show(f, view, response)
    assert result.view_name == view
    assert result.syntax_highlight != "error", result.text
    return result.text


def verified(key: rsa.RSAPrivateKey, required: tuple[str, ...] = ("mcp:tools",), **overrides: Any) -> tuple[str, list]:
    """A token and the check report the gate records for it once it verified."""
    raw = token(key, **overrides)
    c = claims(IDP, RESOURCE, sub="testuser", **overrides)
    report = check_report(
        VerifiedToken("testuser", "client-1", frozenset(c["scope"].split()), IDP, c["exp"], c), None, required
    )
    return raw, report


def refused(check: str, message: str) -> list[dict[str, Any]]:
    return check_report(None, TokenRejected(message, check))


# --- registration ----------------------------------------------------------------------------


def test_views_are_in_mitmproxys_registry_once_loaded_and_gone_after_done() -> None:
    addon = ContentViews()
    with taddons.context(Configuration(), addon):
        for name in VIEW_NAMES:
            assert name.lower() in contentviews.registry
            assert contentviews.registry[name].name == name
        assert {n.lower() for n in VIEW_NAMES} <= set(contentviews.registry.available_views())
    addon.done()
    for name in VIEW_NAMES:
        assert name.lower() not in contentviews.registry


def test_the_entry_script_lists_the_views_addon() -> None:
    import addon.mcp_auth as entry

    assert any(isinstance(a, ContentViews) for a in entry.addons)


# --- token view ------------------------------------------------------------------------------


def test_bearer_jwt_in_the_authorization_header_is_decoded_and_not_verified(
    views: taddons.context, rsa_private: rsa.RSAPrivateKey
) -> None:
    raw = token(rsa_private, exp=int(time.time()) + 192)
    f = flow(request_body=json.dumps(CALL).encode(), authorization=f"Bearer {raw}")
    result = show(f)
    assert result.view_name == TOKEN_VIEW  # chosen by itself: a Bearer JWT and no stage
    out = result.text
    assert "NOT VERIFIED — decoded only" in out
    assert "verified by the proxy" not in out
    assert '"sub": "testuser"' in out
    assert '"typ": "at+jwt"' in out
    assert "expires in 3m 1" in out  # 3m 12s, give or take the test's own run time
    assert "issued 0s ago" in out or "issued 1s ago" in out
    assert "T" in out and "Z " in out  # ISO 8601 UTC times
    assert raw in out  # redaction is off by default


def test_a_rejected_expired_token_shows_the_refusal_and_how_long_ago_it_expired(
    views: taddons.context, rsa_private: rsa.RSAPrivateKey
) -> None:
    raw = token(rsa_private, exp=int(time.time()) - 42)
    f = flow(
        "rejected",
        request_body=json.dumps(CALL).encode(),
        authorization=f"Bearer {raw}",
        response_body=b'{"error": "invalid_token"}',
        status=401,
        token=without_signature(raw),
        token_checks=refused("exp", "token expired 42 s ago"),
    )
    for response in (False, True):
        result = show(f, response=response)
        assert result.view_name == TOKEN_VIEW
        out = result.text
        assert "REFUSED by the proxy: exp: token expired 42 s ago" in out
        assert "expired 42s ago" in out or "expired 43s ago" in out
        assert "verified by the proxy" not in out
        assert "✘ FAILED" in out and "· not reached  iss" in out and "✔ passed       format" in out
        assert "signature cut off" in out or "cut off (the proxy keeps" in out


def test_an_authorized_call_whose_checks_all_passed_says_verified(
    views: taddons.context, rsa_private: rsa.RSAPrivateKey
) -> None:
    raw, report = verified(rsa_private)
    # The gate strips the Authorization header before forwarding; the token stays in the metadata.
    f = flow("authorized-call", request_body=b"", request_type=None, token=without_signature(raw), token_checks=report)
    f.request.method = "GET"
    result = show(f)
    assert result.view_name == TOKEN_VIEW  # no JSON-RPC body: the token view is the best fit
    out = result.text
    assert "✔ verified by the proxy: every check passed" in out
    assert "NOT VERIFIED" not in out and "REFUSED" not in out
    assert "expires in 4m" in out or "expires in 5m" in out
    assert "scopes     mcp:tools" in out


def test_verified_then_expired_since_says_both(views: taddons.context, rsa_private: rsa.RSAPrivateKey) -> None:
    raw, report = verified(rsa_private, exp=int(time.time()) - 600)
    out = text(flow("authorized-call", token=without_signature(raw), token_checks=report), TOKEN_VIEW)
    assert "verified by the proxy" in out
    assert "it has expired 10m" in out


def test_a_failed_scope_check_is_a_refusal_not_a_verification(
    views: taddons.context, rsa_private: rsa.RSAPrivateKey
) -> None:
    raw, report = verified(rsa_private, required=("mcp:tools", "mcp:admin"))
    out = text(flow("rejected", token=without_signature(raw), token_checks=report), TOKEN_VIEW)
    assert "REFUSED by the proxy: scopes: missing mcp:admin" in out
    assert "✔ verified" not in out


@pytest.mark.parametrize(
    "checks", [None, [], [{"check": "format", "ok": True, "detail": "x"}, {"check": "exp", "ok": None}]]
)
def test_a_token_without_a_complete_record_of_checks_is_not_verified(
    views: taddons.context, rsa_private: rsa.RSAPrivateKey, checks: Any
) -> None:
    raw = token(rsa_private)
    f = flow("rejected", token=without_signature(raw))
    if checks is not None:
        f.metadata["mcp_auth.token_checks"] = checks
    out = text(f, TOKEN_VIEW)
    assert "NOT VERIFIED — decoded only" in out
    assert "verified by the proxy" not in out


def test_a_token_response_is_decoded_but_never_called_verified(
    views: taddons.context, rsa_private: rsa.RSAPrivateKey
) -> None:
    access = token(rsa_private)
    id_token = sign(rsa_private, {"iss": IDP, "sub": "testuser", "aud": "client-1", "nonce": "n-1", "exp": 2, "iat": 1})
    refresh = sign(rsa_private, {"typ": "Refresh", "sub": "testuser", "exp": int(time.time()) + 1800})
    answer = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "mcp:tools",
        "id_token": id_token,
        "refresh_token": refresh,
    }
    f = flow(
        "token",
        path="/token",
        request_type="application/x-www-form-urlencoded",
        request_body=b"grant_type=authorization_code&code=abc",
        response_body=json.dumps(answer).encode(),
    )
    result = show(f, response=True)
    assert result.view_name == TOKEN_VIEW
    out = result.text
    assert out.count("NOT VERIFIED — decoded only") == 3
    assert "verified by the proxy" not in out
    assert "the proxy passes the IdP's answer on without checking" in out
    assert "an id_token is for the client" in out
    assert "a refresh token goes back to the IdP" in out
    assert '"nonce": "n-1"' in out and '"typ": "Refresh"' in out
    assert "1970-01-01T00:00:02Z" in out and "expired " in out
    assert "expires_in 3600: the access token is good for 1h 0m" in out
    assert "scope granted: mcp:tools" in out


def test_an_opaque_refresh_token_is_said_to_be_opaque(views: taddons.context, rsa_private: rsa.RSAPrivateKey) -> None:
    answer = {"access_token": token(rsa_private), "token_type": "Bearer", "refresh_token": "r3fr3sh-0paque-v4lue-123"}
    out = text(flow("token", response_body=json.dumps(answer).encode()), TOKEN_VIEW, response=True)
    assert "refresh_token (in the body)" in out
    assert "opaque: not a JWT" in out
    assert "r3fr3sh-0paque-v4lue-123" in out


def test_the_token_request_form_and_basic_client_authentication(views: taddons.context) -> None:
    import base64

    basic = base64.b64encode(b"client-1:s3cret-client-password").decode()
    body = b"grant_type=authorization_code&code=the-code-0123456789&code_verifier=verifier-0123456789abcdef"
    f = flow(
        "token",
        path="/token",
        request_type="application/x-www-form-urlencoded",
        request_body=body,
        authorization=f"Basic {basic}",
    )
    result = show(f)
    assert result.view_name == TOKEN_VIEW  # beats mitmproxy's form view on token flows
    out = result.text
    assert "client_id client-1, client_secret s3cret-client-password" in out
    assert "code = the-code-0123456789" in out
    views.options.update(mcp_auth_redact=True)
    out = text(f, TOKEN_VIEW)
    for secret_value in ("s3cret-client-password", "the-code-0123456789", "verifier-0123456789abcdef", basic):
        assert secret_value not in out
    assert "client_id client-1" in out and f"client_secret {shorten('s3cret-client-password')}" in out


def test_a_jwt_with_bad_base64_is_shown_as_malformed(views: taddons.context) -> None:
    bad = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIi!!!.c2ln"
    out = text(flow(authorization=f"Bearer {bad}", token=bad), TOKEN_VIEW)
    assert "malformed JWT" in out
    assert "claims: bad base64url" in out
    assert "NOT VERIFIED" in out
    decoded = jwt_view.decode_jwt("eyJhbGciOiJSUzI1NiJ9.e.sig")
    assert decoded.form == "malformed JWT" and "impossible" not in " ".join(decoded.problems)


def test_decode_jwt_forms() -> None:
    assert jwt_view.decode_jwt("opaque-token-value").form == "opaque"
    assert jwt_view.decode_jwt(None).form == "opaque"
    jwe = jwt_view.decode_jwt("eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d")
    assert jwe.form == "JWE" and jwe.header == {"alg": "RSA-OAEP", "enc": "A256GCM"}
    unsigned = jwt_view.decode_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
    assert unsigned.claims == {"sub": "x"} and any('alg "none"' in p for p in unsigned.problems)


def test_relative_times_and_durations() -> None:
    assert render.relative_time("exp", 1000 + 192, 1000) == "expires in 3m 12s"
    assert render.relative_time("exp", 1000 - 42, 1000) == "expired 42s ago"
    assert render.relative_time("nbf", 1100, 1000) == "not valid for another 1m 40s"
    assert render.relative_time("auth_time", 1000 - 7200, 1000) == "user logged in 2h 0m ago"
    assert render.relative_time("exp", "soon", 1000).startswith("not a NumericDate")
    assert render.duration(3 * 86400 + 5) == "3d 0h"
    assert render.iso_time(0) == "1970-01-01T00:00:00Z"
    assert "out of range" in render.iso_time(1e20)
    assert "not a NumericDate" in render.iso_time(True)


# --- discovery view --------------------------------------------------------------------------

IDP_METADATA = {
    "issuer": IDP,
    "authorization_endpoint": IDP + "/auth",
    "token_endpoint": IDP + "/token",
    "registration_endpoint": IDP + "/reg",
    "jwks_uri": IDP + "/jwks",
    "introspection_endpoint": IDP + "/token/introspection",
    "pushed_authorization_request_endpoint": IDP + "/request",
    "response_types_supported": ["code", "id_token", "code id_token"],
    "code_challenge_methods_supported": ["S256"],
    "scopes_supported": ["openid", "offline_access", "mcp:tools"],
    "claims_parameter_supported": False,
}


def as_metadata_flow(**metadata: Any) -> http.HTTPFlow:
    facade = facade_metadata(
        ServerMetadata(IDP_METADATA, IDP + "/.well-known/openid-configuration"), PUBLIC, ["mcp:tools"], False
    )
    f = flow(
        "as-metadata",
        path="/.well-known/oauth-authorization-server",
        request_type=None,
        response_body=json.dumps(facade.document).encode(),
        **metadata,
    )
    f.request.method = "GET"
    return f


def test_metadata_changes_list_rewritten_removed_added_and_unchanged_fields(views: taddons.context) -> None:
    f = as_metadata_flow(metadata_source={"url": IDP + "/.well-known/openid-configuration", "document": IDP_METADATA})
    result = show(f, response=True)
    assert result.view_name == DISCOVERY_VIEW
    out = result.text
    assert f"the IdP's original: {IDP}/.well-known/openid-configuration" in out
    rewritten = out[out.index("rewritten (") : out.index("removed (")]
    assert f"  authorization_endpoint\n      {IDP}/auth\n    → {PUBLIC}/authorize" in rewritten
    assert f"      {IDP}\n    → {PUBLIC}\n" in rewritten  # issuer
    assert "now at the proxy" in rewritten
    assert 'dropped ["offline_access"]' in rewritten or "offline_access" in rewritten
    removed = out[out.index("removed (") : out.index("added (")]
    assert f"introspection_endpoint: {IDP}/token/introspection\n      why: would bypass the proxy" in removed
    assert "pushed_authorization_request_endpoint" in removed
    assert "claims_parameter_supported: false\n      why: not offered through the proxy" in removed
    added = out[out.index("added (") : out.index("unchanged (")]
    assert "authorization_response_iss_parameter_supported: true" in added and "RFC 9207" in added
    unchanged = out[out.index("unchanged (") :]
    assert "jwks_uri" in unchanged and "code_challenge_methods_supported" in unchanged
    assert show(f).view_name != DISCOVERY_VIEW  # the GET request has nothing to compare


def test_metadata_diff_as_a_function() -> None:
    diff = discovery_view.metadata_diff({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4})
    assert diff.rewritten == [("b", 2, 5)] and diff.removed == [("c", 3)]
    assert diff.added == [("d", 4)] and diff.unchanged == ["a"]


def test_as_metadata_without_a_recorded_source_or_with_an_error(views: taddons.context) -> None:
    out = text(as_metadata_flow(), DISCOVERY_VIEW, response=True)
    assert "recorded no IdP original" in out
    f = flow("as-metadata", status=503, response_body=b'{"error": "temporarily_unavailable", "error_description": "x"}')
    out = text(f, DISCOVERY_VIEW, response=True)
    assert "HTTP 503: temporarily_unavailable — x" in out


def test_protected_resource_metadata_is_annotated(views: taddons.context) -> None:
    prm = {
        "resource": RESOURCE,
        "authorization_servers": [PUBLIC],
        "scopes_supported": ["mcp:tools"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Demo",
        "x_custom": 1,
    }
    f = flow(
        "resource-metadata", path="/.well-known/oauth-protected-resource/mcp", response_body=json.dumps(prm).encode()
    )
    result = show(f, response=True)
    assert result.view_name == DISCOVERY_VIEW
    out = result.text
    assert f"resource: {RESOURCE}\n      the MCP server's identifier" in out
    assert "its issuer must equal this string exactly" in out
    assert "the proxy refuses ?access_token=" in out
    assert "x_custom: 1\n      not a field this proxy sets" in out
    assert f"  {PUBLIC}/.well-known/oauth-authorization-server" in out


# --- JSON-RPC view ---------------------------------------------------------------------------


def test_a_tools_call_on_an_authorized_call_gets_the_jsonrpc_view(
    views: taddons.context, rsa_private: rsa.RSAPrivateKey
) -> None:
    raw, report = verified(rsa_private)
    answer = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "Hello, joe!"}]}}
    f = flow(
        "authorized-call",
        request_body=json.dumps(CALL).encode(),
        response_body=json.dumps(answer).encode(),
        token=without_signature(raw),
        token_checks=report,
    )
    f.request.headers["mcp-session-id"] = "session-abc"
    result = show(f)
    assert result.view_name == JSONRPC_VIEW
    assert 'request #7 tools/call "hello-world"' in result.text
    assert "token: ✔ verified by the proxy; sub testuser" in result.text
    assert "mcp-session-id: session-abc" in result.text
    result = show(f, response=True)
    assert result.view_name == JSONRPC_VIEW
    assert 'result #7: text "Hello, joe!"' in result.text
    assert 'in reply to: request #7 tools/call "hello-world"' in result.text


def test_batches_notifications_and_errors_are_summarized() -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 2, "error": {"code": -32601, "message": "Method not found"}},
        {"jsonrpc": "2.0", "id": 3, "result": {"tools": [{"name": "a"}, {"name": "b"}]}},
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "clientInfo": {"name": "cli"}},
        },
    ]
    out = jsonrpc_view.jsonrpc_view(
        render.MessageContext(body=json.dumps(batch).encode(), content_type="application/json")
    )
    assert "batch of 5:" in out
    assert "[0] notification notifications/initialized" in out
    assert "[1] request #1 tools/list" in out
    assert "[2] error #2 -32601 method not found: Method not found" in out
    assert "[3] result #3: 2 tools (a, b)" in out
    assert "[4] request #4 initialize protocol 2025-11-25, client cli" in out


def test_an_event_stream_is_split_one_event_each_with_summaries(views: taddons.context) -> None:
    stream = (
        b": stream open\n\n"
        b'event: message\nid: 41\ndata: {"jsonrpc":"2.0","method":"notifications/progress",'
        b'"params":{"progress":1,"total":2}}\n\n'
        b'id: 42\ndata: {"jsonrpc":"2.0","id":7,\ndata: "result":{"content":[{"type":"text","text":"done"}]}}\r\n\r\n'
        b"data: plain words\n\n"
        b'data: {"jsonrpc":"2.0","id":8,"res'
    )
    f = flow(
        "authorized-call",
        request_body=json.dumps(CALL).encode(),
        response_body=stream,
        response_type="text/event-stream",
    )
    result = show(f, response=True)
    assert result.view_name == JSONRPC_VIEW
    out = result.text
    assert "text/event-stream: 5 events" in out
    assert "event 1: comment" in out and ": stream open" in out
    assert "event 2: message, id 41" in out and "notification notifications/progress 1/2" in out
    assert "event 3: message, id 42" in out and 'result #7: text "done"' in out  # data lines joined
    assert "event 4: message" in out and "plain words" in out
    assert "event 5: message, INCOMPLETE" in out and '{"jsonrpc":"2.0","id":8,"res' in out


def test_split_events_follows_the_sse_rules() -> None:
    events = jsonrpc_view.split_events("retry: 10\nevent: x\ndata:a\ndata: b\nbogus\n\n\n\nid: 1\n")
    assert [(e.event, e.data, e.retry, e.complete) for e in events] == [
        ("x", ["a", "b"], "10", True),
        (None, [], None, False),
    ]
    assert events[0].others == ["bogus"] and events[1].id == "1"


def test_jsonrpc_view_degrades_to_text(views: taddons.context) -> None:
    f = flow("authorized-call", request_body=b'{"jsonrpc": "2.0", "id": 1, "meth')
    out = text(f, JSONRPC_VIEW)
    assert "not valid JSON" in out and '"meth' in out
    out = text(flow(request_body=b'{"just": "json"}'), JSONRPC_VIEW)
    assert "JSON, but not JSON-RPC" in out


def test_priorities(views: taddons.context, rsa_private: rsa.RSAPrivateKey) -> None:
    call = json.dumps(CALL).encode()
    # JSON-RPC outside the MCP stage still beats mitmproxy's JSON view, but not the token view on refusals.
    assert show(flow(request_body=call)).view_name == JSONRPC_VIEW
    assert show(flow("rejected", request_body=call)).view_name == TOKEN_VIEW
    assert show(flow("challenge", request_body=call)).view_name == JSONRPC_VIEW
    # Plain JSON on a stage none of the views is for: mitmproxy's own view.
    registration = flow("registration", path="/register", request_body=b'{"client_name": "x"}')
    assert show(registration).view_name not in VIEW_NAMES
    assert show(flow("resource-metadata", response_body=b"{}"), response=True).view_name == DISCOVERY_VIEW
    ctx = render.MessageContext(body=b'{"a": 1}', content_type="application/json")
    assert jwt_view.token_priority(ctx) == 0 and jsonrpc_view.jsonrpc_priority(ctx) == 0
    assert discovery_view.discovery_priority(ctx) == 0
    sse = render.MessageContext(
        body=b"",
        content_type="text/event-stream",
        is_request=False,
        flow_metadata={"mcp_auth.stage": "authorized-call"},
    )
    assert jsonrpc_view.jsonrpc_priority(sse) > jwt_view.token_priority(sse) > 1


# --- redaction -------------------------------------------------------------------------------


def test_redaction_shortens_every_token_in_a_token_answer_and_is_off_by_default(
    views: taddons.context, rsa_private: rsa.RSAPrivateKey
) -> None:
    access = token(rsa_private)
    id_token = sign(rsa_private, {"sub": "testuser", "aud": "client-1"})
    answer = {
        "access_token": access,
        "token_type": "Bearer",
        "id_token": id_token,
        "refresh_token": "opaque-refresh-token-value-0123456789",
    }
    f = flow("token", response_body=json.dumps(answer).encode())
    out = text(f, TOKEN_VIEW, response=True)
    assert access in out and id_token in out and "opaque-refresh-token-value-0123456789" in out
    views.options.update(mcp_auth_redact=True)
    for view in VIEW_NAMES:
        out = text(f, view, response=True)
        for secret_value in (access, id_token, "opaque-refresh-token-value-0123456789"):
            assert secret_value not in out, view
        assert shorten(access) in out
    assert '"sub": "testuser"' in text(f, TOKEN_VIEW, response=True)  # the claims are still there


def test_redaction_covers_registration_answers_in_every_view(views: taddons.context) -> None:
    answer = {
        "client_id": "Ab-2XcTdI",
        "client_secret": "client-secret-0123456789abcdef",
        "registration_access_token": "rat-0123456789abcdefghij",
        "redirect_uris": ["http://127.0.0.1:1/cb"],
    }
    whole = json.dumps(answer).encode()
    truncated = whole[: whole.index(b"abcdefghij") + 4]  # cut inside registration_access_token's value
    views.options.update(mcp_auth_redact=True)
    for body in (json.dumps(answer).encode(), truncated):
        f = flow("registration", path="/register", response_body=body, status=201)
        for view in VIEW_NAMES:
            out = text(f, view, response=True)
            assert "client-secret-0123456789abcdef" not in out, view
            assert "rat-0123456789abcdefghij" not in out, view
            assert "Ab-2XcTdI" in out


def test_redaction_of_the_stored_and_header_tokens(views: taddons.context, rsa_private: rsa.RSAPrivateKey) -> None:
    raw, report = verified(rsa_private)
    f = flow(
        "rejected",
        authorization=f"Bearer {raw}",
        token=without_signature(raw),
        token_checks=report,
        request_body=json.dumps(CALL).encode(),
    )
    views.options.update(mcp_auth_redact=True)
    for view in VIEW_NAMES:
        for response in (False, True):
            out = text(f, view, response=response)
            assert raw not in out and without_signature(raw) not in out
            assert raw.split(".")[1] not in out, view  # not even the claims segment


def test_a_header_the_proxy_already_shortened_is_decoded_from_the_kept_copy(
    views: taddons.context, rsa_private: rsa.RSAPrivateKey
) -> None:
    raw = token(rsa_private)
    # With mcp_auth_redact the proxy cuts down the Authorization header of requests it answered itself.
    f = flow(
        "rejected",
        authorization=f"Bearer {shorten(raw)}",
        token=without_signature(raw),
        token_checks=refused("aud", "token audience 'x' is not this resource"),
    )
    out = text(f, TOKEN_VIEW)
    assert "shortened by mcp_auth_redact after the proxy answered; decoded below from the copy the proxy kept" in out
    assert '"sub": "testuser"' in out and "REFUSED by the proxy: aud: token audience" in out


def test_redaction_reaches_tokens_inside_mcp_messages(views: taddons.context, rsa_private: rsa.RSAPrivateKey) -> None:
    raw = token(rsa_private)
    answer = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": f"your token: {raw}"}]}}
    stream = b"data: " + json.dumps(answer).encode() + b"\n\ndata: not json " + raw.encode() + b"\n\n"
    f = flow(
        "authorized-call",
        request_body=json.dumps(CALL).encode(),
        response_body=stream,
        response_type="text/event-stream",
    )
    assert raw in text(f, JSONRPC_VIEW, response=True)
    views.options.update(mcp_auth_redact=True)
    for view in VIEW_NAMES:
        assert raw not in text(f, view, response=True), view


def test_redaction_reads_off_without_loaded_options() -> None:
    from mitmproxy import ctx

    from addon.views import content_views

    saved = ctx.__dict__.pop("options", None)
    try:
        assert content_views.redaction_on() is False
    finally:
        if saved is not None:
            ctx.options = saved


# --- never raise -----------------------------------------------------------------------------

GARBAGE_BODIES = [
    b"",
    bytes(range(256)) * 4,
    b"\xff\xfe\x00garbage",
    b'{"access_token": "eyJhbGciOi',
    b'{"access_token": "eyJ!!!.###.x", "id_token": 5, "refresh_token": null}',
    b"[" * 100_000,
    b'{"jsonrpc": "2.0", "id": {"deep": [[[[]]]]}, "result": [1, 2]}',
    b'data: {"jsonrpc"\r\n\r\ndata: \xff\n\n:\n',
    b'{"issuer": 5, "authorization_servers": "nope"}',
    b"[1, 2, 3]",
    b'"a string"',
]
GARBAGE_METADATA: list[dict[str, Any]] = [
    {},
    {"mcp_auth.stage": "token", "mcp_auth.token": 12345, "mcp_auth.token_checks": "garbage"},
    {"mcp_auth.stage": "rejected", "mcp_auth.token": "a.b.c", "mcp_auth.token_checks": [1, None, {"ok": "x"}]},
    {"mcp_auth.stage": "as-metadata", "mcp_auth.metadata_source": "x"},
    {"mcp_auth.stage": "as-metadata", "mcp_auth.metadata_source": {"document": [1], "url": None}},
    {"mcp_auth.stage": "resource-metadata"},
    {"mcp_auth.stage": "authorized-call", "mcp_auth.token": "eyJ.eyJ.", "mcp_auth.explanation": 5},
    {"mcp_auth.stage": "no-such-stage"},
]


@pytest.mark.parametrize("body", GARBAGE_BODIES, ids=range(len(GARBAGE_BODIES)))
def test_no_view_raises_on_garbage(views: taddons.context, body: bytes) -> None:
    for redact in (False, True):
        views.options.update(mcp_auth_redact=redact)
        for meta in GARBAGE_METADATA:
            for content_type in ("application/json", "text/event-stream", "application/x-www-form-urlencoded", None):
                f = flow(
                    request_body=body,
                    request_type=content_type,
                    response_body=body,
                    response_type=content_type,
                    authorization="Bearer eyJ!!.x.y",
                )
                f.metadata.update(meta)
                for message in (f.request, f.response):
                    assert message is not None
                    metadata = contentviews.make_metadata(message, f)
                    for view in (TokenView(), DiscoveryView(), JsonRpcView()):
                        rendered = view.prettify(body, metadata)
                        assert isinstance(rendered, str) and rendered
                        assert "could not render" not in rendered, (view.name, meta, content_type)
                        assert isinstance(view.render_priority(body, metadata), float)


def test_huge_bodies_are_cut_not_choked_on(views: taddons.context) -> None:
    body = b'{"access_token": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    views.options.update(mcp_auth_redact=True)
    for content_type in ("application/json", "text/event-stream"):
        f = flow("token", response_body=body, response_type=content_type)
        for view in VIEW_NAMES:
            out = text(f, view, response=True)
            assert len(out) < 64 * 1024, view
            assert "xxxxxxxxxxxxxxxx" not in out  # the "token" is shortened even in the raw text


def test_views_work_without_a_flow() -> None:
    metadata = contentviews.Metadata(content_type="application/json")
    for view in (TokenView(), DiscoveryView(), JsonRpcView()):
        assert isinstance(view.prettify(b'{"jsonrpc": "2.0", "id": 1, "result": {}}', metadata), str)
        assert view.render_priority(b"{}", metadata) == 0


# --- through the real proxy ------------------------------------------------------------------


@pytest.fixture
async def proxy(server: JsonServer, rsa_private: rsa.RSAPrivateKey, tmp_path: Path) -> AsyncIterator[Router]:
    server.serve(
        "/.well-known/openid-configuration",
        {
            **IDP_METADATA,
            **{k: v.replace(IDP, server.url) if isinstance(v, str) else v for k, v in IDP_METADATA.items()},
        },
    )
    server.serve("/jwks", {"keys": [public_jwk(rsa_private, "k1", "RS256")]})
    path = tmp_path / "config.yaml"
    path.write_text(
        f"public_url: {PUBLIC}\nmcp_path: /mcp\nmode: facade\nissuer: {server.url}\nscopes: [mcp:tools]\n"
        "secret_key: unit-test-secret-key-0123456789abcdefghij\nclock_skew_seconds: 0\n"
    )
    config = Configuration()
    router = Router(config)
    addon = ContentViews()
    with taddons.context(proxyserver.Proxyserver(), config, router, addon) as tctx:
        tctx.configure(config, mode=["reverse:http://127.0.0.1:3000"], mcp_auth_config=str(path))
        yield router
        await config.done()
    addon.done()


def mcp_request(raw: str | None, body: bytes = b"", method: str = "POST", path: str = "/mcp") -> http.HTTPFlow:
    headers = [(b"Host", b"127.0.0.1:3000"), (b"Content-Type", b"application/json")]
    if raw:
        headers.append((b"Authorization", f"Bearer {raw}".encode()))
    req = tutils.treq(
        method=method.encode(),
        path=path.encode(),
        host="127.0.0.1",
        port=3000,
        headers=http.Headers(headers),
        content=body,
    )
    return tflow.tflow(req=req)


@pytest.mark.anyio
async def test_through_the_proxy_refused_and_authorized_tokens(
    proxy: Router, server: JsonServer, rsa_private: rsa.RSAPrivateKey
) -> None:
    expired = sign(rsa_private, claims(server.url, RESOURCE, sub="testuser", exp=int(time.time()) - 42))
    f = mcp_request(expired, json.dumps(CALL).encode())
    await proxy.request(f)
    assert f.metadata["mcp_auth.stage"] == "rejected"
    result = show(f, response=True)
    assert result.view_name == TOKEN_VIEW
    # The rendering runs a moment after signing: a second boundary may pass in between.
    assert "REFUSED by the proxy: exp: token expired" in result.text
    assert "expired 42s ago" in result.text or "expired 43s ago" in result.text

    good = sign(rsa_private, claims(server.url, RESOURCE, sub="testuser"))
    f = mcp_request(good, json.dumps(CALL).encode())
    await proxy.request(f)
    assert f.metadata["mcp_auth.stage"] == "authorized-call" and "authorization" not in f.request.headers
    assert "verified by the proxy" in text(f, TOKEN_VIEW)
    assert 'tools/call "hello-world"' in show(f).text


@pytest.mark.anyio
async def test_through_the_proxy_metadata_changes(proxy: Router, server: JsonServer) -> None:
    f = mcp_request(None, method="GET", path="/.well-known/oauth-authorization-server")
    await proxy.request(f)
    assert f.response is not None and f.metadata["mcp_auth.stage"] == "as-metadata"
    result = show(f, response=True)
    assert result.view_name == DISCOVERY_VIEW
    assert f"  token_endpoint\n      {server.url}/token\n    → {PUBLIC}/token" in result.text
    assert "introspection_endpoint" in result.text and "would bypass the proxy" in result.text


def test_registration_answers_get_the_shortening_view_only_on_shared_screens() -> None:
    answer = json.dumps({"client_id": "c", "client_secret": "s3cr3t-0123456789abcdef"}).encode()
    metadata = {"mcp_auth.stage": "registration"}
    plain = render.MessageContext(body=answer, content_type="application/json", is_request=False,
                                  flow_metadata=metadata)
    shared = render.MessageContext(body=answer, content_type="application/json", is_request=False,
                                   flow_metadata=metadata, redact=True)
    assert jwt_view.token_priority(plain) == 0
    assert jwt_view.token_priority(shared) == 3
