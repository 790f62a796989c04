"""Authorization server metadata: RFC 8414 / OIDC discovery of the IdP, and the facade's own.

In facade mode the proxy is the authorization server clients see. Its metadata is built
from the IdP's, field by field from an allow-list: anything not listed (PAR, device flow,
introspection, mTLS aliases, ...) would send a client around the proxy and is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

OAUTH_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OIDC_WELL_KNOWN = "/.well-known/openid-configuration"

# Facade endpoints, relative to public_url.
AUTHORIZE_PATH = "/authorize"
CONSENT_PATH = "/authorize/consent"
CALLBACK_PATH = "/callback"
TOKEN_PATH = "/token"
REGISTER_PATH = "/register"
REVOKE_PATH = "/revoke"

CLIENT_AUTH_METHODS = ("none", "client_secret_post", "client_secret_basic")


class DiscoveryError(Exception):
    """The IdP's metadata could not be had or is not usable."""


def discovery_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may live: RFC 8414 (path inserted) first, then OIDC both ways."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    urls = [origin + OAUTH_WELL_KNOWN + path]
    if path:
        urls.append(origin + OIDC_WELL_KNOWN + path)
    urls.append(origin + path + OIDC_WELL_KNOWN)
    return list(dict.fromkeys(urls))


def facade_discovery_paths(public_url: str) -> tuple[str, ...]:
    """Every path a 2025-11-25 client tries for an issuer equal to public_url (which may have a path)."""
    path = urlsplit(public_url).path.rstrip("/")
    paths = [OAUTH_WELL_KNOWN + path, OIDC_WELL_KNOWN + path, path + OIDC_WELL_KNOWN]
    if path:  # clients on older spec revisions try the root forms too
        paths += [OAUTH_WELL_KNOWN, OIDC_WELL_KNOWN]
    return tuple(dict.fromkeys(paths))


@dataclass
class ServerMetadata:
    """The IdP's metadata, checked, with the endpoints the proxy relies on."""

    document: dict[str, Any]
    source_url: str

    @property
    def issuer(self) -> str:
        return str(self.document["issuer"])

    @property
    def authorization_endpoint(self) -> str:
        return str(self.document["authorization_endpoint"])

    @property
    def token_endpoint(self) -> str:
        return str(self.document["token_endpoint"])

    @property
    def jwks_uri(self) -> str | None:
        value = self.document.get("jwks_uri")
        return str(value) if value else None

    @property
    def registration_endpoint(self) -> str | None:
        value = self.document.get("registration_endpoint")
        return str(value) if value else None

    @property
    def revocation_endpoint(self) -> str | None:
        value = self.document.get("revocation_endpoint")
        return str(value) if value else None


def check_metadata(document: Any, issuer: str, source_url: str) -> ServerMetadata:
    if not isinstance(document, dict):
        raise DiscoveryError(f"{source_url} did not return a JSON object")
    if document.get("issuer") != issuer:
        # RFC 8414 §3.3: metadata for another issuer must not be used.
        raise DiscoveryError(
            f"{source_url} names issuer {document.get('issuer')!r}, but the configuration says {issuer!r}; "
            "set `issuer` to the IdP's exact issuer string"
        )
    for name in ("authorization_endpoint", "token_endpoint"):
        if not isinstance(document.get(name), str):
            raise DiscoveryError(f"{source_url} has no {name}")
    return ServerMetadata(document, source_url)


async def discover(client: httpx.AsyncClient, issuer: str) -> ServerMetadata:
    """Fetch the IdP's metadata, RFC 8414 first and then OIDC, as MCP clients would."""
    failures: list[str] = []
    for url in discovery_urls(issuer):
        try:
            response = await client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as e:
            failures.append(f"{url}: {type(e).__name__} {e}")
            continue
        if response.status_code != 200:
            failures.append(f"{url}: HTTP {response.status_code}")
            continue
        try:
            document = response.json()
        except ValueError:
            failures.append(f"{url}: not JSON")
            continue
        return check_metadata(document, issuer, url)
    raise DiscoveryError("no usable metadata for issuer " + issuer + " (" + "; ".join(failures) + ")")


@dataclass
class FacadeMetadata:
    """The proxy's own authorization server metadata, and what it changed against the IdP's."""

    document: dict[str, Any]
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def _intersect(upstream: Any, ours: Sequence[str]) -> list[str]:
    if not isinstance(upstream, list):
        return list(ours)
    return [value for value in ours if value in upstream] or list(ours)


def facade_metadata(
    upstream: ServerMetadata,
    public_url: str,
    scopes: Sequence[str],
    static_registration: bool,
    auth_methods: Sequence[str] = (),
) -> FacadeMetadata:
    """auth_methods: what the IdP accepts at registration where its metadata says less (a provider profile)."""
    source = upstream.document
    document: dict[str, Any] = {
        "issuer": public_url,
        "authorization_endpoint": public_url + AUTHORIZE_PATH,
        "token_endpoint": public_url + TOKEN_PATH,
        "registration_endpoint": public_url + REGISTER_PATH,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": (
            ["none"]
            if static_registration
            else list(auth_methods)
            or _intersect(source.get("token_endpoint_auth_methods_supported"), CLIENT_AUTH_METHODS)
        ),
        # MCP 2026-07-28: offline_access is not advertised; refresh tokens come with the grant type.
        "scopes_supported": [
            s for s in dict.fromkeys([*scopes, *(source.get("scopes_supported") or [])]) if s != "offline_access"
        ],
        "authorization_response_iss_parameter_supported": True,
    }
    if upstream.revocation_endpoint:
        document["revocation_endpoint"] = public_url + REVOKE_PATH
        document["revocation_endpoint_auth_methods_supported"] = document["token_endpoint_auth_methods_supported"]
    # Informational fields that do not route a client anywhere are kept as the IdP has them;
    # the OIDC ones keep the document valid for clients that read it as OIDC discovery.
    for name in (
        "service_documentation",
        "ui_locales_supported",
        "op_policy_uri",
        "op_tos_uri",
        "jwks_uri",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
        "claims_supported",
    ):
        if name in source:
            document[name] = source[name]

    changes: dict[str, tuple[Any, Any]] = {}
    for name in sorted(set(source) | set(document)):
        before, after = source.get(name), document.get(name)
        if before != after:
            changes[name] = (before, after)
    return FacadeMetadata(document, changes)
