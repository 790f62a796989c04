"""Starting the proxy: the README command, refusals of bad set-ups, and neighbours that are down."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
import stack
import yaml
from conftest import SECRET_KEY, ProxyFactory, origin
from oauth_steps import metadata, token_from

from addon.protocol.registration import Registration, seal_client_id
from addon.protocol.sealing import Sealer

pytestmark = pytest.mark.integration


def run_mitmdump(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [stack.MITMDUMP, "-s", str(stack.ADDON), "--listen-host", "127.0.0.1", "-p", str(stack.free_port()),
         "--set", f"confdir={tmp_path / 'mitmproxy'}", *args],
        capture_output=True, text=True, timeout=60, cwd=stack.ROOT,
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"public_url": "http://127.0.0.1:8000/", "issuer": "http://127.0.0.1:9000"},
         ["`public_url`", "http://127.0.0.1:8000/", "without the trailing slash"]),
        ({"public_url": "http://127.0.0.1:8000", "issuer": "http://127.0.0.1:9000", "mode": "gateway"},
         ["`mode`", "gateway", "facade, resource-server"]),
        ({"public_url": "http://127.0.0.1:8000", "issuer": "http://127.0.0.1:9000", "scope": ["mcp:tools"]},
         ["unknown key `scope`", "did you mean `scopes`"]),
        ({"public_url": "http://127.0.0.1:8000", "issuer": "http://127.0.0.1:9000",
          "registration": {"mode": "static"}}, ["`registration.client_id`", "/callback"]),
        ({"public_url": "http://127.0.0.1:8000"}, ["`issuer` is required"]),
    ],
    ids=["trailing-slash", "bad-mode", "unknown-key", "static-without-client", "no-issuer"],
)
def test_bad_config_stops_mitmproxy_with_a_clear_error(
    tmp_path: Path, config: dict[str, object], expected: list[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_mitmdump(["--mode", "reverse:http://127.0.0.1:1", "--set", f"mcp_auth_config={path}"], tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "configuration error" in output
    for text in expected:
        assert text in output
    assert "listening at" not in output


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    result = run_mitmdump(["--mode", "reverse:http://127.0.0.1:1", "--set",
                           f"mcp_auth_config={tmp_path}/nope.yaml"], tmp_path)
    assert result.returncode != 0
    assert f"{tmp_path}/nope.yaml: no such file" in result.stderr


def test_refuses_to_run_outside_reverse_mode(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"public_url": "http://127.0.0.1:8000", "issuer": "http://127.0.0.1:9000"}))
    result = run_mitmdump(["--mode", "regular", "--set", f"mcp_auth_config={path}"], tmp_path)
    assert result.returncode != 0
    assert "only works in reverse-proxy mode" in result.stderr
    assert "listening at" not in result.stdout


def test_own_endpoints_answer_while_the_mcp_server_is_down(
    start_proxy: ProxyFactory, idp: stack.Service, facade_proxy: stack.Service
) -> None:
    # Even with connection_strategy=eager asked for explicitly: the addon needs lazy and says so.
    proxy = start_proxy(f"http://127.0.0.1:{stack.free_port()}", issuer=idp.url)
    assert httpx.get(proxy.url + "/.well-known/oauth-protected-resource/mcp").status_code == 200
    assert httpx.get(proxy.url + "/.well-known/oauth-authorization-server").status_code == 200
    assert httpx.post(proxy.url + "/mcp", json={}).status_code == 401
    token = token_from(metadata(idp.url), proxy.url + "/mcp")
    response = httpx.post(proxy.url + "/mcp", json={}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 502


def test_eager_connection_strategy_is_overridden(
    tmp_path: Path, confdir: Path, idp: stack.Service
) -> None:
    port = stack.free_port()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"public_url": f"http://127.0.0.1:{port}", "issuer": idp.url,
                                    "secret_key": SECRET_KEY}))
    proxy = stack.start_proxy(path, f"http://127.0.0.1:{stack.free_port()}", port, confdir=confdir,
                              extra=["--set", "connection_strategy=eager"])
    try:
        assert httpx.get(proxy.url + "/.well-known/oauth-protected-resource").status_code == 200
        assert any("connection_strategy=lazy" in line for line in proxy.lines)
    finally:
        proxy.stop()


def test_idp_down_means_503_not_a_forwarded_call(start_proxy: ProxyFactory, demo_server: stack.Service) -> None:
    proxy = start_proxy(origin(demo_server.url), issuer=f"http://127.0.0.1:{stack.free_port()}")
    assert httpx.get(proxy.url + "/.well-known/oauth-protected-resource/mcp").status_code == 200
    assert httpx.post(proxy.url + "/mcp", json={}).status_code == 401
    response = httpx.post(proxy.url + "/mcp", json={}, headers={"Authorization": "Bearer a.b.c"})
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["error"] == "temporarily_unavailable"
    metadata_response = httpx.get(proxy.url + "/.well-known/oauth-authorization-server")
    assert metadata_response.status_code == 503
    registration = httpx.post(proxy.url + "/register", json={"redirect_uris": ["http://127.0.0.1:5/cb"]})
    assert registration.status_code == 503
    assert registration.headers["retry-after"]
    assert registration.json()["error"] == "temporarily_unavailable"
    # A client registered before the IdP went away (same sealing key) gets a 503 at /token too.
    client_id = seal_client_id(Sealer(SECRET_KEY), Registration("upstream", ["http://127.0.0.1:5/cb"], None, 0, False))
    token = httpx.post(proxy.url + "/token", data={"grant_type": "refresh_token", "refresh_token": "r",
                                                   "client_id": client_id})
    assert token.status_code == 503
    assert token.json()["error"] == "temporarily_unavailable"


def test_mitmweb_runs_the_addon(tmp_path: Path, confdir: Path, idp: stack.Service, demo_server: stack.Service) -> None:
    port = stack.free_port()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"public_url": f"http://127.0.0.1:{port}", "issuer": idp.url,
                                    "secret_key": SECRET_KEY}))
    web_port = stack.free_port()
    proxy = stack.start_proxy(
        path, origin(demo_server.url), port, confdir=confdir, web=True,
        extra=["--no-web-open-browser", "--web-host", "127.0.0.1", "--web-port", str(web_port),
               "--set", "web_password=workshop"],
    )
    try:
        assert httpx.post(proxy.url + "/mcp", json={}).status_code == 401
        flows = httpx.get(f"http://127.0.0.1:{web_port}/flows", headers={"Authorization": "Bearer workshop"})
        assert flows.status_code == 200
        (flow,) = [f for f in flows.json() if f["request"]["path"] == "/mcp"]
        assert flow["comment"].startswith("challenge: no token")
        assert flow["marked"] == "🔒"  # mitmweb shows the :lock: shortcode as its emoji
    finally:
        proxy.stop()
