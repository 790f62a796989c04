"""The OAuth side of MCP authorization as plain functions and small classes.

Nothing in this package imports mitmproxy: each module takes and returns plain data
so it can be tested, reasoned about and reused without a proxy.
"""
