"""The JSON-RPC view: MCP messages with a one-line summary each, event streams split per event.

Works on whatever arrives: a single message, a batch, `text/event-stream` bodies (complete
or cut off mid-event), and bodies that are not JSON at all (shown as text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from addon.views.jwt_view import TOKEN_CHECKS_KEY, TOKEN_KEY, decode_jwt, verdict
from addon.views.render import (
    MessageContext,
    body_text,
    content_type_of,
    heading,
    is_timestamp,
    one_line,
    parse_json,
    pretty_json,
    proxy_line,
    raw_body,
    redact_json,
    redact_text,
    relative_time,
    secret,
)

NAME = "MCP auth: JSON-RPC"

EVENT_STREAM = "text/event-stream"
JSON_TYPES = frozenset({"application/json", "application/json-rpc"})
MCP_STAGES = frozenset({"authorized-call"})
# Headers of the streamable HTTP transport worth seeing next to the messages.
MCP_HEADERS = ("mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name", "last-event-id")
ERROR_NAMES = {
    -32700: "parse error",
    -32600: "invalid request",
    -32601: "method not found",
    -32602: "invalid params",
    -32603: "internal error",
}
MAX_EVENTS = 1000


# --- JSON-RPC --------------------------------------------------------------------------------


def is_jsonrpc(value: Any) -> bool:
    """A JSON-RPC message or a non-empty batch of them."""
    if isinstance(value, list):
        return (
            bool(value)
            and all(is_jsonrpc(item) for item in value if not isinstance(item, list))
            and any(isinstance(item, dict) for item in value)
        )
    return isinstance(value, dict) and (
        value.get("jsonrpc") == "2.0"
        or ("method" in value and isinstance(value.get("method"), str))
        or ("id" in value and ("result" in value or "error" in value))
    )


def _id(message: dict[str, Any]) -> str:
    return f"#{one_line(message.get('id'), 40)}"


def _names(items: Any, key: str = "name", limit: int = 8) -> str:
    if not isinstance(items, list):
        return ""
    names = [one_line(item.get(key), 60) for item in items if isinstance(item, dict) and key in item]
    shown = ", ".join(names[:limit]) + (f", … {len(names) - limit} more" if len(names) > limit else "")
    return f" ({shown})" if shown else ""


def _request_detail(method: str, params: Any) -> str:
    if not isinstance(params, dict):
        return ""
    if method in ("tools/call", "prompts/get") and "name" in params:
        return f' "{one_line(params["name"], 80)}"'
    if method in ("resources/read", "resources/subscribe", "resources/unsubscribe") and "uri" in params:
        return f" {one_line(params['uri'], 120)}"
    if method == "initialize":
        client = params.get("clientInfo")
        name = client.get("name") if isinstance(client, dict) else None
        return f" protocol {one_line(params.get('protocolVersion', '?'), 30)}" + (
            f", client {one_line(name, 60)}" if name else ""
        )
    if method == "notifications/progress":
        return f" {one_line(params.get('progress', '?'), 20)}/{one_line(params.get('total', '?'), 20)}" + (
            f" {one_line(params['message'], 80)}" if "message" in params else ""
        )
    if method == "notifications/cancelled":
        return f" request #{one_line(params.get('requestId'), 40)}" + (
            f": {one_line(params['reason'], 80)}" if "reason" in params else ""
        )
    if method == "notifications/message":
        return f" [{one_line(params.get('level', '?'), 20)}] {one_line(params.get('data'), 100)}"
    return ""


def _result_detail(result: Any) -> str:
    if not isinstance(result, dict):
        return f": {one_line(result, 80)}"
    parts = []
    if "tools" in result:
        tools = result["tools"]
        parts.append(f"{len(tools) if isinstance(tools, list) else '?'} tools{_names(tools)}")
    if "resources" in result:
        resources = result["resources"]
        parts.append(f"{len(resources) if isinstance(resources, list) else '?'} resources{_names(resources, 'uri')}")
    if "prompts" in result:
        prompts = result["prompts"]
        parts.append(f"{len(prompts) if isinstance(prompts, list) else '?'} prompts{_names(prompts)}")
    if "protocolVersion" in result or "serverInfo" in result:
        server = result.get("serverInfo")
        name = server.get("name") if isinstance(server, dict) else None
        parts.append(
            f"protocol {one_line(result.get('protocolVersion', '?'), 30)}"
            + (f", server {one_line(name, 60)}" if name else "")
        )
    if result.get("isError") is True:
        parts.append("TOOL ERROR")
    content = result.get("content")
    if isinstance(content, list):
        texts = [c.get("text") for c in content if isinstance(c, dict) and isinstance(c.get("text"), str)]
        if texts:
            parts.append(f'text "{one_line(" ".join(texts), 100)}"')
        elif content:
            kinds = [one_line(c.get("type"), 20) for c in content if isinstance(c, dict)]
            parts.append(f"content {', '.join(kinds)}")
    if "nextCursor" in result:
        parts.append("more pages (nextCursor)")
    return (": " + "; ".join(parts)) if parts else ""


def summarize(message: Any) -> str:
    """One line for one JSON-RPC message: direction-free, what it is and what it says."""
    if not isinstance(message, dict):
        return f"not a JSON-RPC message ({type(message).__name__})"
    note = "" if message.get("jsonrpc") == "2.0" else ' (jsonrpc is not "2.0")'
    method = message.get("method")
    if isinstance(method, str):
        detail = _request_detail(method, message.get("params"))
        if "id" in message:
            return f"request {_id(message)} {one_line(method, 80)}{detail}{note}"
        return f"notification {one_line(method, 80)}{detail}{note}"
    if "error" in message:
        error = message["error"]
        if isinstance(error, dict):
            code = error.get("code")
            name = ERROR_NAMES.get(code) if isinstance(code, int) else None
            text = f"{one_line(code, 20)}{' ' + name if name else ''}: {one_line(error.get('message', ''), 120)}"
        else:
            text = one_line(error, 120)
        return f"error {_id(message)} {text}{note}"
    if "result" in message:
        return f"result {_id(message)}{_result_detail(message['result'])}{note}"
    return f"not JSON-RPC: no method, result or error{note}"


def render_jsonrpc(value: Any, redact: bool, prefix: str = "") -> list[str]:
    """Summary line(s) then the pretty JSON, for a message or a batch."""
    lines = []
    if isinstance(value, list):
        lines.append(f"{prefix}batch of {len(value)}:")
        lines.extend(
            f"{prefix}  [{i}] {redact_text(summarize(item), redact)}" for i, item in enumerate(value[:MAX_EVENTS])
        )
    else:
        lines.append(prefix + redact_text(summarize(value), redact))
    lines.append(pretty_json(redact_json(value, redact), prefix + "  "))
    return lines


# --- Server-Sent Events ----------------------------------------------------------------------


@dataclass
class SseEvent:
    event: str | None = None
    id: str | None = None
    retry: str | None = None
    data: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    complete: bool = True

    @property
    def text(self) -> str:
        return "\n".join(self.data)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def split_events(text: str) -> list[SseEvent]:
    """The events of a text/event-stream body (WHATWG HTML §9.2.6); the last one may be incomplete."""
    events: list[SseEvent] = []
    current = SseEvent()
    started = False
    lines = _LINE_BREAK.split(text)
    ends_with_break = bool(text) and text[-1] in "\r\n"
    if ends_with_break:
        lines.pop()  # the empty string after the final line break
    for line in lines:
        if line == "":
            if started:
                events.append(current)
            current, started = SseEvent(), False
            continue
        started = True
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "":
            current.comments.append(value)
        elif name == "data":
            current.data.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        elif name == "retry":
            current.retry = value
        else:
            current.others.append(line)
    if started:
        current.complete = False
        events.append(current)
    return events


def render_event(index: int, event: SseEvent, redact: bool) -> list[str]:
    only_comments = event.comments and not (event.data or event.others or event.id or event.retry)
    title = f"event {index}: {event.event or ('comment' if only_comments else 'message')}"
    if event.id is not None:
        title += f", id {one_line(event.id, 60)}"
    if not event.complete:
        title += ", INCOMPLETE (the body ends mid-event)"
    lines = [heading(title)]
    lines.extend(
        f"  : {redact_text(c, redact)}  (comment{', a keep-alive' if not c.strip() or c.strip() == 'ping' else ''})"
        for c in event.comments
    )
    if event.retry is not None:
        lines.append(f"  retry: {one_line(event.retry, 40)} ms (how long the client waits before reconnecting)")
    lines.extend(f"  ignored field: {one_line(redact_text(o, redact), 120)}" for o in event.others)
    if not event.data:
        if not event.comments:
            lines.append("  (no data)")
        return lines
    value, why = parse_json(event.text)
    if why is None and is_jsonrpc(value):
        lines.extend(render_jsonrpc(value, redact, "  "))
    elif why is None:
        lines.append("  data: JSON, not JSON-RPC")
        lines.append(pretty_json(redact_json(value, redact), "    "))
    else:
        lines.append(f"  data ({why}):")
        lines.extend("    " + redact_text(d, redact) for d in event.data)
    return lines


def render_event_stream(data: bytes, redact: bool) -> list[str]:
    text, cut = body_text(data)
    events = split_events(text)
    lines = [
        f"{EVENT_STREAM}: {len(events)} event{'s' if len(events) != 1 else ''}"
        + (f" (body cut at {len(text)} characters)" if cut else "")
    ]
    if not data:
        lines.append(
            "(no body stored: the proxy streams events through; start mitmproxy with "
            "--set store_streamed_bodies=true to keep them)"
        )
    for index, event in enumerate(events[:MAX_EVENTS], start=1):
        lines.extend(render_event(index, event, redact))
    if len(events) > MAX_EVENTS:
        lines.append(f"… {len(events) - MAX_EVENTS} more events not shown")
    return lines


# --- the view --------------------------------------------------------------------------------


def _token_line(ctx: MessageContext) -> str | None:
    stored = ctx.flow_metadata.get(TOKEN_KEY)
    if not isinstance(stored, str) or not stored:
        return None
    _, banner = verdict(ctx.flow_metadata.get(TOKEN_CHECKS_KEY))
    claims = decode_jwt(stored).claims
    who = ""
    if isinstance(claims, dict):
        who = f"; sub {one_line(claims.get('sub', '?'), 60)}"
        if is_timestamp(claims.get("exp")):
            who += f", {relative_time('exp', claims['exp'], ctx.now)}"
    return f'token: {banner.split(":")[0]}{who} (details: view "MCP auth: token")'


def _in_reply_to(ctx: MessageContext) -> str | None:
    if ctx.is_request or not ctx.request_body:
        return None
    value, why = parse_json(ctx.request_body)
    if why is not None or not is_jsonrpc(value):
        return None
    if isinstance(value, list):
        return f"in reply to a batch of {len(value)}"
    return f"in reply to: {redact_text(summarize(value), ctx.redact)}"


def jsonrpc_view(ctx: MessageContext) -> str:
    out: list[str] = []
    if line := proxy_line(ctx):
        out.append(line)
    if line := _token_line(ctx):
        out.append(line)
    headers = [
        f"{name}: {secret(value, ctx.redact) if name == 'mcp-session-id' else one_line(value, 120)}"
        for name in MCP_HEADERS
        for value in ctx.header(name)
    ]
    if headers:
        out.append("MCP headers: " + "; ".join(headers))
    if line := _in_reply_to(ctx):
        out.append(line)
    body = ctx.body or b""
    if content_type_of(ctx.content_type) == EVENT_STREAM:
        out.extend(render_event_stream(body, ctx.redact))
        return "\n".join(out) + "\n"
    if not body:
        out.append("(no body)")
        return "\n".join(out) + "\n"
    value, why = parse_json(body)
    if why is None and is_jsonrpc(value):
        out.extend(render_jsonrpc(value, ctx.redact))
    elif why is None:
        out.append("JSON, but not JSON-RPC:")
        out.append(pretty_json(redact_json(value, ctx.redact), "  "))
    else:
        text, _ = body_text(body, 64 * 1024)
        events = split_events(text) if text.lstrip().startswith(("data:", "event:", "id:", ":")) else []
        if events and any(e.data for e in events):
            out.append("(looks like an event stream, though not labelled text/event-stream)")
            out.extend(render_event_stream(body, ctx.redact))
        else:
            out.append(raw_body(body, ctx.redact, why))
    return "\n".join(out) + "\n"


def _looks_like_jsonrpc(data: bytes) -> bool:
    head = data[:4096].lstrip()
    if head[:1] not in (b"{", b"["):
        return False
    if len(data) > 1024 * 1024:
        return b'"jsonrpc"' in head
    value, why = parse_json(data)
    return why is None and is_jsonrpc(value)


def jsonrpc_priority(ctx: MessageContext) -> float:
    """Above the JSON view for JSON-RPC anywhere, and above the token view on authorized calls."""
    ctype = content_type_of(ctx.content_type)
    high = ctx.stage in MCP_STAGES
    if ctype == EVENT_STREAM:
        return 2.5 if high else 1.5
    if (ctype in JSON_TYPES or ctype is None) and ctx.body and _looks_like_jsonrpc(ctx.body):
        return 2.5 if high else 1.5
    return 0
