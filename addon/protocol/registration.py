"""Dynamic client registration at the facade (RFC 7591), forwarded or synthesized.

The client_id handed to an MCP client is a sealed registration: the upstream client_id
plus the client's own redirect URIs and name. The proxy keeps no registration store;
any proxy process with the same key reads it back.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from addon.protocol.errors import OAuthError
from addon.protocol.sealing import Sealer, SealError
from addon.providers import ProviderProfile

REGISTRATION_PURPOSE = "registration"
MAX_REDIRECT_URIS = 10

# Schemes a browser or OS could be tricked into running rather than navigating to.
_DANGEROUS_SCHEMES = {"javascript", "data", "vbscript", "file", "about", "blob", "filesystem"}
_ALLOWED_GRANTS = {"authorization_code", "refresh_token"}
_CLIENT_AUTH_METHODS = {"none", "client_secret_post", "client_secret_basic"}
# Human-facing metadata passed on to the IdP and echoed back; everything else the proxy decides.
_DESCRIPTIVE_FIELDS = (
    "client_name",
    "client_uri",
    "logo_uri",
    "contacts",
    "tos_uri",
    "policy_uri",
    "software_id",
    "software_version",
)


def registration_error(description: str, error: str = "invalid_client_metadata") -> OAuthError:
    return OAuthError(400, error, description)


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_redirect_uri(uri: Any) -> str:
    """RFC 6749 §3.1.2, RFC 8252 §7, OAuth 2.1: absolute, no fragment, https or loopback http or private-use."""
    if not isinstance(uri, str) or not uri or len(uri) > 2000:
        raise registration_error(
            f"redirect URI {uri!r} is not a string of 1 to 2000 characters", "invalid_redirect_uri"
        )
    if any(c.isspace() or ord(c) < 0x20 for c in uri) or "*" in uri:
        raise registration_error(
            f"redirect URI {uri!r} contains whitespace, control characters or a wildcard", "invalid_redirect_uri"
        )
    try:
        parts = urlsplit(uri)
        _ = parts.port  # urlsplit is lazy about ports: make a bad one fail here
    except ValueError as e:
        raise registration_error(f"redirect URI {uri!r} is not a valid URI: {e}", "invalid_redirect_uri") from e
    scheme = parts.scheme.lower()
    if not scheme:
        raise registration_error(f"redirect URI {uri!r} is not absolute", "invalid_redirect_uri")
    if parts.fragment or "#" in uri:
        raise registration_error(f"redirect URI {uri!r} has a fragment", "invalid_redirect_uri")
    if scheme in _DANGEROUS_SCHEMES:
        raise registration_error(f"redirect URI scheme {scheme!r} is not allowed", "invalid_redirect_uri")
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise registration_error(f"redirect URI {uri!r} has no host", "invalid_redirect_uri")
        if parts.username is not None or parts.password is not None:
            raise registration_error(f"redirect URI {uri!r} carries user information", "invalid_redirect_uri")
        if scheme == "http" and not is_loopback_host(parts.hostname):
            raise registration_error(
                f"redirect URI {uri!r} uses http on a non-loopback host; use https or a loopback address",
                "invalid_redirect_uri",
            )
        return uri
    # RFC 8252 §7.1 private-use scheme: reverse domain name with a dot.
    if "." not in scheme:
        raise registration_error(
            f"redirect URI scheme {scheme!r} is neither http(s) nor a private-use reverse-domain scheme",
            "invalid_redirect_uri",
        )
    return uri


@dataclass(frozen=True)
class ClientRequest:
    """A checked registration request."""

    redirect_uris: list[str]
    grant_types: list[str]
    token_endpoint_auth_method: str
    scope: str | None
    application_type: str
    descriptive: dict[str, Any]


def check_registration_request(body: Any) -> ClientRequest:
    if not isinstance(body, dict):
        raise registration_error("the registration request must be a JSON object")
    uris = body.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        raise registration_error("redirect_uris is required: a non-empty list of URIs", "invalid_redirect_uri")
    if len(uris) > MAX_REDIRECT_URIS:
        raise registration_error(f"at most {MAX_REDIRECT_URIS} redirect_uris are accepted", "invalid_redirect_uri")
    redirect_uris = [check_redirect_uri(uri) for uri in uris]

    grant_types = body.get("grant_types", ["authorization_code"])
    if not isinstance(grant_types, list) or not all(isinstance(g, str) for g in grant_types):
        raise registration_error("grant_types must be a list of strings")
    unsupported = sorted(set(grant_types) - _ALLOWED_GRANTS)
    if unsupported or "authorization_code" not in grant_types:
        raise registration_error(
            f"grant_types {grant_types!r}: this server supports authorization_code (required) and refresh_token"
        )
    response_types = body.get("response_types", ["code"])
    if response_types != ["code"]:
        raise registration_error(f'response_types {response_types!r}: only ["code"] is supported')

    method = body.get("token_endpoint_auth_method", "client_secret_basic")
    if not isinstance(method, str) or method not in _CLIENT_AUTH_METHODS:
        raise registration_error(
            f"token_endpoint_auth_method {method!r} is not supported; use one of {sorted(_CLIENT_AUTH_METHODS)}"
        )
    scope = body.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise registration_error("scope must be a space-separated string")
    application_type = body.get("application_type", "web")
    if application_type not in ("web", "native"):
        raise registration_error(f"application_type {application_type!r} must be web or native")

    descriptive = {name: body[name] for name in _DESCRIPTIVE_FIELDS if name in body}
    for name, value in descriptive.items():
        if name == "contacts":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise registration_error("contacts must be a list of strings")
        elif not isinstance(value, str) or len(value) > 500:
            raise registration_error(f"{name} must be a string of at most 500 characters")
    return ClientRequest(redirect_uris, list(dict.fromkeys(grant_types)), method, scope, application_type, descriptive)


@dataclass(frozen=True)
class Registration:
    """What a sealed client_id carries."""

    upstream_client_id: str
    redirect_uris: list[str]
    client_name: str | None
    registered_at: int
    static: bool

    def to_payload(self) -> dict[str, Any]:
        return {
            "u": self.upstream_client_id,
            "r": self.redirect_uris,
            "n": self.client_name,
            "t": self.registered_at,
            "s": self.static,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Registration:
        try:
            return cls(str(payload["u"]), list(payload["r"]), payload.get("n"), int(payload["t"]), bool(payload["s"]))
        except (KeyError, TypeError, ValueError) as e:
            raise SealError("registration payload is incomplete") from e


def seal_client_id(sealer: Sealer, registration: Registration) -> str:
    return sealer.seal(REGISTRATION_PURPOSE, registration.to_payload())


def open_client_id(sealer: Sealer, client_id: str) -> Registration:
    """The registration behind a client_id, or OAuthError invalid_client."""
    try:
        return Registration.from_payload(sealer.open(REGISTRATION_PURPOSE, client_id))
    except SealError as e:
        raise OAuthError(401, "invalid_client", f"client_id was not issued by this server ({e}); register again") from e


def upstream_registration_request(
    request: ClientRequest, callback_url: str, profile: ProviderProfile | None = None
) -> dict[str, Any]:
    """What the proxy registers at the IdP: the client's description, the proxy's callback."""
    dropped = profile.registration_fields_dropped if profile else frozenset()
    upstream: dict[str, Any] = {k: v for k, v in request.descriptive.items() if k not in dropped}
    upstream.update(
        redirect_uris=[callback_url],
        grant_types=request.grant_types,
        response_types=["code"],
        token_endpoint_auth_method=request.token_endpoint_auth_method,
        # The IdP only ever redirects to the proxy's callback, a web redirect.
        application_type="web",
    )
    scope = profile.registration_scope(request.scope) if profile else request.scope
    if scope:
        upstream["scope"] = scope
    return upstream


def registration_response(
    request: ClientRequest,
    client_id: str,
    token_endpoint_auth_method: str,
    upstream_answer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """RFC 7591 §3.2.1: the client's metadata as registered, with the sealed client_id."""
    now = int(time.time())
    response: dict[str, Any] = dict(request.descriptive)
    response.update(
        client_id=client_id,
        client_id_issued_at=now,
        redirect_uris=request.redirect_uris,
        grant_types=request.grant_types,
        response_types=["code"],
        token_endpoint_auth_method=token_endpoint_auth_method,
        application_type=request.application_type,
    )
    if request.scope:
        response["scope"] = request.scope
    if upstream_answer:
        # The secret is the IdP's; the client presents it at /token and the proxy passes it on.
        for name in ("client_secret", "client_secret_expires_at", "scope"):
            if name in upstream_answer:
                response[name] = upstream_answer[name]
    return response


def check_upstream_answer(answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict) or not isinstance(answer.get("client_id"), str) or not answer["client_id"]:
        raise OAuthError(502, "server_error", "the identity provider's registration answer has no client_id")
    return answer
