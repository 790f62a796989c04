"""Classify each request once, hand it to the stage that owns it, and fail closed.

mitmproxy forwards a request whose hook raised, so nothing here may raise: any error
becomes the proxy's own 503, and a request that no stage answered or authorized is
answered too. Only `authorized-call` flows ever reach the MCP server.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from mitmproxy import ctx, http

from addon.config import Settings
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
from addon.proxy.gate import McpGate
from addon.proxy.metadata import Discovery
from addon.proxy.redaction import redact_answered_request
from addon.proxy.registration import ClientRegistration
from addon.proxy.token import TokenEndpoint
from addon.stages import Stage, record, stage_of

logger = logging.getLogger("mcp_auth")

Handler = Callable[[http.HTTPFlow], Awaitable[None] | None]
Route = tuple[Stage, tuple[str, ...], Handler]


class Router:
    def __init__(self, config: Configuration) -> None:
        self.config = config
        self.discovery = Discovery(config)
        self.registration = ClientRegistration(config)
        self.authorization = Authorization(config)
        self.token = TokenEndpoint(config)
        self.gate = McpGate(config)
        self._table: tuple[Settings, dict[str, Route], str] | None = None

    def _routes(self) -> tuple[dict[str, Route], str]:
        """The proxy's own endpoints and the MCP path, built once per configuration."""
        settings = self.config.current().settings
        if self._table is None or self._table[0] is not settings:
            base = urlsplit(settings.public_url).path.rstrip("/")
            self._table = (settings, self._build_routes(settings, base), base + settings.mcp_path)
        return self._table[1], self._table[2]

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
        if flow.response is not None and ctx.options.mcp_auth_redact:
            redact_answered_request(flow.request)

    async def _route(self, flow: http.HTTPFlow) -> None:
        path = flow.request.path.split("?", 1)[0]
        routes, mcp_path = self._routes()
        route = routes.get(path)
        if route is not None:
            stage, methods, handler = route
            if flow.request.method not in methods:
                flow.response = answers.oauth_error(
                    405, "invalid_request", f"{path} accepts {', '.join(methods)}", {"Allow": ", ".join(methods)}
                )
                record(flow, stage, f"method {flow.request.method} not allowed")
                return
            result = handler(flow)
            if result is not None:
                await result
            return
        if path == mcp_path or path.startswith(mcp_path + "/"):
            await self.gate.check(flow)
            return
        flow.response = answers.oauth_error(404, "not_found", f"{path} is not served by this proxy")
        record(flow, Stage.NOT_FOUND, "not an MCP or OAuth endpoint of this proxy; answered 404")
