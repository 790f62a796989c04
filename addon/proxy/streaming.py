"""Authorized responses: Server-Sent Events stream through as the MCP server sends them.

mitmproxy closes a client connection after `tcp_timeout` (600 s) without traffic. A quiet
event stream (a GET stream waiting for server notifications, a tool between progress
events) is not idle in that sense: both ends hold it open on purpose. So while an
authorized event stream runs, its connection's inactivity timeout is held off; it comes
back when the stream ends. A peer that vanishes without closing is found when the next
event is written.
"""

from __future__ import annotations

import contextlib
import weakref

from mitmproxy import http

from addon.proxy.connections import handler_of, warn_once
from addon.proxy.headers import values_of
from addon.stages import Stage, stage_of


def is_event_stream(response: http.Response) -> bool:
    # Several Content-Type headers read as one joined value, as `headers.get` reads them: never a stream.
    content_type = ", ".join(values_of(response.headers, b"content-type"))
    return content_type.split(";")[0].strip().lower() == "text/event-stream"


class EventStreaming:
    def __init__(self) -> None:
        self._held_open: weakref.WeakKeyDictionary[http.HTTPFlow, contextlib.AbstractContextManager[None]] = (
            weakref.WeakKeyDictionary()
        )

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Only authorized calls reach the MCP server; the proxy's own answers are complete already.
        # Flows read from a file (not live) keep their recorded comment.
        if flow.response is None or not flow.live or stage_of(flow) != Stage.AUTHORIZED_CALL:
            return
        if is_event_stream(flow.response):
            # Without this mitmproxy buffers the whole stream and progress arrives all at the end.
            flow.response.stream = True
            flow.comment += f"; MCP server answered {flow.response.status_code}, event stream passed through unbuffered"
            self._hold_open(flow)
        else:
            flow.comment += f"; MCP server answered {flow.response.status_code}"

    def response(self, flow: http.HTTPFlow) -> None:
        self._release(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._release(flow)

    def _hold_open(self, flow: http.HTTPFlow) -> None:
        watchdog = getattr(handler_of(flow), "timeout_watchdog", None)
        if watchdog is None or not hasattr(watchdog, "disarm"):
            warn_once("keeping quiet event streams open past tcp_timeout", "no connection watchdog")
            return
        held = watchdog.disarm()
        held.__enter__()
        self._held_open[flow] = held

    def _release(self, flow: http.HTTPFlow) -> None:
        held = self._held_open.pop(flow, None)
        if held is not None:
            held.__exit__(None, None, None)
