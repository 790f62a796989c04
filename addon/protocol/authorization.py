"""The facade's authorization endpoint, consent and callback (RFC 6749 §4.1, RFC 7636, RFC 9207, RFC 8252).

The client's redirect_uri and state travel inside the upstream `state`, sealed; the IdP's
code travels back to the client inside a sealed code that names the client and redirect
URI it was issued for, so /token can check both (RFC 6749 §4.1.3) without a store.
"""

from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from addon.protocol.errors import OAuthError
from addon.protocol.registration import Registration, is_loopback_host
from addon.protocol.sealing import Sealer, SealError

STATE_PURPOSE = "state"
CODE_PURPOSE = "code"
CONSENT_PURPOSE = "consent"
STATE_TTL = 600  # a person logging in at the IdP
CODE_TTL = 600  # the IdP's own code lifetime is shorter and still applies
CONSENT_TTL = 600

# Parameters a client may send that the IdP should see unchanged.
_PASSED_THROUGH = ("scope", "resource", "prompt", "login_hint", "ui_locales", "max_age", "acr_values", "nonce")


class AuthorizationPageError(Exception):
    """An /authorize or /callback request that must not redirect anywhere (RFC 6749 §4.1.2.1).

    The client_id or redirect_uri cannot be trusted, so the user gets an error page.
    """

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def redirect_uri_matches(requested: str, registered: str) -> bool:
    """Exact match, except that a loopback http redirect may use any port (RFC 8252 §7.3)."""
    if requested == registered:
        return True
    try:
        a, b = urlsplit(requested), urlsplit(registered)
        _ = (a.port, b.port)  # urlsplit is lazy about ports: make a bad one fail here
    except ValueError:
        return False
    return (
        a.scheme == b.scheme == "http"
        and is_loopback_host(b.hostname)
        and a.hostname == b.hostname
        and a.path == b.path
        and a.query == b.query
        and not a.fragment
    )


def choose_redirect_uri(registration: Registration, requested: str | None) -> str:
    if requested is None:
        if len(registration.redirect_uris) == 1:
            return registration.redirect_uris[0]
        raise AuthorizationPageError("invalid_request", "redirect_uri is required: the client registered several")
    if any(redirect_uri_matches(requested, registered) for registered in registration.redirect_uris):
        return requested
    raise AuthorizationPageError(
        "invalid_request",
        f"redirect_uri {requested} is not registered for this client; the proxy will not redirect there",
    )


def with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True)
class AuthorizationRequest:
    """A checked /authorize request: safe to redirect to `redirect_uri` from here on."""

    client_id: str
    registration: Registration
    redirect_uri: str
    state: str | None
    params: dict[str, str]  # passed through to the IdP: code_challenge, scope, resource, ...
    # RFC 6749 §4.1.3: /token must repeat redirect_uri exactly when, and only when, /authorize had it.
    redirect_uri_given: bool = True

    def error_redirect(self, error: str, description: str, issuer: str) -> str:
        params = {"error": error, "error_description": description}
        if self.state is not None:
            params["state"] = self.state
        params["iss"] = issuer
        return with_query(self.redirect_uri, params)

    def consent_summary(self) -> dict[str, Any]:
        return {
            "client_name": self.registration.client_name,
            "redirect_uri": self.redirect_uri,
            "scope": self.params.get("scope", ""),
            "resource": self.params.get("resource", ""),
        }


def check_authorization_request(
    query: Mapping[str, str], registration: Registration, client_id: str, resource: str, issuer: str
) -> AuthorizationRequest | str:
    """The checked request, or (once the redirect URI is known good) an error redirect URL."""
    redirect_uri = choose_redirect_uri(registration, query.get("redirect_uri"))
    params = {name: query[name] for name in _PASSED_THROUGH if name in query}
    request = AuthorizationRequest(
        client_id, registration, redirect_uri, query.get("state"), params, "redirect_uri" in query
    )

    if query.get("response_type") != "code":
        return request.error_redirect("unsupported_response_type", "only response_type=code is supported", issuer)
    challenge, method = query.get("code_challenge"), query.get("code_challenge_method")
    if not challenge:
        return request.error_redirect("invalid_request", "PKCE is required: send code_challenge with S256", issuer)
    if method != "S256":
        return request.error_redirect(
            "invalid_request", f"code_challenge_method {method!r} is not supported; use S256", issuer
        )
    if not 43 <= len(challenge) <= 128:
        return request.error_redirect("invalid_request", "code_challenge must be 43 to 128 characters", issuer)
    requested_resource = query.get("resource")
    if requested_resource is not None and requested_resource.rstrip("/") != resource:
        return request.error_redirect(
            "invalid_target",
            f"resource {requested_resource} is not served here; this server protects {resource}",
            issuer,
        )
    # Without a resource the IdP would mint a token for no audience (RFC 8707); name ours.
    params["resource"] = resource
    params["code_challenge"] = challenge
    params["code_challenge_method"] = "S256"
    return request


def upstream_authorization_url(
    sealer: Sealer, request: AuthorizationRequest, authorization_endpoint: str, callback_url: str
) -> str:
    state = sealer.seal(
        STATE_PURPOSE,
        {"c": request.client_id, "r": request.redirect_uri, "s": request.state, "g": request.redirect_uri_given},
        ttl=STATE_TTL,
    )
    params = {
        "response_type": "code",
        "client_id": request.registration.upstream_client_id,
        "redirect_uri": callback_url,
        "state": state,
        **request.params,
    }
    return with_query(authorization_endpoint, params)


@dataclass(frozen=True)
class CallbackResult:
    redirect_url: str
    client_id: str
    outcome: str  # "code" or the IdP's error code


def handle_callback(sealer: Sealer, query: Mapping[str, str], upstream_issuer: str, issuer: str) -> CallbackResult:
    """Turn the IdP's redirect into the client's: sealed code, the client's state, our `iss`."""
    sealed_state = query.get("state")
    if not sealed_state:
        raise AuthorizationPageError("invalid_request", "the identity provider's redirect carries no state")
    try:
        state = sealer.open(STATE_PURPOSE, sealed_state)
    except SealError as e:
        raise AuthorizationPageError("invalid_request", f"state was not issued by this proxy or is stale: {e}") from e
    client_id, redirect_uri, client_state = str(state["c"]), str(state["r"]), state.get("s")
    redirect_uri_given = state.get("g", True)

    params: dict[str, str] = {}
    returned_iss = query.get("iss")
    if returned_iss is not None and returned_iss != upstream_issuer:
        # RFC 9207 mix-up defence: a response from another AS must not reach the client as ours.
        params = {"error": "server_error", "error_description": f"identity provider answered as {returned_iss}"}
        outcome = "issuer mismatch"
    elif "error" in query:
        params = {"error": query["error"]}
        if "error_description" in query:
            params["error_description"] = query["error_description"]
        outcome = query["error"]
    elif query.get("code"):
        params = {"code": seal_code(sealer, query["code"], client_id, redirect_uri if redirect_uri_given else None)}
        outcome = "code"
    else:
        params = {"error": "server_error", "error_description": "the identity provider returned neither code nor error"}
        outcome = "no code"
    if client_state is not None:
        params["state"] = str(client_state)
    params["iss"] = issuer
    return CallbackResult(with_query(redirect_uri, params), client_id, outcome)


def seal_code(sealer: Sealer, code: str, client_id: str, redirect_uri: str | None) -> str:
    # The client id is long; its digest is enough to bind the code to it.
    return sealer.seal(CODE_PURPOSE, {"k": code, "c": client_digest(client_id), "r": redirect_uri}, ttl=CODE_TTL)


def open_code(sealer: Sealer, sealed: str, client_id: str, redirect_uri: str | None) -> str:
    """The IdP's code, if the sealed code was issued to this client for this redirect URI."""
    try:
        payload = sealer.open(CODE_PURPOSE, sealed)
    except SealError as e:
        raise OAuthError(400, "invalid_grant", f"authorization code was not issued by this server: {e}") from e
    if payload.get("c") != client_digest(client_id):
        raise OAuthError(400, "invalid_grant", "authorization code was issued to another client")
    if redirect_uri != payload.get("r"):
        raise OAuthError(
            400, "invalid_grant", "redirect_uri differs from the one in the authorization request (RFC 6749 §4.1.3)"
        )
    return str(payload["k"])


def client_digest(client_id: str) -> str:
    return hashlib.sha256(client_id.encode()).hexdigest()[:32]


# --- consent (static registration) ---------------------------------------------------------


def consent_ticket(sealer: Sealer, query: Mapping[str, str], browser_nonce: str) -> str:
    """The /authorize request, sealed into the consent form and bound to this browser's cookie."""
    return sealer.seal(CONSENT_PURPOSE, {"q": dict(query), "b": browser_nonce}, ttl=CONSENT_TTL)


def open_consent_ticket(sealer: Sealer, ticket: str, browser_nonce: str | None) -> dict[str, str]:
    try:
        payload = sealer.open(CONSENT_PURPOSE, ticket)
    except SealError as e:
        raise AuthorizationPageError("invalid_request", f"the consent form is not valid ({e}); start again") from e
    if not browser_nonce or payload.get("b") != browser_nonce:
        # A consent form submitted from another site or browser: the cross-site request the page guards against.
        raise AuthorizationPageError("access_denied", "the consent was not given in this browser; start again")
    return {str(k): str(v) for k, v in payload["q"].items()}


def consent_page(request: AuthorizationRequest, ticket: str, action: str, resource: str) -> str:
    summary = request.consent_summary()
    name = summary["client_name"] or "An unnamed client"
    registered = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(request.registration.registered_at))
    redirect_host = urlsplit(request.redirect_uri).netloc or request.redirect_uri
    scope = summary["scope"] or "(no scope named)"
    e = html.escape
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Allow {e(name)}?</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}}
dt{{font-weight:600;margin-top:.6rem}}dd{{margin:0;word-break:break-all}}
button{{font-size:1rem;padding:.5rem 1.2rem;margin:1rem .5rem 0 0}}</style></head>
<body><h1>Allow <q>{e(name)}</q> to use {e(resource)}?</h1>
<p>This application registered itself with this server on {e(registered)}. Only continue if you started it
yourself and trust it: after you log in, it can call the MCP server as you.</p>
<dl><dt>Application</dt><dd>{e(name)}</dd>
<dt>Sends you back to</dt><dd>{e(redirect_host)}</dd>
<dt>Full redirect address</dt><dd>{e(request.redirect_uri)}</dd>
<dt>Scopes</dt><dd>{e(scope)}</dd></dl>
<form method="post" action="{e(action)}">
<input type="hidden" name="ticket" value="{e(ticket)}">
<button type="submit" name="decision" value="approve">Allow and log in</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form></body></html>
"""


def error_page(error: str, description: str) -> str:
    e = html.escape
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorization error</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}}</style></head>
<body><h1>Authorization error</h1><p><code>{e(error)}</code></p><p>{e(description)}</p>
<p>Return to the application and start the login again.</p></body></html>
"""
