"""Real processes for the end-to-end tests: dev IdP (oidc-provider), demo MCP servers, mitmdump.

Every service binds to 127.0.0.1, is waited on through its ready line, and is stopped at
the end of the session (and dies with the test process if that is killed).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import stack  # noqa: E402
from matrix_cells import pytest_runtest_makereport, pytest_sessionfinish  # noqa: E402, F401

SECRET_KEY = "integration-tests-sealing-key-0123456789abcdef"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mitmproxy confdir for the session, so its CA is generated once."""
    return tmp_path_factory.mktemp("mitmproxy")


@pytest.fixture(scope="session")
def static_proxy_port() -> int:
    # Known before the IdP starts: it is the static client's registered redirect URI.
    return stack.free_port()


@pytest.fixture(scope="session")
def idp(static_proxy_port: int) -> Iterator[stack.Service]:
    service = stack.start_idp(static_redirect_uris=[f"http://127.0.0.1:{static_proxy_port}/callback"])
    yield service
    service.stop()


@pytest.fixture(scope="session")
def other_idp() -> Iterator[stack.Service]:
    """A second, unrelated IdP: its tokens come from a foreign issuer."""
    service = stack.start_idp()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def demo_server() -> Iterator[stack.Service]:
    service = stack.start_demo_server()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def stateless_server() -> Iterator[stack.Service]:
    service = stack.start_demo_server(stateless=True)
    yield service
    service.stop()


def origin(url: str) -> str:
    return url.rsplit("/mcp", 1)[0]


ProxyFactory = Callable[..., stack.Service]


@pytest.fixture(scope="session")
def start_proxy(tmp_path_factory: pytest.TempPathFactory, confdir: Path) -> Iterator[ProxyFactory]:
    """Start mitmdump with the addon and a config written from keyword overrides."""
    started: list[stack.Service] = []

    def start(upstream: str, port: int | None = None, extra: Sequence[str] = (), **overrides: Any) -> stack.Service:
        """extra: mitmproxy command-line arguments (e.g. ["--set", "tcp_timeout=3"])."""
        port = port or stack.free_port()
        public_url = f"http://127.0.0.1:{port}"
        config: dict[str, Any] = {
            "public_url": public_url,
            "mcp_path": "/mcp",
            "mode": "facade",
            "scopes": ["mcp:tools"],
            "secret_key": SECRET_KEY,
        }
        config.update(overrides)
        path = tmp_path_factory.mktemp("proxy") / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        service = stack.start_proxy(path, upstream, port, confdir=confdir, extra=extra)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="session")
def facade_proxy(start_proxy: ProxyFactory, idp: stack.Service, demo_server: stack.Service) -> stack.Service:
    """Facade mode, forward registration, in front of the stateful demo server."""
    return start_proxy(origin(demo_server.url), issuer=idp.url)


@pytest.fixture(scope="session")
def static_proxy(
    start_proxy: ProxyFactory, idp: stack.Service, demo_server: stack.Service, static_proxy_port: int
) -> stack.Service:
    return start_proxy(
        origin(demo_server.url),
        port=static_proxy_port,
        issuer=idp.url,
        registration={"mode": "static", "client_id": "mcp-proxy", "client_secret": "mcp-proxy-secret"},
    )


@pytest.fixture(scope="session")
def resource_server_proxy(start_proxy: ProxyFactory, idp: stack.Service, demo_server: stack.Service) -> stack.Service:
    return start_proxy(origin(demo_server.url), issuer=idp.url, mode="resource-server")


@pytest.fixture(scope="session")
def stateless_proxy(start_proxy: ProxyFactory, idp: stack.Service, stateless_server: stack.Service) -> stack.Service:
    return start_proxy(origin(stateless_server.url), issuer=idp.url)
