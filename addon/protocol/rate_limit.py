"""Per-client rate limits for the facade's /register and /token, with bounded memory.

The algorithm is a token bucket per client address, stored as one number: the time at which
the client's bucket will be full again (the "theoretical arrival time" of GCRA). A client may
send `count` requests at once, then one more every `period / count` seconds. One float per
address keeps the memory per client constant, and the table of addresses is an LRU capped at
`max_clients`, so a flood of distinct addresses evicts the longest-idle ones instead of growing
without bound. An evicted client merely starts again with a full bucket: the bound can make the
limit more lenient under such a flood, never stricter.

No mitmproxy import: the time source is injectable, so the tests drive the clock.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

PERIODS = {"second": 1, "minute": 60, "hour": 3600}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour)\s*$")
MAX_CLIENTS = 10_000


@dataclass(frozen=True)
class Rate:
    count: int
    period_seconds: int

    def __str__(self) -> str:
        name = next(name for name, seconds in PERIODS.items() if seconds == self.period_seconds)
        return f"{self.count}/{name}"

    @property
    def interval(self) -> float:
        """Seconds for one request's slot to free again."""
        return self.period_seconds / self.count


def parse_rate(text: str) -> Rate:
    """ "20/minute" -> Rate(20, 60); ValueError with what is expected otherwise."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("expected N/second, N/minute or N/hour, e.g. 20/minute")
    count = int(match.group(1))
    if not 1 <= count <= 1_000_000:
        raise ValueError("expected a count from 1 to 1000000 per period, e.g. 20/minute")
    return Rate(count, PERIODS[match.group(2)])


def client_key(address: str | None) -> str:
    """The identity a limit counts against.

    IPv4-mapped IPv6 addresses (what a dual-stack listener reports for IPv4 clients) count as
    the IPv4 address. An IPv6 client counts by its /64: one customer usually holds a whole /64,
    and a limit per single address would let it rotate through 2^64 of them.
    """
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: list[str]) -> tuple[Network, ...]:
    """ "10.0.0.0/8", "192.0.2.7", "2001:db8::/32" -> networks; ValueError naming the bad one."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{value!r} is not an IP address or network, e.g. 10.0.0.0/8 or 192.0.2.7") from e
    return tuple(networks)


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(value.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_address(peer: str | None, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str | None:
    """The client's address: the peer's, unless the peer is a trusted proxy.

    Then `X-Forwarded-For` is read from the right, each trusted proxy having appended the
    address it saw; the first address that is not a trusted proxy is the client. Entries left
    of it were written by the client and are never believed. Without trusted proxies the
    header is ignored entirely: any client can send it.
    """

    def is_trusted(value: str) -> bool:
        ip = _ip(value)
        return ip is not None and any(ip.version == net.version and ip in net for net in trusted)

    if not trusted or peer is None or not is_trusted(peer):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    address = peer
    for hop in reversed(hops):
        address = hop
        if not is_trusted(hop):
            break
    return address


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0
    """Whole seconds until the next request from this client would be allowed (0 when allowed)."""


class RateLimiter:
    def __init__(self, rate: Rate, max_clients: int = MAX_CLIENTS, clock: Callable[[], float] = time.monotonic) -> None:
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self.rate = rate
        self.max_clients = max_clients
        self._clock = clock
        # client -> the time its bucket is full again; oldest-used first.
        self._full_at: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._full_at)

    def hit(self, client: str) -> Decision:
        """Take one request from `client`'s bucket, or say how long until one is free."""
        now = self._clock()
        interval = self.rate.interval
        full_at = max(self._full_at.get(client, now), now)
        # Each request pushes "full again" one interval further; the bucket holds `period` worth.
        after = full_at + interval
        # The epsilon absorbs float error, so a client keeping exactly to the rate is never refused.
        if after - now > self.rate.period_seconds + 1e-6:
            self._touch(client, full_at)
            # The next slot frees when `full_at` is one interval less than a whole period ahead.
            wait = full_at + interval - self.rate.period_seconds - now
            # Whole seconds, rounded up, and at least 1: Retry-After: 0 would invite an instant retry.
            return Decision(False, max(1, math.ceil(wait - 1e-6)))
        self._touch(client, after)
        return Decision(True)

    def _touch(self, client: str, full_at: float) -> None:
        self._full_at[client] = full_at
        self._full_at.move_to_end(client)
        while len(self._full_at) > self.max_clients:
            self._full_at.popitem(last=False)
