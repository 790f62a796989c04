"""Responses the proxy answers itself, with the headers every one of them needs."""

from __future__ import annotations

from collections.abc import Mapping

from mitmproxy import http

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


def json_response(status: int, document: object, headers: Mapping[str, str] | None = None) -> http.Response:
    return http.Response.make(
        status, json_body(document), {"Content-Type": "application/json", **_COMMON, **(headers or {})}
    )


def public_json(document: object) -> http.Response:
    """Discovery documents: public, cacheable for a short while, readable cross-origin by browser clients."""
    return http.Response.make(
        200,
        json_body(document),
        {
            "Content-Type": "application/json",
            "Cache-Control": "public, max-age=300",
            "Access-Control-Allow-Origin": "*",
            "X-Content-Type-Options": "nosniff",
        },
    )


def error_response(error: OAuthError) -> http.Response:
    return http.Response.make(
        error.status, error.body(), {"Content-Type": "application/json", **_COMMON, **error.headers}
    )


def oauth_error(status: int, error: str, description: str, headers: Mapping[str, str] | None = None) -> http.Response:
    return error_response(OAuthError(status, error, description, dict(headers or {})))


def html_response(status: int, page: str, headers: Mapping[str, str] | None = None) -> http.Response:
    return http.Response.make(status, page.encode(), {**_COMMON, **_HTML, **(headers or {})})


def redirect(location: str, headers: Mapping[str, str] | None = None) -> http.Response:
    return http.Response.make(302, b"", {"Location": location, **_COMMON, **(headers or {})})
