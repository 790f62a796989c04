"""The MCP Inspector (web UI, 2.x) in headless Chromium, through the proxy, in both modes.

The Inspector runs on Node 22 (the npm package `node`, locked in package-lock.json here) and
keeps its secrets in memory; inspector.mjs drives its page in Debian's Chromium
(scripts/setup-browser) as a person would: switch the server on, sign in at the login page the
browser is sent to, run a tool. Inspector 2.x makes its MCP and OAuth requests from its own
Node backend, so no CORS is involved (the browser only visits /authorize and the login page);
browser-side clients are covered by tests/integration/test_browser_clients.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import stack

pytestmark = [pytest.mark.integration, pytest.mark.browser]

HERE = Path(__file__).resolve().parent
NODE_22 = HERE / "node_modules/.bin/node"
INSPECTOR_JS = HERE / "node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
INSPECTOR = "MCP Inspector " + json.loads(
    (HERE / "node_modules/@modelcontextprotocol/inspector/package.json").read_text()
)["version"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def start_inspector(server_url: str, home: Path) -> stack.Service:
    env = {
        "CLIENT_PORT": str(stack.free_port()),
        "MCP_SANDBOX_PORT": str(stack.free_port()),
        "MCP_INSPECTOR_SECRET_STORE": "memory",
        "MCP_AUTO_OPEN_ENABLED": "false",
        "BROWSER": "true",
        "HOME": str(home),
    }
    return stack.start(
        "inspector",
        [str(NODE_22), str(INSPECTOR_JS), "--web", "--transport", "http", "--server-url", server_url],
        r"(http://127\.0\.0\.1:\d+/?\?MCP_INSPECTOR_API_TOKEN=\S+)",
        lambda m: m.group(1),
        env=env,
    )


def drive(inspector_url: str, shots: Path) -> dict[str, object]:
    spec = {"url": inspector_url, "chromium": CHROMIUM, "name": "inspector", "shots": str(shots)}
    completed = subprocess.run(
        ["node", str(HERE / "inspector.mjs"), json.dumps(spec)],
        capture_output=True, text=True, timeout=120, cwd=HERE, env={**os.environ},
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    assert lines, f"inspector.mjs printed no report:\n{completed.stdout}\n{completed.stderr}"
    return json.loads(lines[-1])


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("facade", marks=pytest.mark.matrix("clients", INSPECTOR, "facade")),
        pytest.param("resource-server", marks=pytest.mark.matrix("clients", INSPECTOR, "resource-server")),
    ],
)
def test_inspector_in_chromium(mode: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup-browser (or MCP_AUTH_SKIP_BROWSER=1)")
    proxy: stack.Service = request.getfixturevalue("facade_proxy" if mode == "facade" else "resource_server_proxy")
    since = len(proxy.lines)
    inspector = start_inspector(proxy.url + "/mcp", tmp_path / "home")
    try:
        report = drive(inspector.url, tmp_path / "shots")
    finally:
        inspector.stop()
    assert "error" not in report, f"{report} (screenshots in {tmp_path / 'shots'})"
    assert report["connected"] is True
    assert report["tools"] == ["hello-world", "count-with-progress", "whoami"]
    assert "Hello, inspector!" in str(report["result"])
    proxy.wait_for_line(r"\[authorized-call\] POST /mcp ", since=since)
