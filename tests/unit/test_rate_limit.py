"""Rate limits on /register and /token: parsing, the bucket's windows, Retry-After, the memory bound."""

from __future__ import annotations

from typing import Any

import pytest

from addon.config import ConfigError, parse_settings
from addon.protocol.rate_limit import Rate, RateLimiter, client_address, client_key, parse_networks, parse_rate
from addon.stages import Stage

from .test_gate_and_router import Proxy, assert_stage, json_of, request
from .test_gate_and_router import proxy as proxy  # the fixture


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [("20/minute", Rate(20, 60)), ("3/second", Rate(3, 1)), (" 100 / hour ", Rate(100, 3600))],
)
def test_rates_parse(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate
    assert str(rate) in {"20/minute", "3/second", "100/hour"}


@pytest.mark.parametrize("text", ["20/min", "20", "0/minute", "-1/second", "twenty/minute", "20/minute/2", ""])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"N/second, N/minute or N/hour|from 1 to"):
        parse_rate(text)


def minimal(**overrides: Any) -> dict[str, Any]:
    return {"public_url": "https://mcp.example.com", "issuer": "https://idp.example.com", **overrides}


def test_rate_limits_are_off_by_default() -> None:
    settings = parse_settings(minimal())
    assert settings.rate_limits.register is None
    assert settings.rate_limits.token is None


def test_rate_limits_from_the_config() -> None:
    settings = parse_settings(minimal(rate_limits={"register": "20/minute", "token": "60/minute"}))
    assert settings.rate_limits.register == Rate(20, 60)
    assert settings.rate_limits.token == Rate(60, 60)
    assert parse_settings(minimal(rate_limits={"register": None})).rate_limits.register is None


@pytest.mark.parametrize(
    ("rate_limits", "phrases"),
    [
        ({"register": "20 per minute"}, ["`rate_limits.register` is '20 per minute'", "20/minute", "null"]),
        ({"token": 60}, ["`rate_limits.token` is 60", "N/minute"]),
        ({"registr": "1/second"}, ["unknown key `rate_limits.registr`", "did you mean `rate_limits.register`"]),
        ("20/minute", ["`rate_limits` is '20/minute'", "expected a mapping"]),
    ],
)
def test_bad_rate_limit_config_names_key_value_and_fix(rate_limits: object, phrases: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(minimal(rate_limits=rate_limits), "proxy.yaml")
    for phrase in phrases:
        assert phrase in str(info.value)


# --- the bucket -------------------------------------------------------------------------------


def test_a_burst_of_the_whole_rate_then_one_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(3, 1), clock=clock)
    assert all(limiter.hit("a").allowed for _ in range(3))
    refused = limiter.hit("a")
    assert not refused.allowed
    assert refused.retry_after == 1  # a third of a second, rounded up to whole seconds
    clock.now += 1 / 3
    assert limiter.hit("a").allowed
    assert not limiter.hit("a").allowed
    clock.now += 1
    assert all(limiter.hit("a").allowed for _ in range(3))
    assert not limiter.hit("a").allowed


def test_retry_after_is_the_wait_for_the_next_slot_in_whole_seconds() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(20, 60), clock=clock)  # a slot frees every 3 s
    for _ in range(20):
        assert limiter.hit("a").allowed
    assert limiter.hit("a").retry_after == 3
    clock.now += 1.5
    assert limiter.hit("a").retry_after == 2  # 1.5 s rounded up
    clock.now += 1.5
    assert limiter.hit("a").allowed


def test_refused_requests_do_not_push_the_window_further() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(2, 10), clock=clock)
    limiter.hit("a")
    limiter.hit("a")
    for _ in range(50):
        assert limiter.hit("a").retry_after == 5
    clock.now += 5
    assert limiter.hit("a").allowed


def test_clients_are_counted_apart() -> None:
    limiter = RateLimiter(Rate(1, 60), clock=Clock())
    assert limiter.hit("a").allowed
    assert not limiter.hit("a").allowed
    assert limiter.hit("b").allowed


def test_a_flood_of_distinct_addresses_keeps_memory_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(5, 60), max_clients=1000, clock=clock)
    for i in range(100_000):
        limiter.hit(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        clock.now += 0.0001
    assert len(limiter) == 1000


def test_the_least_recently_seen_client_is_evicted_first() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(1, 60), max_clients=2, clock=clock)
    limiter.hit("busy")
    limiter.hit("idle")
    assert not limiter.hit("busy").allowed  # seen again: now the most recent
    limiter.hit("new")  # evicts "idle", not "busy"
    assert not limiter.hit("busy").allowed
    assert limiter.hit("idle").allowed  # forgotten: a full bucket again (lenient, never stricter)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, "unknown"),
    ],
)
def test_client_keys(address: str | None, key: str) -> None:
    assert client_key(address) == key


# --- the client's address ---------------------------------------------------------------------

LB = parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "address"),
    [
        # No trusted proxies: X-Forwarded-For is anyone's to write, and ignored.
        ("203.0.113.7", ["198.51.100.1"], (), "203.0.113.7"),
        ("10.0.0.2", ["198.51.100.1"], (), "10.0.0.2"),
        # The peer is not a trusted proxy: the header is the client's own claim.
        ("203.0.113.7", ["198.51.100.1"], LB, "203.0.113.7"),
        # Through the load balancer: the address it appended.
        ("10.0.0.2", ["198.51.100.1"], LB, "198.51.100.1"),
        ("::ffff:10.0.0.2", ["198.51.100.1"], LB, "198.51.100.1"),
        # What the client wrote left of it is never believed.
        ("10.0.0.2", ["1.2.3.4, 198.51.100.1"], LB, "198.51.100.1"),
        ("10.0.0.2", ["1.2.3.4", "198.51.100.1"], LB, "198.51.100.1"),
        # Two trusted hops.
        ("10.0.0.2", ["1.2.3.4, 198.51.100.1, 10.9.9.9"], LB, "198.51.100.1"),
        ("2001:db8:ffff::1", ["2001:db8:1::5"], LB, "2001:db8:1::5"),
        # A trusted proxy that sent no header: the proxy itself is all there is.
        ("10.0.0.2", [], LB, "10.0.0.2"),
        (None, ["198.51.100.1"], LB, None),
    ],
)
def test_client_address(
    peer: str | None, forwarded_for: list[str], trusted: tuple[Any, ...], address: str | None
) -> None:
    assert client_address(peer, forwarded_for, trusted) == address


def test_trusted_proxies_from_the_config() -> None:
    settings = parse_settings(minimal(rate_limits={"trusted_proxies": ["10.0.0.0/8", "192.0.2.7"]}))
    assert [str(n) for n in settings.rate_limits.trusted_proxies] == ["10.0.0.0/8", "192.0.2.7/32"]
    with pytest.raises(ConfigError, match=r"`rate_limits.trusted_proxies` is \['lb.internal'\]; 'lb.internal' is not"):
        parse_settings(minimal(rate_limits={"trusted_proxies": ["lb.internal"]}), "proxy.yaml")


# --- through the router -----------------------------------------------------------------------


def registration(address: str = "198.51.100.9") -> Any:
    flow = request("POST", "/register", {"Content-Type": "application/json"}, b"{}")
    flow.client_conn.peername = (address, 40000)
    return flow


@pytest.mark.anyio
async def test_register_over_the_limit_is_429_with_retry_after(proxy: Proxy) -> None:
    proxy.reconfigure(rate_limits="{register: 2/minute}")
    for _ in range(2):
        flow = await proxy.send(registration())
        assert flow.response is not None and flow.response.status_code == 400  # the handler ran: empty body
    flow = await proxy.send(registration())
    assert flow.response is not None and flow.response.status_code == 429
    assert flow.response.headers["Retry-After"] == "30"
    assert json_of(flow)["error"] == "temporarily_unavailable"
    assert_stage(flow, Stage.REGISTRATION)
    assert "rate limited: 198.51.100.9 over rate_limits.register (2/minute)" in flow.comment
    # Another address has its own bucket; /token is not limited by the register limit.
    flow = await proxy.send(registration("198.51.100.10"))
    assert flow.response is not None and flow.response.status_code == 400


@pytest.mark.anyio
async def test_token_and_revoke_share_the_token_limit(proxy: Proxy) -> None:
    proxy.reconfigure(rate_limits="{token: 1/hour}")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    first = request("POST", "/token", form, b"grant_type=x")
    first.client_conn.peername = ("192.0.2.1", 1)
    await proxy.send(first)
    assert first.response is not None and first.response.status_code != 429
    second = request("POST", "/revoke", form, b"token=x")
    second.client_conn.peername = ("192.0.2.1", 2)
    await proxy.send(second)
    assert second.response is not None and second.response.status_code == 429
    assert second.response.headers["Retry-After"] == "3600"
    assert_stage(second, Stage.TOKEN)
    assert (await proxy.send(registration("192.0.2.1"))).response.status_code == 400  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_no_limit_without_configuration(proxy: Proxy) -> None:
    for _ in range(30):
        flow = await proxy.send(registration())
        assert flow.response is not None and flow.response.status_code == 400


@pytest.mark.anyio
async def test_behind_a_trusted_load_balancer_clients_are_counted_apart(proxy: Proxy) -> None:
    proxy.reconfigure(rate_limits="{register: 1/minute, trusted_proxies: [10.0.0.0/8]}")

    def via_lb(client: str) -> Any:
        flow = registration("10.0.0.2")
        flow.request.headers["X-Forwarded-For"] = client
        return flow

    assert (await proxy.send(via_lb("198.51.100.1"))).response.status_code == 400  # type: ignore[union-attr]
    assert (await proxy.send(via_lb("198.51.100.2"))).response.status_code == 400  # type: ignore[union-attr]
    flow = await proxy.send(via_lb("198.51.100.1"))
    assert flow.response is not None and flow.response.status_code == 429
    assert "rate limited: 198.51.100.1 over" in flow.comment
