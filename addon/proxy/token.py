"""The facade's /token and /revoke: put back what the IdP issued, forward, answer with no-store."""

from __future__ import annotations

from urllib.parse import parse_qsl

from mitmproxy import http

from addon.protocol.errors import OAuthError, invalid_request
from addon.protocol.token_exchange import upstream_revocation_request, upstream_token_request
from addon.proxy import answers
from addon.proxy.configuration import Configuration
from addon.stages import Stage, record

MAX_BODY = 64 * 1024


def read_form(flow: http.HTTPFlow) -> dict[str, str]:
    if flow.request.method != "POST":
        raise OAuthError(405, "invalid_request", "use POST", {"Allow": "POST"})
    content_type = flow.request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise invalid_request("the body must be application/x-www-form-urlencoded (RFC 6749 §3.2)")
    content = flow.request.raw_content or b""
    if len(content) > MAX_BODY:
        raise OAuthError(413, "invalid_request", f"request body larger than {MAX_BODY} bytes")
    try:
        pairs = parse_qsl(content.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(content))
    except (UnicodeDecodeError, ValueError) as e:
        raise invalid_request("the body is not valid form encoding") from e
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise invalid_request(f"parameter {name} appears more than once")
        form[name] = value
    return form


class TokenEndpoint:
    def __init__(self, config: Configuration) -> None:
        self.config = config

    async def token(self, flow: http.HTTPFlow) -> None:
        rt = self.config.current()
        settings = rt.settings
        try:
            request = upstream_token_request(
                rt.sealer,
                read_form(flow),
                flow.request.headers.get("authorization"),
                settings.callback_url,
                settings.resource,
                rt.static_client,
            )
            status, answer = await rt.idp.token(request.form, request.basic_auth)
        except OAuthError as e:
            flow.response = answers.error_response(e)
            record(flow, Stage.TOKEN, f"refused: {e}")
            return
        flow.response = answers.json_response(status, answer)
        upstream = request.registration.upstream_client_id
        if status == 200 and isinstance(answer, dict):
            granted = answer.get("scope", "(scope not stated)")
            explanation = (
                f"{request.grant_type} exchanged at the IdP for client {upstream}: "
                f"{answer.get('token_type', '?')} token, scope {granted}, "
                f"expires in {answer.get('expires_in', '?')} s"
            )
        else:
            error = answer.get("error") if isinstance(answer, dict) else None
            explanation = f"IdP refused the {request.grant_type} grant for {upstream}: HTTP {status} {error or ''}"
        record(flow, Stage.TOKEN, explanation.strip(), upstream)

    async def revoke(self, flow: http.HTTPFlow) -> None:
        rt = self.config.current()
        try:
            form, basic = upstream_revocation_request(
                rt.sealer,
                read_form(flow),
                flow.request.headers.get("authorization"),
                rt.static_client,
            )
            status = await rt.idp.revoke(form, basic)
        except OAuthError as e:
            flow.response = answers.error_response(e)
            record(flow, Stage.TOKEN, f"revocation refused: {e}")
            return
        # RFC 7009 §2.2: 200 whether or not the token was valid.
        flow.response = http.Response.make(200 if status < 500 else 503, b"", {"Cache-Control": "no-store"})
        record(flow, Stage.TOKEN, f"revocation forwarded to the IdP (HTTP {status})")
