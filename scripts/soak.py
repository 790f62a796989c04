#!/usr/bin/env python3
"""A bounded soak of the proxy while its identity provider restarts under it.

Starts its own stack on free 127.0.0.1 ports (dev IdP, stateless demo MCP server, mitmdump
with the addon in facade mode and a temporary config), gets one access token through the
real dance (register, log in, exchange, all through the proxy), then pushes concurrently:

- `call`:     authorized `tools/call` hello-world with that token (expect 200);
- `unauth`:   the same call with no token (expect 401);
- `register`: POST /register (expect 201);
- `metadata`: GET /.well-known/oauth-authorization-server (expect 200).

Meanwhile it restarts the IdP (stop, wait, start a new one on the SAME port). The new dev IdP
has a new signing key and forgets its clients, so what is expected changes with time:

- registration: 201 while the IdP is up; 502/503/504 while it is down, and for a short grace
  period after it is back (the proxy may still be backing off). A 5xx outside that is the
  proxy's fault.
- authorized calls: the token's key stays cached in the proxy (no unknown kid, no refetch
  before max_age), so 200 throughout. A 401 would mean the proxy dropped the old key (it
  refetched from the new IdP): reported on its own line, not a failure of the proxy.
- unauthenticated calls and metadata: answered by the proxy from what it has; any 5xx is
  the proxy's fault.

"5xx that were the proxy's fault" (target: zero): every 500 (and any 5xx other than
502/503/504) on any path; any 5xx on the unauthenticated, metadata and authorized-call paths
(the MCP server never goes down); a registration 5xx while the IdP had been up for longer
than the grace period. Connection errors and timeouts are counted by kind.

    python scripts/soak.py --seconds 60 --concurrency 8 --json soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

import stack  # noqa: E402
from oauth_steps import Pkce, authorization_url, exchange, log_in, register  # noqa: E402

KINDS = {"call": 5, "unauth": 2, "register": 2, "metadata": 1}  # relative weights
EXPECTED = {"call": 200, "unauth": 401, "register": 201, "metadata": 200}
GATEWAY_5XX = {502, 503, 504}
CALL_BODY = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "hello-world", "arguments": {"name": "soak"}},
}
MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-06-18",
}
REGISTRATION = {
    "client_name": "soak client",
    "redirect_uris": ["http://127.0.0.1:47111/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
    "application_type": "native",
}


@dataclass
class IdpTimeline:
    """When the IdP was down: [(stopped_at, started_at or None)], seconds since the soak started."""

    outages: list[tuple[float, float | None]] = field(default_factory=list)
    grace: float = 6.0

    def excused(self, sent_at: float, answered_at: float) -> bool:
        """Could the IdP's absence explain a gateway error on a request in flight over [sent_at, answered_at]?"""
        for down, up in self.outages:
            back = (up if up is not None else float("inf")) + self.grace
            if sent_at <= back and answered_at >= down:
                return True
        return False


@dataclass
class Results:
    sent: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    status: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    errors: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    proxy_faults: list[dict[str, Any]] = field(default_factory=list)
    excused_5xx: Counter[str] = field(default_factory=Counter)
    unexpected: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    calls_refused_after_restart: int = 0
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def summary(self, timeline: IdpTimeline, started: float, seconds: float) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            if not values:
                return None
            ordered = sorted(values)
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

        return {
            "seconds": round(seconds, 1),
            "requests_sent": sum(self.sent.values()),
            "requests_answered": sum(self.answered.values()),
            "sent_by_kind": dict(self.sent),
            "answered_by_kind": dict(self.answered),
            "status_by_kind": {k: {str(s): n for s, n in sorted(v.items())} for k, v in self.status.items()},
            "errors_by_kind": {k: dict(v) for k, v in self.errors.items()},
            "unexpected_status_by_kind": {k: {str(s): n for s, n in v.items()} for k, v in self.unexpected.items()},
            "expected_5xx_idp_down": dict(self.excused_5xx),
            "proxy_fault_5xx": len(self.proxy_faults),
            "proxy_fault_5xx_examples": self.proxy_faults[:10],
            "authorized_calls_refused_after_idp_restart": self.calls_refused_after_restart,
            "latency_ms_p50_p99": {k: [pct(v, 0.5), pct(v, 0.99)] for k, v in self.latency_ms.items()},
            "idp_outages_s": [
                [round(down - started, 1), round(up - started, 1) if up is not None else None]
                for down, up in timeline.outages
            ],
        }


def get_token(proxy_url: str) -> str:
    """The real dance through the proxy: register, log in as the test user, exchange the code."""
    resource = proxy_url + "/mcp"
    client = register(proxy_url + "/register")
    pkce = Pkce.make()
    url = authorization_url(proxy_url + "/authorize", str(client["client_id"]), pkce, "soak", resource)
    code, _, _ = log_in(url)
    response = exchange(proxy_url + "/token", str(client["client_id"]), code, pkce, resource)
    response.raise_for_status()
    return str(response.json()["access_token"])


async def one_request(client: httpx.AsyncClient, proxy_url: str, kind: str, token: str) -> httpx.Response:
    if kind == "call":
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
        return await client.post(proxy_url + "/mcp", json=CALL_BODY, headers=headers)
    if kind == "unauth":
        return await client.post(proxy_url + "/mcp", json=CALL_BODY, headers=MCP_HEADERS)
    if kind == "register":
        return await client.post(proxy_url + "/register", json=REGISTRATION)
    return await client.get(proxy_url + "/.well-known/oauth-authorization-server")


def classify(
    results: Results, timeline: IdpTimeline, kind: str, response: httpx.Response, sent_at: float, answered_at: float
) -> None:
    status = response.status_code
    results.status[kind][status] += 1
    if status == EXPECTED[kind]:
        return
    if status >= 500:
        excusable = kind == "register" and status in GATEWAY_5XX and timeline.excused(sent_at, answered_at)
        if excusable:
            results.excused_5xx[f"{kind} {status}"] += 1
            return
        results.proxy_faults.append(
            {"kind": kind, "status": status, "at_s": round(sent_at, 2), "body": response.text[:300]}
        )
        return
    if kind == "call" and status == 401 and timeline.outages:
        results.calls_refused_after_restart += 1
    results.unexpected[kind][status] += 1


async def load(
    proxy_url: str,
    token: str,
    seconds: float,
    concurrency: int,
    max_requests: int,
    timeline: IdpTimeline,
    results: Results,
    started: float,
) -> None:
    deadline = started + seconds
    budget = max_requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    kinds = list(KINDS)
    weights = list(KINDS.values())
    async with httpx.AsyncClient(timeout=10.0, limits=limits, trust_env=False) as client:

        async def worker(seed: int) -> None:
            nonlocal budget
            rng = random.Random(seed)  # noqa: S311 (a load mix, not a secret)
            while time.monotonic() < deadline and budget > 0:
                budget -= 1
                kind = rng.choices(kinds, weights)[0]
                results.sent[kind] += 1
                sent_at = time.monotonic()
                try:
                    response = await one_request(client, proxy_url, kind, token)
                except httpx.TimeoutException as e:
                    results.errors[kind][f"timeout ({type(e).__name__})"] += 1
                    continue
                except httpx.TransportError as e:
                    results.errors[kind][f"connection ({type(e).__name__})"] += 1
                    await asyncio.sleep(0.05)
                    continue
                answered_at = time.monotonic()
                results.answered[kind] += 1
                results.latency_ms[kind].append((answered_at - sent_at) * 1000)
                classify(results, timeline, kind, response, sent_at - started, answered_at - started)

        await asyncio.gather(*(worker(n) for n in range(concurrency)))


async def restarts(
    holder: dict[str, stack.Service],
    port: int,
    times: list[float],
    down: float,
    timeline: IdpTimeline,
    started: float,
    log: Any,
) -> None:
    for at in times:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        stopped_at = time.monotonic()
        timeline.outages.append((stopped_at - started, None))
        await asyncio.to_thread(holder["idp"].stop)
        log(f"soak: IdP stopped at {stopped_at - started:.1f} s")
        await asyncio.sleep(down)
        holder["idp"] = await asyncio.to_thread(stack.start_idp, port)
        up_at = time.monotonic()
        timeline.outages[-1] = (stopped_at - started, up_at - started)
        log(f"soak: IdP back on :{port} at {up_at - started:.1f} s (new signing key, no clients)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to push load (default 60)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent requests (default 8)")
    parser.add_argument("--max-requests", type=int, default=500_000, help="stop after this many (default 500000)")
    parser.add_argument("--restarts", type=int, default=2, choices=[0, 1, 2, 3], help="IdP restarts (default 2)")
    parser.add_argument("--down-seconds", type=float, default=3.0, help="how long the IdP stays down (default 3)")
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=6.0,
        help="after the IdP is back, registration 5xx are still expected for this long (default 6)",
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--verbose", action="store_true", help="echo the services' output")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.seconds > 3600 or args.concurrency < 1 or args.concurrency > 256:
        parser.error("--seconds must be in (0, 3600], --concurrency in [1, 256]")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    echo = log if args.verbose else None
    services: list[stack.Service] = []
    holder: dict[str, stack.Service] = {}
    with tempfile.TemporaryDirectory(prefix="mcp-auth-soak-") as tmp:
        try:
            idp_port = stack.free_port()
            holder["idp"] = stack.start_idp(idp_port, echo=echo)
            demo = stack.start_demo_server(stateless=True, echo=echo)
            services.append(demo)
            proxy_port = stack.free_port()
            config = {
                "public_url": f"http://127.0.0.1:{proxy_port}",
                "mcp_path": "/mcp",
                "mode": "facade",
                "issuer": holder["idp"].url,
                "scopes": ["mcp:tools"],
                "secret_key": "soak-sealing-key-0123456789abcdefghijklmnop",
            }
            config_path = Path(tmp) / "config.yaml"
            config_path.write_text(yaml.safe_dump(config))
            proxy = stack.start_proxy(
                config_path, demo.url.rsplit("/mcp", 1)[0], proxy_port, confdir=Path(tmp) / "mitmproxy", echo=echo
            )
            services.append(proxy)
            log(f"soak: IdP {holder['idp'].url}, MCP server {demo.url}, proxy {proxy.url}")

            token = get_token(proxy.url)
            check = httpx.post(
                proxy.url + "/mcp",
                json=CALL_BODY,
                headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"},
                timeout=10,
            )
            if check.status_code != 200 or "Hello, soak!" not in check.text:
                log(f"soak: the authorized call does not work before the soak: {check.status_code} {check.text[:300]}")
                return 2
            log(
                f"soak: token obtained through the dance; pushing load for {args.seconds:.0f} s "
                f"with concurrency {args.concurrency}"
            )

            timeline = IdpTimeline(grace=args.grace_seconds)
            results = Results()
            times = [args.seconds * f for f in (0.3, 0.65, 0.85)[: args.restarts]]

            async def run() -> float:
                started = time.monotonic()
                restarter = asyncio.ensure_future(
                    restarts(holder, idp_port, times, args.down_seconds, timeline, started, log)
                )
                try:
                    await load(
                        proxy.url, token, args.seconds, args.concurrency, args.max_requests, timeline, results, started
                    )
                    await restarter
                finally:
                    restarter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await restarter
                return time.monotonic() - started

            elapsed = asyncio.run(run())
            summary = results.summary(timeline, 0.0, elapsed)
            summary["concurrency"] = args.concurrency
            summary["proxy_log_errors"] = [
                line for line in proxy.lines if "Traceback" in line or "internal error" in line
            ][:10]
        finally:
            for service in reversed(services):
                service.stop()
            if "idp" in holder:
                holder["idp"].stop()

    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if summary["proxy_fault_5xx"] else 0


if __name__ == "__main__":
    sys.exit(main())
