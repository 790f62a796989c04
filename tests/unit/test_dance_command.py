"""The mitmproxy side of the diagnosis, and reading flow files offline with the addon loaded.

`mcp_auth.dance` / `mcp_auth.doctor` as commands and as options printing at exit; and
`mitmdump -nr flows.mitm -s addon/mcp_auth.py`: regular mode and no server, so the
configuration must not insist on reverse mode or a config file, and flows read from the file
are history: the router and the streaming addon leave them exactly as recorded.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from mitmproxy import exceptions, http, io
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons, tflow, tutils

from addon.proxy.configuration import Configuration
from addon.proxy.router import Router
from addon.proxy.streaming import EventStreaming
from addon.views.dance import DanceCommands

from .test_diagnosis import MCP, call, challenge, good_dance

ROOT = Path(__file__).resolve().parents[2]
MITMDUMP = str(Path(sys.executable).parent / "mitmdump")
DEV_CONFIG = str(ROOT / "config" / "dev-idp.yaml")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the commands -----------------------------------------------------------------------------


def test_dance_command_on_live_flows() -> None:
    commands = DanceCommands()
    with taddons.context(commands) as tctx:
        text = tctx.master.commands.call("mcp_auth.dance", good_dance())
        assert "client client-1" in text and "Result: no stage failed" in text
        text = tctx.master.commands.call("mcp_auth.doctor", [challenge(www=None)])
        assert "[401-no-www-authenticate]" in text


def test_commands_take_a_flow_spec_as_mitmproxy_passes_it() -> None:
    commands = DanceCommands()
    with taddons.context(commands) as tctx:
        signature = tctx.master.commands.commands["mcp_auth.dance"].signature_help()
        assert signature == "mcp_auth.dance flows -> str"


def test_options_print_both_reports_at_exit(capsys: pytest.CaptureFixture[str]) -> None:
    commands = DanceCommands()
    with taddons.context(commands) as tctx:
        tctx.configure(commands, mcp_auth_dance=True, mcp_auth_doctor=True)
        for f in good_dance():
            commands.request(f)
        commands.done()
    out = capsys.readouterr().out
    assert out.index("MCP authorization dance") < out.index("MCP authorization doctor")
    assert "8 flows: 8 in 1 dance, 0 not part of a dance" in out


def test_nothing_is_collected_or_printed_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    commands = DanceCommands()
    with taddons.context(commands):
        commands.request(challenge())
        commands.done()
    assert capsys.readouterr().out == ""
    assert commands._seen == {}


# --- offline: the configuration -----------------------------------------------------------------


def test_offline_regular_mode_and_a_missing_config_are_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    config = Configuration()
    with taddons.context(proxyserver.Proxyserver(), config) as tctx:
        with caplog.at_level(logging.WARNING, "mcp_auth"):
            tctx.configure(config, server=False, mode=["regular"], mcp_auth_config="/nonexistent/config.yaml")
        assert "not serving" in caplog.text and "no such file" in caplog.text
        config.running()  # no IdP to start, nothing raises
        with pytest.raises(RuntimeError, match="not configured"):
            config.current()


@pytest.mark.anyio
async def test_offline_with_a_config_starts_no_idp() -> None:
    config = Configuration()
    with taddons.context(proxyserver.Proxyserver(), config) as tctx:
        tctx.configure(config, server=False, mode=["regular"], mcp_auth_config=DEV_CONFIG)
        before = asyncio.all_tasks()
        config.running()
        assert asyncio.all_tasks() == before  # no discovery, no key fetch
        assert config.current().settings.public_url == "http://127.0.0.1:8000"
        await config.done()


def test_serving_still_fails_closed(capsys: pytest.CaptureFixture[str]) -> None:
    config = Configuration()
    with taddons.context(proxyserver.Proxyserver(), config) as tctx:
        with pytest.raises(SystemExit):
            tctx.configure(config, mode=["regular"], mcp_auth_config=DEV_CONFIG)
        assert "reverse" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            tctx.configure(config, mode=["reverse:http://127.0.0.1:3000"], mcp_auth_config="/nonexistent.yaml")
        assert "no such file" in capsys.readouterr().err


def test_turning_the_server_on_checks_the_mode_again() -> None:
    config = Configuration()
    with taddons.context(proxyserver.Proxyserver(), config) as tctx:
        tctx.configure(config, server=False, mode=["regular"], mcp_auth_config="/nonexistent.yaml")
        config.is_running = True  # as after `running`; the IdP start is not the point here
        with pytest.raises(exceptions.OptionsError, match="reverse"):
            tctx.configure(config, server=True)


# --- offline: flows read from a file are left alone -------------------------------------------------


@pytest.mark.anyio
async def test_router_leaves_a_loaded_flow_without_response_alone() -> None:
    config = Configuration()
    router = Router(config)
    with taddons.context(proxyserver.Proxyserver(), config, router) as tctx:
        tctx.configure(config, server=False, mode=["regular"], mcp_auth_config="/nonexistent.yaml")
        loaded = call(bearer="a-token", status=None, live=False)
        await router.request(loaded)
        assert loaded.response is None
        assert loaded.request.headers["Authorization"] == "Bearer a-token"
        assert loaded.metadata == {} and loaded.comment == ""


@pytest.mark.anyio
async def test_router_still_answers_live_flows_when_unconfigured() -> None:
    config = Configuration()
    router = Router(config)
    with taddons.context(proxyserver.Proxyserver(), config, router):
        live = call(bearer="a-token", status=None)
        await router.request(live)
        assert live.response is not None and live.response.status_code == 503


def test_streaming_leaves_a_loaded_flow_alone() -> None:
    loaded = tflow.tflow(resp=tutils.tresp(headers=http.Headers(((b"content-type", b"text/event-stream"),))),
                         live=False)
    loaded.metadata["mcp_auth.stage"] = "authorized-call"
    loaded.comment = "authorized-call: as recorded"
    EventStreaming().responseheaders(loaded)
    assert loaded.comment == "authorized-call: as recorded"
    assert loaded.response is not None and not loaded.response.stream


def test_mitmdump_reads_a_flow_without_response_and_leaves_it(tmp_path: Path) -> None:
    unanswered = call(bearer="a-token", status=None)
    unanswered.request.url = MCP
    source, copy = tmp_path / "in.mitm", tmp_path / "out.mitm"
    with source.open("wb") as f:
        io.FlowWriter(f).add(unanswered)
    result = subprocess.run(
        [MITMDUMP, "-nr", str(source), "-s", "addon/mcp_auth.py", "-w", str(copy), "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with copy.open("rb") as f:
        [read] = list(io.FlowReader(f).stream())
    assert isinstance(read, http.HTTPFlow)
    assert read.response is None
    assert read.request.headers["Authorization"] == "Bearer a-token"
    assert "mcp_auth.stage" not in read.metadata


def test_mitmweb_can_reach_the_commands_under_names_without_underscore() -> None:
    import re

    commands = DanceCommands()
    with taddons.context(commands) as tctx:
        names = set(tctx.master.commands.commands)
        # mitmweb 12 routes POST /commands/(?P<cmd>[a-z.]+): these are the names its Command Bar can call.
        assert {"mcpauth.dance", "mcpauth.doctor"} <= {n for n in names if re.fullmatch(r"[a-z.]+", n)}
        flows = [call(bearer="t", url=MCP)]
        assert tctx.master.commands.call("mcpauth.doctor", flows) == tctx.master.commands.call(
            "mcp_auth.doctor", flows)


@pytest.mark.anyio
async def test_serving_after_reading_starts_the_idp() -> None:
    config = Configuration()
    with taddons.context(proxyserver.Proxyserver(), config) as tctx:
        tctx.configure(config, server=False, mode=["reverse:http://127.0.0.1:3000"], mcp_auth_config=DEV_CONFIG)
        config.running()
        assert config._start_task is None
        tctx.configure(config, server=True)
        assert config._start_task is not None
        await config.done()
