"""The facade's token and revocation endpoints (RFC 6749 §3.2, §4.1.3, §6; RFC 7009).

The request the client sends names the sealed client_id and, for a code, the sealed
code. The proxy puts back what the IdP issued (upstream client_id, the IdP's code, the
proxy's own callback as redirect_uri) and forwards; the IdP's answer goes back as it is.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from addon.protocol.authorization import open_code
from addon.protocol.errors import OAuthError
from addon.protocol.registration import Registration, open_client_id
from addon.protocol.sealing import Sealer

_GRANTS = ("authorization_code", "refresh_token")


@dataclass(frozen=True)
class ClientAuthentication:
    client_id: str
    client_secret: str | None
    method: str  # none | client_secret_post | client_secret_basic


def client_authentication(form: Mapping[str, str], authorization: str | None) -> ClientAuthentication:
    """Who is calling: Basic credentials (RFC 6749 §2.3.1, form-urlencoded parts) or form fields."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise OAuthError(401, "invalid_client", f"client authentication scheme {scheme!r} is not supported")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, ValueError) as e:  # ValueError: non-ASCII credentials
            raise OAuthError(401, "invalid_client", "malformed Basic client credentials") from e
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise OAuthError(401, "invalid_client", "malformed Basic client credentials")
        if "client_id" in form and form["client_id"] != unquote(client_id):
            raise OAuthError(400, "invalid_request", "client_id in the body differs from the Basic credentials")
        return ClientAuthentication(unquote(client_id), unquote(secret), "client_secret_basic")
    client_id = form.get("client_id")
    if not client_id:
        raise OAuthError(401, "invalid_client", "client_id is required")
    secret = form.get("client_secret")
    return ClientAuthentication(client_id, secret, "client_secret_post" if secret else "none")


@dataclass(frozen=True)
class UpstreamTokenRequest:
    form: dict[str, str]
    basic_auth: tuple[str, str] | None
    registration: Registration
    grant_type: str


@dataclass(frozen=True)
class StaticClient:
    """The one pre-registered upstream client that static registration builds on."""

    client_id: str
    client_secret: str | None
    auth_method: str  # client_secret_basic | client_secret_post | none


def _upstream_auth(
    form: dict[str, str], caller: ClientAuthentication, registration: Registration, static: StaticClient | None
) -> tuple[str, str] | None:
    upstream_id = registration.upstream_client_id
    if registration.static:
        if static is None or static.client_id != upstream_id:
            raise OAuthError(
                401, "invalid_client", "this client was registered for another static client; register again"
            )
        # The MCP client is a public client of the proxy; the proxy authenticates as the static client.
        if static.client_secret and static.auth_method == "client_secret_basic":
            return (upstream_id, static.client_secret)
        if static.client_secret:
            form["client_secret"] = static.client_secret
        form["client_id"] = upstream_id
        return None
    if caller.method == "client_secret_basic":
        assert caller.client_secret is not None
        form.pop("client_id", None)
        return (upstream_id, caller.client_secret)
    form["client_id"] = upstream_id
    if caller.client_secret:
        form["client_secret"] = caller.client_secret
    return None


def upstream_token_request(
    sealer: Sealer,
    form: Mapping[str, str],
    authorization: str | None,
    callback_url: str,
    resource: str,
    static: StaticClient | None,
) -> UpstreamTokenRequest:
    grant_type = form.get("grant_type")
    if grant_type not in _GRANTS:
        raise OAuthError(
            400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported; use one of {list(_GRANTS)}"
        )
    caller = client_authentication(form, authorization)
    registration = open_client_id(sealer, caller.client_id)
    upstream = {k: v for k, v in form.items() if k not in ("client_id", "client_secret")}

    if grant_type == "authorization_code":
        if not form.get("code"):
            raise OAuthError(400, "invalid_request", "code is required")
        if not form.get("code_verifier"):
            raise OAuthError(400, "invalid_request", "code_verifier is required: PKCE is mandatory")
        upstream["code"] = open_code(sealer, form["code"], caller.client_id, form.get("redirect_uri"))
        upstream["redirect_uri"] = callback_url
    elif not form.get("refresh_token"):
        raise OAuthError(400, "invalid_request", "refresh_token is required")

    requested_resource = form.get("resource")
    if requested_resource is not None and requested_resource.rstrip("/") != resource:
        raise OAuthError(400, "invalid_target", f"resource {requested_resource} is not served here; use {resource}")
    upstream["resource"] = resource

    basic = _upstream_auth(upstream, caller, registration, static)
    return UpstreamTokenRequest(upstream, basic, registration, grant_type)


def upstream_revocation_request(
    sealer: Sealer, form: Mapping[str, str], authorization: str | None, static: StaticClient | None
) -> tuple[dict[str, str], tuple[str, str] | None]:
    if not form.get("token"):
        raise OAuthError(400, "invalid_request", "token is required")
    caller = client_authentication(form, authorization)
    registration = open_client_id(sealer, caller.client_id)
    upstream = {k: v for k, v in form.items() if k not in ("client_id", "client_secret")}
    return upstream, _upstream_auth(upstream, caller, registration, static)
