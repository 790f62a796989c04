"""Resource-server mode: the proxy only guards the MCP path; clients log in at the IdP directly."""

from __future__ import annotations

import httpx
import pytest
import stack
from mcp_session import oauth_client, text_of

pytestmark = [pytest.mark.integration]


def test_resource_metadata_names_the_idp(resource_server_proxy: stack.Service, idp: stack.Service) -> None:
    document = httpx.get(resource_server_proxy.url + "/.well-known/oauth-protected-resource/mcp").json()
    assert document["authorization_servers"] == [idp.url]
    assert document["resource"] == resource_server_proxy.url + "/mcp"
    # The proxy is not an authorization server in this mode.
    for path in ["/.well-known/oauth-authorization-server", "/register", "/authorize", "/token"]:
        assert httpx.get(resource_server_proxy.url + path).status_code == 404, path


@pytest.mark.anyio
async def test_sdk_client_logs_in_at_the_idp_and_calls_through_the_proxy(
    resource_server_proxy: stack.Service,
) -> None:
    since = len(resource_server_proxy.lines)
    async with oauth_client(resource_server_proxy.url + "/mcp") as client:
        result = await client.call_tool("hello-world", {"name": "joe"})
    assert text_of(result).startswith("Hello, joe! Your user agent is: ")
    resource_server_proxy.wait_for_line(r"\[authorized-call\] POST /mcp", since=since)
    stages = {line.split("] [", 1)[1].split("]")[0] for line in resource_server_proxy.lines[since:] if "] [" in line}
    assert stages == {"challenge", "resource-metadata", "authorized-call"}
