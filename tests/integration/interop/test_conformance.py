"""The official conformance suite's server scenarios, direct and through the proxy.

`@modelcontextprotocol/conformance` (Node 22, from the npm package `node`, both locked in
package-lock.json here) runs every server scenario against conformance_server.mjs, which
implements the suite's fixtures on the official TypeScript SDK: once directly, once through
the proxy. The suite cannot log in, so a plain mitmdump in front (mitmproxy's own
`modify_headers`, streaming on) adds a valid token to each of its requests; the addon's proxy
then checks it and strips it like any other. Each check that succeeds directly must succeed
through the proxy, and the proxy must add no warning or failure of its own.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import stack
from matrix_cells import record
from oauth_steps import metadata, token_from

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
NODE_22 = HERE / "node_modules/.bin/node"
CONFORMANCE = HERE / "node_modules/@modelcontextprotocol/conformance/dist/index.js"
ProxyFactory = Callable[..., stack.Service]  # the start_proxy fixture (../conftest.py)


@pytest.fixture(scope="module")
def fixture_server() -> Iterator[stack.Service]:
    service = stack.start(
        "conformance-server",
        ["node", str(HERE / "conformance_server.mjs")],
        r"conformance-server listening url=(\S+)",
        lambda m: m.group(1),
    )
    yield service
    service.stop()


def run_suite(url: str, output: Path) -> dict[str, list[tuple[str, str]]]:
    """scenario -> [(check id, status)], from the suite's own checks.json files."""
    completed = subprocess.run(
        [str(NODE_22), str(CONFORMANCE), "server", "--url", url, "--suite", "all", "-o", str(output)],
        capture_output=True, text=True, timeout=300, cwd=output.parent,
    )
    results: dict[str, list[tuple[str, str]]] = {}
    for checks in sorted(output.glob("*/checks.json")):
        named = re.match(r"server-(.+)-\d{4}-\d{2}-\d{2}T", checks.parent.name)  # server-<scenario>-<time>
        assert named, checks.parent.name
        scenario = named.group(1)
        results[scenario] = [(c["id"], c["status"]) for c in json.loads(checks.read_text())]
    assert results, f"the suite wrote no results:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    return results


def verdict(checks: list[tuple[str, str]]) -> str:
    statuses = {status for _, status in checks}
    if "FAILURE" in statuses:
        return "fail"
    if "SUCCESS" in statuses:
        return "pass" if "WARNING" not in statuses else "pass, with warnings"
    return "warnings only" if "WARNING" in statuses else "informational"


def test_every_scenario_that_passes_direct_passes_through_the_proxy(
    start_proxy: ProxyFactory, idp: stack.Service, fixture_server: stack.Service, confdir: Path, tmp_path: Path
) -> None:
    injector_port = stack.free_port()
    upstream = fixture_server.url.rsplit("/mcp", 1)[0]
    # The suite's dns-rebinding scenario sends Origin: its own target, the injector.
    proxy = start_proxy(upstream, issuer=idp.url, cors={"allowed_origins": [f"http://127.0.0.1:{injector_port}"]})
    token = token_from(metadata(idp.url), proxy.url + "/mcp")
    injector = stack.start(
        "token-injector",
        [stack.MITMDUMP, "--mode", f"reverse:{proxy.url}", "--listen-host", "127.0.0.1", "-p", str(injector_port),
         "--set", f"confdir={confdir}", "--set", "stream_large_bodies=1", "--set", "flow_detail=0",
         "--set", f"modify_headers=/~q/Authorization/Bearer {token}"],
        r"listening at (?:http://)?127\.0\.0\.1:(\d+)",
        lambda m: f"http://127.0.0.1:{m.group(1)}",
    )
    try:
        direct = run_suite(fixture_server.url, tmp_path / "direct")
        since = len(proxy.lines)
        proxied = run_suite(injector.url + "/mcp", tmp_path / "proxied")
    finally:
        injector.stop()
    assert any("[authorized-call]" in line for line in proxy.lines[since:]), "the suite's calls did not pass the gate"
    assert set(direct) == set(proxied)
    for scenario in direct:
        record("conformance", scenario, "direct", verdict(direct[scenario]))
        record("conformance", scenario, "through the proxy", verdict(proxied[scenario]))
    lost = {
        scenario: sorted(set(direct[scenario]) - set(proxied[scenario]))
        for scenario in direct
        if set(direct[scenario]) != set(proxied[scenario])
    }
    assert not lost, f"checks that came out differently through the proxy (direct result shown): {lost}"
    assert sum(verdict(checks) == "pass" for checks in direct.values()) >= 30
