"""The doctor: spec violations in a capture of MCP authorization traffic, by stage.

    python -m addon.diagnosis.doctor flows.mitm            # readable report; exit 1 when errors were found
    python -m addon.diagnosis.doctor flows.mitm --json     # the same as JSON

Works on any capture (any MCP client, any MCP server and authorization server, with or without
mcp-auth-addon in front): every check reads the HTTP. What a capture cannot show is said in
docs/doctor.md and, where it matters for one capture, in the report itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from addon.diagnosis import classify as st
from addon.diagnosis.classify import Classified, authorization_response, classify_all, number, token_presented
from addon.diagnosis.dance import DanceReport, build_dances, result_line, to_json
from addon.diagnosis.exchange import Exchange, is_loopback_host, jwt_claims, origin_of, sse_events
from addon.protocol.errors import shorten

ERROR = "error"
WARNING = "warning"
INFO = "info"
SEVERITIES = (ERROR, WARNING, INFO)
GENERAL = "general"

# SSE timing heuristics (mitmproxy records only when a response started and ended).
SSE_WAIT = 0.5  # seconds before the first byte that count as "the server was working"
SSE_BURST = 0.1  # an answer whose whole body arrived within this many seconds came "at once"
SSE_SPREAD = 0.5  # a body that took at least this long arrived as a stream


@dataclass
class Finding:
    severity: str
    check: str
    stage: str
    title: str
    detail: str
    reference: str
    fix: str
    flows: list[Exchange] = field(default_factory=list)


@dataclass
class Capture:
    """The capture, classified once, with the documents the checks compare against."""

    classified: list[Classified]
    dances: DanceReport
    mcp_urls: frozenset[str]

    def stage(self, *stages: str) -> Iterator[Classified]:
        return (c for c in self.classified if c.stage in stages)

    def documents(self, stage: str) -> list[tuple[Exchange, dict[str, Any]]]:
        found = []
        for c in self.stage(stage):
            document = c.exchange.response_json()
            if c.exchange.status == 200 and isinstance(document, dict):
                found.append((c.exchange, document))
        return found

    @property
    def prm_resources(self) -> set[str]:
        return {d["resource"] for _, d in self.documents(st.RESOURCE_METADATA) if isinstance(d.get("resource"), str)}

    def as_document_before(self, ex: Exchange) -> tuple[Exchange, dict[str, Any]] | None:
        """The authorization server metadata the client most likely used: the last one fetched before `ex`."""
        earlier = [(e, d) for e, d in self.documents(st.AS_METADATA) if e.started <= ex.started]
        same_client = [(e, d) for e, d in earlier if e.client_address == ex.client_address]
        candidates = same_client or earlier
        return candidates[-1] if candidates else None


Check = Callable[[Capture], Iterator[Finding]]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def _finding(
    severity: str, name: str, stage: str, ex: Exchange | None, title: str, detail: str, reference: str, fix: str
) -> Finding:
    return Finding(severity, name, stage, title, detail, reference, fix, [ex] if ex is not None else [])


# --- metadata (RFC 9728, RFC 8414) ------------------------------------------------------------

_METADATA_REFS = {
    st.RESOURCE_METADATA: "RFC 9728 §3.2 (a successful answer is 200 with a JSON object)",
    st.AS_METADATA: "RFC 8414 §3.2 (a successful answer is 200 with a JSON object)",
}


@check
def metadata_answers(capture: Capture) -> Iterator[Finding]:
    for c in capture.stage(st.RESOURCE_METADATA, st.AS_METADATA):
        ex, stage = c.exchange, c.stage
        assert stage is not None
        what = "protected-resource metadata" if stage == st.RESOURCE_METADATA else "authorization server metadata"
        if ex.status is not None and 300 <= ex.status < 400:
            yield _finding(
                ERROR,
                "metadata-redirect",
                stage,
                ex,
                f"{what} answered with a redirect",
                f"{ex.status} to {ex.location()}",
                _METADATA_REFS[stage] + "; MCP clients (the official SDKs) do not follow redirects for metadata",
                f"serve the document itself at {ex.url_without_query}",
            )
        elif ex.status in (401, 403):
            yield _finding(
                ERROR,
                "metadata-protected",
                stage,
                ex,
                f"{what} is protected",
                f"answered {ex.status}"
                + (
                    f", WWW-Authenticate: {ex.response_header('www-authenticate')}"
                    if ex.response_header("www-authenticate")
                    else ""
                ),
                _METADATA_REFS[stage] + "; clients fetch it before they have any token",
                "exempt /.well-known/* from authentication",
            )
        elif ex.status == 200 and not isinstance(ex.response_json(), dict):
            yield _finding(
                ERROR,
                "metadata-not-json",
                stage,
                ex,
                f"{what} is not a JSON object",
                f"Content-Type {ex.response_header('content-type') or 'none'}",
                _METADATA_REFS[stage],
                "answer with Content-Type: application/json and the metadata object",
            )


@check
def protected_resource_metadata(capture: Capture) -> Iterator[Finding]:
    for ex, document in capture.documents(st.RESOURCE_METADATA):
        stage = st.RESOURCE_METADATA
        resource = document.get("resource")
        servers = document.get("authorization_servers")
        if not isinstance(servers, list) or not servers or not all(isinstance(s, str) for s in servers):
            yield _finding(
                ERROR,
                "prm-no-authorization-servers",
                stage,
                ex,
                "protected-resource metadata names no authorization server",
                f"authorization_servers: {json.dumps(servers)}",
                "MCP 2025-11-25 authorization, Authorization Server Location (MUST include at least one)",
                "list the authorization server's issuer in authorization_servers",
            )
        if not isinstance(resource, str) or not resource:
            yield _finding(
                ERROR,
                "prm-no-resource",
                stage,
                ex,
                "protected-resource metadata has no resource",
                f"resource: {json.dumps(resource)}",
                "RFC 9728 §2 (resource is REQUIRED)",
                "set resource to the MCP server's URL",
            )
            continue
        # RFC 9728 §3.3: for the path-inserted form, resource is what the suffix was inserted into.
        path = ex.path
        suffix = path.split(st.PRM_WELL_KNOWN, 1)[1] if st.PRM_WELL_KNOWN in path else ""
        if suffix:
            expected = ex.origin + suffix
            if resource != expected:
                yield _finding(
                    ERROR,
                    "prm-resource-url",
                    stage,
                    ex,
                    "protected-resource metadata names another resource than the URL it was fetched from",
                    f"fetched from {ex.url_without_query}, so resource must be {expected}; it is {resource}",
                    "RFC 9728 §3.3 (resource MUST be identical to the URL the well-known path was inserted into)",
                    f"serve resource {expected} here (behind a proxy: build it from the public URL, not the Host "
                    "header the proxy sends)",
                )
                continue
        called = sorted(u for u in capture.mcp_urls if origin_of(u) == ex.origin)
        if not called or resource in called:
            continue
        prefix_of = [u for u in called if _is_prefix(resource, u)]
        if prefix_of:
            yield _finding(
                WARNING,
                "prm-resource-not-exact",
                stage,
                ex,
                "protected-resource metadata resource is not exactly the MCP URL the client called",
                f"resource {resource}; the client called {', '.join(called)}",
                "MCP 2025-11-25 authorization, Canonical Server URI; RFC 8707 §2 (stricter clients want them equal)",
                f"serve resource {called[0]}",
            )
        else:
            yield _finding(
                ERROR,
                "prm-resource-mismatch",
                stage,
                ex,
                "protected-resource metadata resource does not match the MCP URL the client called",
                f"resource {resource}; the client called {', '.join(called)}",
                "RFC 9728 §3.3 and §7.3; MCP 2025-11-25 authorization, Canonical Server URI (clients reject it)",
                f"serve resource {called[0]} (behind a proxy: the public URL, not the upstream address)",
            )


def _is_prefix(resource: str, url: str) -> bool:
    a, b = urlsplit(resource), urlsplit(url)
    if (a.scheme.lower(), a.netloc.lower()) != (b.scheme.lower(), b.netloc.lower()):
        return False
    prefix = a.path.rstrip("/")
    return b.path == prefix or b.path.startswith(prefix + "/")


def expected_issuer(url: str) -> str | None:
    """The issuer a metadata URL belongs to (RFC 8414 §3.1, OpenID Connect Discovery §4)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path
    for well_known in (st.OAUTH_WELL_KNOWN, st.OIDC_WELL_KNOWN):
        if path.startswith(well_known):
            return origin + path[len(well_known) :].rstrip("/")
        if path.endswith(well_known):
            return origin + path[: -len(well_known)]
    return None


@check
def authorization_server_metadata(capture: Capture) -> Iterator[Finding]:
    stage = st.AS_METADATA
    for ex, document in capture.documents(stage):
        issuer = document.get("issuer")
        expected = expected_issuer(ex.url_without_query)
        if expected is not None and issuer != expected:
            yield _finding(
                ERROR,
                "asm-issuer-url",
                stage,
                ex,
                "authorization server metadata issuer differs from the URL it was fetched from",
                f"fetched from {ex.url_without_query}, so issuer must be {expected}; it is {issuer}",
                "RFC 8414 §3.3 (issuer MUST be identical to the URL the well-known path was inserted into); "
                "OpenID Connect Discovery §4.3; MCP 2026-07-28 clients reject it",
                "serve the metadata under the issuer's own well-known URL, with that exact issuer",
            )
        for name in ("authorization_endpoint", "token_endpoint"):
            if not isinstance(document.get(name), str):
                yield _finding(
                    ERROR,
                    "asm-endpoint-missing",
                    stage,
                    ex,
                    f"authorization server metadata has no {name}",
                    f"{name}: {json.dumps(document.get(name))}",
                    "RFC 8414 §2",
                    f"publish {name}",
                )
        methods = document.get("code_challenge_methods_supported")
        if methods is None:
            yield _finding(
                ERROR,
                "asm-no-pkce",
                stage,
                ex,
                "authorization server metadata has no code_challenge_methods_supported",
                f"issuer {issuer}: no code_challenge_methods_supported",
                "MCP 2025-11-25 authorization, Authorization Code Protection (clients MUST refuse to proceed)",
                'publish "code_challenge_methods_supported": ["S256"] (and support PKCE)',
            )
        elif not isinstance(methods, list) or "S256" not in methods:
            yield _finding(
                ERROR,
                "asm-no-s256",
                stage,
                ex,
                "authorization server metadata does not offer PKCE S256",
                f"code_challenge_methods_supported: {json.dumps(methods)}",
                "MCP 2025-11-25 authorization (S256 required; OAuth 2.1 §4.1.1)",
                "support and publish S256",
            )
        if document.get("authorization_response_iss_parameter_supported") is not True:
            yield _finding(
                INFO,
                "asm-no-iss-parameter",
                stage,
                ex,
                "authorization server does not say it sends iss in authorization responses",
                f"issuer {issuer}: authorization_response_iss_parameter_supported is not true",
                "RFC 9207 §3; MCP 2026-07-28 (authorization servers SHOULD send and advertise iss)",
                "send iss in authorization responses and advertise authorization_response_iss_parameter_supported",
            )
    # PRM authorization_servers[0] against the metadata the client got for it.
    as_documents = capture.documents(stage)
    for prm, document in capture.documents(st.RESOURCE_METADATA):
        servers = document.get("authorization_servers")
        if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
            continue
        named = servers[0]
        issuers = [d.get("issuer") for _, d in as_documents]
        if named in issuers:
            continue
        names = (named, named.rstrip("/"))
        for_named = [(e, d) for e, d in as_documents if expected_issuer(e.url_without_query) in names]
        later = [(e, d) for e, d in as_documents if e.started >= prm.started and e.client_address == prm.client_address]
        candidates = for_named or later
        if not candidates:
            continue
        asm, asm_document = candidates[0]
        yield _finding(
            ERROR,
            "prm-as-issuer",
            stage,
            asm,
            "authorization_servers[0] is not the issuer of the authorization server metadata",
            f"PRM (#{prm.index}) names {named}; the metadata at {asm.url_without_query} has issuer "
            f"{asm_document.get('issuer')}",
            "RFC 8414 §3.3; MCP 2025-11-25 authorization, Authorization Server Metadata Discovery (clients compare "
            "them as strings)",
            "make authorization_servers[0] exactly the issuer (watch trailing slashes)",
        )


# --- registration (RFC 7591) --------------------------------------------------------------------


@check
def registration(capture: Capture) -> Iterator[Finding]:
    stage = st.REGISTRATION
    for c in capture.stage(stage):
        ex = c.exchange
        body = ex.request_json()
        uris = body.get("redirect_uris") if isinstance(body, dict) else None
        for uri in uris if isinstance(uris, list) else []:
            parts = urlsplit(str(uri))
            if parts.scheme == "http" and not is_loopback_host(parts.hostname):
                yield _finding(
                    ERROR,
                    "redirect-uri-insecure",
                    stage,
                    ex,
                    "redirect URI is neither https nor loopback",
                    f"redirect_uris contains {uri}",
                    "MCP 2025-11-25 authorization, Communication Security (redirect URIs MUST be localhost or HTTPS)",
                    "use an https or a loopback (http://127.0.0.1:PORT/...) redirect URI",
                )
        if ex.status is not None and ex.status >= 400:
            error = ex.oauth_error()
            yield _finding(
                WARNING,
                "registration-refused",
                stage,
                ex,
                "client registration refused",
                f"{ex.status} " + (f"{error[0]}: {error[1] or ''}" if error else "(no OAuth error body)"),
                "RFC 7591 §3.2.2",
                "see the error; the client cannot log in without a client id",
            )
        elif ex.status == 200:
            yield _finding(
                INFO,
                "registration-200",
                stage,
                ex,
                "registration answered 200 instead of 201 Created",
                "status 200",
                "RFC 7591 §3.2.1 (most clients accept 200 too)",
                "answer 201 Created",
            )


# --- authorization request and response ---------------------------------------------------------


@check
def authorization_request(capture: Capture) -> Iterator[Finding]:
    stage = st.AUTHORIZATION
    resources = capture.prm_resources
    for c in capture.stage(stage):
        ex = c.exchange
        params = dict(ex.query) if ex.query_param("response_type") is not None else dict(ex.request_form() or [])
        if "response_type" not in params:
            continue  # a consent form or login page of the same stage
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if not challenge:
            yield _finding(
                ERROR,
                "pkce-missing",
                stage,
                ex,
                "authorization request without PKCE",
                "no code_challenge",
                "MCP 2025-11-25 authorization: PKCE required (OAuth 2.1 §7.5.2, RFC 7636 §4.3)",
                "send code_challenge and code_challenge_method=S256 (and code_verifier at the token endpoint)",
            )
        elif method != "S256":
            yield _finding(
                ERROR,
                "pkce-plain",
                stage,
                ex,
                "authorization request with PKCE method plain",
                f"code_challenge_method={method}" if method else "no code_challenge_method, which means plain",
                "MCP 2025-11-25 authorization: S256 required (OAuth 2.1 §4.1.1; RFC 7636 §4.3 defaults to plain)",
                "use code_challenge_method=S256",
            )
        resource = params.get("resource")
        if not resource:
            yield _finding(
                ERROR,
                "resource-missing",
                stage,
                ex,
                "authorization request without resource",
                "no resource parameter",
                "RFC 8707 §2; MCP 2025-11-25 authorization, Resource Parameter Implementation (MUST, in "
                "authorization and token requests)",
                "send resource=<the MCP server's canonical URL> (the resource of its protected-resource metadata)",
            )
        elif resources and resource not in resources:
            yield _finding(
                ERROR,
                "resource-mismatch",
                stage,
                ex,
                "authorization request names another resource than the MCP server's",
                f"resource={resource}; the protected-resource metadata says {', '.join(sorted(resources))}",
                "RFC 8707 §2; MCP 2025-11-25 authorization, Canonical Server URI",
                "send the resource from the protected-resource metadata",
            )
        if not params.get("state"):
            yield _finding(
                WARNING,
                "state-missing",
                stage,
                ex,
                "authorization request without state",
                "no state parameter",
                "MCP 2025-11-25 authorization, Open Redirection (clients SHOULD use and verify state)",
                "send a fresh random state and check it on the way back",
            )
        redirect = params.get("redirect_uri", "")
        parts = urlsplit(redirect)
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            yield _finding(
                ERROR,
                "redirect-uri-insecure",
                stage,
                ex,
                "redirect URI is neither https nor loopback",
                f"redirect_uri={redirect}",
                "MCP 2025-11-25 authorization, Communication Security",
                "use an https or a loopback redirect URI",
            )


@check
def authorization_responses(capture: Capture) -> Iterator[Finding]:
    for c in capture.stage(st.AUTHORIZATION, st.CALLBACK):
        ex = c.exchange
        answer = authorization_response(ex)
        if answer is None:
            continue
        stage = c.stage or st.CALLBACK  # an error straight from the authorization request is that step's
        if answer.error:
            yield _finding(
                WARNING,
                "authorization-error",
                stage,
                ex,
                "the authorization server sent the client back with an error",
                f"error={answer.error}" + (f": {answer.error_description}" if answer.error_description else ""),
                "RFC 6749 §4.1.2.1",
                "see the error description; often a client that skipped PKCE, resource or a registered redirect URI",
            )
        if not answer.in_redirect and _sent_on(ex):
            continue
        source = capture.as_document_before(ex)
        if source is None:
            continue
        asm, document = source
        issuer = document.get("issuer")
        if answer.iss is None:
            if document.get("authorization_response_iss_parameter_supported") is True:
                yield _finding(
                    ERROR,
                    "iss-missing",
                    stage,
                    ex,
                    "authorization response without iss, although the metadata promises it",
                    f"no iss; the metadata (#{asm.index}, issuer {issuer}) has "
                    "authorization_response_iss_parameter_supported: true",
                    "RFC 9207 §2 and §2.4 (clients MUST then reject responses without iss)",
                    "send iss=<issuer> with every authorization response, or stop advertising it",
                )
        elif answer.iss != issuer:
            yield _finding(
                ERROR,
                "iss-mismatch",
                stage,
                ex,
                "iss in the authorization response is not the metadata issuer",
                f"iss={answer.iss}; the metadata the client used (#{asm.index}) has issuer {issuer}",
                "RFC 9207 §2.4 (clients MUST reject it: mix-up defence)",
                "the server the client discovered must be the one that answers the authorization request; a proxy "
                "that rewrites metadata must also handle the authorization response (mcp-auth-addon's facade mode)",
            )


def _sent_on(ex: Exchange) -> bool:
    """The response redirects on (a proxy's own callback): the client sees the redirect, not this request."""
    return ex.location() is not None


# --- token endpoint -----------------------------------------------------------------------------


@check
def token_requests(capture: Capture) -> Iterator[Finding]:
    stage = st.TOKEN
    resources = capture.prm_resources
    for c in capture.stage(stage):
        ex = c.exchange
        grant = ex.form_param("grant_type")
        if grant in ("authorization_code", "refresh_token"):
            resource = ex.form_param("resource")
            if not resource:
                yield _finding(
                    ERROR,
                    "resource-missing",
                    stage,
                    ex,
                    f"token request ({grant}) without resource",
                    "no resource parameter",
                    "RFC 8707 §2; MCP 2025-11-25 authorization, Resource Parameter Implementation (MUST)",
                    "send resource=<the MCP server's canonical URL>; without it many servers issue a token for "
                    "no particular audience (oidc-provider: an opaque one)",
                )
            elif resources and resource not in resources:
                yield _finding(
                    ERROR,
                    "resource-mismatch",
                    stage,
                    ex,
                    "token request names another resource than the MCP server's",
                    f"resource={resource}; the protected-resource metadata says {', '.join(sorted(resources))}",
                    "RFC 8707 §2",
                    "send the resource from the protected-resource metadata",
                )
        if grant == "authorization_code" and not ex.form_param("code_verifier"):
            yield _finding(
                ERROR,
                "pkce-verifier-missing",
                stage,
                ex,
                "token request without code_verifier",
                "grant_type=authorization_code, no code_verifier",
                "MCP 2025-11-25 authorization: PKCE required (RFC 7636 §4.5)",
                "send the code_verifier that belongs to the code_challenge",
            )
        document = ex.response_json()
        if ex.status == 200 and isinstance(document, dict) and "access_token" in document:
            cache = (ex.response_header("cache-control") or "").lower()
            if "no-store" not in cache:
                yield _finding(
                    ERROR,
                    "token-no-store",
                    stage,
                    ex,
                    "token response without Cache-Control: no-store",
                    f"Cache-Control: {ex.response_header('cache-control') or '(none)'}",
                    "RFC 6749 §5.1 (MUST); OAuth 2.1 §3.2.3",
                    "answer token requests with Cache-Control: no-store",
                )
        elif ex.status is not None and ex.status >= 400:
            error = ex.oauth_error()
            yield _finding(
                WARNING,
                "token-refused",
                stage,
                ex,
                "token request refused",
                f"{ex.status} " + (f"{error[0]}: {error[1] or ''}" if error else "(no OAuth error body)"),
                "RFC 6749 §5.2",
                "see the error; a wrong redirect_uri, code_verifier or resource is common",
            )


# --- the MCP endpoint ---------------------------------------------------------------------------


@check
def challenges(capture: Capture) -> Iterator[Finding]:
    prm_origins = {e.origin for e, _ in capture.documents(st.RESOURCE_METADATA)}
    for c in capture.stage(*st.MCP_STAGES):
        ex = c.exchange
        stage = c.stage or st.CHALLENGE
        if ex.status == 401:
            stage = st.CHALLENGE if not token_presented(ex) else st.REJECTED
            challenges_ = ex.www_authenticate()
            if not challenges_:
                yield _finding(
                    ERROR,
                    "401-no-www-authenticate",
                    stage,
                    ex,
                    "401 on the MCP endpoint without WWW-Authenticate",
                    "no WWW-Authenticate header",
                    "RFC 9110 §11.6.1 (a 401 MUST carry it); RFC 6750 §3; MCP 2025-06-18 authorization",
                    'answer WWW-Authenticate: Bearer resource_metadata="<PRM URL>", scope="<scopes>"',
                )
                continue
            bearer = next((ch for ch in challenges_ if ch.scheme.lower() == "bearer"), None)
            if bearer is None:
                yield _finding(
                    ERROR,
                    "401-not-bearer",
                    stage,
                    ex,
                    "401 on the MCP endpoint without a Bearer challenge",
                    f"WWW-Authenticate: {ex.response_header('www-authenticate')}",
                    "RFC 6750 §3; MCP 2025-11-25 authorization, Token Requirements",
                    "challenge with the Bearer scheme",
                )
                continue
            metadata_url = bearer.params.get("resource_metadata")
            if metadata_url is None:
                served = ex.origin in prm_origins
                yield _finding(
                    WARNING if served else ERROR,
                    "401-no-resource-metadata",
                    stage,
                    ex,
                    "401 on the MCP endpoint without resource_metadata",
                    f"WWW-Authenticate: {ex.response_header('www-authenticate')}"
                    + ("" if served else "; and no protected-resource metadata was found at the well-known URLs"),
                    "RFC 9728 §5.1; MCP 2025-06-18 authorization (MUST); MCP 2025-11-25 (header or well-known URL; "
                    "clients then probe the well-known URLs)",
                    'add resource_metadata="<absolute PRM URL>" to the challenge',
                )
            else:
                parts = urlsplit(metadata_url)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    yield _finding(
                        ERROR,
                        "401-resource-metadata-relative",
                        stage,
                        ex,
                        "resource_metadata is not an absolute URL",
                        f"resource_metadata={metadata_url}",
                        "RFC 9728 §5.1",
                        "name the absolute URL of the protected-resource metadata",
                    )
            if "scope" not in bearer.params and "error" not in bearer.params:
                yield _finding(
                    INFO,
                    "401-no-scope",
                    stage,
                    ex,
                    "challenge without scope",
                    f"WWW-Authenticate: {ex.response_header('www-authenticate')}",
                    "MCP 2025-11-25 authorization, Scope Selection Strategy (servers SHOULD send scope); RFC 6750 §3",
                    'add scope="<scopes the call needs>"',
                )
        elif ex.status == 403:
            stage = st.REJECTED
            bearer = next((ch for ch in ex.www_authenticate() if ch.scheme.lower() == "bearer"), None)
            if bearer is None:
                yield _finding(
                    WARNING,
                    "403-no-www-authenticate",
                    stage,
                    ex,
                    "403 on the MCP endpoint without a Bearer challenge",
                    "no WWW-Authenticate: Bearer header",
                    "RFC 6750 §3.1; MCP 2025-11-25 authorization, Runtime Insufficient Scope Errors",
                    'for missing scopes answer WWW-Authenticate: Bearer error="insufficient_scope", scope="…"',
                )
            elif bearer.params.get("error") == "insufficient_scope" and not bearer.params.get("scope"):
                yield _finding(
                    WARNING,
                    "403-no-scope",
                    stage,
                    ex,
                    "insufficient_scope without scope",
                    f"WWW-Authenticate: {ex.response_header('www-authenticate')}",
                    "MCP 2025-11-25 authorization, Runtime Insufficient Scope Errors (SHOULD; clients cannot step "
                    "up without it); MCP 2026-07-28 (every scope the operation needs)",
                    'add scope="<every scope the call needs>"',
                )


@check
def tokens_on_the_mcp_endpoint(capture: Capture) -> Iterator[Finding]:
    resources = capture.prm_resources
    challenged = {c.exchange.url_without_query for c in capture.stage(st.CHALLENGE)}
    for c in capture.stage(*st.MCP_STAGES):
        ex = c.exchange
        stage = c.stage or st.AUTHORIZED_CALL
        if ex.query_param("access_token") is not None:
            yield _finding(
                ERROR,
                "token-in-query",
                stage,
                ex,
                "access token in the query string",
                f"{ex.method} {ex.url_without_query}?access_token=…",
                "MCP 2025-11-25 authorization, Token Requirements (MUST NOT); OAuth 2.1 §5.1.1",
                "send the token in the Authorization: Bearer header only",
            )
        if c.stage != st.AUTHORIZED_CALL or ex.status is None or not 200 <= ex.status < 300:
            continue
        token = ex.bearer_token()
        if ex.proxy is not None and ex.proxy.stage == st.AUTHORIZED_CALL and token is None:
            continue  # the proxy checked the token and took it off before forwarding
        if token is None:
            if not token_presented(ex) and ex.url_without_query in challenged:
                yield _finding(
                    WARNING,
                    "unauthenticated-call",
                    stage,
                    ex,
                    "MCP request without a token was answered",
                    f"{' + '.join(ex.jsonrpc_methods()) or ex.method} answered {ex.status} without a token, "
                    "while the same endpoint challenges other requests",
                    "MCP 2025-11-25 authorization, Token Requirements (authorization in every request)",
                    "require a token on every request to the MCP endpoint",
                )
            continue
        if ex.proxy is not None:
            yield _finding(
                ERROR,
                "token-forwarded-by-proxy",
                stage,
                ex,
                "the auth proxy forwarded the client's token to the MCP server",
                "Authorization header on a request the proxy recorded as authorized-call",
                "MCP 2025-11-25 authorization, Access Token Privilege Restriction",
                "strip the Authorization header before forwarding",
            )
            continue
        claims = jwt_claims(token)
        audiences = claims.get("aud") if claims else None
        audiences = [audiences] if isinstance(audiences, str) else audiences if isinstance(audiences, list) else []
        targets = resources | {ex.url_without_query}
        if claims is None:
            yield _finding(
                WARNING,
                "token-reached-server",
                stage,
                ex,
                "the MCP server accepted an opaque token: its audience cannot be checked here",
                "requests with an opaque Bearer token were answered 2xx by the server itself (no auth layer "
                "answered them)",
                "MCP 2025-11-25 authorization, Token Handling (servers MUST check the token was issued for them, "
                "RFC 8707 §2)",
                "make sure the server validates the token's audience (introspection); clients should send "
                "resource so the authorization server can bind the token to this server",
            )
        elif not set(audiences) & targets:
            yield _finding(
                ERROR,
                "token-audience",
                stage,
                ex,
                "the MCP server accepted a token issued for another audience",
                f"aud {audiences or '(none)'}; this server is {', '.join(sorted(targets))}",
                "MCP 2025-11-25 authorization, Token Handling and Access Token Privilege Restriction (MUST reject "
                "tokens without it in aud); RFC 8707 §2",
                "validate aud against the server's own resource",
            )
        else:
            yield _finding(
                INFO,
                "token-reached-server",
                stage,
                ex,
                "the MCP server itself received the client's token (its audience is this server)",
                f"aud {audiences}",
                "MCP 2025-11-25 authorization, Access Token Privilege Restriction",
                "nothing, if the server validates it and never passes it on to other APIs (which a capture cannot "
                "show unless the server's own outgoing calls are captured too)",
            )


@check
def token_passthrough(capture: Capture) -> Iterator[Finding]:
    """The same bearer token on the MCP server and then on a request to another origin."""
    first_use: dict[str, Exchange] = {}
    for c in capture.stage(*st.MCP_STAGES):
        token = c.exchange.bearer_token()
        if token and token not in first_use:
            first_use[token] = c.exchange
    for c in capture.classified:
        ex = c.exchange
        token = ex.bearer_token()
        mcp = first_use.get(token or "")
        if mcp is None or ex.origin == mcp.origin or ex.started < mcp.started:
            continue
        yield _finding(
            ERROR,
            "token-passthrough",
            GENERAL,
            ex,
            "the client's token was passed on to another service",
            f"token {shorten(token or '')} used on the MCP server (#{mcp.index}) and then sent to {ex.origin}",
            "MCP 2025-11-25 authorization, Access Token Privilege Restriction (MUST NOT pass through); Security "
            "Best Practices, Token Passthrough",
            "call other APIs with the server's own token (e.g. OAuth token exchange), never the client's",
        )


@check
def event_streams(capture: Capture) -> Iterator[Finding]:
    for c in capture.stage(*st.MCP_STAGES):
        ex = c.exchange
        stage = c.stage or st.AUTHORIZED_CALL
        if not ex.is_event_stream or ex.status is None or ex.status >= 300:
            continue
        if ex.response_body is None:
            yield _finding(
                INFO,
                "sse-not-stored",
                stage,
                ex,
                "event stream not stored: cannot tell whether it was buffered",
                "the capturing proxy streamed the response without storing it (no events to look at)",
                "MCP Streamable HTTP transport",
                "nothing; to see the events, capture with --set store_streamed_bodies=true",
            )
            continue
        events = sse_events(ex.response_body)
        if len(events) < 2 or ex.response_start is None or ex.response_end is None:
            continue
        spread = ex.response_end - ex.response_start
        wait = ex.response_start - (ex.request_end or ex.started)
        if spread < SSE_BURST and wait >= SSE_WAIT:
            yield _finding(
                WARNING,
                "sse-buffered",
                stage,
                ex,
                "event stream arrived all at once after a wait: buffered before the capture",
                f"{len(events)} events arrived within {spread * 1000:.0f} ms, after {wait:.1f} s of silence",
                "MCP Streamable HTTP transport (progress and requests are sent as they happen); WHATWG HTML §9.2",
                "turn off response buffering for text/event-stream between the server and its clients (nginx "
                "proxy_buffering off / X-Accel-Buffering: no, no compression middleware on SSE)",
            )
        elif spread >= SSE_SPREAD and ex.proxy is None:
            yield _finding(
                INFO,
                "sse-capture-buffered",
                stage,
                ex,
                "event stream spread over time; the capturing proxy may have held it",
                f"{len(events)} events over {spread:.1f} s reached the capture; a mitmproxy that does not stream "
                "hands them to the client only at the end",
                "MCP Streamable HTTP transport",
                "capture with streaming on (stream_large_bodies, or an addon setting flow.response.stream) and "
                "store_streamed_bodies=true to see what the client really got",
            )


# --- what the capture lacks ---------------------------------------------------------------------


@check
def visibility(capture: Capture) -> Iterator[Finding]:
    stages = {c.stage for c in capture.classified}
    if stages & set(st.MCP_STAGES) and not stages & {st.AUTHORIZATION, st.TOKEN}:
        yield _finding(
            INFO,
            "no-oauth-traffic",
            GENERAL,
            None,
            "no authorization or token request in the capture",
            "the client talked to the authorization server around this capture, so PKCE, resource and iss "
            "could not be checked",
            "-",
            "capture the authorization server's traffic too: a second reverse listener in front of it "
            "(--mode reverse:https://as@PORT) or the client through a regular proxy",
        )
    for c in capture.classified:
        ex = c.exchange
        if c.stage is None or c.stage == st.NOT_FOUND:
            continue
        parts = urlsplit(ex.url)
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            yield _finding(
                ERROR,
                "plain-http",
                GENERAL,
                ex,
                "OAuth or MCP traffic over plain http to a non-loopback host",
                f"{ex.origin}",
                "MCP 2025-11-25 authorization, Communication Security (OAuth 2.1 §1.5: HTTPS required)",
                "serve the endpoint over https",
            )


# --- running and reporting ----------------------------------------------------------------------


@dataclass
class Diagnosis:
    source: str
    findings: list[Finding]
    dances: DanceReport

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    @property
    def has_errors(self) -> bool:
        return self.count(ERROR) > 0


def _merge(findings: Sequence[Finding]) -> list[Finding]:
    """One finding per (check, stage, title, detail), listing every flow it was seen on."""
    merged: dict[tuple[str, str, str, str], Finding] = {}
    for finding in findings:
        key = (finding.check, finding.stage, finding.title, finding.detail)
        if key in merged:
            merged[key].flows.extend(f for f in finding.flows if f not in merged[key].flows)
        else:
            merged[key] = Finding(**{**finding.__dict__, "flows": list(finding.flows)})
    return list(merged.values())


def diagnose(exchanges: Sequence[Exchange], source: str = "") -> Diagnosis:
    ordered = number(exchanges)
    dances = build_dances(ordered)
    classified = classify_all(ordered)
    capture = Capture(classified, dances, st.learn_mcp_urls(ordered))
    findings: list[Finding] = []
    for run in CHECKS:
        findings.extend(run(capture))
    stage_rank = {name: i for i, name in enumerate((*st.DANCE_ORDER, st.NOT_FOUND, GENERAL))}
    severity_rank = {name: i for i, name in enumerate(SEVERITIES)}
    merged = _merge(findings)
    merged.sort(
        key=lambda f: (stage_rank.get(f.stage, 99), severity_rank[f.severity], f.flows[0].index if f.flows else 0)
    )
    return Diagnosis(source, merged, dances)


LABEL = {ERROR: "ERROR", WARNING: "WARNING", INFO: "note"}


def render(diagnosis: Diagnosis) -> str:
    title = f"MCP authorization doctor{': ' + diagnosis.source if diagnosis.source else ''}"
    dances = diagnosis.dances
    steps = sum(len(d.steps) for d in dances.dances)
    lines = [title, "=" * len(title)]
    lines.append(
        f"{_many(dances.total, 'flow')} ({_many(steps, 'step')} in {_many(len(dances.dances), 'dance')}, "
        f"{len(dances.others)} other). "
        f"{_many(diagnosis.count(ERROR), 'error')}, {_many(diagnosis.count(WARNING), 'warning')}, "
        f"{_many(diagnosis.count(INFO), 'note')}."
    )
    lines.append("#N is the flow's position in the capture, in order of time; times are UTC.")
    stage = None
    for finding in diagnosis.findings:
        if finding.stage != stage:
            stage = finding.stage
            lines += ["", stage, "-" * len(stage)]
        lines.append(f"{LABEL[finding.severity]:<8}{finding.title}  [{finding.check}]")
        lines.append(f"        seen:  {finding.detail}")
        for i, ex in enumerate(finding.flows[:3]):
            lines.append(f"        {'flow:  ' if i == 0 else '       '}{ex.reference()}")
        if len(finding.flows) > 3:
            rest = ", ".join(f"#{ex.index}" for ex in finding.flows[3:])
            lines.append(f"               and {len(finding.flows) - 3} more: {rest}")
        lines.append(f"        spec:  {finding.reference}")
        lines.append(f"        fix:   {finding.fix}")
    if not diagnosis.findings:
        lines += ["", "No findings."]
    if dances.dances:
        lines += ["", "dances", "------"]
        for dance in dances.dances:
            lines.append(f"{dance.label} ({dance.address}): {len(dance.steps)} steps")
            lines.append(result_line(dance))
        lines.append("(python -m addon.diagnosis.dance FILE, or --set mcp_auth_dance=true, shows every step)")
    return "\n".join(lines) + "\n"


def _many(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def to_dict(diagnosis: Diagnosis) -> dict[str, Any]:
    return {
        "source": diagnosis.source,
        "flows": diagnosis.dances.total,
        "summary": {severity: diagnosis.count(severity) for severity in SEVERITIES},
        "findings": [
            {
                "severity": f.severity,
                "check": f.check,
                "stage": f.stage,
                "title": f.title,
                "detail": f.detail,
                "reference": f.reference,
                "fix": f.fix,
                "flows": [
                    {
                        "flow": ex.index,
                        "id": ex.id,
                        "method": ex.method,
                        "url": ex.url_without_query,
                        "time": ex.started,
                    }
                    for ex in f.flows
                ],
            }
            for f in diagnosis.findings
        ],
        "dances": to_json(diagnosis.dances),
    }


def map_public_urls(exchanges: list[Exchange], mappings: Sequence[str]) -> list[Exchange]:
    """`SEEN=PUBLIC`: replace the origin SEEN (e.g. the proxy's listening address) by the public one."""
    pairs = []
    for mapping in mappings:
        seen, sep, public = mapping.partition("=")
        if not sep:
            raise ValueError(
                f"--public-url takes SEEN=PUBLIC, e.g. http://10.0.0.5:8000=https://mcp.example.com: {mapping!r}"
            )
        pairs.append((origin_of(seen), public.rstrip("/")))
    for ex in exchanges:
        for seen, public in pairs:
            if ex.origin == seen:
                ex.url = public + ex.url[len(seen) :]
    return exchanges


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m addon.diagnosis.doctor",
        description="Report MCP authorization spec violations in a mitmproxy capture (.mitm), by stage.",
    )
    parser.add_argument("file", help="a mitmproxy flow file (mitmdump -w, or mitmweb File > Save)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--public-url",
        action="append",
        default=[],
        metavar="SEEN=PUBLIC",
        help="treat URLs on origin SEEN (the proxy's listening address) as the public origin clients used",
    )
    args = parser.parse_args(argv)
    from addon.diagnosis.flows import read_exchanges  # mitmproxy only for reading the file

    try:
        exchanges = read_exchanges(args.file)
        exchanges = map_public_urls(exchanges, args.public_url)
    except Exception as e:  # OSError, FlowReadException, a bad --public-url: say so, no traceback
        print(f"doctor: cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    diagnosis = diagnose(exchanges, args.file)
    if args.json:
        print(json.dumps(to_dict(diagnosis), indent=2, ensure_ascii=False))
    else:
        print(render(diagnosis), end="")
    return 1 if diagnosis.has_errors else 0


if __name__ == "__main__":
    sys.exit(main())
