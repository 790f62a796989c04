"""The mitmproxy side of the diagnosis: the `mcp_auth.dance` and `mcp_auth.doctor` commands, and
options that print both when mitmproxy exits (for a saved flow file read with `-nr`).

    mitmdump -nr flows.mitm -s addon/mcp_auth.py --set mcp_auth_dance=true
    mitmdump -nr flows.mitm -s addon/mcp_auth.py --set mcp_auth_doctor=true
    mitmproxy (console):  :mcp_auth.dance @all       :mcp_auth.doctor @all
    mitmweb (Command Bar): mcpauth.dance @all        mcpauth.doctor @all

The logic is in addon/diagnosis (plain Python); this only hands it flows and prints the text.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence, Set

from mitmproxy import command, ctx, flow, http
from mitmproxy.addonmanager import Loader

from addon.diagnosis.dance import build_dances
from addon.diagnosis.dance import render as render_dances
from addon.diagnosis.doctor import diagnose
from addon.diagnosis.doctor import render as render_diagnosis
from addon.diagnosis.flows import exchanges_from_flows

logger = logging.getLogger("mcp_auth")


def dance_report(flows: Sequence[flow.Flow], source: str = "") -> str:
    return render_dances(build_dances(exchanges_from_flows(flows)), source)


def doctor_report(flows: Sequence[flow.Flow], source: str = "") -> str:
    return render_diagnosis(diagnose(exchanges_from_flows(flows), source))


class DanceCommands:
    def __init__(self) -> None:
        self._seen: dict[str, http.HTTPFlow] = {}
        self._collecting = False

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "mcp_auth_dance",
            bool,
            False,
            "When mitmproxy exits, print each client's MCP authorization dance (stage, time, outcome, first "
            "failure) for every flow it saw, e.g. after `mitmdump -nr flows.mitm`.",
        )
        loader.add_option(
            "mcp_auth_doctor",
            bool,
            False,
            "When mitmproxy exits, print the MCP authorization doctor's report (spec violations by stage) for "
            "every flow it saw.",
        )

    def configure(self, updated: Set[str]) -> None:
        # Read once here, not per flow: the request hook runs on every call the proxy serves.
        self._collecting = bool(ctx.options.mcp_auth_dance or ctx.options.mcp_auth_doctor)

    def request(self, f: http.HTTPFlow) -> None:
        # Flows read with -r go through the request hook too (with their recorded response).
        if self._collecting:
            self._seen[f.id] = f

    def error(self, f: http.HTTPFlow) -> None:
        if self._collecting:
            self._seen.setdefault(f.id, f)

    def done(self) -> None:
        if not self._collecting:
            return
        flows = list(self._seen.values())
        source = getattr(ctx.options, "rfile", None) or ""  # the readfile addon's -r
        # stdout, not the log: the report is the output asked for, also under mitmdump -q.
        if ctx.options.mcp_auth_dance:
            print(dance_report(flows, source), end="", file=sys.stdout, flush=True)
        if ctx.options.mcp_auth_doctor:
            print(doctor_report(flows, source), end="", file=sys.stdout, flush=True)

    @command.command("mcp_auth.dance")
    def dance(self, flows: Sequence[flow.Flow]) -> str:
        """Each client's MCP authorization dance in these flows: stage, time, outcome, first failure."""
        return dance_report(flows)

    @command.command("mcp_auth.doctor")
    def doctor(self, flows: Sequence[flow.Flow]) -> str:
        """MCP authorization spec violations in these flows, by stage."""
        return doctor_report(flows)

    # mitmweb's command API (and so its Command Bar) only routes names matching [a-z.]+
    # (mitmproxy 12.x, tools/web/app.py): the same commands under names it can reach.
    @command.command("mcpauth.dance")
    def web_dance(self, flows: Sequence[flow.Flow]) -> str:
        """mcp_auth.dance, under a name mitmweb's Command Bar can call."""
        return dance_report(flows)

    @command.command("mcpauth.doctor")
    def web_doctor(self, flows: Sequence[flow.Flow]) -> str:
        """mcp_auth.doctor, under a name mitmweb's Command Bar can call."""
        return doctor_report(flows)
