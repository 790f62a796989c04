"""What the content views share, as plain functions: the message they look at, JSON, times, redaction.

No mitmproxy here: content_views.py turns mitmproxy's flow and message into a MessageContext,
and every view is a function of that context. Nothing here may raise on any input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from addon.protocol.errors import shorten

# Bodies larger than this are rendered from their first MAX_RENDER bytes, as if truncated.
MAX_RENDER = 2 * 1024 * 1024
# Longest single value shown in one-line summaries (diffs, parameters).
MAX_INLINE = 300

# Names whose values are credentials: shortened with mcp_auth_redact, wherever they appear.
SECRET_NAMES = frozenset(
    {
        "access_token",
        "id_token",
        "refresh_token",
        "code",
        "code_verifier",
        "client_secret",
        "registration_access_token",
        "initial_access_token",
        "token",
        "subject_token",
        "actor_token",
        "client_assertion",
        "assertion",
        "device_code",
        "password",
        "ticket",
    }
)

_JWT_RE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_JWT_IN_TEXT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)*")
_SECRET_FIELD_RE = re.compile(
    r'("(?:' + "|".join(sorted(SECRET_NAMES)) + r')"\s*:\s*")([^"\\]*(?:\\.[^"\\]*)*)',
)
_SECRET_PARAM_RE = re.compile(r"(?<![A-Za-z0-9_])((?:" + "|".join(sorted(SECRET_NAMES)) + r")=)([^&\s\"']+)")
_BEARER_RE = re.compile(r"(?i)(\b(?:bearer|basic)\s+)([A-Za-z0-9._~+/=-]{8,})")


@dataclass
class MessageContext:
    """One HTTP message as the views see it, with what the proxy recorded on its flow."""

    body: bytes = b""
    content_type: str | None = None
    is_request: bool = True
    method: str | None = None
    path: str | None = None
    status_code: int | None = None
    # Lower-cased header name -> every value, of this message.
    headers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # The Authorization header values of the flow's request (whichever message is viewed).
    authorization: Sequence[str] = ()
    flow_metadata: Mapping[str, Any] = field(default_factory=dict)
    # For a response: its request's body and content type, to say what it answers.
    request_body: bytes | None = None
    request_content_type: str | None = None
    response_timestamp: float | None = None
    redact: bool = False
    now: float = 0.0

    @property
    def stage(self) -> str | None:
        value = self.flow_metadata.get("mcp_auth.stage")
        return value if isinstance(value, str) else None

    @property
    def explanation(self) -> str | None:
        value = self.flow_metadata.get("mcp_auth.explanation")
        return value if isinstance(value, str) else None

    def header(self, name: str) -> list[str]:
        values = self.headers.get(name.lower()) or ()
        return [v for v in values if isinstance(v, str)]


# --- text and JSON ---------------------------------------------------------------------------


def body_text(data: bytes, limit: int = MAX_RENDER) -> tuple[str, bool]:
    """The body as text (undecodable bytes escaped) and whether it was cut to `limit` bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return "", False
    data = bytes(data)
    cut = len(data) > limit
    return data[:limit].decode("utf-8", errors="backslashreplace"), cut


def is_binary(data: bytes) -> bool:
    sample = bytes(data[:4096])
    if b"\x00" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(sample) - 4  # a multi-byte character cut at the sample's end is still text
    return False


def parse_json(data: bytes | str) -> tuple[Any, str | None]:
    """(value, None) when the data is JSON; (None, why not) otherwise."""
    try:
        if isinstance(data, bytes | bytearray | memoryview):
            if len(data) > MAX_RENDER:
                return None, f"larger than {MAX_RENDER} bytes, not parsed"
            text = bytes(data).decode("utf-8")
        else:
            text = data
        if not text.strip():
            return None, "empty"
        return json.loads(text), None
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text ({e.reason} at byte {e.start})"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})"
    except (RecursionError, ValueError, TypeError) as e:
        return None, f"not readable as JSON ({type(e).__name__})"


def pretty_json(value: Any, indent: str = "") -> str:
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (RecursionError, ValueError, TypeError):
        text = repr(value)
    return "\n".join(indent + line for line in text.splitlines())


def one_line(value: Any, limit: int = MAX_INLINE) -> str:
    try:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    except (RecursionError, ValueError, TypeError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def heading(title: str, width: int = 78) -> str:
    line = f"── {title} "
    return line + "─" * max(3, width - len(line))


def content_type_of(value: str | None) -> str | None:
    if not value or not isinstance(value, str):
        return None
    return value.split(";", 1)[0].strip().lower() or None


def parse_form(data: bytes) -> list[tuple[str, str]] | None:
    """An application/x-www-form-urlencoded body as pairs; None when it is not one."""
    text, _ = body_text(data)
    if not text or "=" not in text or is_binary(data):
        return None
    try:
        return parse_qsl(text.strip(), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None


# --- times -----------------------------------------------------------------------------------


def is_timestamp(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def iso_time(value: Any) -> str:
    """A NumericDate as an ISO 8601 UTC time; says so when it is not one."""
    if not is_timestamp(value):
        return f"{one_line(value, 60)} (not a NumericDate)"
    try:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{value} (out of range)"


def duration(seconds: float) -> str:
    """3m 12s, 42s, 2h 5m, 3d 4h: two units at most."""
    try:
        total = abs(int(seconds))
    except (OverflowError, ValueError):
        return "forever"
    parts: list[str] = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        count, total = divmod(total, size)
        if count or parts:
            parts.append(f"{count}{unit}")
    return " ".join(parts[:2]) or "0s"


def relative_time(claim: str, value: Any, now: float) -> str:
    """What a time claim means relative to now, in words a learner reads at a glance."""
    if not is_timestamp(value):
        return "not a NumericDate: the proxy refuses such a token"
    delta = value - now
    ahead = delta > 0
    span = duration(delta)
    if claim == "exp":
        return f"expires in {span}" if ahead else f"expired {span} ago"
    if claim == "nbf":
        return f"not valid for another {span}" if ahead else f"valid since {span} ago"
    if claim == "iat":
        return f"issued {span} in the future (clock skew?)" if ahead else f"issued {span} ago"
    if claim == "auth_time":
        return f"user logs in {span} in the future (clock skew?)" if ahead else f"user logged in {span} ago"
    return f"in {span}" if ahead else f"{span} ago"


# --- redaction -------------------------------------------------------------------------------


def looks_like_jwt(value: Any) -> bool:
    return isinstance(value, str) and len(value) < 65536 and _JWT_RE.fullmatch(value) is not None


def secret(value: Any, redact: bool) -> str:
    """A credential as the views show it: whole, or shortened with mcp_auth_redact."""
    text = value if isinstance(value, str) else one_line(value)
    return shorten(text) if redact else text


def redact_json(value: Any, redact: bool, _depth: int = 0) -> Any:
    """A copy of a JSON document with credentials shortened: values of secret names, and JWTs anywhere."""
    if not redact or _depth > 200:
        return value
    if isinstance(value, dict):
        return {
            k: (shorten(v) if isinstance(v, str) and k in SECRET_NAMES else redact_json(v, redact, _depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_json(v, redact, _depth + 1) for v in value]
    if isinstance(value, str):
        return shorten(value) if looks_like_jwt(value) else redact_text(value, redact)
    return value


def redact_text(text: str, redact: bool) -> str:
    """Raw text (a body that is not JSON, truncated JSON, a form) with credentials shortened."""
    if not redact or not text:
        return text
    try:
        text = _SECRET_FIELD_RE.sub(lambda m: m.group(1) + shorten(m.group(2)), text)
        text = _SECRET_PARAM_RE.sub(lambda m: m.group(1) + shorten(m.group(2)), text)
        text = _BEARER_RE.sub(lambda m: m.group(1) + shorten(m.group(2)), text)
        return _JWT_IN_TEXT_RE.sub(lambda m: shorten(m.group(0)), text)
    except RecursionError:
        return "(not shown: could not be redacted)"


def raw_body(data: bytes, redact: bool, why: str | None = None) -> str:
    """The body as text, redacted, saying when it was cut or is binary."""
    if not data:
        return "(no body)"
    lines = []
    if why:
        lines.append(f"({why}; shown as text)")
    if is_binary(data):
        lines.append(f"(binary, {len(data)} bytes; undecodable bytes escaped)")
    text, cut = body_text(data)
    lines.append(redact_text(text, redact))
    if cut:
        lines.append(f"… ({len(data) - MAX_RENDER} more bytes not shown)")
    return "\n".join(lines)


def proxy_line(ctx: MessageContext) -> str | None:
    """What the proxy recorded on the flow, as its first line in every view."""
    if not ctx.stage:
        return None
    explanation = ctx.explanation
    return f"stage {ctx.stage}" + (f": {redact_text(explanation, ctx.redact)}" if explanation else "")
