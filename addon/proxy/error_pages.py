"""mitmproxy's own error pages, replaced by JSON for the requests the addon marked.

Some failures are answered by mitmproxy's HTTP/1 layer, not by a hook: the MCP server
refusing the connection or closing it before any response header (502), a request body
over the size limit (413). The layer writes a `text/html` page to the client; no hook can
replace it (the `error` hook runs, but the layer ignores `flow.response` from then on), and
neither an MCP client nor an OAuth client can read HTML. So this module wraps that one
branch of `Http1Server.send` (mitmproxy 12.x, the version `requirements.lock` pins): for a
request marked with `answer_instead`, whose response has not started, it writes the JSON
answer the marking addon chose, and leaves every other case to mitmproxy. Once a response
has started (an event stream cut in the middle) nothing can be sent in its place; mitmproxy
closes the connection, which is what the client must see. If mitmproxy's internals change,
the wrapper is not installed and the HTML page comes back (with a warning), never a broken
proxy.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Generator
from typing import Any

from mitmproxy import http

logger = logging.getLogger("mcp_auth")

# Request -> (status, JSON body, or what makes it) to answer with if mitmproxy fails it.
# Weak, so a finished request is forgotten without bookkeeping.
Body = bytes | Callable[[], bytes]
_answers: weakref.WeakKeyDictionary[http.Request, tuple[int, Body]] = weakref.WeakKeyDictionary()
_installed = False


def answer_instead(request: http.Request, status: int, body: Body) -> None:
    """If mitmproxy fails this request before a response starts, answer `status` with this JSON body.

    `body` may be a function: most marked requests never fail, so their answer is built only if one does.
    """
    _answers[request] = (status, body)


def forget(request: http.Request) -> None:
    _answers.pop(request, None)


def is_marked(request: http.Request) -> bool:
    return request in _answers


def _assembled(status: int, body: Body) -> bytes:
    from mitmproxy.net.http import http1

    if callable(body):
        body = body()
    response = http.Response.make(
        status, body, {"Content-Type": "application/json", "Cache-Control": "no-store", "Connection": "close"}
    )
    return http1.assemble_response(response)


def install() -> bool:
    """Wrap Http1Server.send once; False (and the HTML pages stay) when mitmproxy's internals differ."""
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
        logger.warning("mcp_auth: cannot answer proxy-level failures as JSON with this mitmproxy: %s", e)
        return False

    def answer(self: Any, request: http.Request) -> Generator[Any, Any, None]:
        yield commands.SendData(self.conn, _assembled(*_answers.pop(request)))
        yield commands.CloseConnection(self.conn)

    # A plain function handing back a generator, so the common case (every other event) costs
    # one type check and no extra generator frame: callers `yield from` whatever comes back.
    def send(self: Any, event: Any) -> Generator[Any, Any, None]:
        if type(event) is ResponseProtocolError and self.response is None:
            request = getattr(self, "request", None)
            if (
                request is not None
                and request in _answers
                and self.conn.state & ConnectionState.CAN_WRITE
                and event.code.http_status_code() is not None
            ):
                return answer(self, request)
        return original(self, event)

    _http1.Http1Server.send = send  # type: ignore[method-assign]
    _installed = True
    return True
