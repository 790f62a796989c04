#!/usr/bin/env python3
"""Make the example captures the doctor's documentation shows (docs/examples/*.mitm).

    .venv/bin/python scripts/make_example_captures.py            # both, into docs/examples/
    .venv/bin/python scripts/make_example_captures.py --only good --out /tmp/x

Everything runs on free 127.0.0.1 ports and stops at the end; the captures hold nothing worth
anything (throwaway servers, throwaway keys, tokens of an IdP that no longer runs).

good-dance.mitm
    The dev IdP, the demo MCP server, and mitmdump with mcp-auth-addon in facade mode; the
    official MCP Python SDK client registers, logs in as testuser, lists the tools and calls
    two of them. Saved by the proxy itself with `-w` (streamed event streams stored too).

sloppy-client.mitm
    A plain mitmdump, no addon, with three reverse listeners: in front of the dev IdP, of a
    deliberately sloppy MCP server written below, and of a "downstream API" that server calls.
    A deliberately sloppy client (httpx, by hand) goes through the dance: it skips PKCE the
    first time and `resource` every time, joins URLs carelessly, puts its token in the query
    once. The server answers 401 without resource_metadata, redirects its path-form metadata
    URL, names the wrong resource and a trailing-slash issuer, buffers its event stream, sends
    403 insufficient_scope without scope, and passes the client's token on to the API.
    The IdP's login pages are left out of the file (`!(~u /interaction/)`): they are HTML
    forms, not part of what the doctor checks.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import re
import secrets
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import httpx2
import stack
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_client import CallbackListener, InMemoryTokenStorage, LoginHandlers, build_oauth_provider, login_with_password

EXAMPLES = stack.ROOT / "docs" / "examples"
USER = ("testuser", "testpass")
SECRET_KEY = "example-captures-sealing-key-0123456789abcdef"  # sealing key of a proxy that ran for seconds


def log(message: str) -> None:
    print(f"make_example_captures: {message}", file=sys.stderr, flush=True)


# --- (a) a good dance through mcp-auth-addon -------------------------------------------------------


async def sdk_client(url: str) -> None:
    async with CallbackListener() as listener:
        handlers = LoginHandlers(listener=listener, login_as=USER, open_browser=False, login_timeout=30)
        oauth = build_oauth_provider(url, InMemoryTokenStorage(), handlers)
        async with (
            httpx2.AsyncClient(auth=oauth, timeout=httpx2.Timeout(30, read=60)) as http,
            Client(streamable_http_client(url, http_client=http)) as client,  # type: ignore[arg-type]
        ):
            await client.list_tools()
            await client.call_tool("hello-world", {"name": "joe"})
            await client.call_tool("count-with-progress", {"steps": 3, "interval": 0.3})


def good_dance(out: Path, work: Path) -> None:
    idp = stack.start_idp()
    server = stack.start_demo_server()
    port = stack.free_port()
    config = work / "good.yaml"
    config.write_text(
        f"public_url: http://127.0.0.1:{port}\nmcp_path: /mcp\nmode: facade\nissuer: {idp.url}\n"
        f"scopes: [mcp:tools]\nsecret_key: {SECRET_KEY}\n"
    )
    upstream = server.url.rsplit("/mcp", 1)[0]
    out.unlink(missing_ok=True)
    proxy = stack.start_proxy(
        config, upstream, port, confdir=work / "mitmproxy",
        extra=["-w", str(out), "--set", "store_streamed_bodies=true"],
    )
    with stack.running(idp, server, proxy):
        log(f"good dance: SDK client -> {proxy.url}/mcp (proxy in front of {upstream}, IdP {idp.url})")
        asyncio.run(sdk_client(f"{proxy.url}/mcp"))
    log(f"wrote {out} ({out.stat().st_size} bytes)")


# --- (b) a sloppy client and server behind a plain reverse proxy -----------------------------------


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        # One write for head and body: nothing for Nagle's algorithm to hold back.
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        lines += [f"{name}: {value}" for name, value in {**(headers or {}), "Content-Length": str(len(body))}.items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def send_json(self, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})})


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class DownstreamApi(_Quiet):
    """An API the sloppy MCP server calls: it believes whatever token it is shown."""

    def do_GET(self) -> None:
        if not self.headers.get("Authorization"):
            self.send_json(401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Bearer realm="api"'})
            return
        self.send_json(200, {"forecast": "sunny", "city": "Lisbon"})


def sloppy_server(as_public: str, api_public: str) -> type[BaseHTTPRequestHandler]:
    class SloppyMcp(_Quiet):
        def do_GET(self) -> None:
            if self.path == "/.well-known/oauth-protected-resource/mcp":
                # "moved": clients do not follow redirects for metadata
                self.send(301, b"", {"Location": "/.well-known/oauth-protected-resource"})
            elif self.path == "/.well-known/oauth-protected-resource":
                own = f"http://127.0.0.1:{self.server.server_address[1]}"
                self.send_json(200, {
                    "resource": f"{own}/mcp",  # its own address, not the URL clients use
                    "authorization_servers": [as_public + "/"],  # the issuer has no trailing slash
                    "scopes_supported": ["mcp:tools"],
                })
            else:
                self.send_json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            message = json.loads(body or b"{}")
            query = parse_qs(urlsplit(self.path).query)
            authorization = self.headers.get("Authorization", "")
            token = authorization.partition(" ")[2] or (query.get("access_token") or [""])[0]
            if not token:
                self.send_json(401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Bearer realm="mcp"'})
                return
            method, rid = message.get("method"), message.get("id")
            if method == "initialize":
                self.send_json(200, {"jsonrpc": "2.0", "id": rid, "result": {
                    "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "sloppy", "version": "0"}}})
            elif method == "notifications/initialized":
                self.send(202)
            elif method == "tools/list":
                tools = [{"name": name, "inputSchema": {"type": "object"}}
                         for name in ("slow-report", "forecast", "admin-reset")]
                self.send_json(200, {"jsonrpc": "2.0", "id": rid, "result": {"tools": tools}})
            elif method == "tools/call":
                self.tool(message.get("params", {}).get("name"), rid, token)
            else:
                self.send_json(200, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "no"}})

        def tool(self, name: str, rid: Any, token: str) -> None:
            if name == "slow-report":
                # Works for a second, then sends progress and result at once: buffered.
                time.sleep(1.0)
                events = [
                    {"jsonrpc": "2.0", "method": "notifications/progress",
                     "params": {"progressToken": rid, "progress": i, "total": 3}}
                    for i in (1, 2, 3)
                ]
                events.append({"jsonrpc": "2.0", "id": rid,
                               "result": {"content": [{"type": "text", "text": "report done"}]}})
                stream = "".join(f"event: message\ndata: {json.dumps(e)}\n\n" for e in events).encode()
                self.send(200, stream, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            elif name == "forecast":
                # Token passthrough: the client's token, straight on to another service.
                request = urllib.request.Request(api_public + "/forecast", headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(request, timeout=10) as answer:
                    forecast = json.loads(answer.read())
                self.send_json(200, {"jsonrpc": "2.0", "id": rid,
                                     "result": {"content": [{"type": "text", "text": json.dumps(forecast)}]}})
            elif name == "admin-reset":
                self.send_json(403, {"error": "insufficient_scope"},
                               {"WWW-Authenticate": 'Bearer error="insufficient_scope"'})
            else:
                self.send_json(200, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": "no tool"}})

    return SloppyMcp


def _rpc(method: str, rid: int | None, **params: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if rid is not None:
        message["id"] = rid
    if params:
        message["params"] = params
    return message


def sloppy_client(mcp_url: str, redirect_uri: str) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    with httpx.Client(timeout=30, headers=headers) as c:
        init = _rpc("initialize", 1, protocolVersion="2025-06-18", capabilities={},
                    clientInfo={"name": "sloppy-client", "version": "0"})
        c.post(mcp_url, json=init)  # 401
        origin = mcp_url.rsplit("/mcp", 1)[0]
        c.get(origin + "/.well-known/oauth-protected-resource/mcp")  # 301, not followed
        prm = c.get(origin + "/.well-known/oauth-protected-resource").json()
        metadata = c.get(prm["authorization_servers"][0] + ".well-known/openid-configuration").json()
        client = c.post(metadata["registration_endpoint"], json={
            "client_name": "sloppy client", "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code"], "response_types": ["code"],
            "token_endpoint_auth_method": "none", "application_type": "native",
        }).json()
        client_id = client["client_id"]
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                  "state": secrets.token_urlsafe(8), "scope": "mcp:tools"}
        # First try: no PKCE, no resource. The IdP refuses (PKCE is required).
        c.get(metadata["authorization_endpoint"], params=params)
        # Second try: PKCE, still no resource.
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        params.update(state=secrets.token_urlsafe(8), code_challenge=challenge, code_challenge_method="S256")
        code, _, _ = login_with_password(f"{metadata['authorization_endpoint']}?{urlencode(params)}", *USER,
                                         redirect_uri)
        token = c.post(metadata["token_endpoint"], data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": client_id, "code_verifier": verifier,
        }).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        c.post(mcp_url, json=init, headers=bearer)
        c.post(mcp_url, json=_rpc("notifications/initialized", None), headers=bearer)
        c.post(mcp_url, json=_rpc("tools/list", 2), headers=bearer)
        c.post(mcp_url, json=_rpc("tools/call", 3, name="slow-report", arguments={}), headers=bearer)
        c.post(mcp_url, json=_rpc("tools/call", 4, name="forecast", arguments={}), headers=bearer)
        c.post(mcp_url, json=_rpc("tools/call", 5, name="admin-reset", arguments={}), headers=bearer)
        c.post(f"{mcp_url}?access_token={token}", json=_rpc("tools/list", 6))


def sloppy(out: Path, work: Path) -> None:
    as_port, mcp_port, api_port = stack.free_port(), stack.free_port(), stack.free_port()
    as_public, mcp_public, api_public = (f"http://127.0.0.1:{p}" for p in (as_port, mcp_port, api_port))
    # The IdP's issuer is its address behind the capture; with keep_host_header its endpoints follow.
    idp = stack.start_idp(extra=["--issuer", as_public])
    listening = re.search(r"dev-idp listening .*\bport=(\d+)", idp.output())
    assert listening, idp.output()
    idp_url = f"http://127.0.0.1:{listening.group(1)}"
    out.unlink(missing_ok=True)
    with (
        serve(DownstreamApi) as api_url,
        stack.running(idp),
        serve(sloppy_server(as_public, api_public)) as mcp_url,
    ):
        proxy = stack.start(
            "mitmdump",
            [
                stack.MITMDUMP,
                "--listen-host", "127.0.0.1",
                "--mode", f"reverse:{idp_url}@{as_port}",
                "--mode", f"reverse:{mcp_url}@{mcp_port}",
                "--mode", f"reverse:{api_url}@{api_port}",
                "--set", "keep_host_header=true",
                "--set", f"confdir={work / 'mitmproxy'}",
                "-w", str(out),
                "!(~u /interaction/)",
            ],
            r"listening at",
            lambda m: "",
        )
        with stack.running(proxy):
            for port in (as_port, mcp_port, api_port):
                proxy.wait_for_line(rf"listening at (?:http://)?127\.0\.0\.1:{port}\b")
            log(f"sloppy: client -> {mcp_public}/mcp (plain mitmdump; IdP {as_public}, API {api_public})")
            sloppy_client(f"{mcp_public}/mcp", "http://127.0.0.1:47111/callback")
    log(f"wrote {out} ({out.stat().st_size} bytes)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("good", "sloppy"), help="make only one of the captures")
    parser.add_argument("--out", type=Path, default=EXAMPLES, help=f"directory (default {EXAMPLES})")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="example-captures-") as tmp:
        work = Path(tmp)
        if args.only in (None, "good"):
            good_dance(args.out / "good-dance.mitm", work)
        if args.only in (None, "sloppy"):
            sloppy(args.out / "sloppy-client.mitm", work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
