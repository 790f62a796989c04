"""A real, minimal OAuth authorization server for tests: metadata and a JWKS the test controls.

`TokenLab` is a stdlib `http.server` on 127.0.0.1 (an ephemeral port) in a thread. It serves

- `/.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`, with
  `issuer` = its own URL (no trailing slash) and `jwks_uri`; the authorization, token and
  registration endpoints are named but are dummies (they answer 400/404 JSON);
- `/jwks`: the public halves of the keys the test has *published*.

The test adds, removes and rotates keys at runtime, mints tokens with any of them (published
or not, RSA or EC), forges tokens by hand, and reads how often each path was requested,
so it can tell exactly when a proxy fetched the JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.unit.support import BackgroundServer

METADATA_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
JWKS_PATH = "/jwks"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def b64url(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64url_json(document: Any) -> str:
    return b64url(json.dumps(document, separators=(",", ":")))


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class LabKey:
    kid: str
    private: PrivateKey
    alg: str

    @property
    def kind(self) -> str:
        return "EC" if isinstance(self.private, ec.EllipticCurvePrivateKey) else "RSA"

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.ECAlgorithm if self.kind == "EC" else jwt.algorithms.RSAAlgorithm
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))  # type: ignore[arg-type]
        jwk.update({"kid": self.kid, "use": "sig", "alg": self.alg})
        return jwk

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def new_key(kind: str = "RSA", kid: str | None = None) -> LabKey:
    """A fresh key: RSA 2048 (RS256) or EC P-256 (ES256)."""
    kid = kid or f"{kind.lower()}-{secrets.token_hex(4)}"
    if kind.upper() == "EC":
        return LabKey(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")
    return LabKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


class TokenLab(BackgroundServer):
    """An IdP whose keys and answers the test controls; counts every request by path."""

    def __init__(self) -> None:
        self.keys: dict[str, LabKey] = {}  # every key the lab can sign with
        self.published: list[str] = []  # kids served in the JWKS, in order
        self.hits: Counter[str] = Counter()
        self.jwks_status = 200
        self._lock = threading.Lock()
        lab = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, document: Any) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with lab._lock:
                    lab.hits[path] += 1
                    jwks_status = lab.jwks_status
                if path in METADATA_PATHS:
                    self._send(200, lab.metadata())
                elif path == JWKS_PATH:
                    self._send(jwks_status, lab.jwks() if jwks_status == 200 else {"error": "unavailable"})
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with lab._lock:
                    lab.hits[path] += 1
                self._send(400, {"error": "invalid_request", "error_description": "token lab: dummy endpoint"})

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler, poll_interval=0.01)

    # --- the server -------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def jwks_uri(self) -> str:
        return self.url + JWKS_PATH

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.url + "/authorize",
            "token_endpoint": self.url + "/token",
            "registration_endpoint": self.url + "/register",
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["mcp:tools"],
        }

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [self.keys[kid].public_jwk() for kid in self.published]}

    def count(self, path: str = JWKS_PATH) -> int:
        with self._lock:
            return self.hits[path]

    @property
    def jwks_requests(self) -> int:
        return self.count(JWKS_PATH)


    # --- keys -------------------------------------------------------------------------------

    def add_key(self, kind: str = "RSA", kid: str | None = None, publish: bool = True) -> LabKey:
        """A new key the lab can sign with; in the JWKS unless publish=False."""
        key = new_key(kind, kid)
        with self._lock:
            self.keys[key.kid] = key
            if publish:
                self.published.append(key.kid)
        return key

    def publish(self, kid: str) -> None:
        with self._lock:
            if kid not in self.published:
                self.published.append(kid)

    def retire(self, kid: str) -> None:
        """Take a key out of the JWKS (the lab can still sign with it)."""
        with self._lock:
            if kid in self.published:
                self.published.remove(kid)

    def rotate(self, kind: str = "RSA", retire_old: bool = False) -> LabKey:
        """Publish a new key; optionally retire every key published before it."""
        old = list(self.published)
        key = self.add_key(kind)
        if retire_old:
            for kid in old:
                self.retire(kid)
        return key

    def key(self, kid: str | None = None) -> LabKey:
        """A key by kid, or the most recently published one."""
        with self._lock:
            return self.keys[kid if kid is not None else self.published[-1]]

    # --- tokens -----------------------------------------------------------------------------

    def claims(self, audience: str | list[str] | None, **overrides: Any) -> dict[str, Any]:
        """A good access token's claims; pass `name=None` to drop a claim."""
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "sub": "lab-user",
            "client_id": "lab-client",
            "scope": "mcp:tools",
            "iat": now,
            "exp": now + 600,
            "jti": secrets.token_hex(8),
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def mint(
        self,
        audience: str | list[str] | None,
        *,
        key: LabKey | None = None,
        kid: str | bool | None = True,
        alg: str | None = None,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A token signed by `key` (default: the newest published key).

        kid=True uses the key's kid, a string overrides it, None/False leaves it out.
        """
        key = key or self.key()
        all_headers = dict(headers or {})
        if kid is True:
            all_headers["kid"] = key.kid
        elif isinstance(kid, str):
            all_headers["kid"] = kid
        return jwt.encode(self.claims(audience, **claims), key.private, algorithm=alg or key.alg, headers=all_headers)


# --- forgeries --------------------------------------------------------------------------------


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    """A JWS with whatever header, claims and signature part the caller wants (`alg: none` and such)."""
    return f"{b64url_json(header)}.{b64url_json(claims)}.{signature}"


def hmac_signed(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """HS256 by hand, so any bytes (a public key) can be the secret: the algorithm-confusion attack."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def swap_payload(token: str, claims: dict[str, Any]) -> str:
    """The token's header and signature around another payload."""
    head, _, sig = token.split(".")
    return f"{head}.{b64url_json(claims)}.{sig}"


def payload_of(token: str) -> dict[str, Any]:
    return json.loads(b64url_decode(token.split(".")[1]))


def jwe_like(kid: str) -> str:
    """A token in JWE compact form (five parts): header, encrypted key, IV, ciphertext, tag."""
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": kid, "typ": "at+jwt"}
    return ".".join([b64url_json(header), *(b64url(secrets.token_bytes(n)) for n in (256, 12, 64, 16))])


# --- the MCP server's side --------------------------------------------------------------------


@dataclass
class Seen:
    """One request as it reached the upstream."""

    method: str
    path: str
    headers: dict[str, list[str]]  # lower-cased names
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


class CountingUpstream(BackgroundServer):
    """A stand-in MCP server that answers every request with a JSON-RPC result and records it.

    What matters is what it *saw*: for a refused token, nothing at all.
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers: dict[str, list[str]] = {}
                for name, value in self.headers.items():
                    headers.setdefault(name.lower(), []).append(value)
                with upstream._lock:
                    upstream.seen.append(Seen(self.command, self.path, headers, body))
                answer = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"upstream": "reached"}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler, poll_interval=0.01)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def since(self, index: int) -> list[Seen]:
        with self._lock:
            return self.seen[index:]

