"""mitmproxy's handler of a client connection, for what no hook offers.

Two things the addon needs have no hook or option per flow: closing the connection to the
MCP server when it does not answer in time (upstream.py), and keeping a quiet event stream
open longer than `tcp_timeout` (streaming.py). Both go through the Proxyserver addon's
table of live connection handlers (mitmproxy 12.x). When that table is not there, the
callers fall back to mitmproxy's own behaviour and say so once.
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, http

logger = logging.getLogger("mcp_auth")
_warned: set[str] = set()


def handler_of(flow: http.HTTPFlow) -> Any | None:
    """The live ConnectionHandler serving this flow's client, or None."""
    try:
        server = ctx.master.addons.get("proxyserver")
        return server.connections.get(flow.client_conn.id) if server is not None else None
    except AttributeError:
        return None


def warn_once(what: str, detail: str) -> None:
    if what not in _warned:
        _warned.add(what)
        logger.warning("mcp_auth: %s is not possible with this mitmproxy (%s)", what, detail)
