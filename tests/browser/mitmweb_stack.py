"""The demo stack with mitmweb, a dance through it, and mitmweb driven in headless Chromium.

Shared by the browser test (tests/browser/test_mitmweb.py) and scripts/screenshots.py, so the
committed screenshots come from the code the test runs. Plain module, no pytest:

    with mitmweb_stack(tmp_dir) as web:       # dev IdP, demo MCP server, mitmweb with the addon
        run_dance(web.mcp_url)                # the official SDK client through the whole dance
        report = drive(web, shots, out_dir)   # tests/browser/mitmweb.mjs in Chromium: rows seen, screenshots

Chromium is Debian's (/usr/bin/chromium, or $MCP_AUTH_CHROMIUM), driven by playwright-core from
tests/browser/package-lock.json; scripts/setup-browser installs both.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for path in (ROOT / "scripts", ROOT / "tests" / "integration", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import stack  # noqa: E402
from mitmproxy.utils.emoji import emoji  # noqa: E402

from addon.stages import MARKS  # noqa: E402

DRIVER = HERE / "mitmweb.mjs"
SECRET_KEY = "browser-tests-sealing-key-0123456789abcdef"
WEB_PASSWORD = "workshop"
# The flow list's columns (mitmweb's web_columns option): the comment column is off by default.
WEB_COLUMNS = ["index", "icon", "path", "method", "status", "comment"]
# Widths in px, as if dragged (mitmweb keeps them in localStorage); the comment column gets the room.
COLUMN_WIDTHS = {"path": 380, "comment": 800}
DANCE = ["challenge", "resource-metadata", "as-metadata", "registration", "authorization", "callback", "token",
         "authorized-call"]
# The emoji mitmweb shows for each stage's mark: the addon sets a shortcode (addon/stages.py),
# mitmproxy turns it into an emoji (":leftwards_arrow_with_hook:" becomes a plain "↩", no emoji presentation).
MARK_EMOJI = {stage.value: emoji[shortcode] for stage, shortcode in MARKS.items()}


def chromium() -> str:
    return os.environ.get("MCP_AUTH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def missing_browser() -> str | None:
    """Why the browser cannot be driven here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(chromium()).exists():
        return f"no Chromium at {chromium()}; run scripts/setup-browser"
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        return "tests/browser/node_modules is missing; run scripts/setup-browser"
    return None


@dataclass
class WebStack:
    idp: stack.Service
    server: stack.Service
    proxy: stack.Service
    web_url: str
    password: str

    @property
    def mcp_url(self) -> str:
        return self.proxy.url + "/mcp"

    def flows(self) -> list[dict[str, Any]]:
        """mitmweb's own JSON view of the flows (the same data the UI renders)."""
        response = httpx.get(self.web_url + "/flows", headers={"Authorization": f"Bearer {self.password}"})
        response.raise_for_status()
        return list(response.json())


@contextlib.contextmanager
def mitmweb_stack(work_dir: Path, password: str = WEB_PASSWORD, extra: Sequence[str] = ()) -> Iterator[WebStack]:
    """Dev IdP, demo MCP server and mitmweb with the addon (facade, forward registration) on free ports."""
    services: list[stack.Service] = []
    try:
        idp = stack.start_idp()
        services.append(idp)
        server = stack.start_demo_server()
        services.append(server)
        port, web_port = stack.free_port(), stack.free_port()
        config = work_dir / "config.yaml"
        config.write_text(yaml.safe_dump({
            "public_url": f"http://127.0.0.1:{port}",
            "mcp_path": "/mcp",
            "mode": "facade",
            "issuer": idp.url,
            "scopes": ["mcp:tools"],
            "secret_key": SECRET_KEY,
        }))
        confdir = work_dir / "mitmproxy"
        confdir.mkdir(exist_ok=True)
        columns = [arg for column in WEB_COLUMNS for arg in ("--set", f"web_columns={column}")]
        proxy = stack.start_proxy(
            config, server.url.rsplit("/mcp", 1)[0], port, confdir=confdir, web=True,
            extra=["--no-web-open-browser", "--web-host", "127.0.0.1", "--web-port", str(web_port),
                   "--set", f"web_password={password}", *columns, *extra],
        )
        services.append(proxy)
        yield WebStack(idp, server, proxy, f"http://127.0.0.1:{web_port}", password)
    finally:
        for service in reversed(services):
            service.stop()


def run_dance(mcp_url: str) -> str:
    """The official SDK client registers, logs in as testuser, lists the tools and calls hello-world."""
    from mcp_session import oauth_client, text_of

    async def dance() -> str:
        async with oauth_client(mcp_url) as client:
            await client.list_tools()
            return text_of(await client.call_tool("hello-world", {"name": "joe"}))

    return anyio.run(dance)


def drive(
    web: WebStack,
    shots: Sequence[dict[str, Any]],
    out_dir: Path,
    *,
    expect_rows: int = 1,
    login_shot: str | None = None,
    timeout: float = 45,
) -> dict[str, Any]:
    """Run tests/browser/mitmweb.mjs: log in to mitmweb, read the flow list, take the screenshots asked for.

    Each shot is {"name": file stem, "flow": the flow's "#" in the list or None for the list itself,
    "tab": "request" | "response" | "connection" | "timing" | "comment", "view": a content view,
    "optional": skip (not fail) when that view is not there, "split": splitter x, "height": viewport height}.
    Returns {"login": the login page's heading, "rows": [{"index", "path", "mark", "method", "status",
    "comment"}], "shots": [{"name", "file", "title", "text", "views", "skipped"}]}.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    profile = Path(tempfile.mkdtemp(prefix="mitmweb-chromium-"))
    spec = {"url": web.web_url, "password": web.password, "chromium": chromium(), "out": str(out_dir),
            "profile": str(profile), "width": 1400, "height": 800, "columnWidths": COLUMN_WIDTHS,
            "expectRows": expect_rows, "loginShot": login_shot, "shots": list(shots)}
    try:
        result = subprocess.run(
            ["node", str(DRIVER)], input=json.dumps(spec), capture_output=True, text=True, timeout=timeout,
            cwd=HERE, check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if result.returncode != 0:
        raise RuntimeError(f"mitmweb.mjs failed (exit {result.returncode}):\n{result.stderr}\n{result.stdout}")
    return dict(json.loads(result.stdout))
