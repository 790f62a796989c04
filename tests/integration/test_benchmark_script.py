"""scripts/benchmark.py runs every part (--smoke: one short round) and reports what the README shows.

Not a timed test: the figures of a one-second round say nothing, and nothing here compares
them. What it asserts is that the benchmark measures what it claims: every target answered
without errors, authorized calls went through (the addon's JSON answers are the MCP
server's), the IdP saw no request while the timed runs went on, and the table names every
figure the issue asks for.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.scaleout]

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_measures_every_part_in_a_smoke_run(tmp_path: Path) -> None:
    if not shutil.which("wrk"):
        pytest.fail("wrk is missing: run scripts/setup-scaleout (or MCP_AUTH_SKIP_SCALEOUT=1)")
    out = tmp_path / "benchmark.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(out.read_text())

    requests = figures["requests"]
    assert set(requests) == {
        "tools/call, JSON answer", "tools/call, event-stream answer", "no token (401 path)", "resource metadata GET"
    }
    for kind, targets in requests.items():
        assert "mitmdump + addon" in targets and "bare mitmdump" in targets, kind
        for name, row in targets.items():
            assert row["errors"] == 0, (kind, name, row)
            assert row["requests_per_second"] > 0 and row["p50_ms"] > 0, (kind, name, row)
            if name != "direct":
                assert row["cpu_ms_per_request"] > 0, (kind, name, row)  # the proxy's own CPU was measured
    assert set(figures["first_sse_event_p50_ms"]) == {"direct", "bare mitmdump, streaming", "mitmdump + addon"}
    assert figures["idp_requests_on_the_hot_path"] == 0
    samples = figures["memory"]["samples"]
    assert samples[-1]["tokens"] >= 450  # about one request per distinct token
    assert set(figures["scale_out_requests_per_second"]) == {"1", "2"}

    table = completed.stdout
    assert "| tools/call, JSON answer | mitmdump + addon |" in table
    assert "of its requests/s" in table and "addon minus bare (streaming)" in table
    assert "Requests to the IdP during the timed runs: 0" in table
    assert "Scale-out, tools/call (JSON answer) through nginx" in table
