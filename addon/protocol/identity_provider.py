"""The proxy's view of the IdP: its metadata, its keys, and the HTTP calls the facade makes to it.

Discovery runs at start and again on demand while it fails, rate-limited so that a down
IdP costs one attempt per `retry_interval` (5 s), not one per request: an IdP that comes up
after the proxy is in use at most 5 s later, without a restart. Everything here is async
and uses one shared httpx client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from addon.protocol.errors import OAuthError
from addon.protocol.server_metadata import DiscoveryError, ServerMetadata, discover
from addon.protocol.tokens import JwksCache, KeysUnavailable, TokenValidator

logger = logging.getLogger(__name__)


class IdentityProviderUnavailable(Exception):
    """The IdP cannot be reached or has no usable metadata yet; the proxy answers 503 with Retry-After."""

    retry_after = 5


class IdentityProvider:
    def __init__(
        self,
        issuer: str,
        audiences: Sequence[str],
        *,
        timeout: float = 10.0,
        leeway: float = 30.0,
        jwks_refetch_interval: float = 30.0,
        jwks_max_age: float = 600.0,
        retry_interval: float = 5.0,
        token_cache_size: int = 10_000,
    ) -> None:
        self.issuer = issuer
        self.audiences = list(audiences)
        self.leeway = leeway
        self.jwks_refetch_interval = jwks_refetch_interval
        self.jwks_max_age = jwks_max_age
        self.retry_interval = retry_interval
        self.token_cache_size = token_cache_size
        self.client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": "mcp-auth-addon"},
            # The IdP is reached directly; a proxy from the environment would be a surprise here.
            trust_env=False,
        )
        self._metadata: ServerMetadata | None = None
        self._validator: TokenValidator | None = None
        self._discovering: asyncio.Task[ServerMetadata] | None = None
        self._last_failure: tuple[float, str] | None = None

    async def start(self) -> None:
        """Discover metadata and keys once at start; failures are logged, and retried on demand."""
        try:
            validator = await self.validator()
            await validator.keys.refresh()
        except (IdentityProviderUnavailable, KeysUnavailable) as e:
            logger.error("identity provider %s not ready: %s (will retry on demand)", self.issuer, e)

    async def close(self) -> None:
        await self.client.aclose()

    @property
    def ready(self) -> bool:
        return self._validator is not None and self._validator.keys.has_keys

    async def metadata(self) -> ServerMetadata:
        if self._metadata is not None:
            return self._metadata
        if self._last_failure and time.monotonic() - self._last_failure[0] < self.retry_interval:
            raise IdentityProviderUnavailable(self._last_failure[1])
        if self._discovering is None or self._discovering.done():
            self._discovering = asyncio.ensure_future(discover(self.client, self.issuer))
        try:
            metadata = await asyncio.shield(self._discovering)
        except DiscoveryError as e:
            self._last_failure = (time.monotonic(), str(e))
            raise IdentityProviderUnavailable(str(e)) from e
        if self._metadata is None:
            self._metadata = metadata
            logger.info(
                "identity provider %s: metadata from %s (registration: %s)",
                self.issuer,
                metadata.source_url,
                metadata.registration_endpoint or "none",
            )
        return self._metadata

    async def validator(self) -> TokenValidator:
        if self._validator is None:
            metadata = await self.metadata()
            if not metadata.jwks_uri:
                raise IdentityProviderUnavailable(
                    f"{metadata.source_url} has no jwks_uri: the proxy cannot check token signatures"
                )
            if self._validator is None:
                keys = JwksCache(
                    self.client,
                    metadata.jwks_uri,
                    refetch_interval=self.jwks_refetch_interval,
                    max_age=self.jwks_max_age,
                )
                self._validator = TokenValidator(
                    keys, metadata.issuer, self.audiences, self.leeway, cache_size=self.token_cache_size
                )
        return self._validator

    # --- calls the facade forwards ------------------------------------------------------

    async def _endpoints(self) -> ServerMetadata:
        """The metadata, or the 503 the facade answers while the IdP cannot be reached."""
        try:
            return await self.metadata()
        except IdentityProviderUnavailable as e:
            raise OAuthError(
                503,
                "temporarily_unavailable",
                f"the identity provider is not available: {e}",
                {"Retry-After": str(e.retry_after)},
            ) from e

    async def _post(self, url: str, what: str, **kwargs: Any) -> httpx.Response:
        # The IdP went away after start: the client did nothing wrong and may simply retry.
        retry = {"Retry-After": str(IdentityProviderUnavailable.retry_after)}
        try:
            return await self.client.post(url, **kwargs)
        except httpx.TimeoutException as e:
            raise OAuthError(504, "temporarily_unavailable", f"the identity provider's {what} timed out", retry) from e
        except httpx.HTTPError as e:
            raise OAuthError(
                502,
                "temporarily_unavailable",
                f"the identity provider's {what} is unreachable ({type(e).__name__})",
                retry,
            ) from e

    async def register(self, document: Mapping[str, Any]) -> tuple[int, Any]:
        metadata = await self._endpoints()
        if not metadata.registration_endpoint:
            raise OAuthError(
                503,
                "temporarily_unavailable",
                "the identity provider offers no dynamic client registration; "
                "the proxy's administrator must set registration.mode: static",
            )
        response = await self._post(
            metadata.registration_endpoint,
            "registration endpoint",
            json=dict(document),
            headers={"Accept": "application/json"},
        )
        return response.status_code, _json_or_error(response, "registration endpoint")

    async def token(self, form: Mapping[str, str], basic_auth: tuple[str, str] | None) -> tuple[int, Any]:
        metadata = await self._endpoints()
        response = await self._post(
            metadata.token_endpoint,
            "token endpoint",
            data=dict(form),
            auth=basic_auth,
            headers={"Accept": "application/json"},
        )
        return response.status_code, _json_or_error(response, "token endpoint")

    async def revoke(self, form: Mapping[str, str], basic_auth: tuple[str, str] | None) -> int:
        metadata = await self._endpoints()
        if not metadata.revocation_endpoint:
            raise OAuthError(400, "unsupported_token_type", "the identity provider offers no revocation")
        response = await self._post(
            metadata.revocation_endpoint, "revocation endpoint", data=dict(form), auth=basic_auth
        )
        return response.status_code


def _json_or_error(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as e:
        raise OAuthError(
            502, "server_error", f"the identity provider's {what} answered HTTP {response.status_code} without JSON"
        ) from e
