"""The interop matrix: what each test proves goes into a table, written from the run itself.

Hooks, imported by conftest.py.

A test marked `@pytest.mark.matrix(table, row, column)` fills one cell with its outcome;
a test that measures many things at once calls `record` for each.
At the end of the run the cells go to build/interop-matrix.json, and with
MCP_AUTH_WRITE_MATRIX=1 into README.md between the interop markers too
(scripts/interop_matrix.py renders them), so the README's table is the last run's, not
written by hand.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "build" / "interop-matrix.json"
_cells: dict[tuple[str, str, str], str] = {}


def record(table: str, row: str, column: str, result: str) -> None:
    """Fill a cell from inside a test (one test, many cells: the conformance scenarios)."""
    _cells[(table, row, column)] = result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    marker = item.get_closest_marker("matrix")
    if marker is None:
        return report
    key = tuple(marker.args)
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _cells[key] = "skipped" if report.skipped else "pass" if report.passed else "fail"  # type: ignore[assignment]
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _cells:
        return
    cells = [{"table": t, "row": r, "column": c, "result": v} for (t, r, c), v in sorted(_cells.items())]
    document = {"generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cells": cells}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    if os.environ.get("MCP_AUTH_WRITE_MATRIX") == "1":
        sys.path.insert(0, str(ROOT / "scripts"))
        import interop_matrix

        interop_matrix.write_readme(document, ROOT / "README.md")
