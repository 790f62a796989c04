"""The mitmproxy layer, driven through mitmproxy's own test helpers against a real local IdP.

A threaded http.server plays the IdP (OIDC metadata and a JWKS of a key the tests sign with);
the addons are built as `addon/mcp_auth.py` builds them (next to mitmproxy's Proxyserver addon,
which declares `connection_strategy`), configured through mitmproxy's options, and flows go
through `Router.request` and `EventStreaming.responseheaders` as the proxy would send them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mitmproxy import exceptions, http
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons, tflow, tutils

from addon.protocol.identity_provider import IdentityProvider
from addon.proxy import metadata
from addon.proxy.configuration import Configuration
from addon.proxy.gate import CLIENT_ID_HEADER, ISSUER_HEADER, SCOPES_HEADER, SUBJECT_HEADER
from addon.proxy.router import Router
from addon.proxy.streaming import EventStreaming
from addon.stages import MARKS, Stage, stage_of

from .support import JsonServer, claims, closed_port_url, public_jwk, sign

PUBLIC = "http://127.0.0.1:8000"
RESOURCE = PUBLIC + "/mcp"
PRM_URL = PUBLIC + "/.well-known/oauth-protected-resource/mcp"
MISSING_TOKEN_CHALLENGE = f'Bearer resource_metadata="{PRM_URL}", scope="mcp:tools"'
REVERSE = ["reverse:http://127.0.0.1:3000"]
SECRET_KEY = "unit-test-secret-key-0123456789abcdefghij"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def oidc_metadata(issuer: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/auth",
        "token_endpoint": issuer + "/token",
        "jwks_uri": issuer + "/jwks",
        "introspection_endpoint": issuer + "/introspect",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid"],
    }


def write_config(path: Path, issuer: str, **extra: str) -> Path:
    lines = {
        "public_url": PUBLIC,
        "mcp_path": "/mcp",
        "mode": "facade",
        "issuer": issuer,
        "scopes": "[mcp:tools]",
        "secret_key": SECRET_KEY,
        "resource_name": "Unit test MCP",
        "clock_skew_seconds": "0",
    }
    lines.update(extra)
    path.write_text("".join(f"{key}: {value}\n" for key, value in lines.items()))
    return path


@dataclass
class Proxy:
    tctx: taddons.context
    config: Configuration
    router: Router
    streaming: EventStreaming
    idp_server: JsonServer
    key: rsa.RSAPrivateKey
    tmp_path: Path

    @property
    def issuer(self) -> str:
        return self.idp_server.url

    def token(self, **overrides: Any) -> str:
        return sign(self.key, claims(self.issuer, RESOURCE, **overrides), kid="k1")

    def reconfigure(self, **extra: str) -> None:
        issuer = extra.pop("issuer", self.issuer)
        path = write_config(self.tmp_path / f"config-{time.monotonic_ns()}.yaml", issuer, **extra)
        self.tctx.configure(self.config, mcp_auth_config=str(path))

    @property
    def idp(self) -> IdentityProvider:
        return self.config.current().idp

    async def send(self, flow: http.HTTPFlow) -> http.HTTPFlow:
        await self.router.request(flow)
        return flow


@pytest.fixture
async def proxy(server: JsonServer, rsa_private: rsa.RSAPrivateKey, tmp_path: Path) -> AsyncIterator[Proxy]:
    server.serve("/.well-known/openid-configuration", oidc_metadata(server.url))
    server.serve("/jwks", {"keys": [public_jwk(rsa_private, "k1", "RS256")]})
    config = Configuration()
    router = Router(config)
    streaming = EventStreaming()
    with taddons.context(proxyserver.Proxyserver(), config, router, streaming) as tctx:
        path = write_config(tmp_path / "config.yaml", server.url)
        tctx.configure(config, mode=REVERSE, mcp_auth_config=str(path))
        yield Proxy(tctx, config, router, streaming, server, rsa_private, tmp_path)
        await config.done()


def request(
    method: str = "POST", path: str = "/mcp", headers: dict[str, str] | None = None, body: bytes = b""
) -> http.HTTPFlow:
    # In reverse mode Host is already the upstream's when hooks run.
    fields = [(b"Host", b"127.0.0.1:3000"), (b"Content-Length", str(len(body)).encode())]
    fields += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    req = tutils.treq(
        method=method.encode(),
        path=path.encode(),
        host="127.0.0.1",
        port=3000,
        headers=http.Headers(fields),
        content=body,
    )
    return tflow.tflow(req=req)


def mcp_call(token: str | None = None, method: str = "POST", path: str = "/mcp", **headers: str) -> http.HTTPFlow:
    all_headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    all_headers.update(headers)
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}' if method == "POST" else b""
    return request(method, path, all_headers, body)


def assert_stage(flow: http.HTTPFlow, stage: Stage) -> None:
    assert stage_of(flow) == stage
    assert flow.comment.startswith(f"{stage.value}: "), flow.comment
    assert flow.marked == MARKS[stage]


def json_of(flow: http.HTTPFlow) -> Any:
    assert flow.response is not None
    assert flow.response.headers["content-type"].startswith("application/json")
    return json.loads(flow.response.get_text() or "")


# --- discovery --------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
async def test_protected_resource_metadata_at_both_well_known_paths(proxy: Proxy, path: str) -> None:
    flow = await proxy.send(request("GET", path, {"Authorization": "Bearer not-checked-here"}))
    assert flow.response is not None and flow.response.status_code == 200
    assert json_of(flow) == {
        "resource": RESOURCE,
        "authorization_servers": [PUBLIC],
        "scopes_supported": ["mcp:tools"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Unit test MCP",
    }
    assert flow.response.headers["Access-Control-Allow-Origin"] == "*"
    assert_stage(flow, Stage.RESOURCE_METADATA)


@pytest.mark.anyio
async def test_protected_resource_metadata_in_resource_server_mode_names_the_idp(proxy: Proxy) -> None:
    proxy.reconfigure(mode="resource-server")
    flow = await proxy.send(request("GET", "/.well-known/oauth-protected-resource/mcp"))
    assert json_of(flow)["authorization_servers"] == [proxy.issuer]
    flow = await proxy.send(request("GET", "/.well-known/oauth-authorization-server"))
    assert flow.response is not None and flow.response.status_code == 404
    assert_stage(flow, Stage.NOT_FOUND)


@pytest.mark.anyio
async def test_public_url_with_a_base_path(proxy: Proxy) -> None:
    proxy.reconfigure(public_url=PUBLIC + "/gw")
    prm_url = PUBLIC + "/.well-known/oauth-protected-resource/gw/mcp"  # RFC 9728 §3.1: inserted before the path
    flow = await proxy.send(request("GET", "/.well-known/oauth-protected-resource/gw/mcp"))
    assert json_of(flow)["resource"] == PUBLIC + "/gw/mcp"
    assert_stage(flow, Stage.RESOURCE_METADATA)
    flow = await proxy.send(mcp_call(None, path="/gw/mcp"))
    assert flow.response is not None and flow.response.status_code == 401
    assert flow.response.headers["WWW-Authenticate"] == f'Bearer resource_metadata="{prm_url}", scope="mcp:tools"'
    flow = await proxy.send(mcp_call(proxy.token(aud=PUBLIC + "/gw/mcp"), path="/gw/mcp"))
    assert flow.response is None
    flow = await proxy.send(mcp_call(proxy.token(aud=PUBLIC + "/gw/mcp"), path="/mcp"))
    assert flow.response is not None and flow.response.status_code == 404


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"])
async def test_facade_authorization_server_metadata(proxy: Proxy, path: str) -> None:
    flow = await proxy.send(request("GET", path))
    document = json_of(flow)
    assert document["issuer"] == PUBLIC
    assert document["authorization_endpoint"] == PUBLIC + "/authorize"
    assert document["token_endpoint"] == PUBLIC + "/token"
    assert document["registration_endpoint"] == PUBLIC + "/register"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert "introspection_endpoint" not in document
    assert_stage(flow, Stage.AS_METADATA)
    assert "introspection_endpoint" in flow.comment  # the comment says what was left out


@pytest.mark.anyio
async def test_discovery_is_served_while_the_idp_is_down(proxy: Proxy) -> None:
    proxy.idp_server.routes.clear()
    flow = await proxy.send(request("GET", "/.well-known/oauth-protected-resource/mcp"))
    assert flow.response is not None and flow.response.status_code == 200
    flow = await proxy.send(request("GET", "/.well-known/oauth-authorization-server"))
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.headers["Retry-After"]
    assert json_of(flow)["error"] == "temporarily_unavailable"


# --- the gate on the MCP path -----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
async def test_no_token_gets_the_challenge(proxy: Proxy, method: str) -> None:
    flow = await proxy.send(mcp_call(None, method))
    assert flow.response is not None
    assert flow.response.status_code == 401
    assert flow.response.headers["WWW-Authenticate"] == MISSING_TOKEN_CHALLENGE
    assert flow.response.headers["Cache-Control"] == "no-store"
    assert json_of(flow)["error"] == "invalid_token"
    assert_stage(flow, Stage.CHALLENGE)


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/mcp?session=1", "/mcp/", "/mcp/messages"])
async def test_everything_under_the_mcp_path_is_gated(proxy: Proxy, path: str) -> None:
    flow = await proxy.send(mcp_call(None, path=path))
    assert flow.response is not None and flow.response.status_code == 401
    assert_stage(flow, Stage.CHALLENGE)


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/", "/mcpx", "/admin", "/MCP", "/.well-known/other"])
async def test_unknown_path_is_404_and_not_forwarded(proxy: Proxy, path: str) -> None:
    flow = await proxy.send(mcp_call(proxy.token(), path=path))
    assert flow.response is not None and flow.response.status_code == 404
    assert json_of(flow)["error"] == "not_found"
    assert_stage(flow, Stage.NOT_FOUND)


@pytest.mark.anyio
async def test_bad_token_is_invalid_token(proxy: Proxy) -> None:
    flow = await proxy.send(mcp_call("not-a-jwt"))
    assert flow.response is not None and flow.response.status_code == 401
    header = flow.response.headers["WWW-Authenticate"]
    assert header.startswith(f'Bearer error="invalid_token", resource_metadata="{PRM_URL}", scope="mcp:tools", ')
    assert 'error_description="' in header
    assert json_of(flow)["error"] == "invalid_token"
    assert_stage(flow, Stage.REJECTED)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "http://127.0.0.1:8000/other"}, "audience"),
        ({"iss": "https://evil.example.com"}, "issuer"),
    ],
)
async def test_unacceptable_tokens(proxy: Proxy, overrides: dict[str, Any], phrase: str) -> None:
    flow = await proxy.send(mcp_call(proxy.token(**overrides)))
    assert flow.response is not None and flow.response.status_code == 401
    assert phrase in flow.response.headers["WWW-Authenticate"]
    assert_stage(flow, Stage.REJECTED)


@pytest.mark.anyio
@pytest.mark.parametrize("authorization", ["Bearer", "Bearer ", "Bearer a b"])
async def test_malformed_authorization_header(proxy: Proxy, authorization: str) -> None:
    flow = await proxy.send(request("POST", "/mcp", {"Authorization": authorization}))
    assert flow.response is not None and flow.response.status_code == 401
    assert 'error="invalid_token"' in flow.response.headers["WWW-Authenticate"]
    assert_stage(flow, Stage.REJECTED)


@pytest.mark.anyio
@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNz", "Token abc"])
async def test_other_schemes_count_as_no_credentials(proxy: Proxy, authorization: str) -> None:
    """RFC 6750 §3.1: credentials in an unsupported scheme get the plain challenge, without an error code."""
    flow = await proxy.send(request("POST", "/mcp", {"Authorization": authorization}))
    assert flow.response is not None and flow.response.status_code == 401
    header = flow.response.headers["WWW-Authenticate"]
    assert "error=" not in header and 'resource_metadata="' in header
    assert "is not accepted; send a Bearer token" in flow.response.json()["error_description"]
    assert_stage(flow, Stage.CHALLENGE)


@pytest.mark.anyio
async def test_two_authorization_headers(proxy: Proxy) -> None:
    flow = request("POST", "/mcp")
    flow.request.headers.add("Authorization", f"Bearer {proxy.token()}")
    flow.request.headers.add("Authorization", f"Bearer {proxy.token(sub='mallory')}")
    await proxy.send(flow)
    assert flow.response is not None and flow.response.status_code == 400
    assert 'error="invalid_request"' in flow.response.headers["WWW-Authenticate"]
    assert_stage(flow, Stage.REJECTED)


@pytest.mark.anyio
async def test_token_in_the_query_string_is_refused(proxy: Proxy) -> None:
    flow = await proxy.send(mcp_call(None, path=f"/mcp?access_token={proxy.token()}"))
    assert flow.response is not None and flow.response.status_code == 401
    assert 'error="invalid_token"' in flow.response.headers["WWW-Authenticate"]


@pytest.mark.anyio
async def test_missing_scope_is_403_insufficient_scope(proxy: Proxy) -> None:
    flow = await proxy.send(mcp_call(proxy.token(scope="openid profile")))
    assert flow.response is not None and flow.response.status_code == 403
    header = flow.response.headers["WWW-Authenticate"]
    assert header.startswith(f'Bearer error="insufficient_scope", scope="mcp:tools", resource_metadata="{PRM_URL}"')
    assert json_of(flow)["error"] == "insufficient_scope"
    assert_stage(flow, Stage.REJECTED)


@pytest.mark.anyio
async def test_valid_token_is_stripped_and_replaced_by_identity_headers(proxy: Proxy) -> None:
    flow = mcp_call(
        proxy.token(sub="alice", client_id="client-1", scope="mcp:tools openid"),
        **{
            "X-MCP-Auth-Subject": "admin",
            "x-mcp-auth-scopes": "everything",
            "X-Mcp-Auth-Client-Id": "trusted-client",
            "X-MCP-Auth-Role": "superuser",
            "Mcp-Session-Id": "session-123",
            "MCP-Protocol-Version": "2025-11-25",
            "Last-Event-ID": "42",
        },
    )
    body = flow.request.content
    await proxy.send(flow)
    assert flow.response is None  # forwarded to the MCP server
    headers = flow.request.headers
    assert "authorization" not in headers
    assert headers.get_all(SUBJECT_HEADER) == ["alice"]
    assert headers.get_all(CLIENT_ID_HEADER) == ["client-1"]
    assert headers.get_all(SCOPES_HEADER) == ["mcp:tools openid"]
    assert headers.get_all(ISSUER_HEADER) == [proxy.issuer]
    assert "X-MCP-Auth-Role" not in headers
    assert [n for n in headers if n.lower().startswith("x-mcp-auth-")] == [
        SUBJECT_HEADER,
        SCOPES_HEADER,
        ISSUER_HEADER,
        CLIENT_ID_HEADER,
    ]
    # The transport's own headers and the body pass unchanged.
    assert headers["Mcp-Session-Id"] == "session-123"
    assert headers["MCP-Protocol-Version"] == "2025-11-25"
    assert headers["Last-Event-ID"] == "42"
    assert headers["Accept"] == "application/json, text/event-stream"
    assert flow.request.content == body
    assert_stage(flow, Stage.AUTHORIZED_CALL)
    assert "alice" in flow.comment


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("claims_with_a_line_break", "claim"),
    [
        ({"sub": "alice\r\nX-MCP-Auth-Role: admin"}, "sub"),
        ({"client_id": "client-1\nX-Evil: 1"}, "client_id"),
        ({"scope": None, "scp": ["mcp:tools", "x\r\nX-Evil: 1"]}, "scope"),
    ],
)
async def test_identity_claims_with_line_breaks_are_refused_not_forwarded(
    proxy: Proxy, claims_with_a_line_break: dict[str, Any], claim: str
) -> None:
    # They would become header lines of the token holder's choosing on the way to the MCP server.
    flow = await proxy.send(mcp_call(proxy.token(**claims_with_a_line_break)))
    assert flow.response is not None and flow.response.status_code == 401
    assert json_of(flow)["error"] == "invalid_token"
    assert f"{claim} claim contains control characters" in flow.response.headers["WWW-Authenticate"]
    assert_stage(flow, Stage.REJECTED)


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_valid_token_on_get_and_delete(proxy: Proxy, method: str) -> None:
    flow = await proxy.send(mcp_call(proxy.token(), method))
    assert flow.response is None
    assert "authorization" not in flow.request.headers
    assert_stage(flow, Stage.AUTHORIZED_CALL)


@pytest.mark.anyio
async def test_token_without_client_id_sends_no_client_header(proxy: Proxy) -> None:
    flow = await proxy.send(mcp_call(proxy.token(client_id=None), **{"X-MCP-Auth-Client-Id": "forged"}))
    assert flow.response is None
    assert CLIENT_ID_HEADER not in flow.request.headers


@pytest.mark.anyio
async def test_jwks_unavailable_is_503_not_401(proxy: Proxy) -> None:
    proxy.idp_server.serve("/jwks", {"error": "down"}, status=500)
    flow = await proxy.send(mcp_call(proxy.token()))
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.headers["Retry-After"]
    assert json_of(flow)["error"] == "temporarily_unavailable"
    assert_stage(flow, Stage.REJECTED)


@pytest.mark.anyio
async def test_idp_unreachable_is_503(proxy: Proxy) -> None:
    proxy.reconfigure(issuer=closed_port_url())
    flow = await proxy.send(mcp_call(proxy.token()))
    assert flow.response is not None and flow.response.status_code == 503
    assert "authorization" in flow.request.headers  # nothing was forwarded, so nothing was stripped either


# --- failing closed ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_exception_in_the_gate_is_503_and_not_forwarded(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken() -> None:
        raise RuntimeError("validator exploded")

    monkeypatch.setattr(proxy.idp, "validator", broken)
    flow = await proxy.send(mcp_call(proxy.token()))
    assert flow.response is not None
    assert flow.response.status_code == 503
    assert flow.response.headers["Retry-After"] == "5"
    assert json_of(flow)["error"] == "temporarily_unavailable"
    assert "RuntimeError" in flow.comment
    assert stage_of(flow) != Stage.AUTHORIZED_CALL
    assert flow.marked == MARKS[Stage.REJECTED]


@pytest.mark.anyio
async def test_exception_while_verifying_is_503(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    validator = await proxy.idp.validator()

    async def broken(token: str) -> None:
        raise KeyError(token)

    monkeypatch.setattr(validator, "verify", broken)
    flow = await proxy.send(mcp_call(proxy.token()))
    assert flow.response is not None and flow.response.status_code == 503
    assert stage_of(flow) != Stage.AUTHORIZED_CALL


@pytest.mark.anyio
async def test_exception_in_a_discovery_handler_is_503(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(metadata, "resource_metadata", broken)  # what the PRM handler builds its answer with
    flow = await proxy.send(request("GET", "/.well-known/oauth-protected-resource/mcp"))
    assert flow.response is not None and flow.response.status_code == 503


@pytest.mark.anyio
async def test_unconfigured_router_answers_503() -> None:
    router = Router(Configuration())
    flow = mcp_call("some-token")
    await router.request(flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert "authorization" in flow.request.headers


@pytest.mark.anyio
async def test_flow_already_answered_is_left_alone(proxy: Proxy) -> None:
    flow = mcp_call(None)
    flow.response = http.Response.make(204)
    await proxy.send(flow)
    assert flow.response.status_code == 204
    assert stage_of(flow) is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/register", "POST"),
        ("GET", "/token", "POST"),
        ("POST", "/.well-known/oauth-protected-resource/mcp", "GET, HEAD"),
        ("DELETE", "/authorize", "GET"),
    ],
)
async def test_wrong_method_on_a_proxy_endpoint(proxy: Proxy, method: str, path: str, allowed: str) -> None:
    flow = await proxy.send(request(method, path))
    assert flow.response is not None and flow.response.status_code == 405
    assert flow.response.headers["Allow"] == allowed


@pytest.mark.anyio
async def test_registration_with_a_bad_body_is_400(proxy: Proxy) -> None:
    flow = await proxy.send(request("POST", "/register", {"Content-Type": "application/json"}, b"{not json"))
    assert flow.response is not None and flow.response.status_code == 400
    assert json_of(flow)["error"] == "invalid_client_metadata"
    assert_stage(flow, Stage.REGISTRATION)


@pytest.mark.anyio
async def test_authorize_with_an_unknown_client_is_an_error_page(proxy: Proxy) -> None:
    flow = await proxy.send(
        request("GET", "/authorize?response_type=code&client_id=forged&redirect_uri=https://evil.example/")
    )
    assert flow.response is not None and flow.response.status_code == 400
    assert "Location" not in flow.response.headers
    assert flow.response.headers["content-type"].startswith("text/html")
    assert_stage(flow, Stage.AUTHORIZATION)


# --- the configuration addon ------------------------------------------------------------------


@pytest.mark.anyio
async def test_non_reverse_mode_stops_the_proxy_at_start(proxy: Proxy, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        proxy.tctx.configure(proxy.config, mode=["regular"])
    assert info.value.code == 2
    assert "reverse" in capsys.readouterr().err


@pytest.mark.anyio
async def test_non_reverse_mode_is_refused_while_running(proxy: Proxy) -> None:
    proxy.config.running()
    with pytest.raises(exceptions.OptionsError, match="reverse"):
        proxy.tctx.configure(proxy.config, mode=["socks5"])
    assert proxy.tctx.options.mode == REVERSE


@pytest.mark.anyio
async def test_bad_config_file_stops_the_proxy_at_start(proxy: Proxy, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(proxy.tmp_path / "bad.yaml", proxy.issuer, mode="proxy")
    with pytest.raises(SystemExit):
        proxy.tctx.configure(proxy.config, mcp_auth_config=str(path))
    err = capsys.readouterr().err
    assert "`mode`" in err and "'proxy'" in err


@pytest.mark.anyio
async def test_bad_config_file_is_refused_while_running_and_the_old_one_kept(proxy: Proxy) -> None:
    proxy.config.running()
    path = write_config(proxy.tmp_path / "bad.yaml", proxy.issuer, public_url=PUBLIC + "/")
    with pytest.raises(exceptions.OptionsError, match="trailing slash"):
        proxy.tctx.configure(proxy.config, mcp_auth_config=str(path))
    assert proxy.config.current().settings.public_url == PUBLIC


async def tasks_started_by(action: Callable[[], Awaitable[None] | None]) -> list[BaseException | None]:
    """Run `action`, then wait for every task it left behind; what each ended with."""
    before = asyncio.all_tasks()
    result = action()
    if result is not None:
        await result
    started = asyncio.all_tasks() - before
    outcomes = await asyncio.gather(*started, return_exceptions=True)
    return [o if isinstance(o, BaseException) and not isinstance(o, asyncio.CancelledError) else None for o in outcomes]


@pytest.mark.anyio
async def test_running_starts_discovery_and_key_fetch(proxy: Proxy) -> None:
    assert await tasks_started_by(proxy.config.running) == [None]
    assert proxy.idp.ready
    assert proxy.idp_server.count("/jwks") == 1


@pytest.mark.anyio
async def test_shutdown_during_the_idp_start_leaves_no_failing_task(proxy: Proxy) -> None:
    async def start_then_stop() -> None:
        proxy.config.running()
        await proxy.config.done()

    failures = [f for f in await tasks_started_by(start_then_stop) if f is not None]
    assert failures == []


@pytest.mark.anyio
async def test_reconfiguring_while_running_leaves_no_failing_task(proxy: Proxy) -> None:
    async def start_then_reconfigure() -> None:
        proxy.config.running()
        proxy.reconfigure(scopes="[mcp:tools, mcp:read]")

    failures = [f for f in await tasks_started_by(start_then_reconfigure) if f is not None]
    assert failures == []
    assert proxy.config.current().settings.scopes == ("mcp:tools", "mcp:read")
    flow = await proxy.send(mcp_call(proxy.token(scope="mcp:tools mcp:read")))
    assert flow.response is None


@pytest.mark.anyio
async def test_connection_strategy_is_set_to_lazy(proxy: Proxy) -> None:
    proxy.tctx.configure(proxy.config, connection_strategy="eager")
    assert proxy.tctx.options.connection_strategy == "lazy"


def test_the_entry_script_builds_the_addons() -> None:
    from addon import mcp_auth

    # The proxy's own addons come first, in this order; the views (and other helpers) follow.
    assert [type(a) for a in mcp_auth.addons][:3] == [Configuration, Router, EventStreaming]
    assert mcp_auth.addons[1].config is mcp_auth.configuration


# --- streaming --------------------------------------------------------------------------------


def upstream_response(content_type: str) -> http.Response:
    return tutils.tresp(headers=http.Headers(((b"content-type", content_type.encode()),)), content=None)


@pytest.mark.anyio
@pytest.mark.parametrize("content_type", ["text/event-stream", "text/event-stream; charset=utf-8", "Text/Event-Stream"])
async def test_authorized_event_stream_is_streamed(proxy: Proxy, content_type: str) -> None:
    flow = await proxy.send(mcp_call(proxy.token()))
    assert flow.response is None
    flow.response = upstream_response(content_type)
    proxy.streaming.responseheaders(flow)
    assert flow.response.stream is True
    assert flow.comment.startswith("authorized-call: ")
    assert "event stream" in flow.comment


@pytest.mark.anyio
@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "text/event-streaming"])
async def test_authorized_other_response_is_not_streamed(proxy: Proxy, content_type: str) -> None:
    flow = await proxy.send(mcp_call(proxy.token()))
    flow.response = upstream_response(content_type)
    proxy.streaming.responseheaders(flow)
    assert flow.response.stream is False
    assert "200" in flow.comment


@pytest.mark.anyio
async def test_proxy_answers_are_never_streamed(proxy: Proxy) -> None:
    flow = await proxy.send(mcp_call(None))
    assert flow.response is not None
    flow.response.headers["content-type"] = "text/event-stream"
    proxy.streaming.responseheaders(flow)
    assert flow.response.stream is False


@pytest.mark.parametrize(("verbosity", "level"), [("error", logging.ERROR), ("warn", logging.WARNING),
                                                   ("info", logging.INFO), ("debug", logging.DEBUG)])
def test_mitmdump_verbosity_decides_what_the_addon_logs(tmp_path: Path, verbosity: str, level: int) -> None:
    # mitmproxy hands every log record to every addon before the terminal drops it; under
    # mitmdump the addon does not make records nobody will see (with -q: below errors).
    from mitmproxy.addons import termlog

    config = Configuration()
    try:
        with taddons.context(termlog.TermLog(), config) as tctx:
            tctx.configure(config, termlog_verbosity=verbosity)
            assert logging.getLogger("mcp_auth").level == level
            assert logging.getLogger("addon").level == level
    finally:
        logging.getLogger("mcp_auth").setLevel(logging.NOTSET)
        logging.getLogger("addon").setLevel(logging.NOTSET)


def test_startup_objects_are_frozen_out_of_later_collections() -> None:
    import gc

    from addon.proxy.startup_objects import StartupObjects

    gc.unfreeze()
    try:
        StartupObjects().running()
        # The modules, classes and functions loaded so far: all of them, not a handful.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
