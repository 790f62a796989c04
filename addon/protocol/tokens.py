"""Access token checks: JWTs signed by the IdP, verified against its JWKS (RFC 9068, RFC 8707).

The JWKS is fetched with httpx (never PyJWKClient, which blocks the event loop), cached,
and fetched again for a key id it has not seen, at most once per `refetch_interval`:
a flood of tokens with made-up key ids must not turn into a flood of requests to the IdP.
Once the keys are cached, checking a token costs no network call: the set is fetched again
in the background once it is REFRESH_AHEAD of `max_age` old, while checks go on with the
cached keys. Only a set older than `max_age` (the background fetch failed or is slow) is
fetched before the check, so a key the IdP removed still goes within `max_age`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import httpx
import jwt
from jwt.algorithms import get_default_algorithms

logger = logging.getLogger(__name__)

# Asymmetric only: with a symmetric algorithm anyone holding the public key could sign.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


# The checks made on a token, in the order they are made; what mitmweb's token view lists.
CHECKS = ("format", "algorithm", "key", "signature", "nbf", "exp", "iss", "aud", "sub", "scopes")


class TokenRejected(Exception):
    """The token is not acceptable; the message says why, for the client and the log.

    `check` names the check that failed (one of CHECKS); those before it passed.
    """

    def __init__(self, message: str, check: str = "format") -> None:
        super().__init__(message)
        self.check = check


class KeysUnavailable(Exception):
    """The IdP's signing keys could not be fetched: the proxy cannot decide, so it answers 503."""


@dataclass(frozen=True)
class SigningKey:
    jwk: jwt.PyJWK
    declared_alg: str | None  # the JWK's own `alg`, when it names one

    def fits(self, alg: str) -> bool:
        """The key's type suits the algorithm, and the algorithm is the key's own where the JWK names one."""
        if self.jwk.key_type != _KEY_TYPES.get(alg[:2]):
            return False
        return self.declared_alg is None or self.declared_alg == alg


@dataclass(frozen=True)
class VerifiedToken:
    subject: str
    client_id: str | None
    scopes: frozenset[str]
    issuer: str
    expires_at: int
    claims: dict[str, Any]

    @cached_property
    def scope(self) -> str:
        """The scopes as in a `scope` claim, sorted. Cached: a remembered token is this same object."""
        return " ".join(sorted(self.scopes))


# The share of max_age after which the set is fetched again without anyone waiting for it.
REFRESH_AHEAD = 0.75


class JwksCache:
    def __init__(
        self,
        client: httpx.AsyncClient,
        jwks_uri: str,
        refetch_interval: float = 30.0,
        max_age: float = 3600.0,
    ) -> None:
        self._client = client
        self.jwks_uri = jwks_uri
        self.refetch_interval = refetch_interval
        self.max_age = max_age
        self._keys: dict[str | None, SigningKey] = {}
        self._fetched_at = 0.0  # last successful fetch
        self._attempted_at = float("-inf")  # last attempt, successful or not
        self._fetching: asyncio.Task[None] | None = None
        self.generation = 0  # counts key sets: a verification remembered under an older one is done again

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    @property
    def key_ids(self) -> list[str | None]:
        return list(self._keys)

    async def refresh(self) -> None:
        """Fetch the JWKS; concurrent callers share one request."""
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.ensure_future(self._fetch())
        await asyncio.shield(self._fetching)

    def _refresh_in_background(self) -> None:
        if self._fetching is not None and not self._fetching.done():
            return
        self._fetching = asyncio.ensure_future(self._fetch())
        self._fetching.add_done_callback(self._report_background_failure)

    def _report_background_failure(self, fetch: asyncio.Future[None]) -> None:
        if not fetch.cancelled() and (error := fetch.exception()) is not None:
            logger.warning("JWKS refresh ahead of max_age failed, keeping the cached keys: %s", error)

    async def settled(self) -> None:
        """Wait for a fetch in progress, if any (tests, shutdown); its failure is reported already."""
        if self._fetching is not None and not self._fetching.done():
            with contextlib.suppress(KeysUnavailable):
                await asyncio.shield(self._fetching)

    async def _fetch(self) -> None:
        self._attempted_at = time.monotonic()
        try:
            response = await self._client.get(self.jwks_uri, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as e:
            raise KeysUnavailable(f"JWKS at {self.jwks_uri} could not be fetched: {type(e).__name__} {e}") from e
        keys: dict[str | None, SigningKey] = {}
        entries = document.get("keys") if isinstance(document, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            alg = entry.get("alg")
            if alg is not None and (not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS):
                continue
            try:
                keys[entry.get("kid")] = SigningKey(jwt.PyJWK(entry), alg)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as e:
                logger.warning("JWKS at %s: skipped key %s: %s", self.jwks_uri, entry.get("kid"), e)
        if not keys:
            raise KeysUnavailable(f"JWKS at {self.jwks_uri} has no usable signing keys")
        self._keys = keys
        self._fetched_at = time.monotonic()
        self.generation += 1
        logger.info("JWKS: %d signing key(s) from %s: %s", len(keys), self.jwks_uri, ", ".join(map(str, keys)))

    def _may_refetch(self) -> bool:
        return time.monotonic() - self._attempted_at >= self.refetch_interval

    async def ensure_fresh(self) -> None:
        """Keys to check with: fetched if there are none, refreshed ahead of max_age, or before use past it."""
        if not self._keys:
            if not self._may_refetch() and self._fetching is not None and self._fetching.done():
                raise KeysUnavailable(f"JWKS at {self.jwks_uri} is not available yet")
            await self.refresh()
        elif (age := time.monotonic() - self._fetched_at) > self.max_age * REFRESH_AHEAD:
            in_flight = self._fetching is not None and not self._fetching.done()
            if age > self.max_age and (in_flight or self._may_refetch()):
                await self._refresh_before_use()  # shares a fetch in flight
            elif not in_flight and self._may_refetch():
                self._refresh_in_background()

    async def key_for(self, kid: str | None, alg: str) -> SigningKey:
        await self.ensure_fresh()
        key = self._pick(kid, alg)
        if key is None and self._may_refetch():
            try:
                await self.refresh()
            except KeysUnavailable as e:
                logger.warning("JWKS refetch for unknown key id %r failed: %s", kid, e)
            key = self._pick(kid, alg)
        if key is None:
            raise TokenRejected(
                f"signing key {kid!r} is not in the identity provider's JWKS" if kid else "token has no key id (kid)",
                "key",
            )
        return key

    async def _refresh_before_use(self) -> None:
        # Stale: refresh before answering, so a key the IdP removed (rotated out, or
        # compromised) is refused at most `max_age` after it went. A refresh replaces the
        # whole set. If the IdP is down, the cached keys stay in use: tokens it signed
        # before going down keep working, and the next attempt waits `refetch_interval`.
        try:
            await self.refresh()
        except KeysUnavailable as e:
            logger.warning("JWKS refresh after %d s failed, keeping the cached keys: %s", self.max_age, e)

    def _pick(self, kid: str | None, alg: str) -> SigningKey | None:
        if kid is not None:
            key = self._keys.get(kid)
            if key is not None and not key.fits(alg):
                raise TokenRejected(f"token algorithm {alg} does not fit key {kid!r} ({key.jwk.key_type})", "key")
            return key
        # No kid: acceptable only when exactly one key fits the algorithm.
        candidates = [k for k in self._keys.values() if k.fits(alg)]
        return candidates[0] if len(candidates) == 1 else None


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """Scopes from `scope` (RFC 9068, space-separated), `scp` (Entra, Okta) or `permissions` (Auth0)."""
    scopes: set[str] = set()
    for name in ("scope", "scp", "permissions"):
        value = claims.get(name)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(str(v) for v in value)
    return frozenset(scopes)


def _seconds(value: Any) -> str:
    return f"{int(value)} s" if isinstance(value, int | float) else "?"


class TokenValidator:
    """Checks tokens; remembers the last `cache_size` good ones, so a client's next call costs no signature check.

    A remembered token is checked again in full when the key set has changed since (a removed
    key must not live on in the cache), and its time claims are compared on every use. The
    cache holds at most `cache_size` entries, whatever the number of distinct tokens sent.
    """

    def __init__(
        self, keys: JwksCache, issuer: str, audiences: Sequence[str], leeway: float = 30.0, cache_size: int = 10_000
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audiences = list(audiences)
        self.leeway = leeway
        self.cache_size = cache_size
        # digest of the token -> (what it verified to, the key set it verified against, its nbf)
        self._verified: OrderedDict[bytes, tuple[VerifiedToken, int, float | None]] = OrderedDict()

    async def verify(self, token: str) -> VerifiedToken:
        digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        remembered = self._verified.get(digest)
        if remembered is not None:
            verified, generation, not_before = remembered
            await self.keys.ensure_fresh()
            now = time.time()
            if (
                generation == self.keys.generation
                and now <= verified.expires_at + self.leeway
                and (not_before is None or now >= not_before - self.leeway)
            ):
                self._verified.move_to_end(digest)
                return verified
            del self._verified[digest]  # checked in full below: the answer says what changed
        verified = await self._verify(token)
        if self.cache_size > 0:
            nbf = verified.claims.get("nbf")
            self._verified[digest] = (verified, self.keys.generation, nbf if isinstance(nbf, int | float) else None)
            if len(self._verified) > self.cache_size:
                self._verified.popitem(last=False)
        return verified

    @property
    def remembered(self) -> int:
        return len(self._verified)

    async def _verify(self, token: str) -> VerifiedToken:
        if not token.isascii():
            # A JWT is base64url and dots; anything else is not one (and would trip the JWT library).
            raise TokenRejected("the token is not a JWT (it has characters outside ASCII)")
        if token.count(".") == 4:
            raise TokenRejected("encrypted tokens (JWE) are not accepted; send a signed JWT")
        if token.count(".") != 2:
            raise TokenRejected("the token is not a JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as e:  # DecodeError, and a non-string kid or bad crit
            raise TokenRejected(f"the token is not a readable JWT: {e}") from e
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS or alg not in get_default_algorithms():
            raise TokenRejected(
                f"signing algorithm {alg!r} is not accepted; an asymmetric algorithm is required", "algorithm"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("the token's kid is not a string")

        key = await self.keys.key_for(kid, alg)
        try:
            claims = jwt.decode(
                token,
                key.jwk.key,
                algorithms=[alg],
                audience=self.audiences,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"], "verify_sub": False},
            )
        except jwt.ExpiredSignatureError as e:
            exp = _unverified_claims(token).get("exp")
            ago = time.time() - exp if isinstance(exp, int | float) else None
            raise TokenRejected(f"token expired {_seconds(ago)} ago", "exp") from e
        except jwt.ImmatureSignatureError as e:
            claims = _unverified_claims(token)
            nbf, iat = claims.get("nbf"), claims.get("iat")
            if isinstance(nbf, int | float) and nbf > time.time():
                raise TokenRejected(
                    f"token is not valid yet (nbf is {_seconds(nbf - time.time())} ahead)", "nbf"
                ) from e
            ahead = iat - time.time() if isinstance(iat, int | float) else None
            raise TokenRejected(f"token was issued in the future (iat is {_seconds(ahead)} ahead)", "nbf") from e
        except jwt.MissingRequiredClaimError as e:
            raise TokenRejected(f"token has no {e.claim} claim", e.claim if e.claim in CHECKS else "format") from e
        except jwt.InvalidAudienceError as e:
            aud = _unverified_claims(token).get("aud")
            raise TokenRejected(
                f"token audience {aud!r} is not this resource ({' '.join(self.audiences)})", "aud"
            ) from e
        except jwt.InvalidIssuerError as e:
            iss = _unverified_claims(token).get("iss")
            raise TokenRejected(f"token issuer {iss!r} is not {self.issuer!r}", "iss") from e
        except jwt.InvalidSignatureError as e:
            raise TokenRejected("token signature does not verify", "signature") from e
        except (jwt.InvalidTokenError, jwt.InvalidKeyError) as e:
            raise TokenRejected(f"token is invalid: {e}") from e

        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenRejected("token has no sub claim", "sub")
        client_id = claims.get("client_id", claims.get("azp"))
        client_id = str(client_id) if client_id is not None else None
        scopes = token_scopes(claims)
        # These go to the MCP server as header values: a line break would start a header of
        # the token holder's choosing.
        for claim, value, check in (
            ("sub", subject, "sub"),
            ("client_id", client_id or "", "format"),
            ("scope", "".join(scopes), "scopes"),
        ):
            if _CONTROL_CHARACTER.search(value):
                raise TokenRejected(f"token's {claim} claim contains control characters", check)
        return VerifiedToken(
            subject=subject,
            client_id=client_id,
            scopes=scopes,
            issuer=str(claims["iss"]),
            expires_at=int(claims["exp"]),
            claims=claims,
        )


def check_report(
    verified: VerifiedToken | None, rejected: TokenRejected | None, required_scopes: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Every check, in order, with its outcome: True passed, False failed, None not reached.

    This is what a learner sees next to a decoded token, so the details say what was compared.
    """
    report: list[dict[str, Any]] = []
    if verified is not None:
        claims = verified.claims
        missing = [s for s in required_scopes if s not in verified.scopes]
        details = {
            "format": "a signed JWT (JWS compact serialization)",
            "algorithm": "asymmetric, as required",
            "key": "found in the identity provider's JWKS",
            "signature": "verifies with that key",
            "nbf": f"not before {claims['nbf']}" if "nbf" in claims else "no nbf claim",
            "exp": f"expires in {verified.expires_at - int(time.time())} s",
            "iss": str(verified.issuer),
            "aud": str(claims.get("aud")),
            "sub": verified.subject,
            "scopes": f"missing {' '.join(missing)}" if missing else verified.scope or "none needed",
        }
        return [{"check": c, "ok": c != "scopes" or not missing, "detail": details[c]} for c in CHECKS]
    failed = rejected.check if rejected is not None else "format"
    reached = True
    for check in CHECKS:
        if check == failed:
            report.append({"check": check, "ok": False, "detail": str(rejected) if rejected else "not checked"})
            reached = False
        else:
            report.append({"check": check, "ok": True if reached else None, "detail": "passed" if reached else ""})
    return report


def without_signature(token: str) -> str:
    """The token with its signature cut off: still decodable for a view, useless to replay."""
    head, _, _ = token.rpartition(".")
    return head + "." if token.count(".") == 2 else token[:12] + "…"


def _unverified_claims(token: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt.InvalidTokenError, json.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}
