"""Authorized responses: Server-Sent Events stream through as the MCP server sends them."""

from __future__ import annotations

from mitmproxy import http

from addon.stages import Stage, stage_of


def is_event_stream(response: http.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


class EventStreaming:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Only authorized calls reach the MCP server; the proxy's own answers are complete already.
        # Flows read from a file (not live) keep their recorded comment.
        if flow.response is None or not flow.live or stage_of(flow) != Stage.AUTHORIZED_CALL:
            return
        if is_event_stream(flow.response):
            # Without this mitmproxy buffers the whole stream and progress arrives all at the end.
            flow.response.stream = True
            flow.comment += f"; MCP server answered {flow.response.status_code}, event stream passed through unbuffered"
        else:
            flow.comment += f"; MCP server answered {flow.response.status_code}"
