"""Browser clients: origin matching, the CORS headers, the config keys, and the router's handling."""

from __future__ import annotations

from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.test import tutils

from addon.config import ConfigError, parse_settings
from addon.protocol import cors
from addon.stages import Stage

from .test_gate_and_router import Proxy, assert_stage, json_of, mcp_call, request
from .test_gate_and_router import proxy as proxy  # the fixture

INSPECTOR = "http://localhost:6274"

# --- origins ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("http://localhost:6274", "http://localhost:6274"),
        ("HTTP://LocalHost:6274", "http://localhost:6274"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://app.example.com:80", "http://app.example.com"),
        ("http://[::1]:6274", "http://[::1]:6274"),
        ("null", None),
        ("*", None),
        ("http://localhost:6274/", None),
        ("http://localhost:6274/path", None),
        ("http://user@localhost:6274", None),
        ("ftp://localhost", None),
        ("http://localhost:99999", None),
        (" http://localhost:6274", None),
        ("", None),
    ],
)
def test_origins_are_normalized_as_browsers_send_them(value: str, origin: str | None) -> None:
    assert cors.normalize_origin(value) == origin


def test_policy_allows_exact_configured_origins_and_the_proxys_own() -> None:
    policy = cors.CorsPolicy.make([INSPECTOR], "https://mcp.example.com/base")
    assert policy.allows(INSPECTOR)
    assert policy.allows("https://mcp.example.com")  # the consent page's own origin
    assert policy.allows("https://MCP.example.com:443")
    for foreign in ["http://localhost:6275", "https://localhost:6274", "http://evil.example", "null", "", None]:
        assert not policy.allows(foreign), foreign


def test_nothing_but_the_own_origin_is_allowed_by_default() -> None:
    policy = cors.CorsPolicy.make([], "http://127.0.0.1:8000")
    assert policy.allows("http://127.0.0.1:8000")
    assert not policy.allows(INSPECTOR)


# --- headers ----------------------------------------------------------------------------------


def test_preflight_headers_are_exact() -> None:
    headers = cors.preflight_headers(INSPECTOR, cors.MCP_METHODS, "content-type, mcp-param-city, x-evil")
    assert headers == {
        "Access-Control-Allow-Origin": INSPECTOR,
        "Vary": "Origin",
        "Access-Control-Allow-Methods": "POST, GET, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": "authorization, content-type, mcp-protocol-version, mcp-session-id, "
        "last-event-id, mcp-method, mcp-name, mcp-param-city",
        "Access-Control-Max-Age": "600",
    }


@pytest.mark.parametrize("requested", [None, "", "x-evil", "mcp-param-a\r\nset-cookie: x", "mcp-param-ä", "cookie"])
def test_only_allow_listed_headers_are_echoed(requested: str | None) -> None:
    assert cors.allowed_request_headers(requested) == list(cors.ALLOWED_HEADERS)


def test_response_headers_expose_what_a_client_reads() -> None:
    headers = cors.response_headers(INSPECTOR)
    assert headers["Access-Control-Allow-Origin"] == INSPECTOR
    exposed = "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version, Retry-After"
    assert headers["Access-Control-Expose-Headers"] == exposed
    assert "Access-Control-Allow-Credentials" not in headers


@pytest.mark.parametrize(
    ("existing", "vary"),
    [(None, "Origin"), ("Accept-Encoding", "Accept-Encoding, Origin"), ("origin", "origin"), ("*", "*")],
)
def test_vary_is_merged(existing: str | None, vary: str) -> None:
    assert cors.add_vary(existing) == vary


# --- configuration ----------------------------------------------------------------------------


def minimal(**overrides: Any) -> dict[str, Any]:
    return {"public_url": "https://mcp.example.com", "issuer": "https://idp.example.com", **overrides}


def test_no_browser_clients_by_default() -> None:
    assert parse_settings(minimal()).cors.allowed_origins == ()


def test_allowed_origins_are_normalized() -> None:
    settings = parse_settings(minimal(cors={"allowed_origins": ["http://LOCALHOST:6274", "https://a.example:443"]}))
    assert settings.cors.allowed_origins == ("http://localhost:6274", "https://a.example")


@pytest.mark.parametrize(
    ("value", "phrases"),
    [
        ({"allowed_origins": ["*"]}, ["`cors.allowed_origins[0]` is '*'", "list each browser client's exact origin"]),
        (
            {"allowed_origins": ["http://localhost:6274/"]},
            ["`cors.allowed_origins[0]` is 'http://localhost:6274/'", "without the trailing slash: http://localhost:6274"],
        ),
        ({"allowed_origins": [6274]}, ["`cors.allowed_origins[0]` is 6274", "scheme://host[:port]"]),
        ({"allowed_origins": "http://a.example/x"}, ["`cors.allowed_origins[0]`", "without a path"]),
        ({"allowed_origins": {"a": 1}}, ["`cors.allowed_origins` is {'a': 1}", "a list of origins"]),
        ({"origins": []}, ["unknown key `cors.origins`", "cors.allowed_origins"]),
        (["http://localhost:6274"], ["`cors` is ['http://localhost:6274']", "expected a mapping"]),
    ],
)
def test_bad_cors_config_names_key_value_and_fix(value: object, phrases: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(minimal(cors=value), "proxy.yaml")
    for phrase in phrases:
        assert phrase in str(info.value), str(info.value)


# --- through the router -----------------------------------------------------------------------


def preflight(path: str = "/mcp", origin: str = INSPECTOR, **headers: str) -> http.HTTPFlow:
    return request(
        "OPTIONS",
        path,
        {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version",
            **headers,
        },
    )


@pytest.fixture
def browser_proxy(proxy: Proxy) -> Proxy:
    proxy.reconfigure(cors=f"{{allowed_origins: [{INSPECTOR}]}}")
    return proxy


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "stage", "methods"),
    [
        ("/mcp", Stage.CHALLENGE, "POST, GET, DELETE, OPTIONS"),
        ("/mcp/sub", Stage.CHALLENGE, "POST, GET, DELETE, OPTIONS"),
        ("/register", Stage.REGISTRATION, "POST, OPTIONS"),
        ("/token", Stage.TOKEN, "POST, OPTIONS"),
        ("/revoke", Stage.TOKEN, "POST, OPTIONS"),
    ],
)
async def test_preflight_from_an_allowed_origin_is_answered_here(
    browser_proxy: Proxy, path: str, stage: Stage, methods: str
) -> None:
    flow = await browser_proxy.send(preflight(path))
    assert flow.response is not None
    assert flow.response.status_code == 204
    headers = flow.response.headers
    assert headers["Access-Control-Allow-Origin"] == INSPECTOR
    assert headers["Vary"] == "Origin"
    assert headers["Access-Control-Allow-Methods"] == methods
    assert "mcp-session-id" in headers["Access-Control-Allow-Headers"]
    assert headers["Access-Control-Max-Age"] == "600"
    assert_stage(flow, stage)
    assert "CORS preflight from http://localhost:6274" in flow.comment


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "stage"),
    [("/mcp", Stage.REJECTED), ("/register", Stage.REGISTRATION), ("/token", Stage.TOKEN), ("/revoke", Stage.TOKEN)],
)
async def test_preflight_from_a_foreign_origin_is_403_without_cors_headers(
    browser_proxy: Proxy, path: str, stage: Stage
) -> None:
    flow = await browser_proxy.send(preflight(path, "http://evil.example"))
    assert flow.response is not None and flow.response.status_code == 403
    assert_stage(flow, stage)
    assert not [n for n in flow.response.headers if n.lower().startswith("access-control-")]
    assert json_of(flow) == {
        "error": "invalid_request",
        "error_description": "origin http://evil.example is not allowed; add it to cors.allowed_origins",
    }


@pytest.mark.anyio
async def test_preflight_for_discovery_is_public(proxy: Proxy) -> None:
    flow = await proxy.send(preflight("/.well-known/oauth-protected-resource/mcp", "http://anywhere.example"))
    assert flow.response is not None and flow.response.status_code == 204
    assert flow.response.headers["Access-Control-Allow-Origin"] == "*"
    assert_stage(flow, Stage.RESOURCE_METADATA)


@pytest.mark.anyio
async def test_options_without_origin_is_handled_as_before(proxy: Proxy) -> None:
    flow = await proxy.send(request("OPTIONS", "/register"))
    assert flow.response is not None and flow.response.status_code == 405
    flow = await proxy.send(request("OPTIONS", "/mcp"))
    assert flow.response is not None and flow.response.status_code == 401
    flow = await proxy.send(preflight("/authorize"))
    assert flow.response is not None and flow.response.status_code == 405


@pytest.mark.anyio
async def test_challenge_to_an_allowed_origin_carries_cors_headers(browser_proxy: Proxy) -> None:
    flow = await browser_proxy.send(mcp_call(None, Origin=INSPECTOR))
    assert flow.response is not None and flow.response.status_code == 401
    assert flow.response.headers["Access-Control-Allow-Origin"] == INSPECTOR
    assert "WWW-Authenticate" in flow.response.headers["Access-Control-Expose-Headers"]
    assert flow.response.headers["Vary"] == "Origin"


@pytest.mark.anyio
async def test_a_foreign_origin_is_refused_even_with_a_valid_token(browser_proxy: Proxy) -> None:
    flow = await browser_proxy.send(mcp_call(browser_proxy.token(), Origin="http://evil.example"))
    assert flow.response is not None and flow.response.status_code == 403
    assert_stage(flow, Stage.REJECTED)
    assert "Authorization" in flow.request.headers  # never reached the gate, never forwarded


@pytest.mark.anyio
@pytest.mark.parametrize("origin", ["null", "http://localhost:6274/"])
async def test_odd_origins_are_foreign(browser_proxy: Proxy, origin: str) -> None:
    flow = await browser_proxy.send(mcp_call(browser_proxy.token(), Origin=origin))
    assert flow.response is not None and flow.response.status_code == 403


@pytest.mark.anyio
async def test_a_foreign_origin_is_refused_on_register_before_the_handler(browser_proxy: Proxy) -> None:
    flow = await browser_proxy.send(
        request("POST", "/register", {"Origin": "http://evil.example", "Content-Type": "application/json"}, b"{}")
    )
    assert flow.response is not None and flow.response.status_code == 403
    assert_stage(flow, Stage.REGISTRATION)


@pytest.mark.anyio
async def test_without_origin_nothing_changes(browser_proxy: Proxy) -> None:
    flow = await browser_proxy.send(mcp_call(browser_proxy.token()))
    assert flow.response is None
    assert_stage(flow, Stage.AUTHORIZED_CALL)


@pytest.mark.anyio
async def test_the_proxys_own_origin_may_post_consent(proxy: Proxy) -> None:
    # The consent page sends Origin: null (its no-referrer policy); its cookie protects it, not Origin.
    flow = await proxy.send(
        request("POST", "/authorize/consent", {"Origin": "null", "Content-Type": "application/x-www-form-urlencoded"})
    )
    assert flow.response is not None
    assert flow.response.status_code != 403
    assert "origin" not in flow.comment


@pytest.mark.anyio
async def test_authorized_response_gets_cors_headers_and_upstream_ones_are_replaced(browser_proxy: Proxy) -> None:
    flow = await browser_proxy.send(mcp_call(browser_proxy.token(), Origin=INSPECTOR))
    assert flow.response is None
    flow.response = tutils.tresp(
        headers=http.Headers(
            (
                (b"content-type", b"text/event-stream"),
                (b"access-control-allow-origin", b"*"),
                (b"vary", b"Accept-Encoding"),
            )
        ),
        content=None,
    )
    browser_proxy.router.responseheaders(flow)
    browser_proxy.streaming.responseheaders(flow)
    assert flow.response.stream is True  # streaming untouched
    assert flow.response.headers["Access-Control-Allow-Origin"] == INSPECTOR
    assert flow.response.headers.get_all("access-control-allow-origin") == [INSPECTOR]
    assert flow.response.headers["Vary"] == "Accept-Encoding, Origin"
    assert "Mcp-Session-Id" in flow.response.headers["Access-Control-Expose-Headers"]


@pytest.mark.anyio
async def test_discovery_keeps_its_public_acao(browser_proxy: Proxy) -> None:
    flow = await browser_proxy.send(
        request("GET", "/.well-known/oauth-protected-resource/mcp", {"Origin": "http://anywhere.example"})
    )
    assert flow.response is not None and flow.response.status_code == 200
    assert flow.response.headers["Access-Control-Allow-Origin"] == "*"
