"""The browser tier: mitmweb with the addon, driven in headless Chromium (scripts/setup-browser installs it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives mitmweb in headless Chromium (scripts/setup-browser; MCP_AUTH_SKIP_BROWSER=1 "
        "scripts/test leaves it out)",
    )
