"""Request bodies over `max_request_body_bytes`: answered 413 before they are read.

mitmproxy buffers every request body whole before the `request` hook, where the gate
decides. Its own cap, `body_size_limit`, covers responses too, and would cut a large tool
result from the MCP server. So the addon caps request bodies only: a declared
Content-Length over the limit is answered at once, without reading a byte of the body; a
chunked body is answered as soon as what has arrived passes the limit. Memory per request
stays bounded either way. The check sits where mitmproxy checks its own limit
(`HttpStream.check_body_size`, mitmproxy 12.x) and defers to it otherwise; if mitmproxy's
internals change, the cap is not installed (with a warning) and `body_size_limit` is the
fallback.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable, Generator
from typing import Any

from mitmproxy import http

from addon.proxy import error_pages
from addon.proxy.configuration import Configuration
from addon.stages import Stage, record

logger = logging.getLogger("mcp_auth")

_limit_of: Callable[[], int | None] = lambda: None  # noqa: E731
_refused: weakref.WeakKeyDictionary[http.HTTPFlow, int] = weakref.WeakKeyDictionary()
_installed = False


def too_large_body(limit: int) -> bytes:
    description = f"the request body is larger than the {limit} bytes this proxy accepts"
    return json.dumps({"error": "invalid_request", "error_description": description}).encode()


def install(limit_of: Callable[[], int | None]) -> bool:
    global _installed, _limit_of
    _limit_of = limit_of
    if _installed:
        return True
    try:
        from mitmproxy import flow as mflow
        from mitmproxy.net.http.http1 import expected_http_body_size
        from mitmproxy.proxy.layers import http as http_layer
        from mitmproxy.proxy.layers.http._events import ErrorCode, ResponseProtocolError
        from mitmproxy.proxy.layers.http._hooks import HttpErrorHook, HttpRequestHeadersHook

        stream_class = http_layer.HttpStream
        original: Callable[..., Generator[Any, Any, bool]] = stream_class.check_body_size
        send_http = http_layer.SendHttp
    except (ImportError, AttributeError) as e:
        logger.warning("mcp_auth: cannot cap request bodies with this mitmproxy (%s); set body_size_limit", e)
        return False

    def declared_or_buffered(stream: Any) -> int | None:
        if stream.request_body_buf:
            return len(stream.request_body_buf)
        try:
            return expected_http_body_size(stream.flow.request, None)
        except ValueError:
            return None

    def refuse(self: Any, limit: int) -> Generator[Any, Any, bool]:
        # What mitmproxy does when a request passes body_size_limit, with a JSON answer.
        message = f"request body over max_request_body_bytes ({limit} bytes)"
        if not self.request_body_buf:
            yield HttpRequestHeadersHook(self.flow)  # the flow has not been shown yet
        _refused[self.flow] = limit
        error_pages.answer_instead(self.flow.request, 413, too_large_body(limit))
        self.flow.error = mflow.Error(message)
        yield HttpErrorHook(self.flow)
        refusal = ResponseProtocolError(self.stream_id, message, ErrorCode.REQUEST_TOO_LARGE)
        yield send_http(refusal, self.context.client)
        self.client_state = self.state_errored
        self.flow.live = False
        return True

    # A plain function handing back a generator (callers `yield from` it): within the limit,
    # mitmproxy's own check runs with no extra frame in between.
    def check_body_size(self: Any, request: bool) -> Generator[Any, Any, bool]:
        limit = _limit_of() if request else None
        if limit is not None:
            size = declared_or_buffered(self)
            if size is not None and size > limit:
                return refuse(self, limit)
        return original(self, request)

    stream_class.check_body_size = check_body_size  # type: ignore[method-assign]
    _installed = True
    return True


class RequestSizeLimit:
    """Caps request bodies at max_request_body_bytes and says so in the flow."""

    def __init__(self, configuration: Configuration) -> None:
        self.configuration = configuration

    def running(self) -> None:
        install(self._limit)

    def _limit(self) -> int | None:
        try:
            return self.configuration.current().settings.max_request_body_bytes
        except RuntimeError:  # not configured: nothing is served anyway
            return None

    def error(self, flow: http.HTTPFlow) -> None:
        limit = _refused.pop(flow, None)
        if limit is None:
            return
        record(
            flow,
            Stage.REJECTED,
            f"request body over {limit} bytes (max_request_body_bytes); answered 413 without reading the rest",
            answered=413,
        )
