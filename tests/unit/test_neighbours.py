"""Neighbours failing, in the small: the JWKS cache's refresh and the MCP server's JSON-RPC error."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mitmproxy import http

from addon.config import ConfigError, load_settings
from addon.protocol.tokens import JwksCache, TokenRejected, TokenValidator
from addon.proxy.upstream import UPSTREAM_UNAVAILABLE, error_body, jsonrpc_id

from .support import Clock, JsonServer, claims, public_jwk, sign

AUDIENCE = "https://proxy.example.com/mcp"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as c:
        yield c


def token(server: JsonServer, key: rsa.RSAPrivateKey, kid: str) -> str:
    return sign(key, claims(server.url, AUDIENCE), alg="RS256", kid=kid)


@pytest.mark.anyio
async def test_a_refresh_replaces_the_key_set(
    server: JsonServer,
    client: httpx.AsyncClient,
    clock: Clock,
    rsa_private: rsa.RSAPrivateKey,
    rsa_private_2: rsa.RSAPrivateKey,
) -> None:
    server.serve("/jwks", {"keys": [public_jwk(rsa_private, "old", "RS256")]})
    keys = JwksCache(client, server.url + "/jwks", refetch_interval=1, max_age=60)
    validator = TokenValidator(keys, server.url, [AUDIENCE], leeway=0)
    await validator.verify(token(server, rsa_private, "old"))
    server.serve("/jwks", {"keys": [public_jwk(rsa_private_2, "new", "RS256")]})  # rotated at the IdP
    clock.advance(2)
    # The new kid is unknown: one refetch, which drops the old key.
    await validator.verify(token(server, rsa_private_2, "new"))
    assert keys.key_ids == ["new"]
    with pytest.raises(TokenRejected, match="not in the identity provider's JWKS"):
        await validator.verify(token(server, rsa_private, "old"))


@pytest.mark.anyio
async def test_idp_down_after_max_age_keeps_the_cached_keys(
    server: JsonServer,
    client: httpx.AsyncClient,
    clock: Clock,
    rsa_private: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.serve("/jwks", {"keys": [public_jwk(rsa_private, "k", "RS256")]})
    keys = JwksCache(client, server.url + "/jwks", refetch_interval=1, max_age=60)
    validator = TokenValidator(keys, server.url, [AUDIENCE], leeway=0)
    await validator.verify(token(server, rsa_private, "k"))
    server.serve("/jwks", {"error": "down"}, status=503)
    clock.advance(61)
    assert (await validator.verify(token(server, rsa_private, "k"))).subject
    assert "keeping the cached keys" in caplog.text
    assert server.count("/jwks") == 2
    # The failed attempt counts: the next one waits refetch_interval, not one per request.
    await validator.verify(token(server, rsa_private, "k"))
    assert server.count("/jwks") == 2


def test_jwks_max_age_is_configurable(tmp_path: Any) -> None:
    path = tmp_path / "config.yaml"
    base = "public_url: http://127.0.0.1:8000\nissuer: http://127.0.0.1:9000\n"
    path.write_text(base)
    assert load_settings(path).jwks_max_age_seconds == 600
    path.write_text(base + "jwks_max_age_seconds: 120\n")
    assert load_settings(path).jwks_max_age_seconds == 120
    path.write_text(base + "jwks_max_age_seconds: 0\n")
    with pytest.raises(ConfigError, match="jwks_max_age_seconds"):
        load_settings(path)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, 7),
        ({"jsonrpc": "2.0", "id": "a-1", "method": "tools/list"}, "a-1"),
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, None),
        ({"jsonrpc": "2.0", "id": True, "method": "x"}, None),
        ({"jsonrpc": "2.0", "id": {"no": 1}, "method": "x"}, None),
        ([{"jsonrpc": "2.0", "id": 1, "method": "x"}], None),
        (b"not json", None),
        (b"\xff\xfe", None),
    ],
    ids=["number", "string", "notification", "bool", "object", "batch", "not-json", "not-utf8"],
)
def test_jsonrpc_id_of_the_request(body: Any, expected: Any) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = http.Request.make("POST", "http://127.0.0.1/mcp", content)
    assert jsonrpc_id(request) == expected


def test_jsonrpc_id_of_a_get_is_null() -> None:
    assert jsonrpc_id(http.Request.make("GET", "http://127.0.0.1/mcp")) is None


def test_error_body_is_a_json_rpc_error() -> None:
    body = json.loads(error_body(3, "Connection refused"))
    assert body == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {
            "code": UPSTREAM_UNAVAILABLE,
            "message": "the MCP server is unavailable",
            "data": {"detail": "Connection refused"},
        },
    }


def test_mitmdump_dumps_only_forwarded_calls() -> None:
    from mitmproxy import flowfilter
    from mitmproxy.addons.dumper import Dumper
    from mitmproxy.test import taddons, tflow

    from addon.proxy.configuration import DUMP_FILTER, Configuration

    with taddons.context(Dumper()) as tctx:
        tctx.options.update(dumper_filter="~u /mcp")
        Configuration._keep_secrets_out_of_the_dump()
        assert tctx.options.dumper_filter == f"{DUMP_FILTER} & (~u /mcp)"
        Configuration._keep_secrets_out_of_the_dump()  # idempotent: configure runs again on the update
        assert tctx.options.dumper_filter == f"{DUMP_FILTER} & (~u /mcp)"
        dump = flowfilter.parse(tctx.options.dumper_filter)
        forwarded, token = tflow.tflow(resp=True), tflow.tflow(resp=True)
        forwarded.request.path = token.request.path = "/mcp"
        forwarded.comment = "authorized-call: token for alice; stripped it and forwarded"
        token.comment = "token: authorization_code exchanged at the IdP"
        assert flowfilter.match(dump, forwarded)
        assert not flowfilter.match(dump, token)
