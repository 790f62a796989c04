#!/usr/bin/env python3
"""Demo MCP server (official MCP Python SDK, Streamable HTTP at /mcp).

This is the upstream that mcp-auth-addon protects in the demo and the tests.
It is deliberately unauthenticated: the proxy in front of it does the OAuth
part and forwards identity as ``x-mcp-auth-*`` headers, which ``whoami``
echoes back so tests can see exactly what reached the upstream.

One endpoint serves every protocol era the SDK knows:

* 2025-era clients (``initialize`` handshake, ``Mcp-Session-Id`` sessions in
  the default stateful mode, per-request transports with ``--stateless``);
* 2026-07-28 clients (single-exchange POSTs with no ``initialize``), which the
  SDK's session manager routes by the ``MCP-Protocol-Version`` header in both
  modes, with no configuration needed here.

Usage::

    python scripts/demo_server.py [--port 3000] [--host 127.0.0.1] [--stateless]
                                  [--exit-on-stdin-eof] [--allowed-host HOST:PORT ...]

When it accepts connections it prints exactly one line to stdout::

    demo-server listening url=http://127.0.0.1:<port>/mcp
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings

logger = logging.getLogger("demo_server")

MCP_PATH = "/mcp"
SSE_PATH = "/sse"
SSE_MESSAGE_PATH = "/messages/"
IDENTITY_HEADER_PREFIX = "x-mcp-auth-"

# The loopback names the proxy (and local clients) use to reach us. The port
# is wildcarded because the reverse proxy rewrites Host to 127.0.0.1:<our
# port>, and with --port 0 we only learn that port after binding.
LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def build_server() -> MCPServer:
    """Create the MCPServer with the three demo tools."""
    mcp = MCPServer(
        "mcp-auth-addon-demo",
        version="1.0.0",
        instructions="Demo upstream for mcp-auth-addon.",
    )

    # structured_output=False everywhere: these tools answer with one text
    # block, and a generated output schema would only add noise for clients.
    @mcp.tool(
        name="hello-world",
        description="Greets <name> and reports the User-Agent of the HTTP request that carried the call.",
        structured_output=False,
    )
    def hello_world(name: str, ctx: Context) -> str:
        headers = ctx.headers
        user_agent = headers.get("user-agent", "<none>") if headers is not None else "<no HTTP request>"
        logger.info("tool call hello-world name=%r user_agent=%r", name, user_agent)
        return f"Hello, {name}! Your user agent is: {user_agent}"

    @mcp.tool(
        name="count-with-progress",
        description="Counts to <steps>, sending a progress notification every <interval> seconds.",
        structured_output=False,
    )
    async def count_with_progress(ctx: Context, steps: int = 5, interval: float = 0.2) -> str:
        logger.info("tool call count-with-progress steps=%d interval=%s", steps, interval)
        step = 0
        try:
            for step in range(1, steps + 1):
                await asyncio.sleep(interval)
                # A no-op unless the caller sent a progress token; with one, each
                # notification rides the POST's SSE response ahead of the result.
                await ctx.report_progress(step, steps, f"step {step}/{steps}")
        except asyncio.CancelledError:
            # The client went away (or cancelled): the tests check the proxy passed that on.
            logger.info("tool call count-with-progress cancelled at step %d/%d", step, steps)
            raise
        except Exception as e:
            logger.info("tool call count-with-progress stopped at step %d/%d: %s", step, steps, type(e).__name__)
            raise
        logger.info("tool call count-with-progress finished %d/%d", steps, steps)
        return f"counted to {steps}"

    @mcp.tool(
        name="whoami",
        description=(
            "Returns, as JSON, the x-mcp-auth-* identity headers that reached the server and "
            "whether an Authorization header reached it."
        ),
        structured_output=False,
    )
    def whoami(ctx: Context) -> str:
        headers = ctx.headers
        identity: dict[str, object] = {}
        authorization_present = False
        if headers is not None:
            for name, value in headers.items():
                lowered = name.lower()
                if lowered.startswith(IDENTITY_HEADER_PREFIX):
                    identity[lowered] = value
                elif lowered == "authorization":
                    authorization_present = True
        identity["authorization_present"] = authorization_present
        logger.info(
            "tool call whoami identity_headers=%s authorization_present=%s",
            sorted(k for k in identity if k != "authorization_present"),
            authorization_present,
        )
        return json.dumps(identity, sort_keys=True)

    return mcp


def transport_security(allowed_hosts: Sequence[str], disable_host_check: bool) -> TransportSecuritySettings:
    """DNS-rebinding protection that still lets the reverse proxy in.

    The SDK would enable the same loopback allowlist by itself for a loopback
    bind; spelling it out keeps it in force for other binds too and lets extra
    Host values (e.g. a proxy that keeps its own Host) be allowed explicitly.
    """
    if disable_host_check:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    extra_origins = [f"http://{host}" for host in allowed_hosts] + [f"https://{host}" for host in allowed_hosts]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*LOOPBACK_HOSTS, *allowed_hosts],
        allowed_origins=[*LOOPBACK_ORIGINS, *extra_origins],
    )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn.Server that leaves signal handling to us.

    uvicorn's own handler re-raises the captured SIGTERM after shutdown, which
    kills the process with -15; a demo/test upstream should exit with 0.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _watch_stdin_eof(loop: asyncio.AbstractEventLoop, on_eof: asyncio.Event) -> None:
    """Block on stdin in a daemon thread so a parent that dies (or closes the pipe) takes us down.

    Reads the raw fd, not sys.stdin.buffer: a daemon thread still parked in
    the buffered reader holds its lock at interpreter shutdown, and CPython
    then aborts the process (SIGABRT) instead of exiting with 0.
    """
    try:
        fd = sys.stdin.fileno()
        while os.read(fd, 65536):
            pass
    except (OSError, ValueError):
        pass
    with contextlib.suppress(RuntimeError):  # the loop may already be closed
        loop.call_soon_threadsafe(on_eof.set)


async def serve(args: argparse.Namespace) -> None:
    mcp = build_server()
    security = transport_security(args.allowed_host, args.no_host_check)
    if args.sse:
        # The legacy HTTP+SSE transport (2024-11-05): GET /sse opens the stream, whose first
        # event (`endpoint`) names where to POST messages, relative to the server.
        app = mcp.sse_app(sse_path=SSE_PATH, message_path=SSE_MESSAGE_PATH, transport_security=security, host=args.host)
        path = SSE_PATH
    else:
        app = mcp.streamable_http_app(
            streamable_http_path=MCP_PATH, stateless_http=args.stateless, transport_security=security, host=args.host
        )
        path = MCP_PATH
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        raise SystemExit(f"demo-server: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    port = sock.getsockname()[1]
    url_host = f"[{args.host}]" if ":" in args.host else args.host

    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        # Open SSE streams (a stateful session's GET stream) would otherwise
        # hold shutdown forever.
        timeout_graceful_shutdown=2,
        lifespan="on",
        # uvicorn's default logging config sends access logs to stdout; route
        # everything through our stderr root logger so stdout carries only
        # the ready line.
        log_config=None,
    )
    server = _EmbeddedServer(config)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_on_stdin_eof:
        threading.Thread(target=_watch_stdin_eof, args=(loop, stop), daemon=True).start()

    serve_task = asyncio.create_task(server.serve(sockets=[sock]))
    # Report only once the lifespan (the session manager's task group) is up,
    # so a client that connects right after the line is served, not refused.
    ready_task = asyncio.create_task(server.ready.wait())
    await asyncio.wait({serve_task, ready_task}, return_when=asyncio.FIRST_COMPLETED)
    if not server.ready.is_set():
        ready_task.cancel()
        await serve_task  # startup failed: surface its exception
        return

    mode = "legacy HTTP+SSE" if args.sse else "stateless Streamable HTTP" if args.stateless else "Streamable HTTP"
    logger.info("serving %s on %s:%d%s", mode, args.host, port, path)
    print(f"demo-server listening url=http://{url_host}:{port}{path}", flush=True)

    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({serve_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stop_task.cancel()
    await serve_task
    logger.info("demo server stopped")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Demo MCP server (Streamable HTTP at /mcp).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="port to bind; 0 picks a free one (default 3000)")
    parser.add_argument(
        "--stateless",
        action="store_true",
        help="serve 2025-era clients without sessions (no Mcp-Session-Id); 2026-07-28 is always stateless",
    )
    parser.add_argument(
        "--sse",
        action="store_true",
        help=f"serve the legacy HTTP+SSE transport (GET {SSE_PATH}, POST {SSE_MESSAGE_PATH}) instead",
    )
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="exit when stdin is closed (lets a parent process own us)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="extra Host header value to accept besides loopback (repeatable; 'name:*' for any port)",
    )
    parser.add_argument("--no-host-check", action="store_true", help="disable DNS-rebinding Host/Origin checks")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="stderr log level",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Configured before MCPServer() so its own basicConfig call is a no-op and
    # every log line (ours, the SDK's, uvicorn's) goes to stderr, keeping
    # stdout for the single ready line.
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
