"""The whole MCP authorization dance through the proxy in facade mode, with the official SDK client."""

from __future__ import annotations

import json
import time

import pytest
import stack
from mcp_session import oauth_client, text_of

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DANCE = ["challenge", "resource-metadata", "as-metadata", "registration", "authorization", "callback", "token",
         "authorized-call"]


def stages_logged(proxy: stack.Service, since: int) -> list[str]:
    """Stage names of the proxy's log lines printed after line `since`, in order, without repeats."""
    seen: list[str] = []
    for line in proxy.lines[since:]:
        if "] [" in line:
            stage = line.split("] [", 1)[1].split("]", 1)[0]
            if stage not in seen:
                seen.append(stage)
    return seen


async def test_sdk_client_completes_the_dance_and_calls_hello_world(facade_proxy: stack.Service) -> None:
    since = len(facade_proxy.lines)
    async with oauth_client(facade_proxy.url + "/mcp") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("hello-world", {"name": "joe"})
    assert {"hello-world", "count-with-progress", "whoami"} <= tools
    assert text_of(result).startswith("Hello, joe! Your user agent is: ")
    facade_proxy.wait_for_line(r"\[authorized-call\] POST /mcp", since=since)
    assert stages_logged(facade_proxy, since) == DANCE


async def test_token_never_reaches_the_mcp_server_and_identity_does(facade_proxy: stack.Service) -> None:
    async with oauth_client(facade_proxy.url + "/mcp") as client:
        seen = json.loads(text_of(await client.call_tool("whoami", {})))
    assert seen["authorization_present"] is False
    assert seen["x-mcp-auth-subject"] == "testuser"
    assert "mcp:tools" in seen["x-mcp-auth-scopes"].split()
    assert seen["x-mcp-auth-client-id"]
    assert seen["x-mcp-auth-issuer"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_both_transport_generations_pass(facade_proxy: stack.Service, mode: str) -> None:
    since = len(facade_proxy.lines)
    async with oauth_client(facade_proxy.url + "/mcp", mode=mode) as client:
        version = client.protocol_version
        first = text_of(await client.call_tool("hello-world", {"name": "ann"}))
        second = text_of(await client.call_tool("hello-world", {"name": "bob"}))
    assert first.startswith("Hello, ann!") and second.startswith("Hello, bob!")
    assert (version == "2026-07-28") == (mode == "2026-07-28")
    if mode == "legacy":
        # The 2025 transport keeps a session (its id passes both ways) and closes it with DELETE.
        facade_proxy.wait_for_line(r"\[authorized-call\] DELETE /mcp", since=since)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_stateless_server_behind_the_proxy(stateless_proxy: stack.Service, mode: str) -> None:
    async with oauth_client(stateless_proxy.url + "/mcp", mode=mode) as client:
        result = await client.call_tool("hello-world", {"name": "joe"})
    assert text_of(result).startswith("Hello, joe! Your user agent is: ")


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_progress_events_stream_through_as_sent(facade_proxy: stack.Service, mode: str) -> None:
    arrivals: list[tuple[float, float]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        arrivals.append((time.monotonic(), progress))

    async with oauth_client(facade_proxy.url + "/mcp", mode=mode) as client:
        started = time.monotonic()
        result = await client.call_tool(
            "count-with-progress", {"steps": 4, "interval": 0.4}, progress_callback=on_progress
        )
        finished = time.monotonic()
    assert text_of(result) == "counted to 4"
    assert [p for _, p in arrivals] == [1, 2, 3, 4]
    # Buffered, every event would arrive with the result; streamed, the first one comes about
    # one interval in, well over a second before the last.
    assert arrivals[0][0] - started < finished - started - 0.8
    assert arrivals[-1][0] - arrivals[0][0] > 0.8
