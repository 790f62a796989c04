"""Browser clients: which origins may call the proxy, and the CORS headers it answers with.

A browser-based MCP client (the MCP Inspector, a web app) runs on its own origin and calls the
MCP endpoint and the facade's endpoints with fetch. The browser only lets it read the answers
when they carry `Access-Control-Allow-Origin` for its origin, and asks first (a preflight
`OPTIONS`) before sending `Authorization` or JSON. Only exact, configured origins get that:
never `*` and never an origin reflected unchecked, because the same check is what stops
DNS rebinding (a hostile page whose name resolves to the proxy's address), which the MCP
transport spec requires servers to prevent by validating `Origin`.

No mitmproxy import: plain functions over strings, tested on their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}

# What a browser client of an MCP server sends beyond the CORS-safelisted headers.
ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "mcp-protocol-version",
    "mcp-session-id",
    "last-event-id",
    "mcp-method",
    "mcp-name",
)
# Header names echoed back when a preflight asks for them: the 2026-07-28 transport's
# `Mcp-Param-<name>` headers, whose names depend on the tool called.
ALLOWED_HEADER_PREFIXES = ("mcp-param-",)
# What a browser client must be able to read from the answers: the challenge, the session,
# the negotiated version, and when to come back after a 429 or 503.
EXPOSED_HEADERS = "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version, Retry-After"
MCP_METHODS = ("POST", "GET", "DELETE", "OPTIONS")
OAUTH_METHODS = ("POST", "OPTIONS")
DISCOVERY_METHODS = ("GET", "HEAD", "OPTIONS")
# Ten minutes: browsers cache the preflight that long (Chromium caps at two hours), and a
# changed allow-list takes effect within it.
MAX_AGE_SECONDS = 600


def normalize_origin(value: str) -> str | None:
    """An origin as browsers serialize it (`scheme://host[:port]`, lowercase, default port left
    out), or None when `value` is not an http(s) origin (`null`, a path, userinfo, garbage)."""
    if not isinstance(value, str) or not value or value != value.strip():
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    if parts.path or parts.query or parts.fragment or value.endswith(("?", "#")):
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal: urlsplit strips the brackets
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_of(url: str) -> str:
    """The origin of an absolute URL such as `public_url` (its path left out)."""
    parts = urlsplit(url)
    origin = normalize_origin(f"{parts.scheme}://{parts.netloc}")
    if origin is None:
        raise ValueError(f"{url!r} has no http(s) origin")
    return origin


@dataclass(frozen=True)
class CorsPolicy:
    allowed_origins: frozenset[str]
    """Normalized origins from `cors.allowed_origins`."""
    own_origin: str
    """The origin of `public_url`: the proxy's own pages (the consent page) post from it."""

    @classmethod
    def make(cls, allowed_origins: Iterable[str], public_url: str) -> CorsPolicy:
        normalized = {normalize_origin(origin) for origin in allowed_origins}
        return cls(frozenset(o for o in normalized if o is not None), origin_of(public_url))

    def allows(self, origin: str | None) -> bool:
        """Whether a request carrying this `Origin` header may be answered (and read) by a browser."""
        normalized = normalize_origin(origin) if origin is not None else None
        return normalized is not None and (normalized in self.allowed_origins or normalized == self.own_origin)


def allowed_request_headers(requested: str | None) -> list[str]:
    """The fixed allow-list plus those of the requested headers matching an allowed prefix.

    Anything else a preflight asks for is left out, so the browser refuses to send it.
    """
    headers = list(ALLOWED_HEADERS)
    for name in (requested or "").split(","):
        name = name.strip().lower()
        if name and name not in headers and name.startswith(ALLOWED_HEADER_PREFIXES) and _is_token(name):
            headers.append(name)
    return headers


def _is_token(name: str) -> bool:
    # RFC 9110 field-name: never echo anything that could split or inject a header.
    return all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name) and name.isascii()


def preflight_headers(origin: str, methods: Iterable[str], requested_headers: str | None) -> dict[str, str]:
    """The answer to an allowed preflight. `origin` is the request's own Origin value, checked before."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Vary": "Origin",
        "Access-Control-Allow-Methods": ", ".join(methods),
        "Access-Control-Allow-Headers": ", ".join(allowed_request_headers(requested_headers)),
        "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
    }


def public_preflight_headers(requested_headers: str | None) -> dict[str, str]:
    """The answer to a preflight for a discovery document: public, so for any origin, without credentials.

    Browser SDKs send `MCP-Protocol-Version` on discovery requests, which makes even a GET preflighted.
    """
    return {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": ", ".join(DISCOVERY_METHODS),
        "Access-Control-Allow-Headers": ", ".join(allowed_request_headers(requested_headers)),
        "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
    }


def response_headers(origin: str) -> dict[str, str]:
    """What an actual answer to an allowed origin carries (besides `Vary`, which is merged; see add_vary)."""
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": EXPOSED_HEADERS}


def add_vary(existing: str | None, name: str = "Origin") -> str:
    """`Vary` with `name` added once, keeping what the answer varied on already."""
    values = [v.strip() for v in (existing or "").split(",") if v.strip()]
    if "*" in values or any(v.lower() == name.lower() for v in values):
        return ", ".join(values)
    return ", ".join([*values, name])
