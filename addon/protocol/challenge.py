"""WWW-Authenticate challenges (RFC 6750 §3, RFC 9728 §5.1, MCP authorization).

Clients parse these with simple `name="value"` matching (the official Python SDK does),
so every challenge is one Bearer challenge with plain quoted values and nothing that
needs escaping.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from addon.protocol.errors import json_body

# RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E, i.e. printable ASCII without `"` and `\`.
_NOT_ALLOWED_IN_DESCRIPTION = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _quoted(value: str) -> str:
    return '"' + _NOT_ALLOWED_IN_DESCRIPTION.sub("'", value) + '"'


def _description(value: str) -> str:
    # Descriptions quote token contents (kid, iss, aud). Clients that search the header for
    # `scope=` or `resource_metadata=` unquoted (the official Python SDK does) must not find
    # one inside the description; the JSON body keeps the exact text.
    return value.replace("=", ":")


def bearer(**params: str | None) -> str:
    """One Bearer challenge; error_description goes last, after every value a client acts on."""
    parts = [
        f"{name}={_quoted(value)}"
        for name, value in params.items()
        if value is not None and name != "error_description"
    ]
    if params.get("error_description") is not None:
        parts.append(f"error_description={_quoted(_description(str(params['error_description'])))}")
    return "Bearer " + ", ".join(parts)


@dataclass(frozen=True)
class Challenge:
    """One answer of the gate on the MCP path: status, WWW-Authenticate value and JSON body."""

    status: int
    www_authenticate: str
    error: str
    description: str
    # False for the plain challenge (no usable credentials); True when credentials were refused.
    refused: bool = True

    def body(self) -> bytes:
        return json_body({"error": self.error, "error_description": self.description})


def missing_token(
    resource_metadata_url: str,
    scopes: Iterable[str],
    description: str = "No access token. Discover the authorization server from the resource metadata and log in.",
) -> Challenge:
    """401 for a request without usable credentials: no `error` attribute (RFC 6750 §3.1).

    "Usable" matters: credentials in a scheme this server does not support (Basic, say) count
    as none, so the client is pointed at the resource metadata rather than told its token is bad.
    """
    scope = " ".join(scopes) or None
    return Challenge(
        401, bearer(resource_metadata=resource_metadata_url, scope=scope), "invalid_token", description, refused=False
    )


def invalid_token(resource_metadata_url: str, scopes: Iterable[str], description: str) -> Challenge:
    scope = " ".join(scopes) or None
    return Challenge(
        401,
        bearer(
            error="invalid_token",
            resource_metadata=resource_metadata_url,
            scope=scope,
            error_description=description,
        ),
        "invalid_token",
        description,
    )


def invalid_request(resource_metadata_url: str, description: str) -> Challenge:
    return Challenge(
        400,
        bearer(error="invalid_request", resource_metadata=resource_metadata_url, error_description=description),
        "invalid_request",
        description,
    )


def insufficient_scope(resource_metadata_url: str, needed: Iterable[str], missing: Iterable[str]) -> Challenge:
    """403 naming every scope the call needs (MCP 2026-07-28), so a step-up asks for all of them."""
    needed_text = " ".join(needed)
    description = f"The token lacks scope {' '.join(missing)}; this resource needs {needed_text}."
    return Challenge(
        403,
        bearer(
            error="insufficient_scope",
            scope=needed_text,
            resource_metadata=resource_metadata_url,
            error_description=description,
        ),
        "insufficient_scope",
        description,
    )
