"""The YAML configuration file, read into validated, typed settings.

Every error names the key, the value found and what is expected, because the person
reading it is setting up a proxy, not debugging this module.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from addon import providers
from addon.protocol.cors import normalize_origin
from addon.protocol.rate_limit import Network, Rate, parse_networks, parse_rate
from addon.protocol.registration import is_loopback_host
from addon.protocol.resource_metadata import resource_metadata_url

logger = logging.getLogger(__name__)

MODES = ("facade", "resource-server")
REGISTRATION_MODES = ("forward", "static")
UPSTREAM_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 §3.3 scope-token


class ConfigError(ValueError):
    """A configuration file that cannot be used, with a message fit for the person who wrote it."""


@dataclass(frozen=True)
class RegistrationSettings:
    mode: str = "forward"
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    client_auth_method: str = "client_secret_basic"


@dataclass(frozen=True)
class CorsSettings:
    allowed_origins: tuple[str, ...] = ()
    """Exact, normalized origins of browser clients; () = no browser clients."""


@dataclass(frozen=True)
class RateLimitSettings:
    """Per client address on the facade's endpoints; None = no limit."""

    register: Rate | None = None
    token: Rate | None = None
    trusted_proxies: tuple[Network, ...] = ()
    """Load balancers / proxies whose X-Forwarded-For names the client; () = the header is ignored."""


@dataclass(frozen=True)
class Settings:
    public_url: str
    mcp_path: str
    mode: str
    issuer: str
    scopes: tuple[str, ...]
    audience: tuple[str, ...]
    registration: RegistrationSettings
    secret_key: str | None = field(repr=False)
    provider: str = "generic"
    previous_secret_keys: tuple[str, ...] = field(default=(), repr=False)
    resource_name: str | None = None
    clock_skew_seconds: int = 30
    jwks_refetch_interval_seconds: int = 30
    jwks_max_age_seconds: int = 600
    token_cache_size: int = 10_000
    idp_timeout_seconds: float = 10.0
    sse_message_path: str | None = None
    mcp_server_timeout_seconds: float = 120.0
    max_request_body_bytes: int = 4 * 1024 * 1024
    cors: CorsSettings = field(default_factory=CorsSettings)
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    source: str = "<inline>"

    # Cached: read on every request, and a frozen Settings never changes.
    @cached_property
    def resource(self) -> str:
        return self.public_url + self.mcp_path

    @cached_property
    def resource_metadata_url(self) -> str:
        return resource_metadata_url(self.resource)

    @property
    def profile(self) -> providers.ProviderProfile:
        return providers.profile(self.provider)

    @property
    def facade(self) -> bool:
        return self.mode == "facade"

    @property
    def callback_url(self) -> str:
        return self.public_url + "/callback"


_KNOWN_KEYS = {
    "public_url",
    "mcp_path",
    "sse_message_path",
    "mode",
    "issuer",
    "scopes",
    "audience",
    "registration",
    "secret_key",
    "previous_secret_keys",
    "resource_name",
    "provider",
    "clock_skew_seconds",
    "jwks_refetch_interval_seconds",
    "jwks_max_age_seconds",
    "token_cache_size",
    "idp_timeout_seconds",
    "mcp_server_timeout_seconds",
    "max_request_body_bytes",
    "cors",
    "rate_limits",
}
_CORS_KEYS = {"allowed_origins"}
_RATE_LIMIT_KEYS = {"register", "token", "trusted_proxies"}
_REGISTRATION_KEYS = {"mode", "client_id", "client_secret", "client_auth_method"}


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"{self.source}: `{key}` is {value!r}; {expected}")

    def unknown(self, keys: set[str], known: set[str], prefix: str = "") -> None:
        for key in sorted(keys - known):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean `{prefix}{close[0]}`?" if close else f"known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"{self.source}: unknown key `{prefix}{key}`; {hint}")

    def env(self, key: str, value: Any) -> Any:
        """Expand ${VAR} references, failing on an unset variable rather than using an empty secret."""
        if not isinstance(value, str):
            return value

        def expand(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(
                    f"{self.source}: `{key}` refers to environment variable {name}, which is not set; "
                    f"export {name}=... before starting the proxy"
                )
            return os.environ[name]

        return _ENV_REFERENCE.sub(expand, value)

    def url(self, key: str, value: Any, *, path_allowed: bool = True) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, value, "expected an absolute http(s) URL, e.g. http://127.0.0.1:8000")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.fail(key, value, "expected an absolute http(s) URL, e.g. https://mcp.example.com")
        if parts.query or parts.fragment:
            raise self.fail(key, value, "expected a URL without query or fragment")
        if not path_allowed and parts.path not in ("", "/"):
            raise self.fail(key, value, "expected a URL without a path")
        try:
            _ = parts.port
        except ValueError as e:
            raise self.fail(key, value, f"the port is not valid ({e})") from e
        return value

    def choice(self, key: str, value: Any, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(key, value, "expected one of: " + ", ".join(choices))
        return str(value)

    def strings(self, key: str, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, value, "expected a list of non-empty strings, e.g. [mcp:tools]")
        return tuple(value)

    def number(self, key: str, value: Any, minimum: float, maximum: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not minimum <= value <= maximum:
            raise self.fail(key, value, f"expected a number from {minimum:g} to {maximum:g}")
        return value

    def secret(self, key: str, value: Any) -> str | None:
        value = self.env(key, value)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) < 32:
            # Never the value itself: a number YAML read from an unquoted key is still the secret.
            shown = (
                f"<hidden> ({len(value)} characters)"
                if isinstance(value, str)
                else f"a {type(value).__name__}, not a string (value hidden; quote it in YAML)"
            )
            raise ConfigError(
                f"{self.source}: `{key}` is {shown}; "
                "expected at least 32 characters of randomness, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`, or ${ENV_VAR}"
            )
        return value


def parse_settings(raw: Any, source: str = "<inline>") -> Settings:
    read = _Reader(source)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: the file must be a YAML mapping of keys (public_url: ..., issuer: ...)")
    read.unknown(set(raw), _KNOWN_KEYS)

    for required in ("public_url", "issuer"):
        if raw.get(required) is None:
            raise ConfigError(
                f"{source}: `{required}` is required; see config/config.yaml (Keycloak) or "
                "config/dev-idp.yaml for an example"
            )
    public_url = read.url("public_url", read.env("public_url", raw["public_url"]))
    if public_url.endswith("/"):
        raise read.fail("public_url", public_url, f"write it without the trailing slash: {public_url.rstrip('/')}")
    host = urlsplit(public_url).hostname
    if urlsplit(public_url).scheme == "http" and not is_loopback_host(host):
        logger.warning(
            "public_url %s is plain http on a non-loopback host: OAuth clients will refuse it; use https", public_url
        )

    mcp_path = raw.get("mcp_path", "/mcp")
    if not isinstance(mcp_path, str) or not mcp_path.startswith("/") or any(c in mcp_path for c in "?#* "):
        raise read.fail("mcp_path", mcp_path, "expected a path starting with /, e.g. /mcp")
    if mcp_path != "/" and mcp_path.endswith("/"):
        raise read.fail("mcp_path", mcp_path, f"write it without the trailing slash: {mcp_path.rstrip('/')}")
    if mcp_path == "/":
        raise read.fail(
            "mcp_path", mcp_path, "the MCP endpoint needs its own path (e.g. /mcp): / hosts the proxy's OAuth endpoints"
        )

    sse_message_path = _sse_message_path(read, raw.get("sse_message_path"), mcp_path)

    mode = read.choice("mode", raw.get("mode", "facade"), MODES)
    issuer = read.url("issuer", read.env("issuer", raw["issuer"]))
    provider = read.choice("provider", raw.get("provider", "generic"), tuple(providers.names()))
    profile = providers.profile(provider)
    if profile.issuer_pattern is not None and not profile.issuer_pattern.match(issuer):
        raise read.fail("issuer", issuer, f"a {provider} issuer looks like {profile.issuer_example}")

    scopes = read.strings("scopes", raw.get("scopes", []))
    for scope in scopes:
        if not _SCOPE_TOKEN.match(scope):
            raise read.fail("scopes", scope, "a scope is one word without spaces, quotes or backslashes")

    resource = public_url + mcp_path
    audience = read.strings("audience", raw["audience"]) if raw.get("audience") is not None else (resource,)
    if not audience:
        raise read.fail(
            "audience", raw["audience"], f"list at least one accepted audience, or leave it out to accept [{resource}]"
        )

    registration_raw = raw.get("registration") or {}
    if not isinstance(registration_raw, Mapping):
        raise read.fail("registration", registration_raw, "expected a mapping with mode, client_id, client_secret")
    read.unknown(set(registration_raw), _REGISTRATION_KEYS, "registration.")
    registration_mode = read.choice("registration.mode", registration_raw.get("mode", "forward"), REGISTRATION_MODES)
    client_id = read.env("registration.client_id", registration_raw.get("client_id"))
    client_secret = read.env("registration.client_secret", registration_raw.get("client_secret"))
    auth_method = read.choice(
        "registration.client_auth_method",
        registration_raw.get("client_auth_method", "client_secret_basic" if client_secret else "none"),
        UPSTREAM_AUTH_METHODS,
    )
    if registration_mode == "static":
        if not isinstance(client_id, str) or not client_id:
            raise read.fail(
                "registration.client_id",
                client_id,
                "static registration needs the id of the client you registered at the IdP, with "
                f"{public_url}/callback as its redirect URI",
            )
        if client_secret is not None and not isinstance(client_secret, str):
            raise ConfigError(f"{source}: `registration.client_secret` must be a string or ${{ENV_VAR}}")
        if auth_method != "none" and not client_secret:
            raise read.fail(
                "registration.client_auth_method", auth_method, "needs registration.client_secret, or use none"
            )
    elif client_id is not None or client_secret is not None:
        raise ConfigError(
            f"{source}: `registration.client_id` / `registration.client_secret` are only used with "
            "registration.mode: static; remove them or set the mode to static"
        )

    secret_key = read.secret("secret_key", raw.get("secret_key"))
    previous = tuple(
        read.secret(f"previous_secret_keys[{i}]", value) or ""
        for i, value in enumerate(read.strings("previous_secret_keys", raw.get("previous_secret_keys") or []))
    )
    resource_name = raw.get("resource_name")
    if resource_name is not None and not isinstance(resource_name, str):
        raise read.fail("resource_name", resource_name, "expected a short human-readable name")

    return Settings(
        public_url=public_url,
        mcp_path=mcp_path,
        sse_message_path=sse_message_path,
        mode=mode,
        issuer=issuer,
        scopes=scopes,
        audience=audience,
        registration=RegistrationSettings(registration_mode, client_id, client_secret, auth_method),
        secret_key=secret_key,
        provider=provider,
        previous_secret_keys=previous,
        resource_name=resource_name,
        clock_skew_seconds=int(read.number("clock_skew_seconds", raw.get("clock_skew_seconds", 30), 0, 600)),
        jwks_refetch_interval_seconds=int(
            read.number("jwks_refetch_interval_seconds", raw.get("jwks_refetch_interval_seconds", 30), 1, 86400)
        ),
        # How long a key the IdP removed can still be accepted: the cached set is fetched again
        # before use once it is older than this.
        jwks_max_age_seconds=int(read.number("jwks_max_age_seconds", raw.get("jwks_max_age_seconds", 600), 1, 86400)),
        # Good tokens remembered (about 1 KiB each), so a client's next call skips the signature check.
        token_cache_size=int(read.number("token_cache_size", raw.get("token_cache_size", 10_000), 0, 1_000_000)),
        idp_timeout_seconds=float(read.number("idp_timeout_seconds", raw.get("idp_timeout_seconds", 10), 0.5, 120)),
        # Until the MCP server's response headers; an event stream, once started, has no deadline.
        mcp_server_timeout_seconds=float(
            read.number("mcp_server_timeout_seconds", raw.get("mcp_server_timeout_seconds", 120), 0.5, 3600)
        ),
        max_request_body_bytes=int(
            read.number("max_request_body_bytes", raw.get("max_request_body_bytes", 4 * 1024 * 1024), 1024, 1 << 30)
        ),
        cors=_cors(read, raw.get("cors")),
        rate_limits=_rate_limits(read, raw.get("rate_limits")),
        source=source,
    )


def _sse_message_path(read: _Reader, raw: Any, mcp_path: str) -> str | None:
    """The legacy HTTP+SSE transport's message endpoint (2024-11-05), gated like mcp_path."""
    if raw is None:
        return None
    fix = "the path the server's `endpoint` event names, e.g. /messages/ (the SDKs' default)"
    if not isinstance(raw, str) or not raw.startswith("/") or any(c in raw for c in "?#* ") or raw == "/":
        raise read.fail("sse_message_path", raw, f"expected {fix}")
    own = ("/.well-known", "/authorize", "/callback", "/token", "/register", "/revoke")
    stem = raw.rstrip("/")
    clash = next((p for p in own if stem == p or raw.startswith(p + "/") or p.startswith(stem + "/")), None)
    if clash is not None:
        raise read.fail("sse_message_path", raw, f"{clash} is the proxy's own endpoint; expected {fix}")
    if raw.rstrip("/") == mcp_path or raw.startswith(mcp_path + "/"):
        raise read.fail("sse_message_path", raw, f"paths under mcp_path ({mcp_path}) are gated already; leave it out")
    return raw


def _cors(read: _Reader, raw: Any) -> CorsSettings:
    if raw is None:
        return CorsSettings()
    if not isinstance(raw, Mapping):
        raise read.fail("cors", raw, "expected a mapping, e.g. cors: {allowed_origins: [http://localhost:6274]}")
    read.unknown(set(raw), _CORS_KEYS, "cors.")
    origins = raw.get("allowed_origins") or []
    if isinstance(origins, str):
        origins = [origins]
    if not isinstance(origins, list):
        raise read.fail("cors.allowed_origins", origins, "expected a list of origins, e.g. [http://localhost:6274]")
    normalized: list[str] = []
    for i, origin in enumerate(origins):
        key = f"cors.allowed_origins[{i}]"
        if origin == "*":
            # A wildcard would also switch off the Origin check that stops DNS rebinding.
            raise read.fail(key, origin, "wildcards are not accepted; list each browser client's exact origin")
        value = normalize_origin(origin) if isinstance(origin, str) else None
        if value is None:
            hint = f" (without the trailing slash: {origin.rstrip('/')})" if isinstance(origin, str) else ""
            raise read.fail(
                key,
                origin,
                f"expected an exact origin, scheme://host[:port] without a path{hint}, e.g. http://localhost:6274",
            )
        normalized.append(value)
    return CorsSettings(tuple(dict.fromkeys(normalized)))


def _rate_limits(read: _Reader, raw: Any) -> RateLimitSettings:
    if raw is None:
        return RateLimitSettings()
    if not isinstance(raw, Mapping):
        raise read.fail(
            "rate_limits", raw, "expected a mapping, e.g. rate_limits: {register: 20/minute, token: 60/minute}"
        )
    read.unknown(set(raw), _RATE_LIMIT_KEYS, "rate_limits.")
    rates: dict[str, Rate | None] = {}
    for name in ("register", "token"):
        value = raw.get(name)
        if value is None:
            rates[name] = None
            continue
        try:
            rates[name] = parse_rate(value)
        except ValueError as e:
            raise read.fail(f"rate_limits.{name}", value, f"{e}; or null for no limit") from e
    proxies = raw.get("trusted_proxies") or []
    if isinstance(proxies, str):
        proxies = [proxies]
    if not isinstance(proxies, list) or not all(isinstance(p, str) for p in proxies):
        raise read.fail(
            "rate_limits.trusted_proxies", proxies, "expected a list of addresses or networks, e.g. [10.0.0.0/8]"
        )
    try:
        trusted = parse_networks(proxies)
    except ValueError as e:
        raise read.fail("rate_limits.trusted_proxies", proxies, str(e)) from e
    return RateLimitSettings(register=rates["register"], token=rates["token"], trusted_proxies=trusted)


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise ConfigError(
            f"{path}: no such file; set --set mcp_auth_config=<path to your YAML>, starting from "
            "config/config.yaml or config/dev-idp.yaml"
        ) from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e}") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return parse_settings(raw, str(path))
