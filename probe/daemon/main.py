"""``probe run``: the scheduler, the HTTP endpoint, signals and systemd notifications.

``SIGHUP`` reloads the configuration (a bad one is refused with a log line and the
running targets go on); ``SIGTERM`` and ``SIGINT`` stop in-flight cycles within a bound
and end the process with status 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from probe._text import host_port, shorten
from probe.config.errors import ConfigError
from probe.config.load import load_config, parse_listen
from probe.config.models import Config
from probe.daemon.httpserver import CLIENT_TIMEOUT, WebServer
from probe.daemon.looplag import LoopLag
from probe.daemon.metrics import render_target
from probe.daemon.scheduler import Scheduler, status_line
from probe.daemon.sdnotify import Notifier
from probe.daemon.store import ResultStore
from probe.daemon.web import Endpoint, make_app
from probe.daemon.webconfig import BasicAuth, WebConfig, describe, load_web_config, server_context
from probe.engine.plan import plan
from probe.model.results import TargetResult
from probe.stages.plan import TargetPlan

log = logging.getLogger("probe.daemon")


class StartupError(Exception):
    """The daemon cannot start for a reason other than bad configuration (e.g. port in use)."""


class Daemon:
    """One run of the daemon.

    Args:
        config: the loaded configuration.
        plans: its prepared targets.
        notifier: systemd notifications.
        listen: ``host:port`` to serve on (overrides ``config.listen``).
        config_path: the file to re-read on ``SIGHUP``; ``None`` disables reloading.
        initial_results: results to start with (the demo's first check).
        clock: Unix time.
        web_config: TLS and basic auth for the endpoint.
        web_config_path: its file, re-read with the configuration on ``SIGHUP``.
        client_timeout: seconds a client has for each phase of an exchange with the
            endpoint (:data:`probe.daemon.httpserver.CLIENT_TIMEOUT`).
    """

    def __init__(
        self,
        config: Config,
        plans: Sequence[TargetPlan],
        notifier: Notifier,
        listen: str | None = None,
        config_path: Path | None = None,
        initial_results: Sequence[TargetResult] = (),
        clock: Callable[[], float] = time.time,
        web_config: WebConfig | None = None,
        web_config_path: Path | None = None,
        client_timeout: float = CLIENT_TIMEOUT,
    ) -> None:
        self._config = config
        self._listen = listen or config.listen
        self._config_path = config_path
        self._notifier = notifier
        self._clock = clock
        names = [p.target.name for p in plans]
        self.store = ResultStore(names, clock(), render=render_target, histograms=config.metrics.histograms)
        for result in initial_results:
            self.store.record(result)
        self.scheduler = Scheduler(plans, self.store, notifier, clock=clock)
        self.loop_lag = LoopLag()
        self._web_config = web_config or WebConfig()
        self._web_config_path = web_config_path
        self._client_timeout = client_timeout
        self._web: WebServer | None = None
        self._app: Endpoint | None = None
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[bool]] = set()
        self.address: tuple[str, int] | None = None

    async def run(self, stop: asyncio.Event | None = None) -> int:
        """Serve until a stop signal (or ``stop``); returns the exit status (0).

        Raises:
            StartupError: the endpoint cannot listen.
        """
        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        host, port = parse_listen(self._listen)
        tls = self._web_config.tls_server_config
        self._app = make_app(self.store, BasicAuth(self._web_config.basic_auth_users), self.loop_lag.seconds)
        web = self._web = WebServer(
            host,
            port,
            self._app,
            ssl_context=server_context(tls) if tls else None,
            client_timeout=self._client_timeout,
        )
        try:
            self.address = web.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {self._listen}: {exc.strerror or exc}") from None
        scheme = "https" if tls else "http"
        log.info(
            "serving metrics",
            extra={
                "url": f"{scheme}://{host_port(*self.address)}/metrics",
                "targets": len(self.scheduler.targets),
                "security": describe(self._web_config),
            },
        )
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._notifier.ready(status_line((), len(self.scheduler.targets)))
        lag_task = loop.create_task(self.loop_lag.run())
        try:
            await self.scheduler.run(stop)
        finally:
            lag_task.cancel()
            log.info("stopping")
            self._notifier.stopping()
            for signum in handled:
                loop.remove_signal_handler(signum)
            for task in self._background:
                task.cancel()
            web.stop()
            self._notifier.close()
        return 0

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reload(self) -> bool:
        """Re-read the configuration file (and the web config file); returns whether they were applied.

        Both are read before either is applied: a bad one refuses the reload, and the
        running configuration and web config stay.
        """
        async with self._reload_lock:
            if self._config_path is None:
                log.warning("reload requested, but there is no configuration file to read")
                return False
            self._notifier.reloading()
            try:
                web = await asyncio.to_thread(_read_web_config, self._web_config_path)
                config = await asyncio.to_thread(load_config, self._config_path)
                plans = await asyncio.to_thread(plan, config)
            except Exception as exc:  # a bad file, or anything else: the running config stays
                if isinstance(exc, ConfigError):
                    why = str(exc)
                    log.error("reload refused; the running configuration stays", extra={"error": why})
                else:
                    why = f"{type(exc).__name__}: {shorten(str(exc))}"
                    log.error(
                        "reload failed; the running configuration stays", exc_info=exc, extra={"error": why}
                    )
                self.store.reload_failed()
                self._notifier.reloaded(f"reload refused: {why}"[:200])
                return False
            if config.listen != self._config.listen:
                log.warning(
                    "listen changed; it takes effect at the next restart",
                    extra={"listen": config.listen, "serving": self._listen},
                )
            self._config = config
            if web is not None:
                self._apply_web_config(*web)
            self.store.set_histograms(config.metrics.histograms)
            await self.scheduler.apply(plans)
            self._notifier.reloaded(status_line(self.store.snapshot().targets.values(), len(plans)))
            return True

    def _apply_web_config(self, web_config: WebConfig, context: ssl.SSLContext | None) -> None:
        """Serve the following connections and requests with a web config read again."""
        if self._web is None or self._app is None:
            return
        if web_config != self._web_config:
            log.info("web config applied", extra={"security": describe(web_config)})
        self._web_config = web_config
        self._web.ssl_context = context
        self._app.auth = BasicAuth(web_config.basic_auth_users, previous=self._app.auth)


def _read_web_config(path: Path | None) -> tuple[WebConfig, ssl.SSLContext | None] | None:
    """The web config file and its TLS context, or ``None`` without one.

    Raises:
        ConfigError: as :func:`probe.daemon.webconfig.load_web_config`.
    """
    if path is None:
        return None
    web_config = load_web_config(path)
    tls = web_config.tls_server_config
    return web_config, server_context(tls, str(path)) if tls else None


def start(
    config_path: Path,
    listen: str | None = None,
    notifier: Notifier | None = None,
    web_config_path: Path | None = None,
    client_timeout: float = CLIENT_TIMEOUT,
) -> int:
    """Load the configuration and run the daemon until it is stopped.

    Raises:
        ConfigError: the configuration or web config is invalid (before anything starts).
        StartupError: the endpoint cannot listen.
    """
    config = load_config(config_path)
    plans = plan(config)
    web_config = load_web_config(web_config_path) if web_config_path else None
    if listen is not None:
        try:
            parse_listen(listen)
        except ValueError as exc:
            raise ConfigError(str(exc), field="--listen") from None
    daemon = Daemon(
        config,
        plans,
        notifier or Notifier(),
        listen=listen,
        config_path=config_path,
        web_config=web_config,
        web_config_path=web_config_path,
        client_timeout=client_timeout,
    )
    return asyncio.run(daemon.run())
