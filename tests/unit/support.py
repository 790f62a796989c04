"""Real things the unit tests run against: a local HTTP server serving JSON, signing keys, tokens.

The JSON server is a genuine `http.server` on 127.0.0.1 in a thread, so the code under test
makes real HTTP requests (httpx) and the tests can count them and change what is served.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


class QuickHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a reverse DNS lookup per server: skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class BackgroundServer:
    """An HTTP server with `handler` on a free 127.0.0.1 port, serving from a daemon thread.

    The test servers (JSON, token lab, counting upstreams) differ only in their handler.
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler], poll_interval: float = 0.005) -> None:
        self._httpd = QuickHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class JsonServer(BackgroundServer):
    """Serves `routes[path] = (status, document)` as JSON; counts every request by path."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, Any]] = {}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.hits[path] += 1
                    status, document = server.routes.get(path, (404, {"error": "not_found"}))
                body = document if isinstance(document, bytes) else json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def serve(self, path: str, document: Any, status: int = 200) -> None:
        with self._lock:
            self.routes[path] = (status, document)

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits[path]


@contextmanager
def json_server() -> Iterator[JsonServer]:
    with JsonServer() as server:
        yield server


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (the port was just released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- keys and tokens --------------------------------------------------------------------------


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: PrivateKeyTypes, kid: str, alg: str | None = None, **extra: Any) -> dict[str, Any]:
    """The public half of `key` as a JWK, as an IdP publishes it."""
    algorithm = (
        jwt.algorithms.ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else jwt.algorithms.RSAAlgorithm
    )
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))  # type: ignore[arg-type]
    jwk["kid"] = kid
    jwk["use"] = "sig"
    if alg:
        jwk["alg"] = alg
    jwk.update(extra)
    return jwk


def sign(
    key: PrivateKeyTypes,
    claims: dict[str, Any],
    *,
    alg: str = "RS256",
    kid: str | None = "k1",
    headers: dict[str, Any] | None = None,
) -> str:
    all_headers = dict(headers or {})
    if kid is not None:
        all_headers["kid"] = kid
    return jwt.encode(claims, key, algorithm=alg, headers=all_headers)  # type: ignore[arg-type]


def claims(issuer: str, audience: str | list[str], **overrides: Any) -> dict[str, Any]:
    """A good access token's claims; pass `name=None` to drop a claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": "alice",
        "client_id": "client-1",
        "scope": "mcp:tools",
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


class Clock:
    """Stands in for the `time` module inside tokens.py: wall time is real, monotonic time can jump."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time()

    def advance(self, seconds: float) -> None:
        self.offset += seconds
