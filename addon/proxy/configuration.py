"""The addon's configuration: the `mcp_auth_config` option, the YAML file, and what is built from it."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Set
from dataclasses import dataclass

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import mode_specs

from addon.config import ConfigError, Settings, load_settings
from addon.protocol.identity_provider import IdentityProvider
from addon.protocol.sealing import Sealer, generate_secret
from addon.protocol.token_exchange import StaticClient

logger = logging.getLogger("mcp_auth")

# mitmdump's flow dump: only flows the gate forwarded (see _keep_secrets_out_of_the_dump).
DUMP_FILTER = '~comment "^authorized-call: "'
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class Configuration:
    """Owns the settings and the objects built from them; the other addons read them from here."""

    def __init__(self) -> None:
        self._idp: IdentityProvider | None = None
        # Settings, IdP and sealer, built together from one configuration file.
        self._runtime: Runtime | None = None
        self.is_running = False
        self._start_task: asyncio.Future[None] | None = None
        self._closing: asyncio.Future[None] | None = None

    def load(self, loader: Loader) -> None:
        # httpx logs every request at INFO; the proxy's own lines say what matters.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        loader.add_option(
            "mcp_auth_config",
            str,
            "config/config.yaml",
            "The mcp-auth-addon YAML configuration file.",
        )
        loader.add_option(
            "mcp_auth_redact",
            bool,
            False,
            "Show tokens, codes and secrets shortened in mcp-auth-addon's views and in the flows it answers "
            "itself (for shared screens and workshops).",
        )

    def configure(self, updated: Set[str]) -> None:
        serving = self.serving()
        try:
            if serving and ("mode" in updated or "server" in updated):
                self._check_reverse_mode()
            if "mcp_auth_config" in updated or ("server" in updated and serving and self._runtime is None):
                self._load(serving)
        except (ConfigError, exceptions.OptionsError) as e:
            self._refuse(str(e))
        if "server" in updated and serving and self.is_running and self._start_task is None:
            self._start_idp()  # started with -n, serving now: the IdP was never started
        if ({"flow_detail", "dumper_filter"} & set(updated)) and serving:
            self._keep_secrets_out_of_the_dump()
        if "proxy_debug" in updated and getattr(ctx.options, "proxy_debug", False):
            # A wire dump for debugging mitmproxy itself: every byte, so every token. Not the
            # addon's to switch off, but nobody should run it unknowingly.
            logger.warning(
                "mcp_auth: WARNING: proxy_debug prints every byte the proxy sends and receives, "
                "access tokens, codes and client secrets included; use it only on test credentials"
            )
        if "termlog_verbosity" in updated:
            self._log_only_what_is_shown()
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            # Eager connects upstream before any hook runs: with the MCP server down, even the
            # proxy's own metadata and OAuth endpoints would fail.
            logger.info("mcp_auth: setting connection_strategy=lazy so the proxy answers while the MCP server is down")
            ctx.options.update(connection_strategy="lazy")
        if "stream_large_bodies" in updated and getattr(ctx.options, "stream_large_bodies", None):
            # mitmproxy streams a request over this size upstream right after its headers,
            # before the `request` hook where the gate decides: an unauthenticated call would
            # reach the MCP server. Event streams are passed through unbuffered regardless.
            logger.warning(
                "mcp_auth: stream_large_bodies=%s would send large request bodies to the MCP server before "
                "their token is checked; switched off (authorized event streams are streamed anyway; "
                "cap request bodies with max_request_body_bytes)",
                ctx.options.stream_large_bodies,
            )
            ctx.options.update(stream_large_bodies=None)

    @staticmethod
    def _log_only_what_is_shown() -> None:
        """mitmproxy hands every log record to every addon (the legacy `add_log` event), which
        costs more than the line itself. Under mitmdump the terminal is the only reader, so the
        addon's loggers drop what termlog_verbosity would not print (with -q: all but errors).
        mitmweb's event log reads everything, so there they keep INFO."""
        if hasattr(ctx.options, "web_port"):
            return
        level = logging.getLevelName(str(ctx.options.termlog_verbosity).upper())
        if not isinstance(level, int):
            return
        for name in ("mcp_auth", "addon"):
            logging.getLogger(name).setLevel(max(level, logging.DEBUG))

    @staticmethod
    def _keep_secrets_out_of_the_dump() -> None:
        """mitmdump prints flows itself (its Dumper addon): URLs at flow_detail 1, headers at 2,
        bodies at 3 and 4. The proxy's own answers carry what must never reach a log: the IdP's
        code in the /callback URL, sealed codes and client ids in Location headers and bodies,
        access and refresh tokens in /token answers, valid tokens in the Authorization header
        of refused calls. None of that can be changed (the client needs the real values), so
        the dump is limited to the calls that went to the MCP server, whose token the gate has
        removed by then; the proxy's own log line for every other flow says what happened, with
        secrets shortened. A dumper_filter the user set still applies, on top.
        """
        current = ctx.options.dumper_filter if hasattr(ctx.options, "dumper_filter") else None
        if not hasattr(ctx.options, "flow_detail") or (current or "").startswith(DUMP_FILTER):
            return  # no Dumper (mitmweb, tests), or limited already
        limited = f"{DUMP_FILTER} & ({current})" if current else DUMP_FILTER
        logger.info(
            "mcp_auth: mitmdump's flow dump shows only calls forwarded to the MCP server (dumper_filter=%s);"
            " the proxy's own answers carry tokens and codes, its log lines describe them",
            limited,
        )
        ctx.options.update(dumper_filter=limited)

    @staticmethod
    def serving() -> bool:
        """False under `mitmdump -n` (reading a flow file): nothing is served, so nothing can be forwarded."""
        try:
            return bool(ctx.options.server)
        except AttributeError:  # no Proxyserver addon (some test set-ups): assume the worst
            return True

    def _load(self, serving: bool) -> None:
        try:
            settings = load_settings(ctx.options.mcp_auth_config)
        except ConfigError as e:
            if serving:
                raise
            # Offline (-n): the flows only get read, a missing or bad file is no risk.
            logger.warning("mcp_auth: not serving, so going on without a configuration: %s", e)
            return
        self._apply(settings, serving)

    def _refuse(self, message: str) -> None:
        if not self.is_running:
            # mitmproxy logs a script's configure error and serves on without the addon, which
            # here would forward unauthenticated calls. Stop instead.
            print(f"mcp_auth: configuration error: {message}", file=sys.stderr, flush=True)
            logger.error("configuration error: %s", message)
            raise SystemExit(2)
        raise exceptions.OptionsError(message)

    def _check_reverse_mode(self) -> None:
        for spec in ctx.options.mode:
            mode = mode_specs.ProxyMode.parse(spec)
            if not isinstance(mode, mode_specs.ReverseMode):
                raise exceptions.OptionsError(
                    f"mitmproxy mode {spec!r}: mcp-auth-addon only works in reverse-proxy mode; start with "
                    "--mode reverse:http://<MCP server host:port> (e.g. --mode reverse:http://127.0.0.1:3000)"
                )

    def _apply(self, settings: Settings, serving: bool = True) -> None:
        secret = settings.secret_key
        if secret is None:
            secret = generate_secret()
        if settings.secret_key is None and serving:
            logger.warning(
                "secret_key is not set: using a random key for this run. Registrations and logins in progress "
                "end with a restart, and several proxy processes cannot share clients. Set secret_key."
            )
        old_idp = self._idp
        self._idp = IdentityProvider(
            settings.issuer,
            settings.audience,
            timeout=settings.idp_timeout_seconds,
            leeway=settings.clock_skew_seconds,
            jwks_refetch_interval=settings.jwks_refetch_interval_seconds,
            jwks_max_age=settings.jwks_max_age_seconds,
            token_cache_size=settings.token_cache_size,
        )
        self._runtime = Runtime(settings, self._idp, Sealer(secret, settings.previous_secret_keys))
        logger.log(
            logging.INFO if serving else logging.DEBUG,
            "mcp_auth: %s mode, protecting %s with issuer %s (registration: %s)",
            settings.mode,
            settings.resource,
            settings.issuer,
            settings.registration.mode if settings.facade else "at the IdP",
        )
        if old_idp is not None:
            self._cancel_start()  # it works on the old IdP's client, about to be closed
            self._closing = asyncio.ensure_future(old_idp.close())
        if self.is_running and serving:
            self._start_idp()

    def running(self) -> None:
        self.is_running = True
        self._warn_about_an_open_mitmweb()
        if not self.serving() or self._idp is None:
            return  # reading flows only (-n): no IdP discovery, no key fetching
        self._start_idp()

    @staticmethod
    def _warn_about_an_open_mitmweb() -> None:
        """mitmweb shows every flow: tokens, codes, secrets. Reachable beyond this host without a
        password, anyone who finds the port (or gets mitmweb's one-time token URL) sees them."""
        web_host = getattr(ctx.options, "web_host", None)
        if web_host is None or web_host.strip("[]") in LOOPBACK_HOSTS or getattr(ctx.options, "web_password", ""):
            return
        logger.warning(
            "mcp_auth: WARNING: mitmweb listens on %s, beyond this machine, without web_password: its flows hold "
            "access tokens, refresh tokens, authorization codes and client secrets. Set --set web_password=<secret> "
            "or --web-host 127.0.0.1",
            web_host,
        )

    def _start_idp(self) -> None:
        assert self._idp is not None
        self._start_task = asyncio.ensure_future(self._idp.start())

    def _cancel_start(self) -> None:
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()

    async def done(self) -> None:
        self._cancel_start()
        if self._idp is not None:
            await self._idp.close()

    def current(self) -> Runtime:
        """What the handlers work with; a method, as mitmproxy inspects every attribute of an addon."""
        if self._runtime is None:
            raise RuntimeError("mcp_auth is not configured")
        return self._runtime


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    idp: IdentityProvider
    sealer: Sealer

    @property
    def static_client(self) -> StaticClient | None:
        registration = self.settings.registration
        if registration.mode != "static" or not registration.client_id:
            return None
        return StaticClient(registration.client_id, registration.client_secret, registration.client_auth_method)
