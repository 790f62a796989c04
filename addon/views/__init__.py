"""mitmweb content views and commands: what a learner looks at to follow the OAuth dance.

    render.py          shared pure helpers: message context, JSON, times, redaction
    jwt_view.py        "MCP auth: token": JWTs decoded, with the proxy's checks and verdict
    discovery_view.py  "MCP auth: metadata changes": the facade's metadata against the IdP's; PRM annotated
    jsonrpc_view.py    "MCP auth: JSON-RPC": MCP messages and event streams, one summary line each
    content_views.py   the thin mitmproxy layer: Contentview classes and the addon registering them

Everything but content_views.py is plain Python without mitmproxy, so it is tested directly.
"""
