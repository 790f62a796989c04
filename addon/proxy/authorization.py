"""The facade's /authorize (with consent for static registrations) and /callback."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from urllib.parse import parse_qsl

from mitmproxy import http

from addon.protocol.authorization import (
    CONSENT_TTL,
    AuthorizationPageError,
    AuthorizationRequest,
    check_authorization_request,
    client_digest,
    consent_page,
    consent_ticket,
    error_page,
    handle_callback,
    open_consent_ticket,
    upstream_authorization_url,
)
from addon.protocol.errors import OAuthError, shorten
from addon.protocol.identity_provider import IdentityProviderUnavailable
from addon.protocol.registration import open_client_id
from addon.protocol.sealing import SealError
from addon.protocol.server_metadata import AUTHORIZE_PATH, CONSENT_PATH
from addon.proxy import answers
from addon.proxy.configuration import Configuration
from addon.stages import Stage, record

BROWSER_COOKIE = "mcp_auth_browser"
CONSENT_COOKIE = "mcp_auth_consent"
REMEMBERED_CONSENT_PURPOSE = "remembered consent"
REMEMBER_CONSENT_FOR = 30 * 24 * 3600
MAX_REMEMBERED = 20


def single_valued(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """RFC 6749 §3.1: request parameters MUST NOT be included more than once."""
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise AuthorizationPageError("invalid_request", f"parameter {name} appears more than once")
        params[name] = value
    return params


class Authorization:
    def __init__(self, config: Configuration) -> None:
        self.config = config

    def _cookie(self, name: str, value: str, max_age: int) -> str:
        rt = self.config.current()
        secure = "; Secure" if rt.settings.public_url.startswith("https:") else ""
        return f"{name}={value}; Path={AUTHORIZE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"

    def _page_error(self, flow: http.HTTPFlow, stage: Stage, e: AuthorizationPageError) -> None:
        status = 403 if e.error == "access_denied" else 400
        flow.response = answers.html_response(status, error_page(e.error, e.description))
        record(flow, stage, f"error page, not redirected: {e.description}")

    async def authorize(self, flow: http.HTTPFlow) -> None:
        try:
            query = single_valued(list(flow.request.query.items(multi=True)))
            await self._authorize(flow, query)
        except AuthorizationPageError as e:
            self._page_error(flow, Stage.AUTHORIZATION, e)

    def _check(self, query: Mapping[str, str]) -> AuthorizationRequest | str:
        rt = self.config.current()
        settings = rt.settings
        client_id = query.get("client_id")
        if not client_id:
            raise AuthorizationPageError("invalid_request", "client_id is required")
        try:
            registration = open_client_id(rt.sealer, client_id)
        except OAuthError as e:
            raise AuthorizationPageError("invalid_client", e.description) from e
        return check_authorization_request(query, registration, client_id, settings.resource, settings.public_url)

    async def _authorize(self, flow: http.HTTPFlow, query: Mapping[str, str]) -> None:
        rt = self.config.current()
        checked = self._check(query)
        if isinstance(checked, str):
            flow.response = answers.redirect(checked)
            record(flow, Stage.AUTHORIZATION, "refused the request; sent the error back to the client's redirect URI")
            return
        if checked.registration.static and not self._consent_remembered(flow, checked.client_id):
            nonce = flow.request.cookies.get(BROWSER_COOKIE) or secrets.token_urlsafe(24)
            ticket = consent_ticket(rt.sealer, query, nonce)
            page = consent_page(checked, ticket, rt.settings.public_url + CONSENT_PATH, rt.settings.resource)
            flow.response = answers.html_response(
                200, page, {"Set-Cookie": self._cookie(BROWSER_COOKIE, nonce, CONSENT_TTL)}
            )
            name = checked.registration.client_name or "unnamed client"
            record(
                flow,
                Stage.AUTHORIZATION,
                f"asked the user to approve {name!r} (static registration needs consent)",
                checked.registration.upstream_client_id,
            )
            return
        await self._send_upstream(flow, checked, "")

    async def _send_upstream(self, flow: http.HTTPFlow, checked: AuthorizationRequest, set_cookie: str) -> None:
        rt = self.config.current()
        settings = rt.settings
        try:
            metadata = await rt.idp.metadata()
        except IdentityProviderUnavailable as e:
            flow.response = answers.redirect(
                checked.error_redirect(
                    "temporarily_unavailable", "the identity provider is unavailable", settings.public_url
                )
            )
            record(flow, Stage.AUTHORIZATION, f"IdP unavailable, sent the client an error: {e}")
            return
        url = upstream_authorization_url(rt.sealer, checked, metadata.authorization_endpoint, settings.callback_url)
        flow.response = answers.redirect(url, {"Set-Cookie": set_cookie} if set_cookie else None)
        record(
            flow,
            Stage.AUTHORIZATION,
            f"redirect URI {checked.redirect_uri} matches the registration; sent the user to the IdP "
            f"as {checked.registration.upstream_client_id}; client state sealed into the IdP's, PKCE passed through",
            checked.registration.upstream_client_id,
        )

    def _remembered(self, flow: http.HTTPFlow) -> list[str]:
        rt = self.config.current()
        value = flow.request.cookies.get(CONSENT_COOKIE)
        if not value:
            return []
        try:
            return list(rt.sealer.open(REMEMBERED_CONSENT_PURPOSE, value).get("c", []))
        except SealError:
            return []

    def _consent_remembered(self, flow: http.HTTPFlow, client_id: str) -> bool:
        return client_digest(client_id) in self._remembered(flow)

    async def consent(self, flow: http.HTTPFlow) -> None:
        rt = self.config.current()
        try:
            if flow.request.method != "POST":
                raise AuthorizationPageError("invalid_request", "the consent form is submitted with POST")
            form = single_valued(
                parse_qsl((flow.request.raw_content or b"").decode("utf-8", "replace"), keep_blank_values=True)
            )
            query = open_consent_ticket(rt.sealer, form.get("ticket", ""), flow.request.cookies.get(BROWSER_COOKIE))
            checked = self._check(query)
            if isinstance(checked, str):
                flow.response = answers.redirect(checked)
                record(flow, Stage.AUTHORIZATION, "consent form for a request that is no longer valid")
                return
            if form.get("decision") != "approve":
                flow.response = answers.redirect(
                    checked.error_redirect("access_denied", "the user denied access", rt.settings.public_url)
                )
                record(flow, Stage.AUTHORIZATION, "the user denied consent; told the client access_denied")
                return
            remembered = [d for d in self._remembered(flow) if d != client_digest(checked.client_id)]
            remembered = [client_digest(checked.client_id), *remembered][:MAX_REMEMBERED]
            cookie = self._cookie(
                CONSENT_COOKIE,
                rt.sealer.seal(REMEMBERED_CONSENT_PURPOSE, {"c": remembered}, ttl=REMEMBER_CONSENT_FOR),
                REMEMBER_CONSENT_FOR,
            )
            await self._send_upstream(flow, checked, cookie)
        except AuthorizationPageError as e:
            self._page_error(flow, Stage.AUTHORIZATION, e)

    async def callback(self, flow: http.HTTPFlow) -> None:
        rt = self.config.current()
        settings = rt.settings
        try:
            query = single_valued(list(flow.request.query.items(multi=True)))
            try:
                upstream_issuer = (await rt.idp.metadata()).issuer
            except IdentityProviderUnavailable:
                upstream_issuer = settings.issuer
            result = handle_callback(rt.sealer, query, upstream_issuer, settings.public_url)
        except AuthorizationPageError as e:
            self._page_error(flow, Stage.CALLBACK, e)
            return
        flow.response = answers.redirect(result.redirect_url)
        if result.outcome == "code":
            explanation = (
                f"IdP returned a code for client {shorten(result.client_id)}; sent the client back "
                f"with a sealed code, its own state and iss={settings.public_url}"
            )
        else:
            explanation = f"IdP returned {result.outcome}; passed it to the client with its state"
        try:
            client: str | None = open_client_id(rt.sealer, result.client_id).upstream_client_id
        except OAuthError:
            client = None
        record(flow, Stage.CALLBACK, explanation, client)
