"""Take the screenshots in docs/images/ from the real mitmweb, with the browser test's code.

Starts the dev IdP, the demo MCP server and mitmweb with the addon on free ports, runs the
official SDK client through the dance, takes the flow list and each stage's detail, then
breaks things (a garbage token, a tampered token, a token without the needed scope, a
registration with a plain-http redirect URI) and takes those. Needs what scripts/setup and
scripts/setup-browser install:

    scripts/setup && scripts/setup-browser
    .venv/bin/python scripts/screenshots.py            # writes docs/images/*.png
    .venv/bin/python scripts/screenshots.py --out /tmp/shots

Shots of the addon's content views are taken when mitmweb offers those views; the list of
what was taken and what was skipped is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "browser"))

import httpx  # noqa: E402
from mitmweb_stack import WebStack, drive, missing_browser, mitmweb_stack, run_dance  # noqa: E402
from oauth_steps import metadata, token_from  # noqa: E402

TOKEN_VIEW = "MCP auth: token"
METADATA_VIEW = "MCP auth: metadata changes"
JSONRPC_VIEW = "MCP auth: JSON-RPC"
SPLIT = 520  # the list/detail splitter's x: room for the detail, the list keeps "#", path and mark
VIEW_SPLIT = 400  # the addon's views have longer lines
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def numbers(web: WebStack) -> dict[str, list[int]]:
    """Each stage's flows, as their "#" in mitmweb's list."""
    found: dict[str, list[int]] = {}
    for index, flow in enumerate(web.flows(), 1):
        found.setdefault(flow["comment"].split(":", 1)[0], []).append(index)
    return found


def detail(name: str, flow: int, tab: str, view: str | None = None, height: int = 800) -> dict[str, Any]:
    return {"name": name, "flow": flow, "tab": tab, "view": view, "split": SPLIT, "height": height}


def addon_view(name: str, flow: int, tab: str, view: str) -> dict[str, Any]:
    """One of the addon's content views (addon/views/); skipped when mitmweb does not offer it."""
    return {"name": name, "flow": flow, "tab": tab, "view": view, "split": VIEW_SPLIT, "height": 1000,
            "optional": True}


def dance_shots(at: dict[str, list[int]]) -> list[dict[str, Any]]:
    first = {stage: flows[0] for stage, flows in at.items()}
    last_call = at["authorized-call"][-1]
    return [
        {"name": "mitmweb-dance", "flow": None, "height": 560},
        detail("workshop-challenge", first["challenge"], "response", "json"),
        detail("workshop-resource-metadata", first["resource-metadata"], "response", "json"),
        detail("workshop-as-metadata", first["as-metadata"], "response", "json", height=1000),
        detail("workshop-as-metadata-comment", first["as-metadata"], "comment"),
        detail("workshop-registration", first["registration"], "response", "json"),
        detail("workshop-authorization", first["authorization"], "response"),
        detail("workshop-callback", first["callback"], "request"),
        detail("workshop-callback-response", first["callback"], "response"),
        detail("workshop-token", first["token"], "response", "json"),
        detail("workshop-authorized-call", last_call, "request", "json"),
        addon_view("workshop-view-prm", first["resource-metadata"], "response", METADATA_VIEW),
        addon_view("workshop-view-metadata", first["as-metadata"], "response", METADATA_VIEW),
        addon_view("workshop-view-token", first["token"], "response", TOKEN_VIEW),
        addon_view("workshop-view-jsonrpc", last_call, "request", JSONRPC_VIEW),
    ]


def break_things(web: WebStack) -> None:
    """The workshop's "break it" exercises, as plain HTTP requests to the proxy."""
    mcp = web.mcp_url
    # 1. a token that is no token
    httpx.post(mcp, json=INITIALIZE, headers={"Authorization": "Bearer garbage"})
    # 2. a real token from the IdP, for this resource but only with scope mcp:admin (the proxy wants mcp:tools)
    token = token_from(metadata(web.idp.url), mcp, scope="mcp:admin")
    httpx.post(mcp, json=INITIALIZE, headers={"Authorization": f"Bearer {token}"})
    # 3. the same token with its signature changed
    head, payload, signature = token.split(".")
    tampered = signature[:-6] + ("AAAAAA" if not signature.endswith("AAAAAA") else "BBBBBB")
    httpx.post(mcp, json=INITIALIZE, headers={"Authorization": f"Bearer {head}.{payload}.{tampered}"})
    # 4. a registration with a plain-http redirect URI on a public host
    httpx.post(web.proxy.url + "/register", json={"client_name": "workshop client",
                                                    "redirect_uris": ["http://mcp-client.example/callback"]})


def broken_shots(at: dict[str, list[int]]) -> list[dict[str, Any]]:
    rejected = at["rejected"]
    return [
        {"name": "workshop-broken", "flow": None, "height": 700},
        detail("workshop-rejected-garbage", rejected[0], "response", "json"),
        detail("workshop-rejected-scope", rejected[1], "response", "json"),
        detail("workshop-rejected-signature", rejected[2], "response", "json"),
        detail("workshop-registration-refused", at["registration"][-1], "response", "json"),
        addon_view("workshop-view-rejected-token", rejected[2], "request", TOKEN_VIEW),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go")
    parser.add_argument("--report", type=Path, help="also write what the browser read (rows, texts) as JSON here")
    args = parser.parse_args()
    if reason := missing_browser():
        print(f"screenshots: {reason}", file=sys.stderr)
        return 1
    out: Path = args.out.resolve()
    with tempfile.TemporaryDirectory(prefix="screenshots-") as work, mitmweb_stack(Path(work)) as web:
        print(run_dance(web.mcp_url))
        web.proxy.wait_for_line(r"\[authorized-call\] POST /mcp")
        at = numbers(web)
        first = drive(web, dance_shots(at), out, expect_rows=sum(map(len, at.values())), login_shot="workshop-login",
                      timeout=120)
        break_things(web)
        web.proxy.wait_for_line(r"\[registration\] POST /register 400")
        at = numbers(web)
        second = drive(web, broken_shots(at), out, expect_rows=sum(map(len, at.values())), timeout=120)
    if args.report:
        args.report.write_text(json.dumps({"dance": first, "broken": second}, indent=1, ensure_ascii=False))
    print(f"login page: {out / 'workshop-login.png'}")
    for shot in first["shots"] + second["shots"]:
        if shot["skipped"]:
            print(f"skipped {shot['name']}: mitmweb offers no such view (views: {', '.join(shot['views'] or [])})")
        else:
            print(f"{shot['file']}" + (f"  [{shot['title']}]" if shot["title"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
