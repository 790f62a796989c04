"""Scale-out: three mitmdump processes behind nginx (deploy/nginx/mcp-auth.conf), sharing only config and key.

The processes keep no state a client depends on: client ids, state and codes are sealed
with the shared secret_key. So a client may register through one process, log in through
another and call through a third, which is what round robin does to it anyway.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import stack
import yaml
from conftest import SECRET_KEY, ProxyFactory, origin
from mcp_session import oauth_client, text_of
from oauth_steps import REDIRECT_URI, Pkce, authorization_url, exchange, log_in, register

pytestmark = [pytest.mark.integration, pytest.mark.scaleout]

ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def farm(
    tmp_path_factory: pytest.TempPathFactory, confdir: Path, idp: stack.Service, demo_server: stack.Service
) -> Iterator[tuple[stack.Service, list[stack.Service]]]:
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        pytest.fail("nginx is missing: run scripts/setup-scaleout (or MCP_AUTH_SKIP_SCALEOUT=1)")
    directory = tmp_path_factory.mktemp("farm")
    port = stack.free_port()
    config = directory / "config.yaml"
    # One configuration for all: public_url is nginx, the address clients use.
    config.write_text(yaml.safe_dump({
        "public_url": f"http://127.0.0.1:{port}", "issuer": idp.url, "scopes": ["mcp:tools"],
        "secret_key": SECRET_KEY, "rate_limits": {"trusted_proxies": ["127.0.0.1/32"]},
    }))
    proxies = [stack.start_proxy(config, origin(demo_server.url), stack.free_port(), confdir=confdir)
               for _ in range(3)]
    nginx = stack.start_nginx(directory / "nginx", [p.url for p in proxies], port)
    yield nginx, proxies
    nginx.stop()
    for proxy in proxies:
        proxy.stop()


def served_by(proxies: list[stack.Service], pattern: str, since: list[int]) -> set[int]:
    """Which processes logged a line matching pattern since the given line counts."""
    return {i for i, p in enumerate(proxies) if any(re.search(pattern, line) for line in p.lines[since[i]:])}


def test_sdk_client_through_nginx(farm: tuple[stack.Service, list[stack.Service]]) -> None:
    nginx, proxies = farm
    since = [len(p.lines) for p in proxies]

    async def dance() -> str:
        async with oauth_client(nginx.url + "/mcp") as client:
            texts = [text_of(await client.call_tool("hello-world", {"name": f"farm {i}"})) for i in range(6)]
            return "\n".join(texts)

    assert "Hello, farm 5!" in asyncio.run(dance())
    # Round robin spread the dance and the calls over the processes.
    assert len(served_by(proxies, r"\[authorized-call\]", since)) >= 2
    stages = [served_by(proxies, rf"\[{stage}\]", since) for stage in ("registration", "authorization", "token")]
    assert set().union(*stages), "the dance did not go through the processes"


def test_register_authorize_and_call_on_three_different_processes(
    farm: tuple[stack.Service, list[stack.Service]],
) -> None:
    nginx, (first, second, third) = farm
    resource = nginx.url + "/mcp"  # every process names the same resource: public_url is nginx
    client = register(first.url + "/register")
    pkce = Pkce.make()
    url = authorization_url(second.url + "/authorize", str(client["client_id"]), pkce, "st-1", resource)
    # The IdP sends the browser back to public_url/callback: nginx, so any of the three.
    code, state, _ = log_in(url, REDIRECT_URI)
    assert state == "st-1"
    response = exchange(third.url + "/token", str(client["client_id"]), code, pkce, resource)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for proxy in (third, first, second):
        answer = httpx.post(proxy.url + "/mcp", json={**call, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "farm", "version": "1"}}},
            headers={**ACCEPT, "Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
    refused = httpx.post(second.url + "/mcp", json=call, headers={**ACCEPT, "Authorization": "Bearer forged"})
    assert refused.status_code == 401


def test_a_key_other_than_the_farms_cannot_open_its_clients(
    farm: tuple[stack.Service, list[stack.Service]], start_proxy: ProxyFactory, idp: stack.Service,
    demo_server: stack.Service,
) -> None:
    # A process with another secret_key is not part of the farm: client ids it did not seal are refused.
    nginx, (first, _, _) = farm
    client = register(first.url + "/register")
    stranger = start_proxy(origin(demo_server.url), issuer=idp.url,
                           secret_key="a-different-key-for-a-process-outside-the-farm-0123")
    pkce = Pkce.make()
    url = authorization_url(stranger.url + "/authorize", str(client["client_id"]), pkce, "st", nginx.url + "/mcp")
    response = httpx.get(url)
    assert response.status_code == 400
    assert "client_id" in response.text
