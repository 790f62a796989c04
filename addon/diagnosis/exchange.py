"""One HTTP exchange as plain data: what the diagnosis reads from a flow, and nothing of mitmproxy.

`flows.py` builds these from mitmproxy flows; the tests build them directly. Every reader
here is total: a malformed body or header gives None or an empty result, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ProxyRecord:
    """What mcp-auth-addon recorded on the flow (addon/stages.py), when it handled it."""

    stage: str
    explanation: str | None = None
    client: str | None = None
    token_checks: tuple[Mapping[str, Any], ...] = ()

    @property
    def failed_check(self) -> Mapping[str, Any] | None:
        for check in self.token_checks:
            if check.get("ok") is False:
                return check
        return None


@dataclass
class Exchange:
    """One request and its response (if any), as the client saw them where that can be told."""

    id: str
    method: str
    url: str
    """The URL the client called. For a reverse-proxy capture that is the proxy's listening
    address (mitmproxy rewrites Host to the upstream's), not the upstream URL."""
    request_headers: Headers = ()
    request_body: bytes | None = b""
    status: int | None = None
    response_headers: Headers = ()
    response_body: bytes | None = None
    """None when there was no response, or its body was not stored (a streamed response)."""
    started: float = 0.0
    request_end: float | None = None
    response_start: float | None = None
    response_end: float | None = None
    client_address: str = ""
    """The client's IP address (without port): one machine, possibly several connections."""
    connection: str = ""
    """The client connection's id: requests sent over one connection share it."""
    error: str | None = None
    proxy: ProxyRecord | None = None
    upstream_url: str | None = None
    index: int = 0
    """Position in the capture, 1-based, in order of time; set by `number`."""

    # --- the request -------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/"

    @property
    def origin(self) -> str:
        return origin_of(self.url)

    @property
    def url_without_query(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"

    @property
    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.url).query, keep_blank_values=True)

    def query_param(self, name: str) -> str | None:
        return first(self.query, name)

    def request_header(self, name: str) -> str | None:
        return header(self.request_headers, name)

    def request_header_all(self, name: str) -> list[str]:
        return header_all(self.request_headers, name)

    @property
    def request_content_type(self) -> str | None:
        return media_type(self.request_header("content-type"))

    def request_form(self) -> list[tuple[str, str]] | None:
        """The request body as form parameters, when it is one."""
        body = self.request_body or b""
        if not body:
            return None
        ctype = self.request_content_type
        if ctype not in (None, "application/x-www-form-urlencoded"):
            return None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if "=" not in text or text.lstrip().startswith(("{", "[")):
            return None
        try:
            return parse_qsl(text.strip(), keep_blank_values=True, strict_parsing=True)
        except ValueError:
            return None

    def form_param(self, name: str) -> str | None:
        return first(self.request_form() or [], name)

    def request_json(self) -> Any:
        return parse_json(self.request_body)

    def bearer_token(self) -> str | None:
        """The token of an `Authorization: Bearer` header, if there is exactly one such header."""
        values = self.request_header_all("authorization")
        if len(values) != 1:
            return None
        scheme, _, token = values[0].strip().partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None

    @property
    def has_authorization(self) -> bool:
        return bool(self.request_header_all("authorization"))

    def basic_client_id(self) -> str | None:
        """The client id of an `Authorization: Basic` header (RFC 6749 §2.3.1: form-urlencoded, then base64)."""
        value = self.request_header("authorization") or ""
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        user, sep, _ = decoded.partition(":")
        return unquote(user.replace("+", " ")) if sep else None

    def jsonrpc_methods(self) -> list[str]:
        """The JSON-RPC methods of the request (a batch has several); responses have none."""
        document = self.request_json()
        messages = document if isinstance(document, list) else [document]
        return [m["method"] for m in messages if isinstance(m, dict) and isinstance(m.get("method"), str)]

    def jsonrpc_summary(self) -> str:
        """`tools/call hello-world`, `initialize`, `tools/list + notifications/initialized` (a batch)."""
        document = self.request_json()
        parts = []
        for message in document if isinstance(document, list) else [document]:
            if not isinstance(message, dict) or not isinstance(message.get("method"), str):
                continue
            params = message.get("params")
            target = None
            if isinstance(params, dict):
                target = params.get("name") if message["method"] in ("tools/call", "prompts/get") else params.get("uri")
            parts.append(f"{message['method']} {target}" if isinstance(target, str) else message["method"])
        return " + ".join(parts)

    def is_jsonrpc(self) -> bool:
        document = self.request_json()
        messages = document if isinstance(document, list) else [document]
        return any(isinstance(m, dict) and m.get("jsonrpc") == "2.0" for m in messages)

    # --- the response ------------------------------------------------------------------------

    def response_header(self, name: str) -> str | None:
        return header(self.response_headers, name)

    def response_header_all(self, name: str) -> list[str]:
        return header_all(self.response_headers, name)

    @property
    def response_content_type(self) -> str | None:
        return media_type(self.response_header("content-type"))

    def response_json(self) -> Any:
        return parse_json(self.response_body)

    @property
    def is_event_stream(self) -> bool:
        return self.response_content_type == "text/event-stream"

    def location(self) -> str | None:
        return self.response_header("location") if self.status is not None and 300 <= self.status < 400 else None

    def location_params(self) -> list[tuple[str, str]]:
        """Query parameters of the redirect target (and its fragment, for implicit-style answers)."""
        target = self.location()
        if not target:
            return []
        parts = urlsplit(target)
        return parse_qsl(parts.query, keep_blank_values=True) + parse_qsl(parts.fragment, keep_blank_values=True)

    def www_authenticate(self) -> list[Challenge]:
        challenges: list[Challenge] = []
        for value in self.response_header_all("www-authenticate"):
            challenges.extend(parse_www_authenticate(value))
        return challenges

    def oauth_error(self) -> tuple[str, str | None] | None:
        """(error, error_description) from a JSON error body, if the response has one."""
        document = self.response_json()
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            description = document.get("error_description")
            return document["error"], description if isinstance(description, str) else None
        return None

    # --- presentation ------------------------------------------------------------------------

    @property
    def time(self) -> str:
        return clock(self.started)

    def reference(self) -> str:
        """`#3 POST http://host/mcp at 12:00:01.123`: how a finding or a step names its flow."""
        url = self.url_without_query
        return f"#{self.index} {self.method} {url} at {self.time}"


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: its scheme and auth-params (names lower-cased)."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)


_AUTH_PARAM = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)')


def parse_www_authenticate(value: str) -> list[Challenge]:
    """RFC 9110 §11.6.1 challenges, leniently: `Bearer a="b", c=d, Basic realm="x"` -> two challenges."""
    challenges: list[Challenge] = []
    text = value.strip()
    pos = 0
    while pos < len(text):
        match = re.match(r"[\s,]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)", text[pos:])
        if not match:
            break
        scheme = match.group(1)
        pos += match.end()
        params: dict[str, str] = {}
        while pos < len(text):
            param = _AUTH_PARAM.match(text, pos)
            if not param:
                break
            raw = param.group(2)
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params[param.group(1).lower()] = raw
            pos = param.end()
        if not params:
            # token68 or nothing: skip to the next comma
            nxt = text.find(",", pos)
            pos = len(text) if nxt < 0 else nxt + 1
        challenges.append(Challenge(scheme, params))
    return challenges


# --- small total helpers --------------------------------------------------------------------


def header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def header_all(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    name = name.lower()
    return [value for key, value in headers if key.lower() == name]


def first(pairs: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in pairs:
        if key == name:
            return value
    return None


def media_type(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def parse_json(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def clock(timestamp: float) -> str:
    """HH:MM:SS.mmm in UTC: the same on every machine that reads the capture."""
    if not timestamp:
        return "--:--:--.---"
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def jwt_claims(token: str | None) -> dict[str, Any] | None:
    """The claims of a JWS compact token, read without verifying anything; None for anything else."""
    if not token:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    segment = parts[1]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        claims = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return claims if isinstance(claims, dict) else None


@dataclass(frozen=True)
class SseEvent:
    event: str | None
    data: str


def sse_events(body: bytes | None) -> list[SseEvent]:
    """The events of a text/event-stream body (WHATWG HTML §9.2.6), comments and retry ignored."""
    if not body:
        return []
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return []
    events: list[SseEvent] = []
    name: str | None = None
    data: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            if data:
                events.append(SseEvent(name, "\n".join(data)))
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "data":
            data.append(value)
        elif key == "event":
            name = value
    if data:
        events.append(SseEvent(name, "\n".join(data)))
    return events


def is_loopback_host(host: str | None) -> bool:
    host = (host or "").strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.") or host.endswith(".localhost")
