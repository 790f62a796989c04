"""mcp_auth_redact: what mitmweb keeps of requests the proxy answered itself is cut down."""

from __future__ import annotations

from mitmproxy.test import tutils

from addon.proxy.redaction import redact_answered_request

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0dXNlciJ9.c2lnbmF0dXJlLXRoYXQtaXMtc2VjcmV0"


def test_authorization_header_is_shortened_keeping_the_scheme() -> None:
    request = tutils.treq(path=b"/mcp", headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
    redact_answered_request(request)
    value = request.headers["authorization"]
    assert value.startswith("Bearer eyJhbG")
    assert TOKEN not in value
    assert len(value) < 30


def test_secret_form_fields_are_shortened_and_others_kept() -> None:
    request = tutils.treq(
        method=b"POST", path=b"/token", headers=[(b"content-type", b"application/x-www-form-urlencoded")],
        content=b"grant_type=refresh_token&refresh_token=RT-0123456789abcdefghij&client_secret=very-secret-value-123",
    )
    redact_answered_request(request)
    form = request.urlencoded_form
    assert form["grant_type"] == "refresh_token"
    assert "0123456789abcdefghij" not in form["refresh_token"]
    assert "very-secret-value-123" not in form["client_secret"]


def test_codes_in_the_query_are_shortened() -> None:
    request = tutils.treq(path=b"/callback?code=CODE-abcdefghijklmnopqrstuvwxyz&state=s1")
    redact_answered_request(request)
    assert "abcdefghijklmnopqrstuvwxyz" not in request.query["code"]
    assert request.query["state"] == "s1"
