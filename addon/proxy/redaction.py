"""Shortened secrets in the flows the proxy answers itself, for shared screens (`mcp_auth_redact`).

A request the proxy answered is never sent on, so what mitmweb keeps of it can be cut down
after the fact: Authorization values, and codes, verifiers, refresh tokens and secrets in
query strings and form bodies. Responses cannot be: the client needs the real tokens, so
the raw view of a /token answer still shows them (the addon's own views shorten them).
"""

from __future__ import annotations

from mitmproxy import http

from addon.protocol.errors import shorten

SECRET_PARAMETERS = frozenset(
    {"code", "code_verifier", "refresh_token", "access_token", "client_secret", "token", "id_token", "ticket"}
)


def redact_answered_request(request: http.Request) -> None:
    for name in ("authorization", "cookie"):
        values = request.headers.get_all(name)
        if values:
            request.headers.set_all(name, [_shorten_credentials(v) for v in values])
    query = request.query
    for name in SECRET_PARAMETERS & set(query.keys()):
        query.set_all(name, [shorten(v) for v in query.get_all(name)])
    if request.urlencoded_form:
        form = request.urlencoded_form
        for name in SECRET_PARAMETERS & set(form.keys()):
            form.set_all(name, [shorten(v) for v in form.get_all(name)])


def _shorten_credentials(value: str) -> str:
    scheme, sep, credentials = value.partition(" ")
    return f"{scheme} {shorten(credentials)}" if sep else shorten(value)
