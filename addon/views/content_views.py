"""The mitmproxy side of the views: Contentview classes and the addon that registers them.

Thin on purpose: each view turns mitmproxy's `Metadata` into a MessageContext and calls a
plain function. A view never raises: mitmproxy would show a traceback in mitmweb (or, for a
view it chose itself, fall back to raw, which shows every secret whole).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Set
from typing import Any

from mitmproxy import contentviews, ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.contentviews import Contentview, Metadata

from addon.views import discovery_view, jsonrpc_view, jwt_view
from addon.views.render import MessageContext, content_type_of, raw_body

logger = logging.getLogger("mcp_auth")

REDACT_OPTION = "mcp_auth_redact"


def redaction_on() -> bool:
    """The mcp_auth_redact option; off where no options are loaded (or the option is not declared)."""
    try:
        return bool(getattr(ctx.options, REDACT_OPTION, False))
    except Exception:  # no master yet, or options torn down
        return False


def _headers(message: http.Message | None) -> dict[str, list[str]]:
    if message is None:
        return {}
    result: dict[str, list[str]] = {}
    for name, value in message.headers.items(multi=True):
        result.setdefault(name.lower(), []).append(value)
    return result


def _raw(message: http.Message | None) -> bytes | None:
    if message is None:
        return None
    try:
        return message.get_content(strict=False)
    except Exception:
        return message.raw_content


def message_context(data: bytes, metadata: Metadata) -> MessageContext:
    """What the views need from mitmproxy's objects; missing pieces stay empty."""
    flow = metadata.flow
    message = metadata.http_message
    request = getattr(flow, "request", None) if isinstance(flow, http.HTTPFlow) else None
    if request is None and isinstance(message, http.Request):
        request = message
    response = getattr(flow, "response", None) if isinstance(flow, http.HTTPFlow) else None
    is_request = not isinstance(message, http.Response)
    flow_metadata = getattr(flow, "metadata", None)
    return MessageContext(
        body=bytes(data) if isinstance(data, bytes | bytearray | memoryview) else b"",
        content_type=metadata.content_type,
        is_request=is_request,
        method=request.method if request is not None else None,
        path=request.path if request is not None else None,
        status_code=message.status_code if isinstance(message, http.Response) else None,
        headers=_headers(message),
        authorization=request.headers.get_all("authorization") if request is not None else [],
        flow_metadata=flow_metadata if isinstance(flow_metadata, dict) else {},
        request_body=None if is_request else _raw(request),
        request_content_type=content_type_of(request.headers.get("content-type")) if request is not None else None,
        response_timestamp=(response.timestamp_end or response.timestamp_start) if response is not None else None,
        redact=redaction_on(),
        now=time.time(),
    )


class _McpAuthView(Contentview):
    """A view that is a pair of plain functions of the MessageContext."""

    view_name: str = ""
    render: Callable[[MessageContext], str]
    priority: Callable[[MessageContext], float]

    @property
    def name(self) -> str:
        return self.view_name

    @property
    def syntax_highlight(self) -> contentviews.SyntaxHighlight:
        return "none"

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        try:
            return type(self).render(message_context(data, metadata))
        except Exception as e:  # never a traceback, never the unredacted raw view
            logger.debug("view %s failed", self.view_name, exc_info=True)
            try:
                redact = redaction_on()
                return f"({self.view_name} could not render this: {type(e).__name__})\n" + raw_body(
                    bytes(data or b""), redact
                )
            except Exception:
                return f"({self.view_name} could not render this: {type(e).__name__})\n"

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        if metadata.http_message is None:
            return 0
        try:
            return float(type(self).priority(message_context(data, metadata)))
        except Exception:
            logger.debug("priority of view %s failed", self.view_name, exc_info=True)
            return 0


class TokenView(_McpAuthView):
    view_name = jwt_view.NAME
    render = jwt_view.token_view
    priority = jwt_view.token_priority


class DiscoveryView(_McpAuthView):
    view_name = discovery_view.NAME
    render = discovery_view.discovery_view
    priority = discovery_view.discovery_priority


class JsonRpcView(_McpAuthView):
    view_name = jsonrpc_view.NAME
    render = jsonrpc_view.jsonrpc_view
    priority = jsonrpc_view.jsonrpc_priority


class ContentViews:
    """Registers the views with mitmproxy on load and takes them out again when the addon goes."""

    def __init__(self) -> None:
        self.views: list[Contentview] = [TokenView(), DiscoveryView(), JsonRpcView()]

    def load(self, loader: Loader) -> None:
        for view in self.views:
            contentviews.add(view)

    def configure(self, updated: Set[str]) -> None:
        if REDACT_OPTION in updated:
            # mitmproxy's console caches rendered views; tell it they changed.
            self._changed()

    def done(self) -> None:
        registry: Any = contentviews.registry
        by_name = getattr(registry, "_by_name", None)  # 12.x has no public way to unregister
        if isinstance(by_name, dict):
            for view in self.views:
                if by_name.get(view.name.lower()) is view:
                    del by_name[view.name.lower()]

    def _changed(self) -> None:
        try:
            contentviews.registry.on_change.send(self.views[0])
        except Exception:
            logger.debug("could not signal a content view change", exc_info=True)
