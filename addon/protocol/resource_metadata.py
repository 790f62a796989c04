"""Protected resource metadata (RFC 9728) for the MCP endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def resource_metadata_paths(resource: str) -> tuple[str, ...]:
    """Where clients look (MCP 2025-11-25): the well-known prefix inserted before the resource's
    path (RFC 9728 §3.1) first, then the root one."""
    return (WELL_KNOWN + urlsplit(resource).path, WELL_KNOWN)


def resource_metadata_url(resource: str) -> str:
    """The absolute URL named in every challenge."""
    parts = urlsplit(resource)
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{parts.path}"


def resource_metadata(
    resource: str,
    authorization_servers: Sequence[str],
    scopes: Sequence[str],
    resource_name: str | None = None,
) -> dict[str, object]:
    document: dict[str, object] = {
        "resource": resource,
        "authorization_servers": list(authorization_servers),
        "scopes_supported": list(scopes),
        "bearer_methods_supported": ["header"],
    }
    if resource_name:
        document["resource_name"] = resource_name
    return document
