"""Responses the proxy answers itself, with the headers every one of them needs."""

from __future__ import annotations

import time
from collections.abc import Mapping

from mitmproxy import http
from mitmproxy.net.http import status_codes

from addon.protocol.errors import OAuthError, json_body

_COMMON = {
    # Every answer here is about one client's credentials or state.
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
}
_HTML = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def make(status: int, body: bytes, headers: Mapping[str, str]) -> http.Response:
    """What `http.Response.make` makes, without its generic conversions: a third cheaper, and the
    401s and discovery documents the proxy answers on its own are its busiest answers."""
    now = time.time()
    fields = tuple(
        (name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
        for name, value in headers.items()
    )
    reason = status_codes.RESPONSES.get(status, "").encode()
    return http.Response(
        b"HTTP/1.1", status, reason, (*fields, (b"content-length", str(len(body)).encode())), body, None, now, now
    )


def json_response(status: int, document: object, headers: Mapping[str, str] | None = None) -> http.Response:
    return make(status, json_body(document), {"Content-Type": "application/json", **_COMMON, **(headers or {})})


def public_json(document: object) -> http.Response:
    """Discovery documents: public, cacheable for a short while, readable cross-origin by browser clients."""
    return public_document(json_body(document))


def public_document(body: bytes) -> http.Response:
    """`public_json` for a document serialized already."""
    return make(
        200,
        body,
        {
            "Content-Type": "application/json",
            "Cache-Control": "public, max-age=300",
            "Access-Control-Allow-Origin": "*",
            "X-Content-Type-Options": "nosniff",
        },
    )


def error_response(error: OAuthError) -> http.Response:
    return make(error.status, error.body(), {"Content-Type": "application/json", **_COMMON, **error.headers})


def oauth_error(status: int, error: str, description: str, headers: Mapping[str, str] | None = None) -> http.Response:
    return error_response(OAuthError(status, error, description, dict(headers or {})))


def html_response(status: int, page: str, headers: Mapping[str, str] | None = None) -> http.Response:
    return make(status, page.encode(), {**_COMMON, **_HTML, **(headers or {})})


def redirect(location: str, headers: Mapping[str, str] | None = None) -> http.Response:
    return make(302, b"", {"Location": location, **_COMMON, **(headers or {})})
