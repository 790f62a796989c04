"""mitmweb shows the whole dance: every stage's comment and mark in the flow list, in a real browser.

Starts the dev IdP, the demo MCP server and mitmweb with the addon, runs the official SDK
client through the dance, then logs in to mitmweb in headless Chromium and reads the flow list
as a person would see it. The screenshots go to a temporary directory; scripts/screenshots.py
takes the committed ones (docs/images/) with the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmweb_stack import DANCE, MARK_EMOJI, WebStack, drive, missing_browser, mitmweb_stack, run_dance

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebStack]:
    if reason := missing_browser():
        pytest.fail(f"the browser tier cannot run: {reason}")
    with mitmweb_stack(tmp_path_factory.mktemp("mitmweb")) as stack:
        yield stack


def stage_of(comment: str) -> str:
    return comment.split(":", 1)[0]


def test_mitmweb_flow_list_shows_every_stage_of_the_dance(web: WebStack, tmp_path: Path) -> None:
    since = len(web.proxy.lines)
    assert run_dance(web.mcp_url).startswith("Hello, joe!")
    web.proxy.wait_for_line(r"\[authorized-call\] POST /mcp", since=since)
    flows = web.flows()
    number = {stage: next(i for i, f in enumerate(flows, 1) if stage_of(f["comment"]) == stage) for stage in DANCE}

    report = drive(web, [
        {"name": "flow-list", "height": 800},
        {"name": "token-response", "flow": number["token"], "tab": "response", "view": "json", "split": 560},
        {"name": "authorized-call-comment", "flow": number["authorized-call"], "tab": "comment", "split": 560},
    ], tmp_path, expect_rows=len(flows))

    # mitmweb 12 asks for the password first (the web_password option), then shows the list.
    assert report["login"] == "403 Authentication Required"
    rows = report["rows"]
    assert [row["index"] for row in rows] == list(range(1, len(flows) + 1))
    # Each stage of the dance appears, in the dance's order, with its explanation and its mark.
    first_seen: list[str] = []
    for row, flow in zip(rows, flows, strict=True):
        stage = stage_of(row["comment"])
        assert row["comment"] == flow["comment"]
        assert row["mark"] == MARK_EMOJI[stage], (stage, row["mark"])
        if stage not in first_seen:
            first_seen.append(stage)
    assert first_seen == DANCE
    by_stage = {stage_of(row["comment"]): row for row in reversed(rows)}
    assert by_stage["challenge"]["status"] == "401"
    assert by_stage["challenge"]["comment"].startswith("challenge: no token")
    assert by_stage["resource-metadata"]["path"].endswith("/.well-known/oauth-protected-resource/mcp")
    assert by_stage["registration"]["status"] == "201"
    assert by_stage["authorization"]["status"] == "302"
    assert "iss=" in by_stage["callback"]["comment"]
    assert by_stage["token"]["method"] == "POST"
    assert by_stage["authorized-call"]["comment"].startswith("authorized-call: token for testuser")

    shots = {shot["name"]: shot for shot in report["shots"]}
    assert shots["token-response"]["title"] == "JSON"
    assert '"token_type": "Bearer"' in shots["token-response"]["text"]
    assert shots["authorized-call-comment"]["text"].startswith("Comment\nauthorized-call: token for testuser")
    for shot in shots.values():
        assert Path(shot["file"]).read_bytes().startswith(PNG)
