"""mitmproxy flows -> Exchange: the one place the diagnosis reads mitmproxy's objects.

The URL the client called: in reverse mode mitmproxy rewrites the request's host and its
Host header to the upstream before anything is recorded, so the flow's URL is the MCP
server's, not the one the client dialed. The client's is rebuilt from the listening address
the connection came in on (and the client side's TLS), or from the Host header when it was
kept (`keep_host_header`). A proxy reached through a DNS name or a load balancer shows up under
the address mitmproxy listened on; `--public-url` on the doctor maps it back.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mitmproxy import http, io
from mitmproxy.net.http import url as mitm_url
from mitmproxy.proxy import mode_specs

from addon.diagnosis.exchange import Exchange, ProxyRecord

STAGE_KEY = "mcp_auth.stage"
EXPLANATION_KEY = "mcp_auth.explanation"
CLIENT_KEY = "mcp_auth.client"
TOKEN_CHECKS_KEY = "mcp_auth.token_checks"


def _authority(host: str, port: int, scheme: str) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return mitm_url.hostport(scheme, host, port)


def client_url(flow: http.HTTPFlow) -> str:
    request = flow.request
    client = flow.client_conn
    mode = client.proxy_mode
    if isinstance(mode, mode_specs.ReverseMode):
        scheme = "https" if client.tls_established else "http"
        host_header = request.host_header
        upstream = _authority(request.host, request.port, request.scheme)
        if host_header and host_header.lower() != upstream.lower():
            authority = host_header  # keep_host_header: the client's own
        elif client.sockname and client.sockname[0]:
            authority = _authority(str(client.sockname[0]), int(client.sockname[1]), scheme)
        else:
            return request.url
        return f"{scheme}://{authority}{request.path}"
    return request.pretty_url


def _proxy_record(metadata: dict[str, Any]) -> ProxyRecord | None:
    stage = metadata.get(STAGE_KEY)
    if not isinstance(stage, str):
        return None
    explanation = metadata.get(EXPLANATION_KEY)
    client = metadata.get(CLIENT_KEY)
    checks = metadata.get(TOKEN_CHECKS_KEY)
    return ProxyRecord(
        stage,
        explanation if isinstance(explanation, str) else None,
        client if isinstance(client, str) else None,
        tuple(c for c in checks if isinstance(c, dict)) if isinstance(checks, list) else (),
    )


def _headers(headers: http.Headers) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in headers.items(multi=True))


def exchange_from_flow(flow: http.HTTPFlow) -> Exchange:
    request = flow.request
    response = flow.response
    url = client_url(flow)
    peer = flow.client_conn.peername
    return Exchange(
        id=flow.id,
        method=request.method,
        url=url,
        request_headers=_headers(request.headers),
        request_body=request.raw_content,
        status=response.status_code if response is not None else None,
        response_headers=_headers(response.headers) if response is not None else (),
        response_body=response.raw_content if response is not None else None,
        started=request.timestamp_start or 0.0,
        request_end=request.timestamp_end,
        response_start=response.timestamp_start if response is not None else None,
        response_end=response.timestamp_end if response is not None else None,
        client_address=str(peer[0]) if peer and peer[0] else "",
        connection=flow.client_conn.id or "",
        error=flow.error.msg if flow.error else None,
        proxy=_proxy_record(flow.metadata),
        upstream_url=request.url if request.url != url else None,
    )


def exchanges_from_flows(flows: Iterable[object]) -> list[Exchange]:
    """The HTTP flows among `flows` (TCP, UDP, DNS flows are skipped)."""
    return [exchange_from_flow(f) for f in flows if isinstance(f, http.HTTPFlow)]


def read_exchanges(path: str | Path) -> list[Exchange]:
    """Every HTTP flow of a mitmproxy flow file (.mitm)."""
    with open(path, "rb") as f:
        return exchanges_from_flows(io.FlowReader(f).stream())
