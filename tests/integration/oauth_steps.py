"""The OAuth steps a client takes, one HTTP request at a time, for tests that look at each answer."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from mcp_client import login_with_password

USER = ("testuser", "testpass")
REDIRECT_URI = "http://127.0.0.1:47111/callback"  # never listened on: the login stops at the redirect


@dataclass
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def make(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        return cls(verifier, challenge)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def register(registration_endpoint: str, redirect_uri: str = REDIRECT_URI, **extra: object) -> dict[str, object]:
    body = {
        "client_name": "oauth-steps test client",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
        **extra,
    }
    response = httpx.post(registration_endpoint, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def authorization_url(
    authorization_endpoint: str, client_id: str, pkce: Pkce, state: str, resource: str | None, scope: str = "mcp:tools",
    redirect_uri: str = REDIRECT_URI,
) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "scope": scope,
    }
    if resource:
        params["resource"] = resource
    return f"{authorization_endpoint}?{urlencode(params)}"


def log_in(url: str, redirect_uri: str = REDIRECT_URI) -> tuple[str, str | None, str | None]:
    """(code, state, iss) after logging in as the test user."""
    return login_with_password(url, *USER, redirect_uri)


def exchange(
    token_endpoint: str, client_id: str, code: str, pkce: Pkce, resource: str | None,
    redirect_uri: str = REDIRECT_URI,
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "code_verifier": pkce.verifier,
    }
    if resource:
        form["resource"] = resource
    return httpx.post(token_endpoint, data=form)


def token_from(issuer_metadata: dict[str, str], resource: str, scope: str = "mcp:tools") -> str:
    """An access token straight from an IdP (no proxy), for `resource`."""
    client = register(issuer_metadata["registration_endpoint"], scope=scope)
    pkce = Pkce.make()
    url = authorization_url(issuer_metadata["authorization_endpoint"], str(client["client_id"]), pkce, "s", resource,
                            scope)
    code, _, _ = log_in(url)
    response = exchange(issuer_metadata["token_endpoint"], str(client["client_id"]), code, pkce, resource)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def metadata(issuer: str) -> dict[str, str]:
    return httpx.get(issuer + "/.well-known/openid-configuration").json()
