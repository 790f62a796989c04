"""Browser clients on the mitmproxy side: preflights, the Origin check, CORS headers on answers.

The decisions are in addon/protocol/cors.py; this moves them between flows and that logic.
The router calls it for the paths a browser client fetches (the MCP path, /register, /token,
/revoke, discovery), and for every answer, the proxy's own and the MCP server's.
"""

from __future__ import annotations

from mitmproxy import http

from addon.config import Settings
from addon.protocol import cors
from addon.proxy import answers
from addon.proxy.configuration import Configuration
from addon.proxy.headers import values_of
from addon.stages import Stage, record

PUBLIC_STAGES = (Stage.RESOURCE_METADATA, Stage.AS_METADATA)


class BrowserClients:
    def __init__(self, config: Configuration) -> None:
        self.config = config
        self._policy: tuple[Settings, cors.CorsPolicy] | None = None

    def policy(self) -> cors.CorsPolicy:
        settings = self.config.current().settings
        if self._policy is None or self._policy[0] is not settings:
            self._policy = (settings, cors.CorsPolicy.make(settings.cors.allowed_origins, settings.public_url))
        return self._policy[1]

    @staticmethod
    def origin(flow: http.HTTPFlow) -> str | None:
        """The request's Origin; "" for several (never a browser: treated as not allowed)."""
        values = values_of(flow.request.headers, b"origin")
        if len(values) > 1:
            return ""
        return values[0] if values else None

    def refuse_foreign_origin(self, flow: http.HTTPFlow, stage: Stage) -> bool:
        """Answer 403 when the request names an origin not allowed; False (nothing done) otherwise.

        Requests without Origin (non-browser clients) pass: the check is about what a browser
        page may make the user's browser do, e.g. after DNS rebinding the proxy's name.
        """
        origin = self.origin(flow)
        if origin is None or self.policy().allows(origin):
            return False
        self._refuse(flow, stage, origin)
        return True

    def _refuse(self, flow: http.HTTPFlow, stage: Stage, origin: str) -> None:
        # No CORS headers: the page must not be able to read even the refusal.
        shown = origin[:100] or "(several Origin headers)"
        flow.response = answers.oauth_error(
            403, "invalid_request", f"origin {shown} is not allowed; add it to cors.allowed_origins"
        )
        record(flow, stage, f"origin {shown} is not in cors.allowed_origins; answered 403, not forwarded")

    def preflight(self, flow: http.HTTPFlow, stage: Stage, methods: tuple[str, ...]) -> None:
        """Answer a CORS preflight (OPTIONS with Origin) here: it carries no token and is never forwarded."""
        origin = self.origin(flow) or ""
        asked = flow.request.headers.get("access-control-request-method", "?")
        requested = flow.request.headers.get("access-control-request-headers")
        if stage in PUBLIC_STAGES:
            flow.response = http.Response.make(204, b"", cors.public_preflight_headers(requested))
            record(flow, stage, f"CORS preflight ({asked}) for a public document; any origin may read it")
            return
        if not self.policy().allows(origin):
            # On the MCP path a refusal is `rejected`, as for any MCP request the proxy refuses.
            self._refuse(flow, Stage.REJECTED if stage == Stage.CHALLENGE else stage, origin)
            return
        flow.response = http.Response.make(
            204, b"", {**cors.preflight_headers(origin, methods, requested), "Cache-Control": "no-store"}
        )
        record(flow, stage, f"CORS preflight from {origin} for {asked} allowed; answered by the proxy, not forwarded")

    def decorate(self, flow: http.HTTPFlow, from_upstream: bool = False) -> None:
        """Let an allowed browser client read this answer (the proxy's, or the MCP server's when `from_upstream`)."""
        response = flow.response
        if response is None or (not from_upstream and "access-control-allow-origin" in response.headers):
            return  # the proxy's discovery documents (public) and preflights have theirs already
        try:
            policy = self.policy()
        except RuntimeError:
            return  # not configured: the router's 503 stays as it is
        origin = self.origin(flow)
        if policy.allowed_origins:
            # The answer differs by Origin from now on: shared caches must key on it.
            response.headers["Vary"] = cors.add_vary(response.headers.get("vary"))
        if not origin or not policy.allows(origin):
            return
        # The proxy decides who may read, not the MCP server: the server's CORS headers are replaced.
        for name in [n for n in response.headers if n.lower().startswith("access-control-")]:
            del response.headers[name]
        response.headers.update(cors.response_headers(origin))
        response.headers["Vary"] = cors.add_vary(response.headers.get("vary"))
