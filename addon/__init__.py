"""mcp-auth-addon: a mitmproxy addon that does MCP authorization in front of an MCP server."""
