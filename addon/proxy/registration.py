"""The facade's /register: forward to the IdP's DCR, or synthesize on the static client."""

from __future__ import annotations

import json
import logging
import time

from mitmproxy import http

from addon.protocol.errors import OAuthError, shorten
from addon.protocol.registration import (
    Registration,
    check_registration_request,
    check_upstream_answer,
    registration_error,
    registration_response,
    seal_client_id,
    upstream_registration_request,
)
from addon.providers import ProviderProfile
from addon.proxy import answers
from addon.proxy.configuration import Configuration
from addon.stages import Stage, record

logger = logging.getLogger("mcp_auth")

MAX_BODY = 64 * 1024


def refusal(status: int, answer: object, profile: ProviderProfile) -> OAuthError:
    """The IdP's refusal as the client's answer, with what the administrator must change where the profile knows."""
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), str) or status >= 500:
        return OAuthError(502, "server_error", f"the identity provider's registration answered HTTP {status}")
    description = str(answer.get("error_description") or answer["error"])
    if status in (401, 403):
        # An initial access token wanted or a registration policy refused: the IdP's configuration, not the client.
        hint = profile.hint_for(description) or "check the identity provider's client registration policies"
        logger.warning("registration refused by the identity provider (%s: %s): %s", status, description, hint)
        return OAuthError(
            502, "server_error", f"the identity provider refused the registration ({description}); {hint}"
        )
    return OAuthError(400, answer["error"], f"identity provider: {description}")


class ClientRegistration:
    def __init__(self, config: Configuration) -> None:
        self.config = config

    async def register(self, flow: http.HTTPFlow) -> None:
        try:
            explanation, client = await self._register(flow)
        except OAuthError as e:
            flow.response = answers.error_response(e)
            record(flow, Stage.REGISTRATION, f"refused: {e}")
            return
        record(flow, Stage.REGISTRATION, explanation, client)

    async def _register(self, flow: http.HTTPFlow) -> tuple[str, str]:
        """The registration answered on the flow; returns the explanation and the IdP's client id."""
        rt = self.config.current()
        settings = rt.settings
        content = flow.request.raw_content or b""
        if len(content) > MAX_BODY:
            raise OAuthError(413, "invalid_client_metadata", f"registration request larger than {MAX_BODY} bytes")
        try:
            body = json.loads(content)
        except (ValueError, UnicodeDecodeError) as e:
            raise registration_error("the registration request must be a JSON object") from e
        request = check_registration_request(body)
        name = request.descriptive.get("client_name") or "unnamed client"

        if settings.registration.mode == "static":
            static = rt.static_client
            assert static is not None
            registration = Registration(
                static.client_id,
                request.redirect_uris,
                request.descriptive.get("client_name"),
                int(time.time()),
                static=True,
            )
            client_id = seal_client_id(rt.sealer, registration)
            # The MCP client is public towards the proxy; the proxy holds the static client's secret.
            flow.response = answers.json_response(201, registration_response(request, client_id, "none"))
            return (
                (
                    f"synthesized a registration for {name!r} on static client {static.client_id} "
                    f"(client_id {shorten(client_id)}); redirect URIs {', '.join(request.redirect_uris)}"
                ),
                static.client_id,
            )

        status, answer = await rt.idp.register(
            upstream_registration_request(request, settings.callback_url, settings.profile)
        )
        if status not in (200, 201):
            raise refusal(status, answer, settings.profile)
        answer = check_upstream_answer(answer)
        registration = Registration(
            answer["client_id"],
            request.redirect_uris,
            request.descriptive.get("client_name"),
            int(time.time()),
            static=False,
        )
        client_id = seal_client_id(rt.sealer, registration)
        method = str(answer.get("token_endpoint_auth_method", request.token_endpoint_auth_method))
        flow.response = answers.json_response(201, registration_response(request, client_id, method, answer))
        return (
            (
                f"forwarded {name!r} to the IdP as {answer['client_id']} with the proxy's callback; "
                f"handed out sealed client_id {shorten(client_id)}"
            ),
            answer["client_id"],
        )
