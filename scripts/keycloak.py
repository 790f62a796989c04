#!/usr/bin/env python3
"""Keycloak without Docker: fetch the server distribution from Maven Central and run it natively.

    python scripts/keycloak.py fetch             # download and unpack Keycloak once (cached outside the repo)
    python scripts/keycloak.py run [--port 8080] # Keycloak in the foreground with realm `mcp` (config/keycloak/)

The distribution is `org.keycloak:keycloak-quarkus-dist` (zip), fetched with `mvn dependency:copy`,
checked against a pinned SHA-256 and unpacked into `$MCP_AUTH_CACHE` (default
`~/.cache/mcp-auth-addon/`). It needs Java 17 or newer (`JAVA_HOME` or `java` on the PATH).

Every start is fresh: a throwaway Keycloak home (a copy of `bin/kc.sh`, links to the cached
`lib/`, `conf/`, `providers/`, `themes/`, and its own `data/`) with the realm file in
`data/import`, so the realm is imported from the file each time and nothing is kept between
runs. Its database starts as a copy of a pristine one (schema and master realm only) made
once by `ensure_keycloak()`, which saves each start the schema creation.

`start_keycloak()` is what the tests and `run` use: it waits for Keycloak's ready line, then
for `/health/ready` on the management port, then for the realm's discovery document, never a
sleep; Keycloak dies with its parent (see stack.py) and stops on SIGTERM.

`kc.sh start-dev` re-augments the server (about 20 s) whenever its build-time options differ
from the last build. `kc.sh build` cannot prepare it (it refuses the dev profile, and a prod
build is re-augmented away by start-dev), so `ensure_keycloak()` runs one throwaway start-dev
with the same build-time options (`BUILD_OPTIONS`) after unpacking; later starts skip the
augmentation. Do not pass other build-time options to start_keycloak: they would re-augment
the shared cached distribution.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import stack

KEYCLOAK_VERSION = "26.7.3"
ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip"
ZIP_NAME = f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.zip"
# SHA-256 of the zip on Maven Central (its .sha1 there: 1e21a7f572581692aacb379dbba8413f99b67208).
ZIP_SHA256 = "27a6535553c3cdcd083872ba40629efafb3475e3b758e0c6f691395561dd0f1f"
DIST_DIR_NAME = f"keycloak-{KEYCLOAK_VERSION}"
UNPACKED_MARKER = ".mcp-auth-unpacked"
AUGMENTED_MARKER = ".mcp-auth-dev-augmented"
DB_TEMPLATE_DIR = ".mcp-auth-db-template"
OWNER_FILE = ".owner-pid"
# Build-time options given to every start-dev. Changing them makes start-dev re-augment (~20 s).
BUILD_OPTIONS: tuple[str, ...] = ("--health-enabled=true",)

REALM_FILE = stack.ROOT / "config" / "keycloak" / "mcp-realm.json"
# Every occurrence of this string in the realm file means "the proxy's public_url".
PROXY_URL_PLACEHOLDER = "http://localhost:8000"
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin"

READY_LINE = r"Keycloak \S+ on JVM .*started in ([\d.]+)s\. Listening on: (http://\S+?)\.?(?:\s|$)"

Echo = Callable[[str], None]


def say(message: str) -> None:
    print(f"keycloak: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """Where the distribution is kept: $MCP_AUTH_CACHE, else ~/.cache/mcp-auth-addon (never the repository)."""
    configured = os.environ.get("MCP_AUTH_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mcp-auth-addon"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (parallel test workers share one cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(target: Path, log: Echo) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(
            f"Maven (mvn) is needed to fetch {ARTIFACT} from Maven Central; install it "
            f"(e.g. apt-get install maven), or pass the zip with `fetch --zip PATH`"
        )
    download_dir = Path(tempfile.mkdtemp(prefix="download-", dir=target.parent))
    try:
        command = [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={ARTIFACT}", f"-DoutputDirectory={download_dir}"]
        log(f"downloading {ARTIFACT} from Maven Central: {' '.join(command[1:])}")
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = result.stdout + result.stderr
            raise RuntimeError(f"mvn dependency:copy failed (exit {result.returncode}):\n{output}")
        downloaded = download_dir / ZIP_NAME
        if not downloaded.is_file():
            raise RuntimeError(f"mvn dependency:copy did not produce {downloaded}")
        log(f"downloaded {downloaded.stat().st_size / 1e6:.0f} MB in {time.monotonic() - started:.1f} s")
        downloaded.replace(target)
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)


def _unzip(archive: Path, destination: Path) -> None:
    """Extract with the archive's Unix permissions (zipfile drops them: bin/kc.sh must stay executable)."""
    root = destination.resolve()
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            target = (destination / member.filename).resolve()
            if not target.is_relative_to(root):
                raise RuntimeError(f"{archive}: member {member.filename!r} would be written outside {destination}")
            zipped.extract(member, destination)
            mode = (member.external_attr >> 16) & 0o777
            if mode and not member.is_dir():
                target.chmod(mode)


def ensure_keycloak(log: Echo = say, zip_file: Path | None = None) -> Path:
    """The unpacked, dev-augmented Keycloak distribution in the cache; fetched and prepared once.

    Idempotent and safe to call from parallel processes. `zip_file` is a local copy of the
    distribution to use instead of downloading (checked against the pinned SHA-256 all the same).
    """
    cache = cache_dir()
    dist = cache / DIST_DIR_NAME
    with _locked(cache / f"{DIST_DIR_NAME}.lock"):
        if not (dist / UNPACKED_MARKER).is_file():
            archive = cache / ZIP_NAME
            if zip_file is not None:
                log(f"using {zip_file}")
                shutil.copyfile(zip_file, archive)
            elif not archive.is_file():
                _download(archive, log)
            actual = _sha256(archive)
            if actual != ZIP_SHA256:
                archive.unlink()
                raise RuntimeError(f"{ZIP_NAME}: SHA-256 {actual} is not the pinned {ZIP_SHA256}; deleted it")
            if dist.exists():
                log(f"removing the incomplete {dist}")
                shutil.rmtree(dist)
            log(f"unpacking {archive.name} into {cache}")
            staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache))
            try:
                _unzip(archive, staging)
                (staging / DIST_DIR_NAME / UNPACKED_MARKER).write_text(f"{ARTIFACT}\nsha256 {ZIP_SHA256}\n")
                (staging / DIST_DIR_NAME).rename(dist)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            # Maven keeps its own copy in ~/.m2; the unpacked tree is all that is needed from now on.
            archive.unlink()
            log(f"unpacked Keycloak {KEYCLOAK_VERSION} into {dist}")
        marker = dist / AUGMENTED_MARKER
        wanted = " ".join(BUILD_OPTIONS)
        if not marker.is_file() or marker.read_text().strip() != wanted:
            _prepare(dist, log)
            marker.write_text(wanted + "\n")
    return dist


def _prepare(dist: Path, log: Echo) -> None:
    """One throwaway start-dev: persists the dev-mode augmentation and keeps its fresh database as a template.

    The template holds only what every start creates anyway (the schema and the master realm
    with the bootstrap admin); copying it into each run's data/ saves the schema creation.
    """
    log(f"preparing start-dev once (Quarkus augmentation with {' '.join(BUILD_OPTIONS)}); later starts skip it")
    started = time.monotonic()
    template = dist / DB_TEMPLATE_DIR
    shutil.rmtree(template, ignore_errors=True)
    keycloak = _start(dist, realm_json=None, hostname=None, port=0, management_port=0, echo=None, timeout=600.0)
    try:
        # A clean shutdown first: the database files are complete only after it.
        keycloak.process.send_signal(signal.SIGTERM)
        code = keycloak.process.wait(timeout=60)
        database = keycloak.home / "data" / "h2" if keycloak.home is not None else None
        if code in (0, 143) and database is not None and database.is_dir():
            staging = dist / f"{DB_TEMPLATE_DIR}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(database, staging, ignore=shutil.ignore_patterns("*.trace.db"))
            staging.rename(template)
        else:
            log(f"no database template (Keycloak exited with {code}); every start creates its database")
    finally:
        keycloak.stop()
    log(f"prepared in {time.monotonic() - started:.1f} s (first start: {keycloak.startup_seconds:.1f} s)")


def realm_for_proxy(proxy_url: str, realm_file: Path = REALM_FILE) -> str:
    """The realm file's text with every `http://localhost:8000` replaced by the proxy's public_url."""
    proxy_url = proxy_url.rstrip("/")
    return realm_file.read_text().replace(PROXY_URL_PLACEHOLDER, proxy_url)


@dataclass
class KeycloakService(stack.Service):
    """A running Keycloak: `url` is its base URL, `issuer` the imported realm's issuer (or None)."""

    home: Path | None = None
    management_url: str = ""
    realm: str | None = None
    issuer: str | None = None
    startup_seconds: float = 0.0
    java_pids: list[int] = dataclasses.field(default_factory=list)

    def realm_url(self, path: str = "") -> str:
        return f"{self.url}/realms/{self.realm}{path}"

    def admin_token(self) -> str:
        """An access token of the bootstrap admin (master realm, admin-cli), for the admin REST API.

        The admin comes with the database template: admin / admin unless KC_BOOTSTRAP_ADMIN_USERNAME
        and KC_BOOTSTRAP_ADMIN_PASSWORD were set when ensure_keycloak() prepared it.
        """
        response = httpx.post(
            f"{self.url}/realms/master/protocol/openid-connect/token",
            data={"grant_type": "password", "client_id": "admin-cli",
                  "username": os.environ.get("KC_BOOTSTRAP_ADMIN_USERNAME", ADMIN_USERNAME),
                  "password": os.environ.get("KC_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)},
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def stop(self) -> None:
        # kc.sh forwards SIGTERM to its java child; a java that outlives kc.sh is killed here.
        super().stop()
        for pid in self.java_pids:
            if self.home is not None and _runs_in(pid, self.home):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.java_pids.clear()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None


def _runs_in(pid: int, home: Path) -> bool:
    """Whether process `pid` is still a Keycloak of this home (and not a reused pid)."""
    try:
        return f"-Dkc.home.dir={home}/bin/.." in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_homes(parent: Path) -> None:
    """Homes left by a parent that was killed (SIGKILL leaves no chance to clean up); Keycloak died with it."""
    for home in parent.glob("keycloak-run-*"):
        try:
            owner = int((home / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            shutil.rmtree(home, ignore_errors=True)


def _make_home(dist: Path, realm_json: str | None) -> Path:
    """A throwaway Keycloak home: kc.sh resolves its home from its own (real) path, data/ is per run."""
    parent = Path(tempfile.gettempdir()) / "mcp-auth-keycloak"
    parent.mkdir(exist_ok=True)
    _remove_stale_homes(parent)
    home = Path(tempfile.mkdtemp(prefix="keycloak-run-", dir=parent))
    (home / OWNER_FILE).write_text(str(os.getpid()))
    (home / "bin").mkdir()
    shutil.copy2(dist / "bin" / "kc.sh", home / "bin" / "kc.sh")
    for name in ("lib", "conf", "providers", "themes", "version.txt"):
        if (dist / name).exists():
            (home / name).symlink_to(dist / name)
    template = dist / DB_TEMPLATE_DIR
    if template.is_dir():
        shutil.copytree(template, home / "data" / "h2")
    if realm_json is not None:
        (home / "data" / "import").mkdir(parents=True)
        realm = json.loads(realm_json)["realm"]
        (home / "data" / "import" / f"{realm}-realm.json").write_text(realm_json)
    return home


def _wait_until(check: Callable[[], str | None], deadline: float, what: str, service: stack.Service) -> None:
    last = "not tried"
    while True:
        if service.process.poll() is not None:
            code = service.process.returncode
            raise RuntimeError(f"Keycloak exited (code {code}) before {what}:\n{service.output()}")
        problem = check()
        if problem is None:
            return
        last = problem
        if time.monotonic() > deadline:
            raise TimeoutError(f"Keycloak: {what} did not happen in time (last: {last})")
        time.sleep(0.25)


def _start(
    dist: Path,
    *,
    realm_json: str | None,
    hostname: str | None,
    port: int,
    management_port: int,
    echo: Echo | None,
    timeout: float,
    extra_args: Sequence[str] = (),
) -> KeycloakService:
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and Path(java_home, "bin", "java").is_file()) and shutil.which("java") is None:
        raise RuntimeError("Keycloak needs Java 17 or newer: set JAVA_HOME or put java on the PATH")
    port = port or stack.free_port()
    management_port = management_port or stack.free_port()
    realm = json.loads(realm_json)["realm"] if realm_json is not None else None
    home = _make_home(dist, realm_json)
    command = [
        str(home / "bin" / "kc.sh"),
        "start-dev",
        *BUILD_OPTIONS,
        "--http-host=127.0.0.1",
        f"--http-port={port}",
        "--http-management-host=127.0.0.1",
        f"--http-management-port={management_port}",
    ]
    if realm_json is not None:
        command.append("--import-realm")
    if hostname is not None:
        command.append(f"--hostname={hostname}")
    command += extra_args
    env = {
        "KC_BOOTSTRAP_ADMIN_USERNAME": os.environ.get("KC_BOOTSTRAP_ADMIN_USERNAME", ADMIN_USERNAME),
        "KC_BOOTSTRAP_ADMIN_PASSWORD": os.environ.get("KC_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD),
    }
    base_url = f"http://127.0.0.1:{port}"
    management_url = f"http://127.0.0.1:{management_port}"
    started = time.monotonic()
    deadline = started + timeout
    try:
        service = stack.start("keycloak", command, READY_LINE, lambda m: base_url, timeout=timeout, echo=echo, env=env)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    keycloak = KeycloakService(
        name=service.name, process=service.process, url=service.url, lines=service.lines,
        _waiters=service._waiters, _lock=service._lock,
        home=home, management_url=management_url, realm=realm,
    )
    try:
        keycloak.java_pids = _children(service.process.pid)
        client = httpx.Client(timeout=5.0)

        def health() -> str | None:
            try:
                response = client.get(f"{management_url}/health/ready")
            except httpx.HTTPError as e:
                return repr(e)
            if response.status_code == 200 and response.json().get("status") == "UP":
                return None
            return f"{response.status_code} {response.text[:200]}"

        issuer: list[str] = []

        def discovery() -> str | None:
            url = keycloak.realm_url("/.well-known/openid-configuration")
            try:
                response = client.get(url)
            except httpx.HTTPError as e:
                return repr(e)
            if response.status_code != 200:
                return f"GET {url}: {response.status_code}"
            issuer.append(response.json()["issuer"])
            return None

        with client:
            _wait_until(health, deadline, f"{management_url}/health/ready answered UP", keycloak)
            if realm is not None:
                _wait_until(discovery, deadline, f"realm {realm!r} served its discovery document", keycloak)
                keycloak.issuer = issuer[-1]
        keycloak.startup_seconds = time.monotonic() - started
        return keycloak
    except BaseException:
        keycloak.stop()
        raise


def start_keycloak(
    port: int = 0,
    realm_file: Path | None = REALM_FILE,
    hostname: str | None = None,
    echo: Echo | None = None,
    *,
    proxy_url: str | None = None,
    management_port: int = 0,
    timeout: float = 300.0,
    extra_args: Sequence[str] = (),
) -> KeycloakService:
    """Start a fresh Keycloak on 127.0.0.1:port (0: a free port) with `realm_file` imported.

    `hostname` fixes the URL Keycloak names itself by (e.g. `http://127.0.0.1:8080`: the issuer
    is then `<hostname>/realms/<realm>` whatever Host a request carries); None lets it follow
    the request. `proxy_url` replaces `http://localhost:8000` in the realm file (the proxy's
    public_url: redirect URI of the static client, audience of the MCP scopes). The management
    interface (health) listens on 127.0.0.1:management_port (0: a free port). Returns once the
    realm's discovery document answers; stop() stops Keycloak and deletes its data.
    """
    dist = ensure_keycloak()
    realm_json = None
    if realm_file is not None:
        realm_json = realm_for_proxy(proxy_url, realm_file) if proxy_url else realm_file.read_text()
    return _start(dist, realm_json=realm_json, hostname=hostname, port=port, management_port=management_port,
                  echo=echo, timeout=timeout, extra_args=extra_args)


def _run(args: argparse.Namespace) -> int:
    ensure_keycloak()
    hostname = args.hostname or f"http://localhost:{args.port}"
    say(f"starting Keycloak {KEYCLOAK_VERSION} on http://127.0.0.1:{args.port} (hostname {hostname}) "
        f"with {args.realm_file}" + (f", proxy URL {args.proxy_url}" if args.proxy_url else ""))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    keycloak = start_keycloak(args.port, args.realm_file, hostname, echo=lambda line: print(line, flush=True),
                              proxy_url=args.proxy_url, management_port=args.management_port)
    try:
        say(f"ready in {keycloak.startup_seconds:.1f} s")
        say(f"issuer              {keycloak.issuer}")
        say(f"discovery           {keycloak.issuer}/.well-known/openid-configuration")
        say(f"registration (DCR)  {keycloak.issuer}/clients-registrations/openid-connect")
        say(f"admin console       {hostname}/admin/  (admin / admin)")
        say(f"health              {keycloak.management_url}/health/ready")
        say("users               testuser / testpass, adminuser / adminpass (role mcp-admin)")
        say("Ctrl-C stops it; nothing is kept")
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.is_set() and keycloak.process.poll() is None:
                stop.wait(0.5)
        return 0 if keycloak.process.poll() in (None, 0, 143) else 1
    finally:
        keycloak.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="download and unpack Keycloak into the cache, prepare start-dev")
    fetch.add_argument("--zip", type=Path, help=f"use this local {ZIP_NAME} instead of downloading it")
    run = commands.add_parser("run", help="run Keycloak in the foreground with the realm file imported")
    run.add_argument("--port", type=int, default=8080, help="HTTP port on 127.0.0.1 (default 8080)")
    run.add_argument("--management-port", type=int, default=0,
                     help="health/management port on 127.0.0.1 (default: a free one)")
    run.add_argument("--hostname", help="the URL Keycloak names itself by (default http://localhost:PORT)")
    run.add_argument("--realm-file", type=Path, default=REALM_FILE, help="realm to import (default: %(default)s)")
    run.add_argument("--proxy-url", help=f"the proxy's public_url, replacing {PROXY_URL_PLACEHOLDER} in the realm")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            dist = ensure_keycloak(zip_file=args.zip)
            say(f"Keycloak {KEYCLOAK_VERSION} is ready in {dist}")
            return 0
        return _run(args)
    except (RuntimeError, TimeoutError) as e:
        say(str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
