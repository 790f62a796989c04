"""Access token checks against a real JWKS endpoint: the proxy's one line of defence.

A threaded http.server on 127.0.0.1 serves a JWKS the tests change as they go and counts the
requests; tokens are signed with real RSA and EC keys by PyJWT, or forged by hand. Whatever a
client sends, the validator may only answer with a VerifiedToken, TokenRejected or KeysUnavailable.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from addon.protocol.tokens import JwksCache, KeysUnavailable, TokenRejected, TokenValidator, VerifiedToken

from .support import Clock, JsonServer, claims, closed_port_url, public_jwk, sign

AUDIENCE = "https://proxy.example.com/mcp"
JWKS_PATH = "/jwks"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# Building an SSL context per client costs more than a test here; the JWKS is plain http anyway.
_TLS = ssl.create_default_context()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5, verify=_TLS) as c:
        yield c


class Idp:
    """The IdP as the validator sees it: an issuer and a JWKS endpoint, with keys to sign with."""

    def __init__(self, server: JsonServer, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
        self.server = server
        self.issuer = server.url
        self.jwks_uri = server.url + JWKS_PATH
        self.rsa = rsa_key
        self.ec = ec_key
        self.publish(public_jwk(rsa_key, "k1", "RS256"), public_jwk(ec_key, "e1", "ES256"))

    def publish(self, *jwks: dict[str, Any]) -> None:
        self.server.serve(JWKS_PATH, {"keys": list(jwks)})

    @property
    def fetches(self) -> int:
        return self.server.count(JWKS_PATH)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        return claims(self.issuer, AUDIENCE, **overrides)

    def token(self, **overrides: Any) -> str:
        return sign(self.rsa, self.claims(**overrides), alg="RS256", kid="k1")

    def validator(self, client: httpx.AsyncClient, leeway: float = 0, refetch_interval: float = 60) -> TokenValidator:
        keys = JwksCache(client, self.jwks_uri, refetch_interval=refetch_interval)
        return TokenValidator(keys, self.issuer, [AUDIENCE], leeway=leeway)


@pytest.fixture
def idp(server: JsonServer, rsa_private: rsa.RSAPrivateKey, ec_private: ec.EllipticCurvePrivateKey) -> Idp:
    return Idp(server, rsa_private, ec_private)


def b64(data: bytes | dict[str, Any] | list[Any] | str) -> str:
    if not isinstance(data, bytes):
        data = json.dumps(data).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def forged(header: Any, payload: Any, signature: bytes = b"") -> str:
    return f"{b64(header)}.{b64(payload)}.{b64(signature)}"


async def rejected(validator: TokenValidator, token: str) -> str:
    with pytest.raises(TokenRejected) as info:
        await validator.verify(token)
    return str(info.value)


# --- good tokens ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_valid_rs256_token(idp: Idp, client: httpx.AsyncClient) -> None:
    token_claims = idp.claims(scope="mcp:tools mcp:read", client_id="client-1")
    verified = await idp.validator(client).verify(sign(idp.rsa, token_claims, alg="RS256", kid="k1"))
    assert isinstance(verified, VerifiedToken)
    assert verified.subject == "alice"
    assert verified.client_id == "client-1"
    assert verified.scopes == frozenset({"mcp:tools", "mcp:read"})
    assert verified.issuer == idp.issuer
    assert verified.expires_at == token_claims["exp"]
    assert verified.claims == token_claims


@pytest.mark.anyio
async def test_valid_es256_token(idp: Idp, client: httpx.AsyncClient) -> None:
    token = sign(idp.ec, idp.claims(sub="bob", client_id=None, azp="client-azp"), alg="ES256", kid="e1")
    verified = await idp.validator(client).verify(token)
    assert verified.subject == "bob"
    assert verified.client_id == "client-azp"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("scope_claims", "expected"),
    [
        ({"scope": "a b  c"}, {"a", "b", "c"}),
        ({"scope": None, "scp": ["a", "b"]}, {"a", "b"}),
        ({"scope": None, "scp": "a b"}, {"a", "b"}),
        ({"scope": None, "permissions": ["read:x", "write:x"]}, {"read:x", "write:x"}),
        ({"scope": "a", "scp": ["b"], "permissions": ["c"]}, {"a", "b", "c"}),
        ({"scope": None}, set()),
        ({"scope": ""}, set()),
    ],
)
async def test_scopes_from_scope_scp_and_permissions(
    idp: Idp, client: httpx.AsyncClient, scope_claims: dict[str, Any], expected: set[str]
) -> None:
    verified = await idp.validator(client).verify(idp.token(**scope_claims))
    assert verified.scopes == frozenset(expected)


@pytest.mark.anyio
async def test_audience_list_containing_ours_is_accepted(idp: Idp, client: httpx.AsyncClient) -> None:
    token = idp.token(aud=["https://other.example.com", AUDIENCE])
    assert (await idp.validator(client).verify(token)).subject == "alice"


@pytest.mark.anyio
async def test_any_configured_audience_is_accepted(idp: Idp, client: httpx.AsyncClient) -> None:
    keys = JwksCache(client, idp.jwks_uri)
    validator = TokenValidator(keys, idp.issuer, ["api://mcp", AUDIENCE], leeway=0)
    assert (await validator.verify(idp.token(aud="api://mcp"))).subject == "alice"


@pytest.mark.anyio
async def test_token_without_kid_is_accepted_when_exactly_one_key_fits(idp: Idp, client: httpx.AsyncClient) -> None:
    token = sign(idp.rsa, idp.claims(), kid=None)
    assert (await idp.validator(client).verify(token)).subject == "alice"


@pytest.mark.anyio
async def test_token_without_kid_is_rejected_when_several_keys_fit(
    idp: Idp, client: httpx.AsyncClient, rsa_private_2: rsa.RSAPrivateKey
) -> None:
    idp.publish(public_jwk(idp.rsa, "k1", "RS256"), public_jwk(rsa_private_2, "k2", "RS256"))
    assert "kid" in await rejected(idp.validator(client), sign(idp.rsa, idp.claims(), kid=None))


@pytest.mark.anyio
async def test_jwk_without_alg_accepts_any_algorithm_of_its_type(idp: Idp, client: httpx.AsyncClient) -> None:
    idp.publish(public_jwk(idp.rsa, "k1"))
    validator = idp.validator(client)
    for alg in ("RS256", "RS512", "PS256"):
        assert (await validator.verify(sign(idp.rsa, idp.claims(), alg=alg))).subject == "alice"


@pytest.mark.anyio
async def test_expired_within_leeway_is_accepted(idp: Idp, client: httpx.AsyncClient) -> None:
    token = idp.token(exp=int(time.time()) - 5)
    assert (await idp.validator(client, leeway=30).verify(token)).subject == "alice"


@pytest.mark.anyio
async def test_checking_cached_keys_costs_no_request(idp: Idp, client: httpx.AsyncClient) -> None:
    validator = idp.validator(client)
    for _ in range(5):
        await validator.verify(idp.token())
    assert idp.fetches == 1


@pytest.mark.anyio
async def test_concurrent_first_use_shares_one_fetch(idp: Idp, client: httpx.AsyncClient) -> None:
    validator = idp.validator(client)
    results = await asyncio.gather(*(validator.verify(idp.token()) for _ in range(20)))
    assert {r.subject for r in results} == {"alice"}
    assert idp.fetches == 1


# --- forged and broken tokens -----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none(idp: Idp, client: httpx.AsyncClient, alg: str) -> None:
    token = forged({"alg": alg, "typ": "JWT", "kid": "k1"}, idp.claims())
    assert "algorithm" in await rejected(idp.validator(client), token)
    assert idp.fetches == 0  # refused before any key is looked up


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_signed_with_the_public_key_algorithm_confusion(
    idp: Idp, client: httpx.AsyncClient, alg: str
) -> None:
    pem = idp.rsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_text = json.dumps(public_jwk(idp.rsa, "k1", "RS256")).encode()
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    validator = idp.validator(client)
    for secret in (pem, pem.strip(), jwk_text):
        signing_input = f"{b64({'alg': alg, 'typ': 'JWT', 'kid': 'k1'})}.{b64(idp.claims())}"
        signature = hmac.new(secret, signing_input.encode(), digest).digest()
        assert "algorithm" in await rejected(validator, f"{signing_input}.{b64(signature)}")


@pytest.mark.anyio
async def test_symmetric_key_in_the_jwks_is_never_used(idp: Idp, client: httpx.AsyncClient) -> None:
    secret = b"shared-secret-shared-secret-1234"
    idp.publish({"kty": "oct", "kid": "k1", "k": b64(secret)}, public_jwk(idp.ec, "e1", "ES256"))
    token = jwt.encode(idp.claims(), secret, algorithm="HS256", headers={"kid": "k1"})
    await rejected(idp.validator(client), token)


@pytest.mark.anyio
async def test_changed_claims_with_the_original_signature(idp: Idp, client: httpx.AsyncClient) -> None:
    header, _, signature = idp.token().split(".")
    for changes in ({"sub": "admin"}, {"scope": "mcp:tools mcp:admin"}, {"exp": int(time.time()) + 10**6}):
        tampered = f"{header}.{b64(idp.claims(**changes))}.{signature}"
        assert "signature" in await rejected(idp.validator(client), tampered)


@pytest.mark.anyio
async def test_changed_header_with_the_original_signature(idp: Idp, client: httpx.AsyncClient) -> None:
    _, payload, signature = idp.token().split(".")
    tampered = f"{b64({'alg': 'RS256', 'kid': 'k1', 'typ': 'at+jwt'})}.{payload}.{signature}"
    await rejected(idp.validator(client), tampered)


@pytest.mark.anyio
async def test_signed_by_a_key_not_in_the_jwks(
    idp: Idp, client: httpx.AsyncClient, rsa_private_2: rsa.RSAPrivateKey
) -> None:
    validator = idp.validator(client)
    assert "signature" in await rejected(validator, sign(rsa_private_2, idp.claims(), kid="k1"))
    assert "k-attacker" in await rejected(validator, sign(rsa_private_2, idp.claims(), kid="k-attacker"))


@pytest.mark.anyio
async def test_embedded_jwk_and_jku_headers_are_not_trusted(
    idp: Idp, client: httpx.AsyncClient, rsa_private_2: rsa.RSAPrivateKey
) -> None:
    attacker = public_jwk(rsa_private_2, "k1", "RS256")
    token = sign(
        rsa_private_2,
        idp.claims(),
        kid="k1",
        headers={"jwk": attacker, "jku": idp.server.url + "/attacker-jwks", "x5u": idp.server.url + "/x"},
    )
    idp.server.serve("/attacker-jwks", {"keys": [attacker]})
    await rejected(idp.validator(client), token)
    assert idp.server.count("/attacker-jwks") == 0


@pytest.mark.anyio
async def test_expired_token(idp: Idp, client: httpx.AsyncClient) -> None:
    message = await rejected(idp.validator(client), idp.token(exp=int(time.time()) - 100))
    assert "expired" in message
    seconds = int(message.split("expired ")[1].split(" s ago")[0])
    assert 99 <= seconds <= 110


@pytest.mark.anyio
async def test_expired_beyond_leeway(idp: Idp, client: httpx.AsyncClient) -> None:
    message = await rejected(idp.validator(client, leeway=30), idp.token(exp=int(time.time()) - 60))
    assert "expired" in message


@pytest.mark.anyio
async def test_not_yet_valid(idp: Idp, client: httpx.AsyncClient) -> None:
    message = await rejected(idp.validator(client), idp.token(nbf=int(time.time()) + 100))
    assert "not valid yet" in message


@pytest.mark.anyio
@pytest.mark.parametrize("claim", ["exp", "iss", "aud", "sub"])
async def test_missing_required_claim(idp: Idp, client: httpx.AsyncClient, claim: str) -> None:
    assert claim in await rejected(idp.validator(client), idp.token(**{claim: None}))


@pytest.mark.anyio
@pytest.mark.parametrize("sub", ["", 42, ["alice"]])
async def test_unusable_subject(idp: Idp, client: httpx.AsyncClient, sub: Any) -> None:
    await rejected(idp.validator(client), idp.token(sub=sub))


@pytest.mark.anyio
@pytest.mark.parametrize("iss", ["https://evil.example.com", "{issuer}/", "{issuer}/realms/x", "", "{issuer} "])
async def test_wrong_issuer(idp: Idp, client: httpx.AsyncClient, iss: str) -> None:
    assert "iss" in await rejected(idp.validator(client), idp.token(iss=iss.format(issuer=idp.issuer)))


@pytest.mark.anyio
@pytest.mark.parametrize(
    "aud", ["https://other.example.com/mcp", AUDIENCE + "/", [], ["https://a.example", "https://b.example"], "mcp"]
)
async def test_wrong_audience(idp: Idp, client: httpx.AsyncClient, aud: Any) -> None:
    assert "aud" in await rejected(idp.validator(client), idp.token(aud=aud))


@pytest.mark.anyio
async def test_jwe_shaped_token(idp: Idp, client: httpx.AsyncClient) -> None:
    jwe = ".".join(
        [b64({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "k1"}), b64(b"k"), b64(b"iv"), b64(b"c"), b64(b"t")]
    )
    assert "JWE" in await rejected(idp.validator(client), jwe)


@pytest.mark.anyio
async def test_jwk_declares_rs256_but_token_says_ps256(idp: Idp, client: httpx.AsyncClient) -> None:
    token = sign(idp.rsa, idp.claims(), alg="PS256", kid="k1")  # a valid PS256 signature by the right key
    assert "PS256" in await rejected(idp.validator(client), token)


@pytest.mark.anyio
async def test_ec_token_naming_an_rsa_key(idp: Idp, client: httpx.AsyncClient) -> None:
    token = sign(idp.ec, idp.claims(), alg="ES256", kid="k1")
    await rejected(idp.validator(client), token)


@pytest.mark.anyio
async def test_rsa_token_naming_an_ec_key(idp: Idp, client: httpx.AsyncClient) -> None:
    token = sign(idp.rsa, idp.claims(), alg="RS256", kid="e1")
    await rejected(idp.validator(client), token)


@pytest.mark.anyio
async def test_ec_curve_mismatch(idp: Idp, client: httpx.AsyncClient) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    idp.publish(public_jwk(p384, "e1"))  # a P-384 key without alg
    token = sign(idp.ec, idp.claims(), alg="ES256", kid="e1")  # P-256 signature
    await rejected(idp.validator(client), token)


@pytest.mark.anyio
async def test_jwks_keys_other_than_signing_keys_are_ignored(idp: Idp, client: httpx.AsyncClient) -> None:
    idp.publish(public_jwk(idp.rsa, "k1", "RS256", use="enc"), public_jwk(idp.ec, "e1", "ES256"))
    await rejected(idp.validator(client), idp.token())


# --- unknown key ids, rotation and the refetch limit ------------------------------------------


@pytest.mark.anyio
async def test_unknown_kid_refetches_once_then_rejects_and_is_rate_limited(
    idp: Idp, client: httpx.AsyncClient, clock: Clock
) -> None:
    validator = idp.validator(client, refetch_interval=30)
    await validator.verify(idp.token())
    assert idp.fetches == 1
    clock.advance(31)
    assert "nope-1" in await rejected(validator, sign(idp.rsa, idp.claims(), kid="nope-1"))
    assert idp.fetches == 2  # looked again, once
    for i in range(10):
        await rejected(validator, sign(idp.rsa, idp.claims(), kid=f"flood-{i}"))
    assert idp.fetches == 2  # within the interval: no request at all
    clock.advance(31)
    await rejected(validator, sign(idp.rsa, idp.claims(), kid="nope-2"))
    assert idp.fetches == 3


@pytest.mark.anyio
async def test_unknown_kid_right_after_the_first_fetch_does_not_fetch_again(
    idp: Idp, client: httpx.AsyncClient
) -> None:
    validator = idp.validator(client, refetch_interval=60)
    await rejected(validator, sign(idp.rsa, idp.claims(), kid="nope"))
    await rejected(validator, sign(idp.rsa, idp.claims(), kid="nope-again"))
    assert idp.fetches == 1


@pytest.mark.anyio
async def test_key_rotation_is_picked_up_by_the_refetch(
    idp: Idp, client: httpx.AsyncClient, clock: Clock, rsa_private_2: rsa.RSAPrivateKey
) -> None:
    validator = idp.validator(client, refetch_interval=30)
    await validator.verify(idp.token())
    idp.publish(public_jwk(idp.rsa, "k1", "RS256"), public_jwk(rsa_private_2, "k2", "RS256"))
    clock.advance(31)
    rotated = sign(rsa_private_2, idp.claims(sub="carol"), kid="k2")
    assert (await validator.verify(rotated)).subject == "carol"
    assert (await validator.verify(idp.token())).subject == "alice"  # the old key still works
    assert idp.fetches == 2


@pytest.mark.anyio
async def test_stale_keys_are_refreshed_before_use_and_removed_keys_stop_working(
    idp: Idp, client: httpx.AsyncClient, clock: Clock, rsa_private_2: rsa.RSAPrivateKey
) -> None:
    keys = JwksCache(client, idp.jwks_uri, refetch_interval=30, max_age=3600)
    validator = TokenValidator(keys, idp.issuer, [AUDIENCE], leeway=0)
    await validator.verify(idp.token())
    idp.publish(public_jwk(rsa_private_2, "k2", "RS256"))  # k1 retired at the IdP
    clock.advance(3601)
    # The set is older than max_age: fetched again before this token is checked, and replaced.
    await rejected(validator, idp.token())
    assert keys.key_ids == ["k2"]
    assert idp.fetches == 2


@pytest.mark.anyio
async def test_keys_are_refreshed_ahead_in_the_background_so_no_check_waits_for_the_idp(
    idp: Idp, client: httpx.AsyncClient, clock: Clock, rsa_private_2: rsa.RSAPrivateKey
) -> None:
    keys = JwksCache(client, idp.jwks_uri, refetch_interval=30, max_age=3600)
    validator = TokenValidator(keys, idp.issuer, [AUDIENCE], leeway=0)
    await validator.verify(idp.token())
    idp.publish(public_jwk(idp.rsa, "k1", "RS256"), public_jwk(rsa_private_2, "k2", "RS256"))
    clock.advance(3600 * 0.8)
    # Past the refresh-ahead point, short of max_age: this check uses the cached keys at
    # once and a refresh starts beside it.
    assert (await validator.verify(idp.token())).subject == "alice"
    assert keys.key_ids == ["k1", "e1"]  # the check did not wait for the new set
    await keys.settled()
    assert keys.key_ids == ["k1", "k2"]
    assert idp.fetches == 2
    # Fresh again: no further fetch.
    await validator.verify(idp.token())
    await keys.settled()
    assert idp.fetches == 2


# --- remembered tokens ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_remembered_token_is_not_verified_again(
    idp: Idp, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    validator = idp.validator(client)
    token = idp.token()
    first = await validator.verify(token)
    decodes = 0
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        nonlocal decodes
        decodes += 1
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    assert await validator.verify(token) is first
    assert decodes == 0
    await validator.verify(idp.token(sub="bob"))  # another token: checked in full
    assert decodes == 1


@pytest.mark.anyio
async def test_a_remembered_token_goes_with_its_key(
    idp: Idp, client: httpx.AsyncClient, clock: Clock, rsa_private_2: rsa.RSAPrivateKey
) -> None:
    validator = idp.validator(client, refetch_interval=30)
    token = idp.token()
    await validator.verify(token)
    idp.publish(public_jwk(rsa_private_2, "k2", "RS256"))  # k1 removed at the IdP
    clock.advance(31)
    # A token signed with the new key makes the proxy fetch the set; the remembered token's key is gone.
    await validator.verify(sign(rsa_private_2, idp.claims(sub="carol"), kid="k2"))
    await rejected(validator, token)


@pytest.mark.anyio
async def test_a_remembered_token_still_expires(idp: Idp, client: httpx.AsyncClient) -> None:
    validator = idp.validator(client, leeway=0)
    token = sign(idp.rsa, idp.claims(exp=int(time.time()) + 1), kid="k1")
    await validator.verify(token)
    await asyncio.sleep(1.2)
    with pytest.raises(TokenRejected, match="expired"):
        await validator.verify(token)


@pytest.mark.anyio
async def test_remembered_tokens_are_bounded(idp: Idp, client: httpx.AsyncClient) -> None:
    keys = JwksCache(client, idp.jwks_uri)
    validator = TokenValidator(keys, idp.issuer, [AUDIENCE], leeway=0, cache_size=3)
    for n in range(10):
        await validator.verify(idp.token(sub=f"user-{n}"))
    assert validator.remembered == 3
    off = TokenValidator(keys, idp.issuer, [AUDIENCE], leeway=0, cache_size=0)
    await off.verify(idp.token())
    assert off.remembered == 0


@pytest.mark.anyio
async def test_failed_refetch_keeps_the_cached_keys(idp: Idp, client: httpx.AsyncClient, clock: Clock) -> None:
    validator = idp.validator(client, refetch_interval=30)
    await validator.verify(idp.token())
    idp.server.serve(JWKS_PATH, {"error": "down"}, status=503)
    clock.advance(31)
    await rejected(validator, sign(idp.rsa, idp.claims(), kid="unknown"))
    assert idp.fetches == 2
    assert (await validator.verify(idp.token())).subject == "alice"


# --- the JWKS endpoint failing ----------------------------------------------------------------


@pytest.mark.anyio
async def test_jwks_down_at_first_use(idp: Idp, client: httpx.AsyncClient) -> None:
    keys = JwksCache(client, closed_port_url() + JWKS_PATH, refetch_interval=30)
    validator = TokenValidator(keys, idp.issuer, [AUDIENCE], leeway=0)
    with pytest.raises(KeysUnavailable):
        await validator.verify(idp.token())
    with pytest.raises(KeysUnavailable):
        await validator.verify(idp.token())
    assert not keys.has_keys


@pytest.mark.anyio
async def test_jwks_error_at_first_use_is_retried_at_most_once_per_interval(
    idp: Idp, client: httpx.AsyncClient, clock: Clock
) -> None:
    idp.server.serve(JWKS_PATH, {"error": "boom"}, status=500)
    validator = idp.validator(client, refetch_interval=30)
    for _ in range(5):
        with pytest.raises(KeysUnavailable):
            await validator.verify(idp.token())
    assert idp.fetches == 1
    idp.publish(public_jwk(idp.rsa, "k1", "RS256"))
    clock.advance(31)
    assert (await validator.verify(idp.token())).subject == "alice"
    assert idp.fetches == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    "document",
    [
        {"keys": []},
        {},
        [],
        "keys",
        None,
        {"keys": None},
        {"keys": "k1"},
        {"keys": {"kid": "k1"}},
        {"keys": 5},
        {"keys": [5, "x", None, []]},
        {"keys": [{"kty": "RSA", "kid": "k1", "n": "not-base64!", "e": "AQAB"}]},
        {"keys": [{"kty": "EC", "kid": "e1", "crv": "P-999", "x": "AA", "y": "AA"}]},
        {"keys": [{"kid": "k1"}]},
        b"<html>not json</html>",
    ],
)
async def test_jwks_without_usable_keys(idp: Idp, client: httpx.AsyncClient, document: Any) -> None:
    idp.server.serve(JWKS_PATH, document)
    with pytest.raises(KeysUnavailable):
        await idp.validator(client).verify(idp.token())


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad_entry",
    [
        {"kty": "RSA", "kid": "bad", "alg": ["RS256"], "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": ["bad"], "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "bad", "alg": "HS256", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "bad", "use": ["sig"], "n": "AQAB", "e": "AQAB"},
        {"kty": ["RSA"], "kid": "bad"},
        {"kty": "oct", "kid": "bad", "k": "c2VjcmV0"},
    ],
)
async def test_one_malformed_jwk_does_not_spoil_the_others(
    idp: Idp, client: httpx.AsyncClient, bad_entry: dict[str, Any]
) -> None:
    idp.publish(bad_entry, public_jwk(idp.rsa, "k1", "RS256"))
    assert (await idp.validator(client).verify(idp.token())).subject == "alice"


# --- hostile input: nothing but TokenRejected may come out ------------------------------------


def hostile_tokens(good: str, claims_: dict[str, Any]) -> list[str]:
    header, payload, signature = good.split(".")
    return [
        "",
        ".",
        "..",
        "...",
        "....",
        "a.b.c",
        "a.b",
        "not a jwt",
        "Bearer " + good,
        good + ".",
        good + "..",
        " " + good,
        good.replace(".", ". ", 1),
        "é.é.é",
        "\x00.\x00.\x00",
        f"{header}.{payload}",
        f"{header}..{signature}",
        f".{payload}.{signature}",
        f"{header}.{payload}.",
        f"{header}.{payload}.!!!!",
        f"{header}=.{payload}.{signature}",
        f"{header}.{payload}.{signature}=====",
        f"{b64(b'not json')}.{payload}.{signature}",
        f"{b64(b'\xff\xfe')}.{payload}.{signature}",
        f"{header}.{b64(b'not json')}.{signature}",
        f"{header}.{b64(b'\xff')}.{signature}",
        f"{header}.{b64([1, 2])}.{signature}",
        f"{header}.{b64('a string')}.{signature}",
        forged([], claims_),
        forged("RS256", claims_),
        forged(None, claims_),
        forged({}, claims_),
        forged({"kid": "k1"}, claims_),
        forged({"alg": ["RS256"], "kid": "k1"}, claims_),
        forged({"alg": {"RS256": 1}, "kid": "k1"}, claims_),
        forged({"alg": 256, "kid": "k1"}, claims_),
        forged({"alg": None, "kid": "k1"}, claims_),
        forged({"alg": "RS256", "kid": 1}, claims_),
        forged({"alg": "RS256", "kid": ["k1"]}, claims_),
        forged({"alg": "RS256", "kid": {"k": 1}}, claims_),
        forged({"alg": "RS256", "kid": None}, claims_),
        forged({"alg": "RS256", "kid": "k1" * 5000}, claims_),
        forged({"alg": "RS256", "kid": "k1", "crit": ["exp"]}, claims_),
        forged({"alg": "RS256", "kid": "k1", "crit": "b64"}, claims_),
        forged({"alg": "RS256", "kid": "k1", "b64": False}, claims_),
        forged({"alg": "RS256", "kid": "k1"}, claims_, b"x" * 256),
        forged({"alg": "ES256", "kid": "e1"}, claims_, b"x" * 64),
        forged({"alg": "ES256", "kid": "e1"}, claims_, b"x" * 7),
        forged({"alg": "EdDSA", "kid": "k1"}, claims_, b"x" * 64),
        forged({"alg": "ES256K", "kid": "e1"}, claims_),
        forged({"alg": "RSA-OAEP", "kid": "k1"}, claims_),
        forged({"alg": "dir", "enc": "A256GCM"}, claims_),
        "[" * 10000 + "." + payload + "." + signature,
        b64("[" * 100000) + "." + payload + "." + signature,
        b64('{"alg":' * 5000) + "." + payload + "." + signature,
    ]


@pytest.mark.anyio
async def test_hostile_tokens_only_ever_raise_token_rejected(idp: Idp, client: httpx.AsyncClient) -> None:
    validator = idp.validator(client)
    good = idp.token()
    await validator.verify(good)
    for token in hostile_tokens(good, idp.claims()):
        try:
            await validator.verify(token)
        except TokenRejected:
            continue
        except Exception as e:
            pytest.fail(f"{type(e).__name__} escaped for token {token[:80]!r}: {e}")
        pytest.fail(f"accepted hostile token {token[:80]!r}")


@pytest.mark.anyio
async def test_random_mutations_of_a_valid_token(idp: Idp, client: httpx.AsyncClient) -> None:
    validator = idp.validator(client)
    rng = random.Random(20260728)  # noqa: S311 - fixed seed: a failure reproduces
    alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "{}'
    good = sign(idp.ec, idp.claims(), alg="ES256", kid="e1")
    original = await validator.verify(good)
    for _ in range(400):
        token = list(good)
        for _ in range(rng.randint(1, 4)):
            operation = rng.random()
            position = rng.randrange(len(token))
            if operation < 0.6:
                token[position] = rng.choice(alphabet)
            elif operation < 0.8:
                del token[position]
            else:
                token.insert(position, rng.choice(alphabet))
        mutated = "".join(token)
        try:
            verified = await validator.verify(mutated)
        except TokenRejected:
            continue
        except Exception as e:
            pytest.fail(f"{type(e).__name__} escaped for mutation {mutated!r}: {e}")
        # Base64 ignores the spare bits of a segment's last character: such a "mutation" is the same token.
        assert verified.claims == original.claims, mutated
    assert idp.fetches == 1


@pytest.mark.anyio
async def test_hostile_tokens_against_an_empty_cache_raise_only_rejected_or_unavailable(
    idp: Idp, client: httpx.AsyncClient
) -> None:
    keys = JwksCache(client, closed_port_url() + JWKS_PATH)
    validator = TokenValidator(keys, idp.issuer, [AUDIENCE], leeway=0)
    good = idp.token()
    for token in [good, *hostile_tokens(good, idp.claims())]:
        try:
            await validator.verify(token)
        except (TokenRejected, KeysUnavailable):
            continue
        except Exception as e:
            pytest.fail(f"{type(e).__name__} escaped for token {token[:80]!r}: {e}")
        pytest.fail(f"accepted token {token[:80]!r} without keys")
