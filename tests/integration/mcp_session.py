"""The official MCP Python SDK as a headless client: OAuth through the proxy, then MCP calls."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_client import CallbackListener, InMemoryTokenStorage, LoginHandlers, build_oauth_provider

USER = ("testuser", "testpass")


@contextlib.asynccontextmanager
async def oauth_client(
    url: str,
    mode: str = "auto",
    scope: str | None = None,
    storage: InMemoryTokenStorage | None = None,
    transport: str = "streamable",
) -> AsyncIterator[Client]:
    """A connected SDK client that logged in as the test user through the login form.

    transport "sse": the legacy HTTP+SSE transport (url is the server's GET /sse endpoint)."""
    async with CallbackListener() as listener:
        handlers = LoginHandlers(listener=listener, login_as=USER, open_browser=False, login_timeout=30)
        oauth = build_oauth_provider(url, storage or InMemoryTokenStorage(), handlers, scope)
        if transport == "sse":
            async with Client(sse_client(url, auth=oauth, timeout=30), mode=mode) as client:  # type: ignore[arg-type]
                yield client
            return
        async with (
            httpx2.AsyncClient(auth=oauth, timeout=httpx2.Timeout(30, read=120)) as http,
            Client(streamable_http_client(url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
        ):
            yield client


def text_of(result: object) -> str:
    return "\n".join(block.text for block in result.content if hasattr(block, "text"))  # type: ignore[attr-defined]
