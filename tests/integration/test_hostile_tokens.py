"""Hostile tokens against the real proxy: every forgery is refused, and the MCP server sees nothing.

mitmdump runs the addon in front of a counting upstream (a stand-in MCP server that records
every request it gets), with the token lab as its IdP: a real metadata document and a JWKS
whose keys the test adds, retires and rotates while the proxy runs. Each row of the table is
one request; a refused one must be answered by the proxy itself (401 with a Bearer challenge,
or 400 for a malformed request) with a JSON error body, and reach the upstream not at all.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import stack
from token_lab import (
    CountingUpstream,
    LabKey,
    TokenLab,
    hmac_signed,
    jwe_like,
    new_key,
    payload_of,
    swap_payload,
    unsigned,
)

pytestmark = [pytest.mark.integration]

ProxyFactory = Callable[..., stack.Service]  # the start_proxy fixture (conftest.py)

REFETCH_INTERVAL = 2  # jwks_refetch_interval_seconds for every proxy here
MCP_BODY = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def sdk_field(header: str, name: str) -> str | None:
    """A challenge field as the MCP Python SDK reads it (mcp/client/auth/utils.py)."""
    match = re.search(rf'{name}=(?:"([^"]+)"|([^\s,]+))', header)
    return (match.group(1) or match.group(2)) if match else None


# --- the world each case is built in ------------------------------------------------------------


@dataclass
class World:
    lab: TokenLab
    attacker: TokenLab  # another IdP entirely: its JWKS must never be fetched
    rsa: LabKey  # published in the lab's JWKS
    ec: LabKey  # published in the lab's JWKS
    stray: LabKey  # never published anywhere
    resource: str  # the proxy's resource: the audience it accepts

    def good(self, key: LabKey | None = None, **claims: Any) -> str:
        return self.lab.mint(self.resource, key=key or self.rsa, **claims)


@dataclass
class Attempt:
    headers: list[tuple[str, str]] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    content_type: str = "application/json"


def bearer(token: str, scheme: str = "Bearer") -> Attempt:
    return Attempt(headers=[("Authorization", f"{scheme} {token}")])


@dataclass
class Case:
    name: str
    attempt: Callable[[World], Attempt]
    status: int = 401
    error: str | None = "invalid_token"  # the challenge's error attribute; None: a challenge without one
    reason: str = ""  # a regex the JSON error_description must match


def _now() -> int:
    return int(time.time())


def _alg_none(w: World) -> Attempt:
    claims = payload_of(w.good())
    return bearer(unsigned({"alg": "none", "typ": "JWT", "kid": w.rsa.kid}, claims))


def _hs256_pem(w: World) -> Attempt:
    claims = payload_of(w.good())
    return bearer(hmac_signed({"alg": "HS256", "typ": "JWT", "kid": w.rsa.kid}, claims, w.rsa.public_pem()))


def _hs256_jwk(w: World) -> Attempt:
    claims = payload_of(w.good())
    jwk_text = json.dumps(w.rsa.public_jwk()).encode()
    return bearer(hmac_signed({"alg": "HS256", "typ": "JWT", "kid": w.rsa.kid}, claims, jwk_text))


def _hs256_ec_pem_no_kid(w: World) -> Attempt:
    claims = payload_of(w.good())
    return bearer(hmac_signed({"alg": "HS256", "typ": "JWT"}, claims, w.ec.public_pem()))


def _unknown_kid(w: World) -> Attempt:
    return bearer(w.lab.mint(w.resource, key=w.stray, kid=f"unknown-{secrets.token_hex(4)}"))


def _swapped_payload(w: World) -> Attempt:
    token = w.good()
    claims = payload_of(token) | {"sub": "admin", "scope": "mcp:tools mcp:admin"}
    return bearer(swap_payload(token, claims))


def _stray_key_published_kid(w: World) -> Attempt:
    return bearer(w.lab.mint(w.resource, key=w.stray, kid=w.rsa.kid))


def _stray_key_no_kid(w: World) -> Attempt:
    return bearer(w.lab.mint(w.resource, key=w.stray, kid=None))


def _embedded_jwk(w: World) -> Attempt:
    # CVE-2018-0114 style: the token carries its own (attacker's) public key.
    return bearer(w.lab.mint(w.resource, key=w.stray, kid=w.rsa.kid, headers={"jwk": w.stray.public_jwk()}))


def _jku_to_attacker(w: World) -> Attempt:
    key = w.attacker.key()
    return bearer(w.attacker.mint(w.resource, key=key, iss=w.lab.issuer, headers={"jku": w.attacker.jwks_uri}))


def _attacker_issuer(w: World) -> Attempt:
    return bearer(w.attacker.mint(w.resource))


def _ec_alg_on_rsa_kid(w: World) -> Attempt:
    return bearer(w.lab.mint(w.resource, key=w.ec, kid=w.rsa.kid))


def _ps256_on_rs256_key(w: World) -> Attempt:
    return bearer(w.lab.mint(w.resource, key=w.rsa, alg="PS256"))


def _kid_not_string(w: World) -> Attempt:
    claims = payload_of(w.good())
    return bearer(unsigned({"alg": "RS256", "kid": 12345}, claims, "c2ln"))


def _jwe(w: World) -> Attempt:
    return bearer(jwe_like(w.rsa.kid))


def _query(w: World) -> Attempt:
    return Attempt(params={"access_token": w.good()})


def _query_and_header(w: World) -> Attempt:
    token = w.good()
    return Attempt(headers=[("Authorization", f"Bearer {token}")], params={"access_token": token})


def _form_body(w: World) -> Attempt:
    return Attempt(content=f"access_token={w.good()}".encode(), content_type="application/x-www-form-urlencoded")


def _two_headers(w: World) -> Attempt:
    return Attempt(headers=[("Authorization", f"Bearer {w.good()}"), ("Authorization", f"Bearer {w.good()}")])


def _two_headers_one_bad(w: World) -> Attempt:
    return Attempt(headers=[("Authorization", f"Bearer {w.good()}"), ("Authorization", "Bearer garbage")])


CASES = [
    Case("alg none", _alg_none, reason=r"algorithm 'none' is not accepted"),
    Case("HS256, public key PEM as the secret", _hs256_pem, reason=r"algorithm 'HS256' is not accepted"),
    Case("HS256, public JWK as the secret", _hs256_jwk, reason=r"algorithm 'HS256' is not accepted"),
    Case("HS256, EC public PEM as the secret, no kid", _hs256_ec_pem_no_kid, reason=r"algorithm 'HS256'"),
    Case("unknown kid", _unknown_kid, reason=r"signing key 'unknown-\w+' is not in the identity provider's JWKS"),
    Case("valid signature, swapped payload", _swapped_payload, reason=r"signature does not verify"),
    Case("key not in the JWKS, published kid", _stray_key_published_kid, reason=r"signature does not verify"),
    Case("key not in the JWKS, no kid", _stray_key_no_kid, reason=r"signature does not verify"),
    Case("embedded jwk header", _embedded_jwk, reason=r"signature does not verify"),
    Case("jku header pointing at another JWKS", _jku_to_attacker, reason=r"is not in the identity provider's JWKS"),
    Case("token from another issuer", _attacker_issuer, reason=r"is not in the identity provider's JWKS"),
    Case("ES256 under an RSA key's kid", _ec_alg_on_rsa_kid, reason=r"ES256 does not fit key"),
    Case("PS256 with a key published for RS256", _ps256_on_rs256_key, reason=r"PS256 does not fit key"),
    Case("kid is not a string", _kid_not_string, reason=r"[Kk]ey ID|kid"),
    Case("expired", lambda w: bearer(w.good(exp=_now() - 3600, iat=_now() - 7200)), reason=r"token expired \d+ s ago"),
    Case("nbf in the future", lambda w: bearer(w.good(nbf=_now() + 3600)), reason=r"not valid yet"),
    Case(
        "iat in the future",
        lambda w: bearer(w.good(iat=_now() + 3600)),
        reason=r"issued in the future \(iat is \d+ s ahead\)",
    ),
    Case("no exp", lambda w: bearer(w.good(exp=None)), reason=r"no exp claim"),
    Case("wrong iss", lambda w: bearer(w.good(iss="https://evil.example")), reason=r"issuer 'https://evil.example'"),
    Case("aud for another resource", lambda w: bearer(w.good(aud="http://127.0.0.1:1/mcp")), reason=r"audience"),
    Case("no aud", lambda w: bearer(w.lab.mint(None, key=w.rsa)), reason=r"no aud claim"),
    Case("no sub", lambda w: bearer(w.good(sub=None)), reason=r"no sub claim"),
    Case("JWE (five parts)", _jwe, reason=r"encrypted tokens \(JWE\)"),
    Case("garbage", lambda w: bearer("garbage"), reason=r"not a JWT"),
    Case("three parts of garbage", lambda w: bearer("a.b.c"), reason=r"not a readable JWT"),
    Case("empty Bearer", lambda w: Attempt(headers=[("Authorization", "Bearer")]), reason=r"malformed"),
    Case("two tokens in one header", lambda w: bearer(f"{w.good()} {w.good()}"), reason=r"malformed"),
    # RFC 6750 §3.1: an unsupported scheme is no credentials at all, so the challenge has no error code.
    Case(
        "Basic",
        lambda w: bearer("bGFiLXVzZXI6cGFzcw==", scheme="Basic"),
        error=None,
        reason=r"scheme 'Basic' is not accepted",
    ),
    Case("token in the query string", _query, reason=r"query string"),
    Case("token in the query string and the header", _query_and_header, reason=r"query string"),
    # RFC 6750 §3.1: a request with no credentials the server accepts gets a challenge without `error`.
    Case("token in a form body, no header", _form_body, error=None, reason=r"No access token"),
    Case("two Authorization headers", _two_headers, status=400, error="invalid_request", reason=r"more than one"),
    Case(
        "two Authorization headers, one bad",
        _two_headers_one_bad,
        status=400,
        error="invalid_request",
        reason=r"more than one",
    ),
]


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[TokenLab]:
    with TokenLab() as lab:
        lab.add_key("RSA", kid="lab-rsa-1")
        lab.add_key("EC", kid="lab-ec-1")
        yield lab


@pytest.fixture(scope="module")
def attacker() -> Iterator[TokenLab]:
    with TokenLab() as attacker:
        attacker.add_key("RSA", kid="attacker-rsa")
        yield attacker


@pytest.fixture(scope="module")
def upstream() -> Iterator[CountingUpstream]:
    with CountingUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module", params=["resource-server", "facade"])
def proxy(
    request: pytest.FixtureRequest, start_proxy: ProxyFactory, lab: TokenLab, upstream: CountingUpstream
) -> stack.Service:
    return start_proxy(
        upstream.url, issuer=lab.issuer, mode=request.param, jwks_refetch_interval_seconds=REFETCH_INTERVAL
    )


@pytest.fixture(scope="module")
def world(lab: TokenLab, attacker: TokenLab) -> World:
    return World(lab, attacker, lab.key("lab-rsa-1"), lab.key("lab-ec-1"), new_key("RSA", kid="stray"), "")


def call(proxy: stack.Service, attempt: Attempt) -> httpx.Response:
    headers = [(k, v) for k, v in JSON_HEADERS.items() if k != "Content-Type"]
    headers += [("Content-Type", attempt.content_type), *attempt.headers]
    content = attempt.content if attempt.content is not None else json.dumps(MCP_BODY).encode()
    return httpx.post(proxy.url + "/mcp", headers=headers, params=attempt.params, content=content, timeout=15)


def assert_accepted(response: httpx.Response, upstream: CountingUpstream, before: int) -> None:
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"upstream": "reached"}
    seen = upstream.since(before)
    assert len(seen) == 1
    assert seen[0].header("authorization") is None, "the client's token went upstream"
    assert seen[0].header("x-mcp-auth-subject") == "lab-user"


# --- the table ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_request_is_refused_and_nothing_reaches_the_mcp_server(
    case: Case, proxy: stack.Service, world: World, upstream: CountingUpstream
) -> None:
    world.resource = proxy.url + "/mcp"
    attacker_hits = sum(world.attacker.hits.values())
    attempt = case.attempt(world)
    before = upstream.count

    response = call(proxy, attempt)

    assert response.status_code == case.status, response.text
    assert upstream.count == before, f"the MCP server saw {upstream.since(before)}"
    assert sum(world.attacker.hits.values()) == attacker_hits, "the proxy fetched something from the attacker"

    challenge = response.headers.get_list("www-authenticate")
    assert len(challenge) == 1 and challenge[0].startswith("Bearer "), challenge
    header = challenge[0]
    if case.error is None:
        assert "error=" not in header, header
    else:
        assert f'error="{case.error}"' in header, header
    assert sdk_field(header, "resource_metadata") == proxy.url + "/.well-known/oauth-protected-resource/mcp"
    if case.status == 401:
        assert sdk_field(header, "scope") == "mcp:tools"

    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == (case.error or "invalid_token")
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert re.search(case.reason, body["error_description"]), body["error_description"]
    # The description names what was wrong; it never echoes the credentials.
    for _, value in attempt.headers:
        credentials = value.partition(" ")[2]
        if len(credentials) > 20:
            assert credentials not in response.text and credentials not in header


def test_future_iat_is_described_as_iat(proxy: stack.Service, world: World) -> None:
    world.resource = proxy.url + "/mcp"
    response = call(proxy, bearer(world.good(iat=_now() + 3600)))
    assert response.status_code == 401
    description = response.json()["error_description"]
    assert "iat" in description and "nbf" not in description, description


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
@pytest.mark.parametrize("kind", ["RSA", "EC"])
def test_valid_token_any_scheme_case_is_accepted_and_stripped(
    scheme: str, kind: str, proxy: stack.Service, world: World, upstream: CountingUpstream
) -> None:
    world.resource = proxy.url + "/mcp"
    token = world.good(key=world.rsa if kind == "RSA" else world.ec)
    before = upstream.count
    response = call(proxy, bearer(token, scheme))
    assert_accepted(response, upstream, before)


def test_client_cannot_claim_an_identity(proxy: stack.Service, world: World, upstream: CountingUpstream) -> None:
    world.resource = proxy.url + "/mcp"
    attempt = bearer(world.good())
    attempt.headers += [("X-MCP-Auth-Subject", "admin"), ("x-mcp-auth-scopes", "mcp:admin")]
    before = upstream.count
    assert_accepted(call(proxy, attempt), upstream, before)
    seen = upstream.since(before)[0]
    assert seen.headers["x-mcp-auth-subject"] == ["lab-user"]
    assert seen.headers["x-mcp-auth-scopes"] == ["mcp:tools"]


# --- keys that change under the running proxy -----------------------------------------------------


@pytest.fixture
def rotating(start_proxy: ProxyFactory, upstream: CountingUpstream) -> Iterator[tuple[TokenLab, stack.Service]]:
    """A lab of its own and a proxy of its own: JWKS request counts are this test's alone."""
    with TokenLab() as lab:
        lab.add_key("RSA", kid="old")
        proxy = start_proxy(
            upstream.url, issuer=lab.issuer, mode="resource-server", jwks_refetch_interval_seconds=REFETCH_INTERVAL
        )
        try:
            yield lab, proxy
        finally:
            proxy.stop()


def test_key_rotation_without_restarting_the_proxy(
    rotating: tuple[TokenLab, stack.Service], upstream: CountingUpstream
) -> None:
    lab, proxy = rotating
    resource = proxy.url + "/mcp"
    old = lab.key("old")
    before = upstream.count
    assert_accepted(call(proxy, bearer(lab.mint(resource, key=old))), upstream, before)
    fetched = lab.jwks_requests
    assert fetched >= 1

    # The IdP publishes a new key and starts signing with it; the proxy has never seen its kid.
    time.sleep(REFETCH_INTERVAL + 0.2)
    new = lab.rotate("EC")
    before = upstream.count
    assert_accepted(call(proxy, bearer(lab.mint(resource, key=new))), upstream, before)
    assert lab.jwks_requests == fetched + 1, "one refetch for the new kid"

    # Both keys are now cached: tokens signed with either cost no request to the IdP.
    for key in (old, new, old, new):
        before = upstream.count
        assert_accepted(call(proxy, bearer(lab.mint(resource, key=key))), upstream, before)
    assert lab.jwks_requests == fetched + 1

    # The old key is retired. The proxy learns it at its next refetch (here: for an unknown kid),
    # and from then on refuses tokens signed with it.
    lab.retire("old")
    time.sleep(REFETCH_INTERVAL + 0.2)
    assert call(proxy, bearer(lab.mint(resource, key=new, kid="not-yet-published"))).status_code == 401
    assert lab.jwks_requests == fetched + 2
    before = upstream.count
    response = call(proxy, bearer(lab.mint(resource, key=old)))
    assert response.status_code == 401, response.text
    assert "'old' is not in the identity provider's JWKS" in response.json()["error_description"]
    assert upstream.count == before
    before = upstream.count
    assert_accepted(call(proxy, bearer(lab.mint(resource, key=new))), upstream, before)


def test_flood_of_unknown_kids_does_not_flood_the_idp(
    rotating: tuple[TokenLab, stack.Service], upstream: CountingUpstream
) -> None:
    lab, proxy = rotating
    resource = proxy.url + "/mcp"
    stray = new_key("RSA", kid="stray")
    # Warm up: keys fetched at start (or by this request).
    before = upstream.count
    assert_accepted(call(proxy, bearer(lab.mint(resource))), upstream, before)
    tokens = [lab.mint(resource, key=stray, kid=f"flood-{secrets.token_hex(6)}") for _ in range(40)]

    async def flood(seconds: float) -> tuple[int, list[int]]:
        statuses: list[int] = []
        sent = 0
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=15) as client:

            async def worker(offset: int) -> None:
                nonlocal sent
                i = offset
                while time.monotonic() < deadline:
                    token = tokens[i % len(tokens)]
                    i += 1
                    sent += 1
                    response = await client.post(
                        proxy.url + "/mcp",
                        headers={**JSON_HEADERS, "Authorization": f"Bearer {token}"},
                        json=MCP_BODY,
                    )
                    statuses.append(response.status_code)

            await asyncio.gather(*(worker(n) for n in range(16)))
        return sent, statuses

    before_fetches = lab.jwks_requests
    before_upstream = upstream.count
    started = time.monotonic()
    sent, statuses = asyncio.run(flood(5.0))
    elapsed = time.monotonic() - started

    assert sent >= 100, f"only {sent} requests in {elapsed:.1f} s"
    assert set(statuses) == {401}, sorted(set(statuses))
    assert upstream.count == before_upstream
    fetches = lab.jwks_requests - before_fetches
    # At most one fetch per refetch interval, plus one at the start of the window.
    allowed = int(elapsed // REFETCH_INTERVAL) + 1
    assert 1 <= fetches <= allowed, f"{fetches} JWKS fetches for {sent} tokens in {elapsed:.1f} s (allowed {allowed})"


@pytest.mark.parametrize("raw", [b"Bearer a.\xe9.c", b"Bearer eyJhbGciOiJSUzI1NiJ9.\xe9.c"], ids=["3 parts", "JWS"])
def test_non_ascii_byte_in_a_jwt_shaped_token_gets_401(
    raw: bytes, proxy: stack.Service, upstream: CountingUpstream
) -> None:
    before = upstream.count
    response = httpx.post(
        proxy.url + "/mcp", headers={"Authorization": raw, **JSON_HEADERS}, content=json.dumps(MCP_BODY), timeout=15
    )
    assert upstream.count == before  # holds today: the 503 is fail-closed
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
