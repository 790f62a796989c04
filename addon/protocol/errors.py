"""OAuth errors as values: every refusal the proxy makes is one of these."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class OAuthError(Exception):
    """An error answered with an RFC 6749 §5.2 / RFC 7591 §3.2.2 shaped JSON body."""

    status: int
    error: str
    description: str
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.error}: {self.description}"

    def body(self) -> bytes:
        return json_body({"error": self.error, "error_description": self.description})


def json_body(document: object) -> bytes:
    return json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"


def invalid_request(description: str) -> OAuthError:
    return OAuthError(400, "invalid_request", description)


def shorten(secret: str, keep: int = 6) -> str:
    """A secret as it may appear in logs and comments: enough to tell two apart, not enough to use."""
    if len(secret) <= keep * 2:
        return "…"
    return f"{secret[:keep]}…{secret[-4:]}"
