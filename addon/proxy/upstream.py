"""The MCP server failing: a JSON-RPC error for the client instead of mitmproxy's HTML page.

When the MCP server refuses the connection, or breaks it before any response header,
mitmproxy calls the `error` hook and then its HTTP/1 layer writes a `502 text/html` page
to the client. No hook can replace that page (the `error` hook runs, but the layer ignores
`flow.response` from then on), and an MCP client cannot read HTML. So this module wraps
that one branch of `Http1Server.send` (mitmproxy 12.x, the version `requirements.lock`
pins): for an authorized call whose response has not started, it writes

    502 {"jsonrpc": "2.0", "id": <the request's id, or null>,
         "error": {"code": -32000, "message": "the MCP server is unavailable", ...}}

and leaves every other case to mitmproxy. Once the response has started (an event stream
cut in the middle) nothing can be sent in its place; mitmproxy closes the connection, which
is what the client must see. If mitmproxy's internals change, the wrapper is not installed
and the HTML page comes back (with a warning), never a broken proxy.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable, Generator
from typing import Any

from mitmproxy import http

from addon.stages import Stage, stage_of

logger = logging.getLogger("mcp_auth")

# JSON-RPC 2.0 leaves -32000..-32099 to the implementation; -32000 is the usual "server error".
UPSTREAM_UNAVAILABLE = -32000
MESSAGE = "the MCP server is unavailable"

# Authorized requests on their way upstream -> the JSON-RPC id to answer with. Weak, so a
# finished request is forgotten without bookkeeping.
_pending: weakref.WeakKeyDictionary[http.Request, Any] = weakref.WeakKeyDictionary()
_installed = False


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


def error_body(request_id: Any, detail: str) -> bytes:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {"code": UPSTREAM_UNAVAILABLE, "message": MESSAGE, "data": {"detail": detail}},
        }
    ).encode()


def _error_response(request_id: Any, detail: str) -> bytes:
    from mitmproxy.net.http import http1

    response = http.Response.make(
        502,
        error_body(request_id, detail),
        {"Content-Type": "application/json", "Cache-Control": "no-store", "Connection": "close"},
    )
    return http1.assemble_response(response)


def install() -> bool:
    """Wrap Http1Server.send once; False (and the HTML page stays) when mitmproxy's internals differ."""
    global _installed
    if _installed:
        return True
    try:
        from mitmproxy.connection import ConnectionState
        from mitmproxy.proxy import commands
        from mitmproxy.proxy.layers.http import _http1
        from mitmproxy.proxy.layers.http._events import ResponseProtocolError

        original: Callable[..., Generator[Any, Any, None]] = _http1.Http1Server.send
    except (ImportError, AttributeError) as e:
        logger.warning("mcp_auth: cannot answer MCP server failures as JSON-RPC with this mitmproxy: %s", e)
        return False

    def send(self: Any, event: Any) -> Generator[Any, Any, None]:
        request = getattr(self, "request", None)
        if (
            isinstance(event, ResponseProtocolError)
            and self.response is None
            and request is not None
            and request in _pending
            and self.conn.state & ConnectionState.CAN_WRITE
            and event.code.http_status_code() is not None
        ):
            yield commands.SendData(self.conn, _error_response(_pending.pop(request), event.message))
            yield commands.CloseConnection(self.conn)
            return
        yield from original(self, event)

    _http1.Http1Server.send = send  # type: ignore[method-assign]
    _installed = True
    return True


class UpstreamErrors:
    """Marks authorized calls, so their upstream failures are answered as JSON-RPC, and says why in the flow."""

    def running(self) -> None:
        install()

    def request(self, flow: http.HTTPFlow) -> None:
        # Runs after the Router (mitmproxy calls addons in list order): only calls it authorized go upstream.
        if flow.live and flow.response is None and stage_of(flow) == Stage.AUTHORIZED_CALL:
            _pending[flow.request] = jsonrpc_id(flow.request)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        _pending.pop(flow.request, None)

    def error(self, flow: http.HTTPFlow) -> None:
        if stage_of(flow) != Stage.AUTHORIZED_CALL or flow.error is None:
            return
        if flow.response is None and flow.request in _pending:
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
