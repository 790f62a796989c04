"""Start the pieces of the demo stack as real processes: dev IdP, demo MCP server, mitmdump.

Used by `scripts/demo.py` and by the integration tests. Every process binds to 127.0.0.1,
is waited on through the ready line it prints (never a sleep), and dies with its parent
(PR_SET_PDEATHSIG), so nothing outlives a killed test run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MITMDUMP = str(Path(sys.executable).parent / "mitmdump")
IDP_SCRIPT = ROOT / "scripts" / "dev_idp" / "idp.mjs"
DEMO_SERVER = ROOT / "scripts" / "demo_server.py"
ADDON = ROOT / "addon" / "mcp_auth.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM when the process that started it exits, however it exits.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Service:
    name: str
    process: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)
    _waiters: list[tuple[re.Pattern[str], queue.Queue[str]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 10.0, since: int = 0) -> str:
        """Block until the process prints a line matching pattern; lines from index `since` on count."""
        compiled = re.compile(pattern)
        waiter: queue.Queue[str] = queue.Queue()
        with self._lock:
            for line in self.lines[since:]:
                if compiled.search(line):
                    return line
            self._waiters.append((compiled, waiter))
        try:
            return waiter.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no line matching {pattern!r} within {timeout} s") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    name: str,
    command: Sequence[str],
    ready: str,
    url_from: Callable[[re.Match[str]], str],
    *,
    timeout: float = 30.0,
    echo: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
) -> Service:
    """Run command, collect its output (stdout and stderr merged), wait for the ready line."""
    process = subprocess.Popen(
        list(command),
        stdin=subprocess.PIPE,  # kept open: closing it tells services with --exit-on-stdin-eof to stop
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",  # a process may echo bytes a client sent; the pump must not die on them
        bufsize=1,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        preexec_fn=_die_with_parent,
    )
    service = Service(name, process, url="")
    ready_pattern = re.compile(ready)
    found: queue.Queue[re.Match[str] | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        announced = False
        for raw in process.stdout:
            line = raw.rstrip("\n")
            with service._lock:
                service.lines.append(line)
                for pattern, waiter in list(service._waiters):
                    if pattern.search(line):
                        waiter.put(line)
                        service._waiters.remove((pattern, waiter))
            if echo is not None:
                echo(line)
            if not announced and (match := ready_pattern.search(line)):
                announced = True
                found.put(match)
        found.put(None)

    threading.Thread(target=pump, name=f"{name} output", daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        match = found.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        service.stop()
        raise TimeoutError(f"{name} did not get ready within {timeout} s:\n{service.output()}") from None
    if match is None:
        service.stop()
        raise RuntimeError(f"{name} exited (code {process.poll()}) before it was ready:\n{service.output()}")
    service.url = url_from(match)
    return service


def start_idp(
    port: int = 0,
    static_redirect_uris: Sequence[str] = (),
    extra: Sequence[str] = (),
    echo: Callable[[str], None] | None = None,
) -> Service:
    command = ["node", str(IDP_SCRIPT), "--port", str(port), "--exit-on-stdin-eof"]
    for uri in static_redirect_uris:
        command += ["--static-client-redirect-uri", uri]
    return start("dev-idp", [*command, *extra], r"dev-idp listening issuer=(\S+)", lambda m: m.group(1), echo=echo)


def start_demo_server(
    port: int = 0, stateless: bool = False, echo: Callable[[str], None] | None = None, sse: bool = False
) -> Service:
    command = [PYTHON, str(DEMO_SERVER), "--port", str(port), "--exit-on-stdin-eof"]
    if stateless:
        command.append("--stateless")
    if sse:
        command.append("--sse")
    return start("demo-server", command, r"demo-server listening url=(\S+)", lambda m: m.group(1), echo=echo)


def start_proxy(
    config: Path | str,
    upstream: str,
    port: int,
    *,
    confdir: Path | str | None = None,
    web: bool = False,
    extra: Sequence[str] = (),
    echo: Callable[[str], None] | None = None,
) -> Service:
    """mitmdump (or mitmweb) with the addon, in reverse mode in front of upstream, on 127.0.0.1:port."""
    program = MITMDUMP if not web else str(Path(MITMDUMP).with_name("mitmweb"))
    command = [
        program,
        "-s", str(ADDON),
        "--mode", f"reverse:{upstream}",
        "--listen-host", "127.0.0.1",
        "-p", str(port),
        "--set", f"mcp_auth_config={config}",
    ]
    if confdir is not None:
        command += ["--set", f"confdir={confdir}"]
    return start(
        "mitmdump",
        [*command, *extra],
        r"listening at (?:http://)?127\.0\.0\.1:(\d+)",
        lambda m: f"http://127.0.0.1:{m.group(1)}",
        echo=echo,
    )


NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "mcp-auth.conf"


def nginx_site(listen_port: int, backends: Sequence[str]) -> str:
    """deploy/nginx/mcp-auth.conf with its listen port and upstream servers replaced, nothing else."""
    template = NGINX_TEMPLATE.read_text()
    servers = "".join(f"    server {urlsplit(b).netloc};\n" for b in backends)
    site, count = re.subn(r"(?m)^    server 127\.0\.0\.1:\d+;\n(?:    server 127\.0\.0\.1:\d+;\n)*", servers, template)
    site, listens = re.subn(r"listen 127\.0\.0\.1:\d+;", f"listen 127.0.0.1:{listen_port};", site)
    if count != 1 or listens != 1:
        raise ValueError(f"{NGINX_TEMPLATE}: expected one block of `server` lines and one `listen` line")
    return site


def start_nginx(directory: Path, backends: Sequence[str], port: int = 0) -> Service:
    """Debian's nginx (scripts/setup-scaleout), in the foreground, with deploy/nginx/mcp-auth.conf before backends."""
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mcp-auth.conf").write_text(nginx_site(port, backends))
    (directory / "nginx.conf").write_text(
        f"""daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    include {directory}/mcp-auth.conf;
}}
"""
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return start(
        "nginx",
        [nginx, "-p", str(directory), "-c", str(directory / "nginx.conf")],
        r"start worker process",  # logged once the listening socket is open
        lambda m: f"http://127.0.0.1:{port}",
    )


@contextlib.contextmanager
def running(*services: Service) -> Iterator[None]:
    try:
        yield
    finally:
        for service in reversed(services):
            service.stop()
