"""The discovery view: what the proxy changed in the IdP's metadata, and what its PRM tells a client.

On `as-metadata` flows the proxy serves its own authorization server metadata built from the
IdP's (kept in `flow.metadata["mcp_auth.metadata_source"]`); the view compares the two field
by field. On `resource-metadata` flows it explains each field of the protected resource
metadata (RFC 9728), the document every MCP login starts from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from addon.protocol.server_metadata import discovery_urls
from addon.views.render import (
    MessageContext,
    heading,
    one_line,
    parse_json,
    pretty_json,
    proxy_line,
    raw_body,
    redact_json,
)

NAME = "MCP auth: metadata changes"

SOURCE_KEY = "mcp_auth.metadata_source"
AS_METADATA = "as-metadata"
RESOURCE_METADATA = "resource-metadata"

BYPASS = "would bypass the proxy: a client following it would talk to the IdP directly"
NOT_OFFERED = "not offered through the proxy: its metadata lists only what works through it"

FIELD_REASONS = {
    "issuer": (
        "the proxy is the authorization server clients see: they check issuer against the URL they fetched "
        "(RFC 8414 §3.3) and against the iss of the authorization response (RFC 9207)"
    ),
    "scopes_supported": "the resource's scopes first; offline_access is not advertised (MCP 2026-07-28)",
    "token_endpoint_auth_methods_supported": "how clients authenticate to the proxy's /token",
    "grant_types_supported": "the grants the proxy's /token forwards",
    "response_types_supported": "authorization code only",
    "response_modes_supported": "query only: the proxy's /callback reads the code from the query",
    "code_challenge_methods_supported": "PKCE with S256 only (MCP requires it; plain is refused)",
}
ADD_REASONS = {
    **FIELD_REASONS,
    "authorization_response_iss_parameter_supported": (
        "the proxy's /callback puts iss in the redirect to the client (RFC 9207); clients compare it with issuer"
    ),
    "registration_endpoint": "dynamic client registration (RFC 7591) through the proxy",
    "revocation_endpoint_auth_methods_supported": "the same methods as the token endpoint",
    "code_challenge_methods_supported": "MCP clients refuse an authorization server that does not list it",
    "revocation_endpoint": "token revocation through the proxy",
}
UNCHANGED_NOTES = {
    "jwks_uri": "still the IdP's: signing keys are public, and the proxy checks tokens against the same keys",
}
PRM_NOTES = {
    "resource": (
        "the MCP server's identifier: clients ask for tokens for it (resource=, RFC 8707), and the proxy accepts "
        "only tokens whose aud names it. Clients check it matches the URL they connect to"
    ),
    "authorization_servers": (
        "where to log in: the client fetches the first one's metadata next, and its issuer must equal this "
        "string exactly"
    ),
    "scopes_supported": "the scopes to ask for; the proxy requires all of them on the MCP endpoint",
    "bearer_methods_supported": (
        "how to send the token: header only (Authorization: Bearer …); the proxy refuses ?access_token="
    ),
    "resource_name": "a name for the resource that clients may show the user",
    "resource_documentation": "where people can read about the resource",
    "jwks_uri": "the resource's own keys (not the IdP's)",
}


@dataclass
class MetadataDiff:
    rewritten: list[tuple[str, Any, Any]] = field(default_factory=list)
    removed: list[tuple[str, Any]] = field(default_factory=list)
    added: list[tuple[str, Any]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def metadata_diff(original: dict[str, Any], served: dict[str, Any]) -> MetadataDiff:
    diff = MetadataDiff()
    for name in sorted({*original, *served}, key=str):
        if name in original and name in served:
            if original[name] == served[name]:
                diff.unchanged.append(name)
            else:
                diff.rewritten.append((name, original[name], served[name]))
        elif name in original:
            diff.removed.append((name, original[name]))
        else:
            diff.added.append((name, served[name]))
    return diff


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


def removal_reason(name: str, value: Any) -> str:
    routes = (
        name.endswith(("_endpoint", "_uri", "_iframe"))
        or name == "mtls_endpoint_aliases"
        or _is_url(value)
        or (isinstance(value, dict) and any(_is_url(v) for v in value.values()))
    )
    return BYPASS if routes else NOT_OFFERED


def rewrite_reason(name: str, before: Any, after: Any, proxy_issuer: str | None) -> str:
    if name in FIELD_REASONS:
        reason = FIELD_REASONS[name]
    elif proxy_issuer and isinstance(after, str) and after.startswith(proxy_issuer):
        reason = "now at the proxy: this step of the dance passes through it"
    else:
        reason = "set by the proxy"
    if isinstance(before, list) and isinstance(after, list):
        dropped = [v for v in before if v not in after]
        new = [v for v in after if v not in before]
        if dropped:
            reason += f"; dropped {one_line(dropped, 160)}"
        if new:
            reason += f"; added {one_line(new, 160)}"
    return reason


def _as_metadata(ctx: MessageContext, served: dict[str, Any]) -> list[str]:
    source = ctx.flow_metadata.get(SOURCE_KEY)
    original = source.get("document") if isinstance(source, dict) else None
    url = source.get("url") if isinstance(source, dict) else None
    if not isinstance(original, dict):
        return [
            "the proxy recorded no IdP original on this flow (`mcp_auth.metadata_source`): nothing to compare",
            "served document:",
            pretty_json(redact_json(served, ctx.redact), "  "),
        ]
    proxy_issuer = served.get("issuer") if isinstance(served.get("issuer"), str) else None
    diff = metadata_diff(original, served)
    lines = [
        f"the IdP's original: {one_line(url) if url else '(URL not recorded)'}",
        f"served by the proxy{' as issuer ' + proxy_issuer if proxy_issuer else ''}",
        "",
        heading(f"rewritten ({len(diff.rewritten)})"),
    ]
    for name, before, after in diff.rewritten:
        lines.append(f"  {name}")
        lines.append(f"      {one_line(redact_json(before, ctx.redact))}")
        lines.append(f"    → {one_line(redact_json(after, ctx.redact))}")
        lines.append(f"      why: {rewrite_reason(name, before, after, proxy_issuer)}")
    lines.append(heading(f"removed ({len(diff.removed)})"))
    for name, before in diff.removed:
        lines.append(f"  {name}: {one_line(redact_json(before, ctx.redact))}")
        lines.append(f"      why: {removal_reason(name, before)}")
    lines.append(heading(f"added ({len(diff.added)})"))
    for name, after in diff.added:
        lines.append(f"  {name}: {one_line(redact_json(after, ctx.redact))}")
        lines.append(f"      why: {ADD_REASONS.get(name, 'added by the proxy')}")
    lines.append(heading(f"unchanged ({len(diff.unchanged)})"))
    if diff.unchanged:
        lines.append("  " + ", ".join(diff.unchanged))
    for name in diff.unchanged:
        if name in UNCHANGED_NOTES:
            lines.append(f"  {name}: {UNCHANGED_NOTES[name]}")
    lines.append(heading("served document"))
    lines.append(pretty_json(redact_json(served, ctx.redact), "  "))
    return lines


def _next_urls(server: Any) -> list[str]:
    if not isinstance(server, str) or not _is_url(server):
        return []
    try:
        urlsplit(server)
        return discovery_urls(server)
    except ValueError:
        return []


def _resource_metadata(ctx: MessageContext, document: dict[str, Any]) -> list[str]:
    lines = ["protected resource metadata (RFC 9728): the first document of every MCP login"]
    if ctx.path:
        lines.append(f"served at {one_line(ctx.path, 200)}; 401 challenges point clients here (resource_metadata=)")
    lines.append("")
    for name, value in document.items():
        note = PRM_NOTES.get(str(name), "not a field this proxy sets (RFC 9728 §2 lists the registered ones)")
        lines.append(f"  {name}: {one_line(redact_json(value, ctx.redact))}")
        lines.append(f"      {note}")
    servers = document.get("authorization_servers")
    if isinstance(servers, list) and servers:
        urls = _next_urls(servers[0])
        if urls:
            lines.append("")
            lines.append("next, the client fetches the authorization server's metadata from the first of:")
            lines.extend(f"  {u}" for u in urls)
    elif "authorization_servers" not in document:
        lines.append("")
        lines.append("no authorization_servers: a client cannot tell where to log in")
    lines.append(heading("document"))
    lines.append(pretty_json(redact_json(document, ctx.redact), "  "))
    return lines


def discovery_view(ctx: MessageContext) -> str:
    out: list[str] = []
    if line := proxy_line(ctx):
        out.append(line)
    document, why = parse_json(ctx.body or b"")
    if why is not None or not isinstance(document, dict):
        out.append(
            "the body is not a metadata document"
            + (f" ({why})" if why else "")
            + (f"; HTTP {ctx.status_code}" if ctx.status_code else "")
        )
        out.append(raw_body(ctx.body or b"", ctx.redact))
        return "\n".join(out) + "\n"
    if "error" in document and ctx.status_code and ctx.status_code >= 400:
        out.append(
            f"HTTP {ctx.status_code}: {one_line(document.get('error'))}"
            + (f" — {one_line(document['error_description'])}" if document.get("error_description") else "")
        )
        out.append(pretty_json(redact_json(document, ctx.redact), "  "))
        return "\n".join(out) + "\n"
    is_prm = ctx.stage == RESOURCE_METADATA or (ctx.stage != AS_METADATA and "authorization_servers" in document)
    out.extend(_resource_metadata(ctx, document) if is_prm else _as_metadata(ctx, document))
    return "\n".join(out) + "\n"


def discovery_priority(ctx: MessageContext) -> float:
    if not ctx.is_request and ctx.stage in (AS_METADATA, RESOURCE_METADATA):
        return 3
    return 0
