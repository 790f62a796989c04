"""The demo stack, end to end: dev IdP (:9000), demo MCP server (:3000), the proxy (:8000), and a client.

By default the client logs in as the test user by filling the login form itself, lists the
tools and calls hello-world, while the proxy's stage lines show the dance. With
--interactive you get the `mcp>` prompt and log in in a browser (or by opening the
printed URL) as testuser / testpass.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable

import stack

PROXY_PORT, SERVER_PORT, IDP_PORT = 8000, 3000, 9000
MCP_URL = f"http://127.0.0.1:{PROXY_PORT}/mcp"


def show(prefix: str, only_stages: bool) -> Callable[[str], None]:
    def echo(line: str) -> None:
        if not only_stages or "] [" in line:
            print(f"{prefix} | {line}", flush=True)

    return echo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactive", action="store_true", help="leave me at the mcp> prompt, log in in a browser")
    parser.add_argument("--verbose", action="store_true", help="show every line of every service")
    args = parser.parse_args()

    services: list[stack.Service] = []
    try:
        print(f"demo: starting the dev IdP on :{IDP_PORT}, the demo MCP server on :{SERVER_PORT}, the proxy on "
              f":{PROXY_PORT}", flush=True)
        services.append(stack.start_idp(IDP_PORT, echo=show("idp   ", False) if args.verbose else None))
        services.append(stack.start_demo_server(SERVER_PORT, echo=show("server", False) if args.verbose else None))
        # Exactly the README's command line, from the repository root.
        services.append(stack.start_proxy("config/dev-idp.yaml", f"http://127.0.0.1:{SERVER_PORT}", PROXY_PORT,
                                          echo=show("proxy ", not args.verbose)))
        client = [stack.PYTHON, str(stack.ROOT / "scripts" / "mcp_client.py"), MCP_URL]
        if not args.interactive:
            client += ["--no-browser", "--login-as", "testuser:testpass",
                       "--run", "list", "--run", 'call hello-world {"name": "joe"}',
                       "--run", 'call count-with-progress {"steps": 3, "interval": 0.3}']
        print(f"demo: {' '.join(client[1:])}", flush=True)
        return subprocess.call(client, cwd=stack.ROOT)
    except (TimeoutError, RuntimeError) as e:
        print(f"demo: {e}", file=sys.stderr)
        print("demo: is something else using ports 9000, 3000 or 8000?", file=sys.stderr)
        return 1
    finally:
        for service in reversed(services):
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
