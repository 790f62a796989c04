"""Classify each request once, hand it to the stage that owns it, and fail closed.

mitmproxy forwards a request whose hook raised, so nothing here may raise: any error
becomes the proxy's own 503, and a request that no stage answered or authorized is
answered too. Only `authorized-call` flows ever reach the MCP server.

Browser clients and abuse are handled here too, before any stage: CORS preflights are answered
by the proxy, a foreign `Origin` is refused on the endpoints a page can fetch, /register and
/token are rate limited per client address, and every answer an allowed origin gets carries
its CORS headers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from mitmproxy import ctx, http

from addon.config import Settings
from addon.protocol import cors
from addon.protocol.rate_limit import RateLimiter, client_address, client_key
from addon.protocol.resource_metadata import resource_metadata_paths
from addon.protocol.server_metadata import (
    AUTHORIZE_PATH,
    CALLBACK_PATH,
    CONSENT_PATH,
    REGISTER_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    facade_discovery_paths,
)
from addon.proxy import answers
from addon.proxy.authorization import Authorization
from addon.proxy.configuration import Configuration
from addon.proxy.cors import PUBLIC_STAGES, BrowserClients
from addon.proxy.gate import McpGate
from addon.proxy.metadata import Discovery
from addon.proxy.redaction import redact_answered_request
from addon.proxy.registration import ClientRegistration
from addon.proxy.token import TokenEndpoint
from addon.stages import Stage, record, stage_of

logger = logging.getLogger("mcp_auth")

Handler = Callable[[http.HTTPFlow], Awaitable[None] | None]
Route = tuple[Stage, tuple[str, ...], Handler]


@dataclass(frozen=True)
class RouteTable:
    settings: Settings
    routes: dict[str, Route]
    mcp_paths: tuple[str, ...]
    limits: dict[str, tuple[str, RateLimiter | None]]


def _limits(settings: Settings, base: str) -> dict[str, tuple[str, RateLimiter | None]]:
    limits: dict[str, tuple[str, RateLimiter | None]] = {}
    if settings.facade:
        register, token = settings.rate_limits.register, settings.rate_limits.token
        limits[base + REGISTER_PATH] = ("register", RateLimiter(register) if register else None)
        token_limiter = RateLimiter(token) if token else None
        # /revoke forwards to the IdP as /token does, so it draws on the same bucket.
        limits[base + TOKEN_PATH] = ("token", token_limiter)
        limits[base + REVOKE_PATH] = ("token", token_limiter)
    return limits


class Router:
    def __init__(self, config: Configuration) -> None:
        self.config = config
        self.discovery = Discovery(config)
        self.registration = ClientRegistration(config)
        self.authorization = Authorization(config)
        self.token = TokenEndpoint(config)
        self.gate = McpGate(config)
        self.browsers = BrowserClients(config)
        self._table: RouteTable | None = None

    def _current_table(self) -> RouteTable:
        """The routes, the MCP path and the rate-limited endpoints, built once per configuration
        (so rate-limit counts live as long as the configuration does)."""
        settings = self.config.current().settings
        if self._table is None or self._table.settings is not settings:
            base = urlsplit(settings.public_url).path.rstrip("/")
            mcp_paths = [base + settings.mcp_path]
            if settings.sse_message_path is not None:
                mcp_paths.append(base + settings.sse_message_path.rstrip("/"))
            routes = self._build_routes(settings, base)
            self._table = RouteTable(settings, routes, tuple(mcp_paths), _limits(settings, base))
        return self._table

    def _routes(self) -> tuple[dict[str, Route], tuple[str, ...]]:
        table = self._current_table()
        return table.routes, table.mcp_paths

    def _fetched(self) -> dict[str, tuple[str, RateLimiter | None]]:
        """The OAuth endpoints a browser client fetches, each with its rate limiter (None: no limit)."""
        return self._current_table().limits

    def _build_routes(self, settings: Settings, base: str) -> dict[str, Route]:
        """path -> (stage, allowed methods, handler)."""
        routes: dict[str, Route] = {}
        for path in resource_metadata_paths(settings.resource):
            routes[path] = (Stage.RESOURCE_METADATA, ("GET", "HEAD"), self.discovery.resource_metadata)
        if settings.facade:
            for path in facade_discovery_paths(settings.public_url):
                routes[path] = (Stage.AS_METADATA, ("GET", "HEAD"), self.discovery.server_metadata)
            routes[base + REGISTER_PATH] = (Stage.REGISTRATION, ("POST",), self.registration.register)
            routes[base + AUTHORIZE_PATH] = (Stage.AUTHORIZATION, ("GET",), self.authorization.authorize)
            routes[base + CONSENT_PATH] = (Stage.AUTHORIZATION, ("POST",), self.authorization.consent)
            routes[base + CALLBACK_PATH] = (Stage.CALLBACK, ("GET",), self.authorization.callback)
            routes[base + TOKEN_PATH] = (Stage.TOKEN, ("POST",), self.token.token)
            routes[base + REVOKE_PATH] = (Stage.TOKEN, ("POST",), self.token.revoke)
        return routes

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # A streamed request body goes upstream right after this hook, before `request`, where
        # the gate decides. Whoever set it (another addon), the body waits for the gate.
        if flow.live and flow.request.stream:
            logger.warning(
                "mcp_auth: %s %s was set to stream upstream before its token was checked; buffering it instead",
                flow.request.method,
                flow.request.path.split("?")[0],
            )
            flow.request.stream = False

    async def request(self, flow: http.HTTPFlow) -> None:
        # Answered already, or not live: a flow read from a file (-r) is history, not a request
        # to serve; it keeps what was recorded on it.
        if flow.response is not None or not flow.live:
            return
        try:
            await self._route(flow)
        except Exception as e:
            logger.exception("mcp_auth: internal error on %s %s", flow.request.method, flow.request.path)
            flow.response = answers.oauth_error(
                503,
                "temporarily_unavailable",
                "the proxy failed to handle this request; nothing was forwarded",
                {"Retry-After": "5"},
            )
            record(flow, stage_of(flow) or Stage.REJECTED, f"internal error ({type(e).__name__}); answered 503")
        if flow.response is None and stage_of(flow) != Stage.AUTHORIZED_CALL:
            flow.response = answers.oauth_error(503, "temporarily_unavailable", "the request was not authorized")
            record(flow, Stage.REJECTED, "no stage answered or authorized this request; answered 503")
        if flow.response is not None:
            self._decorate(flow)
        if flow.response is not None and ctx.options.mcp_auth_redact:
            redact_answered_request(flow.request)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # The MCP server's answers to an allowed browser origin need the CORS headers too. Adding
        # headers here, before the body, leaves the event-stream passthrough (streaming.py) intact.
        if flow.response is None or not flow.live or stage_of(flow) != Stage.AUTHORIZED_CALL:
            return
        self._decorate(flow, from_upstream=True)

    def _decorate(self, flow: http.HTTPFlow, from_upstream: bool = False) -> None:
        # The answer is decided already; a failure here must not turn it into a forwarded request.
        try:
            self.browsers.decorate(flow, from_upstream)
        except Exception:
            logger.exception("mcp_auth: could not add CORS headers on %s %s", flow.request.method, flow.request.path)

    def _rate_limited(self, flow: http.HTTPFlow, path: str, stage: Stage) -> bool:
        """Answer 429 when this client address is over the endpoint's limit."""
        name, limiter = self._fetched().get(path, ("", None))
        if limiter is None:
            return False
        peer = flow.client_conn.peername
        trusted = self.config.current().settings.rate_limits.trusted_proxies
        address = client_address(peer[0] if peer else None, flow.request.headers.get_all("x-forwarded-for"), trusted)
        decision = limiter.hit(client_key(address))
        if decision.allowed:
            return False
        # temporarily_unavailable (RFC 6749 §4.1.2.1: "temporary overloading") is the one
        # registered OAuth error meaning "not now, come back"; slow_down (RFC 8628) belongs to
        # device-flow polling and would be misread by a code-flow client.
        flow.response = answers.oauth_error(
            429,
            "temporarily_unavailable",
            f"too many requests from this address (limit {limiter.rate}); retry in {decision.retry_after} s",
            {"Retry-After": str(decision.retry_after)},
        )
        record(
            flow,
            stage,
            f"rate limited: {address or 'unknown address'} over rate_limits.{name} ({limiter.rate}); "
            f"answered 429, retry after {decision.retry_after} s",
        )
        return True

    def _preflight_route(
        self, path: str, route: Route | None, on_mcp_path: bool
    ) -> tuple[Stage, tuple[str, ...]] | None:
        """The stage and methods of a path a browser may preflight; None for the rest (404/405 as usual)."""
        if on_mcp_path:
            # Recorded as a challenge: an MCP request without a token, answered by the proxy.
            return Stage.CHALLENGE, cors.MCP_METHODS
        if route is None:
            return None
        if route[0] in PUBLIC_STAGES:
            return route[0], cors.DISCOVERY_METHODS
        if path in self._fetched():
            return route[0], cors.OAUTH_METHODS
        return None

    async def _route(self, flow: http.HTTPFlow) -> None:
        path = flow.request.path.split("?", 1)[0]
        routes, mcp_paths = self._routes()
        route = routes.get(path)
        # The MCP endpoint and everything under it (and the legacy SSE transport's message endpoint).
        on_mcp_path = any(path == p or path.startswith(p + "/") for p in mcp_paths)
        if flow.request.method == "OPTIONS" and self.browsers.origin(flow) is not None:
            preflight = self._preflight_route(path, route, on_mcp_path)
            if preflight is not None:
                self.browsers.preflight(flow, *preflight)
                return
        if route is not None:
            stage, methods, handler = route
            if flow.request.method not in methods:
                flow.response = answers.oauth_error(
                    405, "invalid_request", f"{path} accepts {', '.join(methods)}", {"Allow": ", ".join(methods)}
                )
                record(flow, stage, f"method {flow.request.method} not allowed")
                return
            # Only the endpoints a page fetches check Origin. The consent form posts from the
            # proxy's own page, whose no-referrer policy makes browsers send `Origin: null`; its
            # SameSite cookie protects it instead.
            fetched = path in self._fetched()
            if fetched and (self.browsers.refuse_foreign_origin(flow, stage) or self._rate_limited(flow, path, stage)):
                return
            result = handler(flow)
            if result is not None:
                await result
            return
        if on_mcp_path:
            # MCP transport spec: servers MUST validate Origin (DNS rebinding); a token does not change that.
            if self.browsers.refuse_foreign_origin(flow, Stage.REJECTED):
                return
            await self.gate.check(flow)
            return
        flow.response = answers.oauth_error(404, "not_found", f"{path} is not served by this proxy")
        record(flow, Stage.NOT_FOUND, "not an MCP or OAuth endpoint of this proxy; answered 404")
