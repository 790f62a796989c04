#!/usr/bin/env python3
"""Interactive MCP client that logs in with OAuth (official MCP Python SDK).

Everything OAuth-related that a real MCP client does - protected-resource and
authorization-server discovery, dynamic client registration, PKCE, the token
exchange and refresh - is the SDK's ``OAuthClientProvider``. This script only
supplies what the SDK leaves to the application: where the user logs in (a
browser, or ``--login-as`` for a scripted login over plain HTTP), a loopback
listener for the redirect back, and token storage.

Usage::

    python scripts/mcp_client.py [URL]                  # default http://127.0.0.1:8000/mcp
    python scripts/mcp_client.py URL --login-as alice:secret \\
        --run list --run 'call hello-world {"name": "joe"}'

REPL commands: ``list``, ``call <tool> [json-args]``, ``help``, ``quit``/``exit``.

The reusable pieces are importable (tests load this file by path; it has no
``from __future__ import annotations`` so its dataclasses also work when loaded
with ``importlib.util.spec_from_file_location`` without a sys.modules entry):
``login_with_password``, ``parse_forms``, ``parse_callback_url``,
``InMemoryTokenStorage``, ``FileTokenStorage``, ``CallbackListener``.
"""

import argparse
import asyncio
import contextlib
import functools
import http.cookiejar
import ipaddress
import json
import logging
import os
import re
import sys
import threading
import webbrowser
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape, unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import anyio
import httpx2
from mcp import Client, MCPError
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp_types import CallToolResult, TextContent
from pydantic import AnyUrl

DEFAULT_SERVER_URL = "http://127.0.0.1:8000/mcp"
CLIENT_NAME = "mcp-auth-addon demo client"
CALLBACK_PATH = "/callback"
PROTOCOL_MODES = ("auto", "legacy", "2026-07-28")

# Same shape as the SDK's create_mcp_http_client: a tool call's SSE response
# may legitimately stay silent for minutes, so only the read timeout is long.
HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


class LoginError(Exception):
    """The scripted login could not reach the client's callback."""


class AuthorizationError(Exception):
    """The authorization server redirected back with an OAuth error."""


# ---------------------------------------------------------------------------
# Token storage
# ---------------------------------------------------------------------------


class InMemoryTokenStorage:
    """`mcp.client.auth.TokenStorage` that keeps tokens and the registration in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class FileTokenStorage(InMemoryTokenStorage):
    """Token storage persisted as JSON so a later run can skip the login (or just refresh).

    A stored registration is only reused when it lists the current redirect
    URI: the authorization server checks redirect_uri against the registered
    ones, so a registration made on another callback port would fail at the
    authorize step. Use a fixed ``--callback-port`` to keep it reusable.
    """

    def __init__(self, path: Path, redirect_uri: str | None = None) -> None:
        super().__init__()
        self.path = path
        if not path.exists():
            return
        data = json.loads(path.read_text())
        if data.get("tokens"):
            self.tokens = OAuthToken.model_validate(data["tokens"])
        if data.get("client_info"):
            info = OAuthClientInformationFull.model_validate(data["client_info"])
            registered = {str(uri) for uri in info.redirect_uris or []}
            if redirect_uri is None or redirect_uri in registered:
                self.client_info = info

    def _save(self) -> None:
        data = {
            "tokens": self.tokens.model_dump(mode="json", exclude_none=True) if self.tokens else None,
            "client_info": self.client_info.model_dump(mode="json", exclude_none=True) if self.client_info else None,
        }
        # Written 0600 from the start: the file holds bearer and refresh tokens.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)

    async def set_tokens(self, tokens: OAuthToken) -> None:
        await super().set_tokens(tokens)
        self._save()

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        await super().set_client_info(client_info)
        self._save()


# ---------------------------------------------------------------------------
# Redirect back to the client
# ---------------------------------------------------------------------------


def parse_callback_url(url: str) -> AuthorizationCodeResult:
    """Read code, state and iss (RFC 9207) from the authorization response redirect.

    Raises:
        AuthorizationError: The redirect carries an OAuth ``error`` or no code.
    """
    query = parse_qs(urlsplit(url).query)

    def first(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    error = first("error")
    if error is not None:
        description = first("error_description")
        raise AuthorizationError(f"authorization failed: {error}" + (f" ({description})" if description else ""))
    code = first("code")
    if not code:
        raise AuthorizationError(f"callback carries no authorization code: {url}")
    return AuthorizationCodeResult(code=code, state=first("state"), iss=first("iss"))


def matches_callback(url: str, callback_prefix: str) -> bool:
    """Whether `url` is the client's redirect URI (same scheme, host, port and path; any query)."""
    target, prefix = urlsplit(url), urlsplit(callback_prefix)
    return (
        target.scheme.lower() == prefix.scheme.lower()
        and target.netloc.lower() == prefix.netloc.lower()
        and target.path == prefix.path
    )


_CALLBACK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family: sans-serif; margin: 3em">
<h1>{title}</h1><p>{message}</p>
</body></html>
"""


class CallbackListener:
    """Loopback HTTP listener for the OAuth redirect (RFC 8252 §7.3).

    A few lines of asyncio rather than a web framework: it answers exactly one
    kind of request, ``GET <path>?code=...&state=...``, shows the browser a
    "you can close this tab" page, and hands the parameters to the waiting
    OAuth flow. Bind with port 0 to get a free port, then read `redirect_uri`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, path: str = CALLBACK_PATH) -> None:
        self.host = host
        self.port = port
        self.path = path
        self._server: asyncio.Server | None = None
        self._result: asyncio.Future[AuthorizationCodeResult] | None = None

    @property
    def redirect_uri(self) -> str:
        if self._server is None:
            raise RuntimeError("CallbackListener is not started")
        return f"http://{self.host}:{self.port}{self.path}"

    async def start(self) -> None:
        self._result = asyncio.get_running_loop().create_future()
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "CallbackListener":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def reset(self) -> None:
        """Accept another redirect (a re-login after the refresh token stopped working)."""
        self._result = asyncio.get_running_loop().create_future()

    async def wait_for_result(self) -> AuthorizationCodeResult:
        """The next redirect's parameters; wrap in ``asyncio.timeout()`` to bound the wait."""
        if self._result is None:
            raise RuntimeError("CallbackListener is not started")
        try:
            return await asyncio.shield(self._result)
        finally:
            if self._result.done():
                self.reset()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # Bounded so a stray connection (a browser preconnect that never
            # sends anything) cannot pin the handler.
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            target = parts[1] if len(parts) >= 3 else ""
            status, title, message = self._accept(parts[0] if parts else "", target)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        body = _CALLBACK_PAGE.format(title=escape(title), message=escape(message)).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _accept(self, method: str, target: str) -> tuple[str, str, str]:
        if method != "GET" or urlsplit(target).path != self.path:
            return "404 Not Found", "Not found", "This is the MCP client's login callback."
        result = self._result
        if result is None or result.done():
            return (
                "409 Conflict",
                "Already handled",
                "This login was already completed. You can close this tab.",
            )
        try:
            result.set_result(parse_callback_url(f"http://{self.host}:{self.port}{target}"))
        except AuthorizationError as exc:
            result.set_exception(exc)
            return "400 Bad Request", "Login failed", f"{exc}. You can close this tab."
        return "200 OK", "Logged in", "You can close this tab and return to the MCP client."


# ---------------------------------------------------------------------------
# Scripted login (no browser)
# ---------------------------------------------------------------------------


@dataclass
class FormButton:
    """A submit button: what it submits (name=value) and what a person reads on it."""

    name: str | None
    value: str
    label: str

    @property
    def words(self) -> list[str]:
        return re.findall(r"[a-z]+", f"{self.name or ''} {self.value} {self.label}".lower())


@dataclass
class HtmlForm:
    """One <form>: where it posts, its fields (hidden ones included) and its submit buttons."""

    action: str | None
    method: str
    fields: list[tuple[str, str, str]] = field(default_factory=list)
    """(name, type, value) of every successful control except submit buttons."""
    buttons: list[FormButton] = field(default_factory=list)
    """Every submit button, in document order."""

    @property
    def has_password(self) -> bool:
        return any(kind == "password" for _, kind, _ in self.fields)

    @property
    def visible_field_count(self) -> int:
        return sum(1 for _, kind, _ in self.fields if kind != "hidden")


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[HtmlForm] = []
        self._current: HtmlForm | None = None
        self._textarea: tuple[str, list[str]] | None = None
        self._button: tuple[str | None, str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name.lower(): value or "" for name, value in attrs}
        if tag == "form":
            self._current = HtmlForm(
                action=attributes.get("action") or None,
                method=(attributes.get("method") or "get").upper(),
            )
            self.forms.append(self._current)
            return
        form = self._current
        if form is None:
            return
        name = attributes.get("name")
        if tag == "input":
            kind = (attributes.get("type") or "text").lower()
            if kind in ("submit", "image"):
                value = attributes.get("value", "")
                form.buttons.append(FormButton(name, value, value or attributes.get("alt", "")))
            elif kind in ("checkbox", "radio"):
                if name and "checked" in attributes:
                    form.fields.append((name, kind, attributes.get("value") or "on"))
            elif name and kind not in ("button", "reset", "file"):
                form.fields.append((name, kind, attributes.get("value", "")))
        elif tag == "button":
            if (attributes.get("type") or "submit").lower() == "submit":
                # Finished at </button>, once its text (the label) is known.
                self._button = (name, attributes.get("value", ""), [])
        elif tag == "textarea" and name:
            self._textarea = (name, [])

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea[1].append(data)
        if self._button is not None:
            self._button[2].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea" and self._textarea is not None and self._current is not None:
            name, chunks = self._textarea
            self._current.fields.append((name, "textarea", "".join(chunks)))
            self._textarea = None
        elif tag == "button" and self._button is not None and self._current is not None:
            name, value, chunks = self._button
            self._current.buttons.append(FormButton(name, value, " ".join("".join(chunks).split())))
            self._button = None
        elif tag == "form":
            self._current = None


def parse_forms(html_text: str) -> list[HtmlForm]:
    """All forms in an HTML page, in document order."""
    parser = _FormParser()
    parser.feed(html_text)
    parser.close()
    return parser.forms


_USERNAME_FIELD_NAMES = ("username", "login", "user", "email")
_APPROVE_WORDS = (
    "approve",
    "allow",
    "accept",
    "authorize",
    "authorise",
    "consent",
    "continue",
    "confirm",
    "yes",
)
_DENY_WORDS = ("deny", "disallow", "reject", "refuse", "cancel", "abort", "decline", "no")


def _is_approving(button: FormButton) -> bool:
    words = button.words
    return any(word in _APPROVE_WORDS for word in words) and not any(word in _DENY_WORDS for word in words)


def _pick_button(buttons: Sequence[FormButton]) -> FormButton | None:
    """The button a person would press to go ahead: decision=approve, else an approving one, else not a denial."""
    for button in buttons:
        if (button.name or "").lower() == "decision" and button.value.lower() == "approve":
            return button
    for button in buttons:
        if _is_approving(button):
            return button
    for button in buttons:
        if not any(word in _DENY_WORDS for word in button.words):
            return button
    return None


def _login_form_data(form: HtmlForm, username: str, password: str) -> list[tuple[str, str]]:
    names = [name for name, kind, _ in form.fields if kind not in ("hidden", "password")]
    user_field = next((n for n in names if n.lower() in _USERNAME_FIELD_NAMES), None)
    if user_field is None:
        user_field = next((n for n, kind, _ in form.fields if kind in ("text", "email")), None)
    data: list[tuple[str, str]] = []
    for name, kind, value in form.fields:
        if kind == "password":
            data.append((name, password))
        elif name == user_field:
            data.append((name, username))
        else:
            data.append((name, value))
    button = _pick_button(form.buttons)
    if button is not None and button.name:
        data.append((button.name, button.value))
    return data


def _consent_form_data(form: HtmlForm) -> list[tuple[str, str]] | None:
    """Form data approving a consent page, or None if `form` does not look like one.

    A consent page is a form without a password field that either has an
    approving submit button (decision=approve, Allow, ...) or nothing to fill
    in but hidden fields (oidc-provider's stock "Continue" page).
    """
    if form.has_password:
        return None
    button = _pick_button(form.buttons)
    explicit = button is not None and (button.name or "").lower() == "decision"
    approving = button is not None and _is_approving(button)
    # A form that only carries hidden fields and a neutral button ("Continue"
    # without the word, or no button at all) is a confirmation step too.
    neutral = form.visible_field_count == 0 and (button is not None or not form.buttons)
    if not (explicit or approving or neutral):
        return None
    data = [(name, value) for name, _, value in form.fields]
    if button is not None and button.name:
        data.append((button.name, button.value))
    return data


def _form_payload(pairs: Sequence[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Form fields as httpx wants them: a mapping, with repeated names as lists."""
    payload: dict[str, str | list[str]] = {}
    for name, value in pairs:
        existing = payload.get(name)
        if existing is None:
            payload[name] = value
        elif isinstance(existing, list):
            existing.append(value)
        else:
            payload[name] = [existing, value]
    return payload


_ERROR_ELEMENT = re.compile(
    r"<(\w+)[^>]*\b(?:role=[\"']alert[\"']|id=[\"'][^\"']*error[^\"']*[\"']|class=[\"'][^\"']*error[^\"']*[\"'])"
    r"[^>]*>(.*?)</\1\s*>",
    re.IGNORECASE | re.DOTALL,
)


def _snippet(text: str, limit: int = 300) -> str:
    """The page's error message if it marks one (role=alert, an *error* id or class), else its text."""
    marked = _ERROR_ELEMENT.search(text)
    source = marked.group(2) if marked else text
    plain = re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", source))).strip()
    return plain[:limit] + ("..." if len(plain) > limit else "")


_REDIRECT_STATUSES = (301, 302, 303, 307, 308)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _LoopbackIsSecure(http.cookiejar.DefaultCookiePolicy):
    """Send `Secure` cookies to loopback http, as browsers do (a "potentially trustworthy origin").

    Keycloak marks its login cookies Secure even over plain http; a cookie jar that keeps them
    from http://127.0.0.1 loses the login session half-way ("Restart login cookie not found").
    """

    def return_ok_secure(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        if cookie.secure and request.type == "http" and _is_loopback(urlsplit(request.get_full_url()).hostname):
            return True
        return bool(super().return_ok_secure(cookie, request))


def browser_like_client(timeout: float = 30.0) -> httpx2.Client:
    return httpx2.Client(
        follow_redirects=False, timeout=timeout, cookies=http.cookiejar.CookieJar(policy=_LoopbackIsSecure())
    )


def login_with_password(
    authorization_url: str,
    username: str,
    password: str,
    callback_prefix: str,
    *,
    max_steps: int = 15,
    timeout: float = 30.0,
    http_client: httpx2.Client | None = None,
) -> tuple[str, str | None, str | None]:
    """Log in the way a person in a browser would, and return (code, state, iss) from the callback.

    Follows redirects one by one with a cookie jar (the authorization server,
    a facade proxy in between, and the identity provider all keep login state
    in cookies), fills the first form that has a password field, approves a
    consent form if one follows, and stops at the first redirect whose
    Location is `callback_prefix` - that URL is parsed, never requested.

    Blocking: call it from a worker thread in async code
    (``await anyio.to_thread.run_sync(functools.partial(login_with_password, ...))``).

    Raises:
        LoginError: A page with no usable form, an HTTP error, a rejected
            password, or more than `max_steps` requests.
        AuthorizationError: The redirect to the callback carries an OAuth error.
    """
    owns_client = http_client is None
    client = http_client or browser_like_client(timeout)
    try:
        method, url = "GET", authorization_url
        data: dict[str, str | list[str]] | None = None
        password_submitted = False
        for _ in range(max_steps):
            response = client.request(method, url, data=data, follow_redirects=False)
            if response.status_code in _REDIRECT_STATUSES and "location" in response.headers:
                location = urljoin(str(response.url), response.headers["location"])
                if matches_callback(location, callback_prefix):
                    result = parse_callback_url(location)
                    return result.code, result.state, result.iss
                if response.status_code not in (307, 308):
                    method, data = "GET", None
                url = location
                continue
            forms = parse_forms(response.text)
            login_form = next((f for f in forms if f.has_password), None)
            # Checked before the status: IdPs re-render the login form after a
            # bad password, some with 200 and some with 401.
            if login_form is not None and password_submitted:
                raise LoginError(
                    f"login as {username!r} was rejected (login form shown again at {response.url}, "
                    f"HTTP {response.status_code}): {_snippet(response.text)}"
                )
            if response.status_code != 200:
                raise LoginError(f"HTTP {response.status_code} from {response.url}: {_snippet(response.text)}")
            if login_form is not None:
                password_submitted = True
                form, fields = login_form, _login_form_data(login_form, username, password)
            else:
                choice = next(((f, d) for f in forms if (d := _consent_form_data(f)) is not None), None)
                if choice is None:
                    raise LoginError(
                        f"no login or consent form at {response.url} (status {response.status_code}): "
                        f"{_snippet(response.text)}"
                    )
                form, fields = choice
            url = urljoin(str(response.url), form.action) if form.action else str(response.url)
            method = form.method if form.method in ("GET", "POST") else "POST"
            if method == "GET":
                # A GET form submits its fields as the query, replacing the action's own.
                url, data = str(httpx2.URL(url, params=_form_payload(fields))), None
            else:
                data = _form_payload(fields)
        raise LoginError(f"login did not reach {callback_prefix} within {max_steps} steps (last URL {url})")
    finally:
        if owns_client:
            client.close()


async def login_with_password_async(
    authorization_url: str, username: str, password: str, callback_prefix: str, **kwargs: Any
) -> tuple[str, str | None, str | None]:
    """`login_with_password` run in a worker thread, for async callers."""
    call = functools.partial(login_with_password, authorization_url, username, password, callback_prefix, **kwargs)
    return await anyio.to_thread.run_sync(call)


# ---------------------------------------------------------------------------
# OAuth wiring
# ---------------------------------------------------------------------------


def build_client_metadata(redirect_uri: str, scope: str | None = None) -> OAuthClientMetadata:
    return OAuthClientMetadata(
        client_name=CLIENT_NAME,
        redirect_uris=[AnyUrl(redirect_uri)],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        # A CLI holds no secret worth the name: a public client, protected by PKCE.
        token_endpoint_auth_method="none",
        application_type="native",
        scope=scope,
    )


def _can_open_browser() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@dataclass
class LoginHandlers:
    """The two application hooks `OAuthClientProvider` calls: show the login, then collect the redirect."""

    listener: CallbackListener
    login_as: tuple[str, str] | None = None
    open_browser: bool = True
    login_timeout: float = 300.0
    # Handed from redirect_handler to callback_handler: with --login-as the
    # redirect is read off the login's last Location, never delivered to the listener.
    _scripted_result: AuthorizationCodeResult | None = field(default=None, init=False, repr=False)

    async def redirect_handler(self, authorization_url: str) -> None:
        if self.login_as is not None:
            username, password = self.login_as
            print(f"Logging in as {username} without a browser", file=sys.stderr, flush=True)
            code, state, iss = await login_with_password_async(
                authorization_url, username, password, self.listener.redirect_uri
            )
            self._scripted_result = AuthorizationCodeResult(code=code, state=state, iss=iss)
            return
        print(f"Open this URL to log in: {authorization_url}", flush=True)
        if self.open_browser and _can_open_browser():
            with contextlib.suppress(Exception):
                webbrowser.open(authorization_url)

    async def callback_handler(self) -> AuthorizationCodeResult:
        if self._scripted_result is not None:
            result, self._scripted_result = self._scripted_result, None
            return result
        try:
            async with asyncio.timeout(self.login_timeout):
                return await self.listener.wait_for_result()
        except TimeoutError:
            raise LoginError(f"no login callback within {self.login_timeout:g}s") from None


def build_oauth_provider(
    server_url: str,
    storage: TokenStorage,
    handlers: LoginHandlers,
    scope: str | None = None,
) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=server_url,
        client_metadata=build_client_metadata(handlers.listener.redirect_uri, scope),
        storage=storage,
        redirect_handler=handlers.redirect_handler,
        callback_handler=handlers.callback_handler,
    )


# ---------------------------------------------------------------------------
# REPL
# ---------------------------------------------------------------------------


HELP = """commands:
  list                       list tools
  call <tool> [json-args]    call a tool, e.g. call hello-world {"name": "joe"}
  help                       this text
  quit | exit                leave (EOF works too)"""


class CommandError(Exception):
    """A REPL command that could not be run as typed."""


def describe_error(exc: BaseException) -> str:
    """One readable line per leaf exception (anyio task groups wrap them in ExceptionGroups)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_error(inner) for inner in exc.exceptions)
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc}"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def format_tool_result(result: CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        else:
            parts.append(f"[{block.type} content]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content))
    return "\n".join(parts)


async def _print_progress(progress: float, total: float | None, message: str | None) -> None:
    line = f"progress {progress:g}/{total:g}" if total is not None else f"progress {progress:g}"
    print(line + (f" ({message})" if message else ""), flush=True)


async def run_command(client: Client, line: str) -> bool:
    """Run one REPL command; returns False when it failed. Raises EOFError for quit/exit."""
    parts = line.strip().split(None, 2)
    if not parts:
        return True
    command = parts[0].lower()
    try:
        if command in ("quit", "exit"):
            raise EOFError
        if command == "help":
            print(HELP)
        elif command == "list":
            tools = await client.list_tools()
            for tool in tools.tools:
                print(f"{tool.name}: {tool.description or ''}")
        elif command == "call":
            if len(parts) < 2:
                raise CommandError("usage: call <tool> [json-args]")
            arguments = _parse_arguments(parts[2] if len(parts) > 2 else "")
            result = await client.call_tool(parts[1], arguments, progress_callback=_print_progress)
            text = format_tool_result(result)
            if result.is_error:
                print(f"error: tool {parts[1]} failed: {text}", file=sys.stderr, flush=True)
                return False
            print(text, flush=True)
        else:
            raise CommandError(f"unknown command {command!r} (try 'help')")
    except EOFError:
        raise
    except Exception as exc:
        print(f"error: {describe_error(exc)}", file=sys.stderr, flush=True)
        return False
    return True


def _parse_arguments(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"arguments are not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CommandError("arguments must be a JSON object")
    return value


async def _read_line(prompt: str) -> str:
    """input() on a daemon thread: the event loop keeps serving, and Ctrl-C does not wait for Enter."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()

    def read() -> None:
        try:
            line = input(prompt)
        except BaseException as exc:  # EOFError included: it ends the REPL
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, line, None)

    threading.Thread(target=read, daemon=True).start()
    return await future


def _settle(future: asyncio.Future[str], value: str | None, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value or "")


async def repl(client: Client) -> None:
    while True:
        try:
            line = await _read_line("mcp> ")
            await run_command(client, line)
        except EOFError:
            print()
            return


async def run_commands(client: Client, commands: Sequence[str]) -> bool:
    ok = True
    for command in commands:
        print(f"mcp> {command}", flush=True)
        try:
            ok = await run_command(client, command) and ok
        except EOFError:
            break
    return ok


async def main_async(args: argparse.Namespace) -> int:
    login_as: tuple[str, str] | None = None
    if args.login_as:
        username, sep, password = args.login_as.partition(":")
        if not sep:
            print("error: --login-as takes USER:PASS", file=sys.stderr)
            return 2
        login_as = (username, password)

    async with CallbackListener(port=args.callback_port) as listener:
        storage = (
            FileTokenStorage(Path(args.token_file), listener.redirect_uri)
            if args.token_file
            else InMemoryTokenStorage()
        )
        handlers = LoginHandlers(
            listener=listener,
            login_as=login_as,
            open_browser=not args.no_browser,
            login_timeout=args.login_timeout,
        )
        oauth = build_oauth_provider(args.url, storage, handlers, args.scope)
        try:
            async with (
                httpx2.AsyncClient(auth=oauth, timeout=HTTP_TIMEOUT) as http,
                Client(streamable_http_client(args.url, http_client=http), mode=args.protocol) as client,
            ):
                print(
                    f"connected to {args.url} (protocol {client.protocol_version})",
                    file=sys.stderr,
                    flush=True,
                )
                if args.run:
                    return 0 if await run_commands(client, args.run) else 1
                await repl(client)
                return 0
        except Exception as exc:
            print(f"error: {describe_error(exc)}", file=sys.stderr, flush=True)
            return 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Interactive MCP client with OAuth login (official MCP SDK).")
    parser.add_argument(
        "url", nargs="?", default=DEFAULT_SERVER_URL, help=f"MCP endpoint (default {DEFAULT_SERVER_URL})"
    )
    parser.add_argument(
        "--callback-port", type=int, default=0, help="loopback port for the OAuth redirect (default: free)"
    )
    parser.add_argument("--no-browser", action="store_true", help="only print the login URL, do not open a browser")
    parser.add_argument(
        "--login-as", metavar="USER:PASS", help="log in over HTTP by filling the login form (no browser)"
    )
    parser.add_argument("--token-file", help="persist tokens and the client registration in this JSON file")
    parser.add_argument("--scope", help="scope to request (default: what the server advertises)")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOL_MODES,
        default="auto",
        help="auto: probe server/discover, fall back to initialize; legacy: 2025 initialize handshake; "
        "2026-07-28: single-exchange requests without a handshake",
    )
    parser.add_argument("--login-timeout", type=float, default=300.0, help="seconds to wait for the browser login")
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="COMMAND",
        help="run a REPL command and exit afterwards (repeatable; exit status 1 if any failed)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # The SDK logs a full traceback for every failed OAuth flow; the
        # same error is printed once, readably, by main_async.
        logging.getLogger("mcp.client.auth").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
