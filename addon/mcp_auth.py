"""mcp-auth-addon: MCP authorization in front of an MCP server, as a mitmproxy addon.

    mitmdump -s addon/mcp_auth.py --mode reverse:http://127.0.0.1:3000 -p 8000 \
        --set mcp_auth_config=config/config.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

# `-s` loads this file as a script, not as part of the package: make the package importable
# from a plain checkout too.
_checkout = str(Path(__file__).resolve().parent.parent)
if _checkout not in sys.path:
    sys.path.insert(0, _checkout)

from addon.proxy.configuration import Configuration  # noqa: E402
from addon.proxy.request_size import RequestSizeLimit  # noqa: E402
from addon.proxy.router import Router  # noqa: E402
from addon.proxy.startup_objects import StartupObjects  # noqa: E402
from addon.proxy.streaming import EventStreaming  # noqa: E402
from addon.proxy.upstream import UpstreamErrors  # noqa: E402
from addon.views.content_views import ContentViews  # noqa: E402
from addon.views.dance import DanceCommands  # noqa: E402

configuration = Configuration()

addons = [
    configuration,
    Router(configuration),
    EventStreaming(),
    UpstreamErrors(configuration),
    RequestSizeLimit(configuration),
    ContentViews(),
    DanceCommands(),
    StartupObjects(),  # last: its `running` comes after everyone else's start-up
]
