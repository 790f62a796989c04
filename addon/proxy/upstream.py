"""The MCP server failing or hanging: a JSON-RPC error for the client, not an HTML page or silence.

An authorized call whose MCP server refuses the connection, or breaks it before any
response header, is answered

    502 {"jsonrpc": "2.0", "id": <the request's id, or null>,
         "error": {"code": -32000, "message": "the MCP server is unavailable", ...}}

and one whose MCP server sends no response header within `mcp_server_timeout_seconds`
has its upstream connection closed (the server sees the cancellation) and is answered

    504 {"jsonrpc": "2.0", "id": ...,
         "error": {"code": -32001, "message": "the MCP server did not answer in time", ...}}

mitmproxy itself has no deadline short of `tcp_timeout` (600 s of silence), after which it
closes the client's connection without a word. The deadline ends with the response
headers: an event stream, once started, may run and pause as long as the tool needs.

The deadlines are checked four times a second by one task, not by a timer per call: a timer
armed and cancelled on every authorized call cost about 3% of the proxy's throughput
(scripts/benchmark.py), and a hung server is answered at most a quarter second later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from typing import Any

from mitmproxy import http
from mitmproxy.connection import ConnectionState

from addon.proxy import error_pages
from addon.proxy.configuration import Configuration
from addon.proxy.connections import handler_of, warn_once
from addon.stages import Stage, stage_of

logger = logging.getLogger("mcp_auth")

# JSON-RPC 2.0 leaves -32000..-32099 to the implementation: -32000 is the usual "server
# error", -32001 what the MCP SDKs use for a request timeout.
UPSTREAM_UNAVAILABLE = -32000
UPSTREAM_TIMEOUT = -32001
MESSAGE = "the MCP server is unavailable"
TIMEOUT_MESSAGE = "the MCP server did not answer in time"
DEADLINE_CHECK_SECONDS = 0.25


def jsonrpc_id(request: http.Request) -> Any:
    """The request's JSON-RPC id when the body is one JSON-RPC request with an id, else None."""
    if request.method != "POST" or not request.raw_content:
        return None
    try:
        message = json.loads(request.raw_content)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(message, dict):
        value = message.get("id")
        # JSON-RPC ids are strings or numbers; anything else is answered with null.
        return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None
    return None


def error_body(request_id: Any, detail: str, code: int = UPSTREAM_UNAVAILABLE, message: str = MESSAGE) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message, "data": {"detail": detail}}}
    ).encode()


class UpstreamErrors:
    """Marks authorized calls, so their upstream failures are answered as JSON-RPC, and holds their deadline."""

    def __init__(self, configuration: Configuration) -> None:
        self.configuration = configuration
        # flow -> (monotonic time its response headers are due, the timeout it was given)
        self._deadlines: weakref.WeakKeyDictionary[http.HTTPFlow, tuple[float, float]] = weakref.WeakKeyDictionary()
        self._timed_out: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()
        self._watch: asyncio.Task[None] | None = None

    def running(self) -> None:
        error_pages.install()
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_deadlines())

    def done(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    async def _watch_deadlines(self) -> None:
        while True:
            await asyncio.sleep(DEADLINE_CHECK_SECONDS)
            if not self._deadlines:
                continue
            now = time.monotonic()
            for flow, (due, seconds) in list(self._deadlines.items()):
                if due <= now:
                    del self._deadlines[flow]
                    try:
                        self._expire(flow, seconds)
                    except Exception:  # one flow's failure must not end the watch for all
                        logger.exception("mcp_auth: could not time out %s %s", flow.request.method, flow.request.path)

    def request(self, flow: http.HTTPFlow) -> None:
        # Runs after the Router (mitmproxy calls addons in list order): only calls it authorized go upstream.
        if not (flow.live and flow.response is None and stage_of(flow) == Stage.AUTHORIZED_CALL):
            return
        request = flow.request
        error_pages.answer_instead(
            request, 502, lambda: error_body(jsonrpc_id(request), "the MCP server did not answer")
        )
        seconds = self.configuration.current().settings.mcp_server_timeout_seconds
        self._deadlines[flow] = (time.monotonic() + seconds, seconds)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        error_pages.forget(flow.request)
        self._deadlines.pop(flow, None)

    def _expire(self, flow: http.HTTPFlow, seconds: float) -> None:
        if flow.response is not None or not flow.live or not error_pages.is_marked(flow.request):
            return
        handler = handler_of(flow)
        if handler is None or flow.server_conn not in getattr(handler, "transports", {}):
            warn_once("closing a hung MCP server connection", "no live connection handler")
            return
        detail = f"no response within {seconds:g} s (mcp_server_timeout_seconds)"
        error_pages.answer_instead(
            flow.request, 504, error_body(jsonrpc_id(flow.request), detail, UPSTREAM_TIMEOUT, TIMEOUT_MESSAGE)
        )
        self._timed_out.add(flow)
        # Closing the upstream connection is also how the MCP server learns the call is abandoned.
        handler.close_connection(flow.server_conn)

    def error(self, flow: http.HTTPFlow) -> None:
        timed_out = flow in self._timed_out
        # The mark stays: mitmproxy writes its error answer after this hook (error_pages.py).
        answered = error_pages.is_marked(flow.request)
        self._deadlines.pop(flow, None)
        if stage_of(flow) != Stage.AUTHORIZED_CALL or flow.error is None:
            return
        if flow.response is None and not flow.client_conn.state & ConnectionState.CAN_WRITE:
            flow.comment += f"; the client went away before the MCP server answered ({flow.error.msg})"
        elif flow.response is None and timed_out:
            seconds = self.configuration.current().settings.mcp_server_timeout_seconds
            flow.comment += f"; MCP server sent no response within {seconds:g} s; connection closed, answered 504"
            logger.warning(
                "[authorized-call] %s %s 504: the MCP server sent no response within %g s (mcp_server_timeout_seconds)",
                flow.request.method,
                flow.request.path,
                seconds,
            )
        elif flow.response is None and answered:
            flow.comment += f"; MCP server unavailable ({flow.error.msg}); answered 502 JSON-RPC error"
            logger.warning(
                "[authorized-call] %s %s 502: MCP server unavailable: %s",
                flow.request.method,
                flow.request.path,
                flow.error.msg,
            )
        elif flow.response is not None:
            # Cut mid-response (client gone, or the MCP server closed the stream): nothing to answer.
            flow.comment += f"; stream ended early: {flow.error.msg}"
