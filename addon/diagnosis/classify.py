"""Which stage of the MCP authorization dance an exchange is.

A flow this proxy handled says so itself (`mcp_auth.stage`). Anything else is read from the
HTTP alone ("passively"), the same way for any client, server and authorization server:

| stage | what gives it away |
|---|---|
| resource-metadata | a path containing `/.well-known/oauth-protected-resource` |
| as-metadata | a path containing `/.well-known/oauth-authorization-server` or `/.well-known/openid-configuration` |
| registration | a POST with a JSON object body that has `redirect_uris` (RFC 7591) |
| authorization | `response_type` and `client_id` in the query (RFC 6749 §4.1.1) |
| callback | an authorization response: `code` or `error` with `state`, in the redirect sent (or the query) |
| token | a POST form with `grant_type` (RFC 6749 §4.1.3), or a revocation (`token` to a `…revo…` path) |
| challenge | an MCP request without a token answered 401 |
| rejected | an MCP request with a token answered 401 or 403 |
| authorized-call | any other answer to an MCP request |

An MCP request is a JSON-RPC 2.0 body, an answer in `text/event-stream`, or any request to a
URL that carried JSON-RPC elsewhere in the capture (GET for the event stream, DELETE).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from addon.diagnosis.exchange import Exchange, first
from addon.stages import Stage

# The stage names, from the one vocabulary the proxy uses.
RESOURCE_METADATA = Stage.RESOURCE_METADATA.value
AS_METADATA = Stage.AS_METADATA.value
REGISTRATION = Stage.REGISTRATION.value
AUTHORIZATION = Stage.AUTHORIZATION.value
CALLBACK = Stage.CALLBACK.value
TOKEN = Stage.TOKEN.value
CHALLENGE = Stage.CHALLENGE.value
REJECTED = Stage.REJECTED.value
AUTHORIZED_CALL = Stage.AUTHORIZED_CALL.value
NOT_FOUND = Stage.NOT_FOUND.value

# The order a dance goes through (rejected stands beside authorized-call; not-found is no step of it).
DANCE_ORDER = (
    CHALLENGE,
    RESOURCE_METADATA,
    AS_METADATA,
    REGISTRATION,
    AUTHORIZATION,
    CALLBACK,
    TOKEN,
    REJECTED,
    AUTHORIZED_CALL,
)
STAGE_NAMES = (*DANCE_ORDER, NOT_FOUND)
MCP_STAGES = (CHALLENGE, REJECTED, AUTHORIZED_CALL)

PRM_WELL_KNOWN = "/.well-known/oauth-protected-resource"
OAUTH_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OIDC_WELL_KNOWN = "/.well-known/openid-configuration"


@dataclass
class Classified:
    exchange: Exchange
    stage: str | None
    by_proxy: bool = False
    """True when mcp-auth-addon recorded the stage; False when it was read from the HTTP."""


@dataclass(frozen=True)
class AuthorizationResponse:
    """An authorization response (RFC 6749 §4.1.2): where the client is sent back with code or error."""

    params: dict[str, str]
    in_redirect: bool
    """True: read from the Location the response sends the client to; False: from the request's query."""
    target: str
    """The redirect URI it goes to (without the query)."""

    @property
    def code(self) -> str | None:
        return self.params.get("code")

    @property
    def state(self) -> str | None:
        return self.params.get("state")

    @property
    def iss(self) -> str | None:
        return self.params.get("iss")

    @property
    def error(self) -> str | None:
        return self.params.get("error")

    @property
    def error_description(self) -> str | None:
        return self.params.get("error_description")


def _first_values(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in pairs:
        values.setdefault(key, value)
    return values


def _is_authorization_response(params: dict[str, str]) -> bool:
    return ("code" in params or "error" in params) and "state" in params and "response_type" not in params


def authorization_response(ex: Exchange) -> AuthorizationResponse | None:
    """The authorization response this exchange carries, preferring the one sent on to the client."""
    params = _first_values(ex.location_params())
    if _is_authorization_response(params):
        target = (ex.location() or "").split("?", 1)[0].split("#", 1)[0]
        return AuthorizationResponse(params, True, target)
    params = _first_values(ex.query)
    if _is_authorization_response(params):
        return AuthorizationResponse(params, False, ex.url_without_query)
    return None


def token_presented(ex: Exchange) -> bool:
    """The request carries a credential: an Authorization header, or a token in the query string."""
    return ex.has_authorization or ex.query_param("access_token") is not None


def learn_mcp_urls(exchanges: Iterable[Exchange]) -> frozenset[str]:
    """The URLs (without query) that carried JSON-RPC, or that the proxy gated: the MCP endpoints."""
    urls = set()
    for ex in exchanges:
        gated = ex.proxy is not None and ex.proxy.stage in MCP_STAGES
        if gated or (ex.is_jsonrpc() and not _well_known(ex.path)):
            urls.add(ex.url_without_query)
    return frozenset(urls)


def _well_known(path: str) -> bool:
    return "/.well-known/" in path


def is_mcp_request(ex: Exchange, mcp_urls: frozenset[str]) -> bool:
    if _well_known(ex.path):
        return False
    return ex.is_jsonrpc() or ex.is_event_stream or ex.url_without_query in mcp_urls


def passive_stage(ex: Exchange, mcp_urls: frozenset[str] = frozenset()) -> str | None:
    """The stage read from the HTTP alone; None for anything that is no step of the dance."""
    path = ex.path
    if PRM_WELL_KNOWN in path:
        return RESOURCE_METADATA
    if OAUTH_WELL_KNOWN in path or OIDC_WELL_KNOWN in path:
        return AS_METADATA
    method = ex.method.upper()
    if method == "POST":
        body = ex.request_json()
        if isinstance(body, dict) and "redirect_uris" in body:
            return REGISTRATION
        form = ex.request_form() or []
        if first(form, "grant_type") is not None:
            return TOKEN
        if first(form, "token") is not None and "revo" in path.lower():
            return TOKEN
        if first(form, "response_type") is not None and first(form, "client_id") is not None:
            return AUTHORIZATION
    if ex.query_param("response_type") is not None and ex.query_param("client_id") is not None:
        return AUTHORIZATION
    if authorization_response(ex) is not None:
        return CALLBACK
    if is_mcp_request(ex, mcp_urls):
        if ex.status == 401:
            return REJECTED if token_presented(ex) else CHALLENGE
        if ex.status == 403:
            return REJECTED
        return AUTHORIZED_CALL
    return None


def stage_of(ex: Exchange, mcp_urls: frozenset[str] = frozenset()) -> Classified:
    if ex.proxy is not None and ex.proxy.stage in STAGE_NAMES:
        return Classified(ex, ex.proxy.stage, by_proxy=True)
    return Classified(ex, passive_stage(ex, mcp_urls))


def classify_all(exchanges: Sequence[Exchange]) -> list[Classified]:
    mcp_urls = learn_mcp_urls(exchanges)
    return [stage_of(ex, mcp_urls) for ex in exchanges]


def number(exchanges: Iterable[Exchange]) -> list[Exchange]:
    """The exchanges in order of time, numbered from 1 (the numbers the reports use)."""
    ordered = sorted(exchanges, key=lambda ex: ex.started)
    for i, ex in enumerate(ordered, 1):
        ex.index = i
    return ordered
