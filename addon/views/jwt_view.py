"""The token view: every JWT of a message decoded, with what the proxy checked and concluded.

Decoding is not trust. Each token carries a banner: "verified by the proxy" only when the
proxy recorded checks for it and every one passed; "REFUSED by the proxy" with the failed
check; "NOT VERIFIED — decoded only" everywhere else (tokens in a /token answer, tokens the
proxy never got to check, tokens it recorded nothing for).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from addon.views.render import (
    SECRET_NAMES,
    MessageContext,
    content_type_of,
    duration,
    heading,
    is_timestamp,
    iso_time,
    looks_like_jwt,
    one_line,
    parse_form,
    parse_json,
    pretty_json,
    proxy_line,
    raw_body,
    redact_json,
    relative_time,
    secret,
)

NAME = "MCP auth: token"

TOKEN_KEY = "mcp_auth.token"
TOKEN_CHECKS_KEY = "mcp_auth.token_checks"

# Stages whose flows are about a token; the view is picked for them.
TOKEN_STAGES = frozenset({"token", "rejected"})
CALL_STAGES = frozenset({"authorized-call"})

VERIFIED = "✔ verified by the proxy: every check passed"
NOT_VERIFIED = "⚠ NOT VERIFIED — decoded only"
REFUSED = "✘ REFUSED by the proxy"

TIME_CLAIMS = ("exp", "nbf", "iat", "auth_time")
# Keys in JSON answers and forms whose values are tokens even when they are not JWTs.
TOKEN_NAMES = frozenset(
    {
        "access_token",
        "id_token",
        "refresh_token",
        "registration_access_token",
        "token",
        "subject_token",
        "actor_token",
        "client_assertion",
    }
)
MAX_TOKENS = 20

HEADER_NOTES = {
    "alg": "signing algorithm; the proxy accepts asymmetric ones only (RS*, PS*, ES*, EdDSA)",
    "kid": "which key of the IdP's JWKS signed it",
    "typ": "token type; at+jwt marks an OAuth access token (RFC 9068)",
}
CLAIM_NOTES = {
    "iss": "issuer: who made the token; the proxy requires the configured issuer exactly",
    "sub": "subject: the user the token speaks for; sent upstream as X-MCP-Auth-Subject",
    "aud": "audience: who may accept it; the proxy requires its own resource URL (RFC 8707)",
    "exp": "expiry: the proxy refuses the token after this (with clock_skew_seconds leeway)",
    "nbf": "not before: the proxy refuses the token before this",
    "iat": "issued at",
    "auth_time": "when the user logged in",
    "jti": "the token's unique id",
    "client_id": "the client the token was issued to (RFC 9068)",
    "azp": "authorized party: the client the token was issued to (OIDC)",
    "scope": "what the token allows; the proxy requires every configured scope",
    "scp": "scopes (Entra, Okta style)",
    "permissions": "scopes (Auth0 style)",
    "nonce": "binds an id_token to the client's login request",
    "sid": "the IdP's login session",
    "at_hash": "hash of the access token issued with this id_token",
}
CHECK_MARKS = {True: "✔ passed     ", False: "✘ FAILED     ", None: "· not reached"}


@dataclass
class DecodedJwt:
    """What can be read from a token without any key."""

    raw: str
    form: str  # "JWS", "JWE", "opaque" or "malformed JWT"
    header: Any = None
    claims: Any = None
    signature: str = "absent"
    problems: list[str] = field(default_factory=list)

    @property
    def readable(self) -> bool:
        return self.form in ("JWS", "JWE") and isinstance(self.header, dict)


def _b64url(segment: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", segment):
        raise ValueError("characters outside the base64url alphabet")
    if len(segment) % 4 == 1:
        raise ValueError("a length no base64url text can have")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError(str(e)) from e


def _json_segment(segment: str, what: str, problems: list[str]) -> Any:
    try:
        raw = _b64url(segment)
    except ValueError as e:
        problems.append(f"{what}: bad base64url ({e})")
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        problems.append(f"{what}: not JSON ({type(e).__name__})")
        return None
    if not isinstance(value, dict):
        problems.append(f"{what}: JSON, but not an object")
    return value


def decode_jwt(token: Any) -> DecodedJwt:
    """Read a token's header and claims without verifying anything. Never raises."""
    if not isinstance(token, str):
        return DecodedJwt(one_line(token), "opaque", problems=["not a string"])
    token = token.strip()
    parts = token.split(".")
    if len(parts) == 5:
        decoded = DecodedJwt(token, "JWE", signature="encrypted")
        decoded.header = _json_segment(parts[0], "header", decoded.problems)
        decoded.problems.append("encrypted (JWE): the claims cannot be read without the recipient's key")
        return decoded
    if len(parts) != 3 or len(token) > 65536:
        return DecodedJwt(token, "opaque")
    decoded = DecodedJwt(token, "JWS")
    decoded.header = _json_segment(parts[0], "header", decoded.problems)
    decoded.claims = _json_segment(parts[1], "claims", decoded.problems)
    if decoded.header is None and decoded.claims is None:
        decoded.form = "malformed JWT" if token.startswith("eyJ") else "opaque"
        if decoded.form == "opaque":
            decoded.problems.clear()
        return decoded
    if decoded.problems:
        decoded.form = "malformed JWT"
    if not parts[2]:
        decoded.signature = "cut off (the proxy keeps tokens without their signature: decodable, not replayable)"
    else:
        try:
            decoded.signature = f"{len(_b64url(parts[2]))} bytes"
        except ValueError as e:
            decoded.signature = f"unreadable ({e})"
    if isinstance(decoded.header, dict) and str(decoded.header.get("alg", "")).lower() == "none":
        decoded.problems.append('alg "none": the token is not signed at all; the proxy refuses it')
    return decoded


def verdict(checks: Any) -> tuple[str, str]:
    """("verified" | "refused" | "unverified", banner) from the proxy's recorded checks."""
    if not isinstance(checks, list) or not checks:
        return "unverified", f"{NOT_VERIFIED}: the proxy recorded no checks for this token"
    entries = [c for c in checks if isinstance(c, dict)]
    for entry in entries:
        if entry.get("ok") is False:
            return "refused", f"{REFUSED}: {entry.get('check', '?')}: {entry.get('detail', '')}".rstrip(": ")
    if len(entries) == len(checks) and all(entry.get("ok") is True for entry in entries):
        return "verified", VERIFIED
    return "unverified", f"{NOT_VERIFIED}: the proxy's checks on this token are incomplete"


def render_checks(checks: Any) -> str:
    if not isinstance(checks, list) or not checks:
        return "checks made by the proxy: none recorded"
    lines = ["checks made by the proxy, in order:"]
    for entry in checks:
        if not isinstance(entry, dict):
            lines.append(f"  ? {one_line(entry, 80)}")
            continue
        ok = entry.get("ok")
        mark = CHECK_MARKS.get(ok, "?") if isinstance(ok, bool | None) else "?"
        detail = one_line(entry.get("detail") or "", 200)
        detail = "" if detail == "passed" else detail
        lines.append(f"  {mark}  {one_line(entry.get('check', '?'), 12):<10} {detail}".rstrip())
    return "\n".join(lines)


def render_times(claims: dict[str, Any], now: float) -> list[str]:
    lines = []
    for claim in TIME_CLAIMS:
        if claim in claims:
            value = claims[claim]
            lines.append(f"  {claim:<10} {iso_time(value):<22} {relative_time(claim, value, now)}")
    return lines


def render_token(
    decoded: DecodedJwt,
    *,
    label: str,
    banner: str,
    now: float,
    redact: bool,
    checks: Any = None,
    notes: tuple[str, ...] = (),
    explain: bool = True,
) -> str:
    """One token: banner, header, claims, times; with `explain`, what the fields mean to the proxy."""
    lines = [heading(label), banner]
    lines.extend(notes)
    if decoded.form == "opaque":
        lines.append(
            "opaque: not a JWT, so nothing can be read from it here; only the IdP knows what it means "
            "(introspection, RFC 7662)"
        )
        lines.append(f"value: {secret(decoded.raw, redact)}")
        return "\n".join(lines)
    lines.append(f"form: {decoded.form}; signature: {decoded.signature}")
    lines.append(f"value: {secret(decoded.raw, redact)}")
    lines.extend(f"problem: {p}" for p in decoded.problems)
    if decoded.header is not None:
        lines.append("header:")
        lines.append(pretty_json(redact_json(decoded.header, redact), "  "))
    if decoded.claims is not None:
        lines.append("claims:")
        lines.append(pretty_json(redact_json(decoded.claims, redact), "  "))
    if isinstance(decoded.claims, dict):
        times = render_times(decoded.claims, now)
        if times:
            lines.append("times (UTC, and from now):")
            lines.extend(times)
        meanings = (
            []
            if not explain
            else [f"  {name:<10} {CLAIM_NOTES[name]}" for name in CLAIM_NOTES if name in decoded.claims]
            + [f"  {name:<10} (header) {HEADER_NOTES[name]}" for name in HEADER_NOTES if name in (decoded.header or {})]
        )
        if meanings:
            lines.append("what the fields mean:")
            lines.extend(meanings)
    if checks is not None:
        lines.append(render_checks(checks))
    return "\n".join(lines)


def _stored_token_banner(checks: Any, claims: Any, now: float) -> tuple[str, tuple[str, ...]]:
    kind, banner = verdict(checks)
    notes: tuple[str, ...] = ()
    if kind == "verified" and isinstance(claims, dict) and is_timestamp(claims.get("exp")) and claims["exp"] < now:
        notes = (f"(verified when the request was made; it has {relative_time('exp', claims['exp'], now)} since)",)
    return banner, notes


def _same_token(full: str, stored: str) -> bool:
    return full.count(".") == 2 and full.rpartition(".")[0] + "." == stored


def _authorization_blocks(ctx: MessageContext, stored: str | None) -> Iterator[str]:
    for value in ctx.authorization:
        scheme, _, credentials = value.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            if "…" in credentials:
                yield (
                    "Authorization: Bearer token shortened by mcp_auth_redact after the proxy answered"
                    + ("; decoded below from the copy the proxy kept" if stored else "; it cannot be decoded")
                )
                continue
            if stored and _same_token(credentials, stored):
                yield "Authorization: Bearer token, the one decoded below (the proxy's checks apply to it)"
                continue
            decoded = decode_jwt(credentials)
            reason = {
                "challenge": "the proxy answered before checking it",
                "not-found": "this path is not the MCP endpoint; the proxy did not check it",
            }.get(ctx.stage or "", "the proxy recorded no checks for this token")
            yield render_token(
                decoded,
                label="Authorization: Bearer token",
                banner=f"{NOT_VERIFIED}: {reason}",
                now=ctx.now,
                redact=ctx.redact,
            )
        elif scheme.lower() == "basic":
            yield _basic_credentials(credentials, ctx.redact)
        else:
            yield f"Authorization: {scheme} {secret(credentials, ctx.redact) if credentials else ''}".rstrip()


def _basic_credentials(credentials: str, redact: bool) -> str:
    if "…" in credentials:
        return "Authorization: Basic credentials shortened by mcp_auth_redact after the proxy answered"
    try:
        user, sep, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return f"Authorization: Basic {secret(credentials, redact)} (not readable as base64 user:password)"
    if not sep:
        return f"Authorization: Basic {secret(credentials, redact)} (no ':' between client id and secret)"
    return (
        "Authorization: Basic = client authentication (RFC 6749 §2.3.1): "
        f"client_id {unquote_plus(user)}, client_secret {secret(unquote_plus(password), redact)}"
    )


def _walk_tokens(value: Any, path: str = "", depth: int = 0) -> Iterator[tuple[str, str, str]]:
    """(path, key, token) for each token-like string in a JSON document."""
    if depth > 50:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(item, str) and (key in TOKEN_NAMES or looks_like_jwt(item)):
                yield where, str(key), item
            else:
                yield from _walk_tokens(item, where, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if isinstance(item, str) and looks_like_jwt(item):
                yield where, "", item
            else:
                yield from _walk_tokens(item, where, depth + 1)


def _body_banner(ctx: MessageContext, key: str) -> str:
    if ctx.stage == "token" or key in ("access_token", "id_token", "refresh_token"):
        if not ctx.is_request:
            why = (
                "the proxy passes the IdP's answer on without checking the tokens in it; an access token is "
                "checked when the client sends it to the MCP endpoint"
            )
            if key == "id_token":
                why = "an id_token is for the client; the proxy passes it on and never checks it"
            elif key == "refresh_token":
                why = (
                    "a refresh token goes back to the IdP (through the proxy's /token); only the IdP can tell "
                    "whether it is good"
                )
            return f"{NOT_VERIFIED}: {why}"
        return f"{NOT_VERIFIED}: sent to the IdP, which decides; the proxy does not check it"
    return f"{NOT_VERIFIED}: the proxy does not check tokens in message bodies"


def _token_answer_summary(ctx: MessageContext, document: dict[str, Any]) -> list[str]:
    lines = []
    if "error" in document:
        lines.append(
            f"refused: {one_line(document.get('error'), 80)}"
            + (f" — {one_line(document['error_description'])}" if document.get("error_description") else "")
        )
    if "access_token" in document or "token_type" in document:
        lines.append(f"token answer: token_type {one_line(document.get('token_type', '?'), 40)}")
        expires_in = document.get("expires_in")
        if is_timestamp(expires_in):
            line = f"  expires_in {expires_in}: the access token is good for {duration(expires_in)}"
            if ctx.response_timestamp is not None:
                line += "; " + relative_time("exp", ctx.response_timestamp + expires_in, ctx.now)
            lines.append(line)
        if "scope" in document:
            lines.append(f"  scope granted: {one_line(document['scope'], 200)}")
        lines.append(
            "  refresh_token: " + ("present" if document.get("refresh_token") else "none (the client logs in again)")
        )
    return lines


def _body_blocks(ctx: MessageContext) -> tuple[list[str], list[str]]:
    """(token blocks, body lines) for the message body."""
    body = ctx.body or b""
    if not body:
        return [], []
    ctype = content_type_of(ctx.content_type)
    blocks: list[str] = []
    document, why = parse_json(body)
    if why is None and isinstance(document, dict | list):
        summary = _token_answer_summary(ctx, document) if isinstance(document, dict) else []
        for count, (where, key, token) in enumerate(_walk_tokens(document)):
            if count >= MAX_TOKENS:
                blocks.append(f"(more tokens in the body not shown; {MAX_TOKENS} at most)")
                break
            decoded = decode_jwt(token)
            if decoded.form == "opaque" and key not in TOKEN_NAMES:
                continue
            blocks.append(
                render_token(
                    decoded,
                    label=f"{where} (in the body)",
                    banner=_body_banner(ctx, key),
                    now=ctx.now,
                    redact=ctx.redact,
                    explain=key == "access_token",
                )
            )
        return blocks, [*summary, pretty_json(redact_json(document, ctx.redact), "  ")]
    pairs = parse_form(body) if ctype in (None, "application/x-www-form-urlencoded") else None
    if pairs is not None:
        lines = ["form parameters:"]
        for name, value in pairs[:200]:
            shown = secret(value, ctx.redact) if name in SECRET_NAMES or looks_like_jwt(value) else one_line(value)
            lines.append(f"  {name} = {shown}")
            if name in TOKEN_NAMES or looks_like_jwt(value):
                decoded = decode_jwt(value)
                blocks.append(
                    render_token(
                        decoded,
                        label=f"{name} (form parameter)",
                        banner=_body_banner(ctx, name),
                        now=ctx.now,
                        redact=ctx.redact,
                        explain=False,
                    )
                )
        return blocks, lines
    return blocks, [raw_body(body, ctx.redact, why if ctype and "json" in ctype else None)]


def token_view(ctx: MessageContext) -> str:
    out: list[str] = []
    if line := proxy_line(ctx):
        out.append(line)
    stored = ctx.flow_metadata.get(TOKEN_KEY)
    stored = stored if isinstance(stored, str) and stored else None
    checks = ctx.flow_metadata.get(TOKEN_CHECKS_KEY)
    blocks: list[str] = []
    if ctx.authorization:
        blocks.extend(_authorization_blocks(ctx, stored))
    if stored:
        decoded = decode_jwt(stored)
        banner, notes = _stored_token_banner(checks, decoded.claims, ctx.now)
        blocks.append(
            render_token(
                decoded,
                label="bearer token the client sent (kept by the proxy, signature cut off)",
                banner=banner,
                now=ctx.now,
                redact=ctx.redact,
                checks=checks if checks is not None else [],
                notes=notes,
            )
        )
    body_tokens, body_lines = _body_blocks(ctx)
    blocks.extend(body_tokens)
    if not blocks:
        out.append("no token in this message")
    out.extend(blocks)
    if body_lines:
        out.append(heading("body"))
        out.extend(body_lines)
    return "\n".join(out) + "\n"


def has_bearer_jwt(ctx: MessageContext) -> bool:
    for value in ctx.authorization:
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() == "bearer" and looks_like_jwt(credentials.strip()):
            return True
    return False


def token_priority(ctx: MessageContext) -> float:
    """Chosen automatically on token exchanges and refusals; below the JSON-RPC view on authorized calls."""
    if ctx.stage in TOKEN_STAGES:
        return 3
    if ctx.redact and ctx.stage == "registration":
        # The registration answer carries the client secret: on a shared screen, the view that shortens it.
        return 3
    if ctx.stage in CALL_STAGES:
        return 2
    if has_bearer_jwt(ctx):
        return 3
    return 0
