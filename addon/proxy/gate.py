"""The gate on the MCP path: challenge, reject, or strip the token and forward."""

from __future__ import annotations

import time

from mitmproxy import http

from addon.protocol import challenge
from addon.protocol.errors import shorten
from addon.protocol.identity_provider import IdentityProviderUnavailable
from addon.protocol.tokens import KeysUnavailable, TokenRejected, VerifiedToken, check_report, without_signature
from addon.proxy import answers
from addon.proxy.configuration import Configuration
from addon.proxy.headers import values_of
from addon.stages import TOKEN_CHECKS_KEY, TOKEN_KEY, Stage, record

# Identity the proxy vouches for, sent to the MCP server. Anything a client sends under this
# prefix is removed first, or a client could claim to be anyone.
IDENTITY_PREFIX = "x-mcp-auth-"
SUBJECT_HEADER = "X-MCP-Auth-Subject"
CLIENT_ID_HEADER = "X-MCP-Auth-Client-Id"
SCOPES_HEADER = "X-MCP-Auth-Scopes"
ISSUER_HEADER = "X-MCP-Auth-Issuer"
_IDENTITY_PREFIX_BYTES = IDENTITY_PREFIX.encode()
_SUBJECT, _CLIENT_ID, _SCOPES, _ISSUER = (
    name.encode() for name in (SUBJECT_HEADER, CLIENT_ID_HEADER, SCOPES_HEADER, ISSUER_HEADER)
)


Fields = tuple[tuple[bytes, bytes], ...]


def forwarded_fields(fields: Fields, verified: VerifiedToken) -> Fields:
    """The request's header fields as the MCP server gets them: without the token and without
    any identity header the client sent, with the identity the proxy vouches for.

    One pass over the raw fields: this runs on every authorized call."""
    kept = [(name, value) for name, value in fields if not _withheld(name.lower())]
    kept += [
        (_SUBJECT, verified.subject.encode("utf-8", "surrogateescape")),
        (_SCOPES, verified.scope.encode("utf-8", "surrogateescape")),
        (_ISSUER, verified.issuer.encode("utf-8", "surrogateescape")),
    ]
    if verified.client_id:
        kept.append((_CLIENT_ID, verified.client_id.encode("utf-8", "surrogateescape")))
    return tuple(kept)


def _withheld(lowered_name: bytes) -> bool:
    return lowered_name == b"authorization" or lowered_name.startswith(_IDENTITY_PREFIX_BYTES)


class McpGate:
    def __init__(self, config: Configuration) -> None:
        self.config = config

    def _answer(
        self,
        flow: http.HTTPFlow,
        answer: challenge.Challenge,
        stage: Stage,
        explanation: str,
        client: str | None = None,
    ) -> None:
        flow.response = answers.make(
            answer.status,
            answer.body(),
            {
                "Content-Type": "application/json",
                "WWW-Authenticate": answer.www_authenticate,
                "Cache-Control": "no-store",
            },
        )
        record(flow, stage, explanation, client)

    def _bearer_token(self, flow: http.HTTPFlow) -> str | challenge.Challenge | None:
        """The token from the one Authorization header; None when there is none; a Challenge when malformed."""
        rt = self.config.current()
        settings = rt.settings
        prm = settings.resource_metadata_url
        values = values_of(flow.request.headers, b"authorization")
        if "access_token" in flow.request.path and "access_token" in flow.request.query:
            # RFC 6750 §2.3 tokens end up in logs and Referer headers; MCP allows only the header.
            return challenge.invalid_token(
                prm, settings.scopes, "tokens in the query string are not accepted; use the Authorization header"
            )
        if not values:
            return None
        if len(values) > 1:
            return challenge.invalid_request(prm, "more than one Authorization header")
        scheme, _, token = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            return challenge.missing_token(
                prm, settings.scopes, f"authorization scheme {scheme!r} is not accepted; send a Bearer token"
            )
        token = token.strip()
        if not token or " " in token:
            return challenge.invalid_token(prm, settings.scopes, "the Bearer credentials are malformed")
        return token

    async def check(self, flow: http.HTTPFlow) -> None:
        rt = self.config.current()
        settings = rt.settings
        prm = settings.resource_metadata_url
        token = self._bearer_token(flow)
        if isinstance(token, challenge.Challenge):
            stage = Stage.REJECTED if token.refused else Stage.CHALLENGE
            self._answer(flow, token, stage, f"refused: {token.description}")
            return
        if token is None:
            self._answer(
                flow,
                challenge.missing_token(prm, settings.scopes),
                Stage.CHALLENGE,
                "no token; pointed the client at the resource metadata",
            )
            return
        flow.metadata[TOKEN_KEY] = without_signature(token)
        try:
            validator = await rt.idp.validator()
            verified = await validator.verify(token)
        except TokenRejected as e:
            flow.metadata[TOKEN_CHECKS_KEY] = check_report(None, e)
            self._answer(
                flow,
                challenge.invalid_token(prm, settings.scopes, str(e)),
                Stage.REJECTED,
                f"token {shorten(token)} refused: {e}",
            )
            return
        except (IdentityProviderUnavailable, KeysUnavailable) as e:
            # Without keys the proxy cannot tell a good token from a forged one: not 401, the client did nothing wrong.
            flow.response = answers.oauth_error(
                503,
                "temporarily_unavailable",
                "the identity provider's keys are not available; retry shortly",
                {"Retry-After": "5"},
            )
            record(flow, Stage.REJECTED, f"cannot check tokens yet: {e}")
            return

        flow.metadata[TOKEN_CHECKS_KEY] = check_report(verified, None, settings.scopes)
        missing = [scope for scope in settings.scopes if scope not in verified.scopes]
        if missing:
            self._answer(
                flow,
                challenge.insufficient_scope(prm, settings.scopes, missing),
                Stage.REJECTED,
                f"token for {verified.subject} lacks scope {' '.join(missing)}; asked for step-up",
                verified.client_id,
            )
            return

        flow.request.headers.fields = forwarded_fields(flow.request.headers.fields, verified)
        record(
            flow,
            Stage.AUTHORIZED_CALL,
            f"token for {verified.subject} (client {verified.client_id or '?'}, scopes "
            f"{verified.scope or '-'}) valid for {verified.expires_at - int(time.time())} s; "
            "stripped it and forwarded",
            verified.client_id,
        )
