"""Diagnosis of captured MCP authorization traffic: the dance per client, and the doctor.

Pure logic over a small neutral record of one HTTP exchange, so it works on flows this
proxy recorded (with its `mcp_auth.*` metadata) and on a capture of any MCP client talking
to any MCP server, made with a plain mitmproxy.

    exchange.py   Exchange: one request/response as plain data, with the readers every check needs
    classify.py   which stage of the dance an exchange is: the proxy's record, else read from the HTTP
    dance.py      the dance per client, in order, with the first stage that failed
    doctor.py     spec checks by stage; `python -m addon.diagnosis.doctor FILE.mitm`
    flows.py      the only mitmproxy import: flows and .mitm files -> Exchange
"""
