"""``probe run`` as a subprocess against the loopback lab: notify, metrics, reload, stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from probe.lab import DemoLab
from probe.model.reasons import ExitCode
from tests.support.helpers import REPO, environment_without_proxies, probe_cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Daemon:
    def __init__(
        self, process: subprocess.Popen[str], port: int, notify: socket.socket, config: Path
    ) -> None:
        self.process = process
        self.base = f"http://127.0.0.1:{port}"
        self.notify = notify
        self.config = config
        self.datagrams: list[str] = []
        self.stderr_path: Path | None = None
        self.stopped = False

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, timeout=2, trust_env=False)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.get("/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples().get((name, tuple(sorted(labels.items()))))

    def listen(self) -> None:
        """Read notifications continuously, as systemd does."""

        def read() -> None:
            self.notify.settimeout(0.2)
            while not self.stopped:
                try:
                    self.datagrams.append(self.notify.recv(4096).decode())
                except TimeoutError:
                    continue
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()

    def wait_datagram(self, field: str, timeout: float) -> str:
        def found() -> str | None:
            return next((d for d in list(self.datagrams) if field in d.split("\n")), None)

        return str(wait_for(found, timeout, f"a {field} notification"))


SECRET = "Bearer daemon-s3cr3t"


def config_text(demo: DemoLab, port: int, metrics: dict[str, Any] | None = None, **overrides: Any) -> str:
    overrides.setdefault(
        "headers", {"Authorization": SECRET, "X-Token": {"value": "t0ken-value", "secret": True}}
    )
    target = demo.target(interval=1, **overrides)
    target["timeouts"] = {"dns": 0.5, "connect": 0.5, "tls": 0.5, "http": 0.5, "deadline": 1}
    document: dict[str, Any] = {"listen": f"127.0.0.1:{port}", "targets": [target]}
    if metrics is not None:
        document["metrics"] = metrics
    return yaml.safe_dump(document)


@pytest.fixture
def daemon(demo: DemoLab, tmp_path: Path) -> Iterator[Daemon]:
    port = free_port()
    config = tmp_path / "probe.yaml"
    config.write_text(config_text(demo, port))
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    env = environment_without_proxies()
    env.update(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="1000000")
    log_file = (tmp_path / "stderr.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "probe", "run", "--config", str(config), "--log-level", "info"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        text=True,
    )
    running = Daemon(process, port, notify, config)
    running.listen()
    running.stderr_path = tmp_path / "stderr.log"
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            print((tmp_path / "stderr.log").read_text())
        process.wait(timeout=10)
        log_file.close()
        running.stopped = True
        notify.close()


def test_daemon_serves_reloads_and_stops(daemon: Daemon, demo: DemoLab) -> None:
    ready = daemon.wait_datagram("READY=1", timeout=10)
    assert any(line.startswith("STATUS=1 target: ") for line in ready.split("\n"))
    daemon.wait_datagram("WATCHDOG=1", timeout=5)

    wait_for(lambda: daemon.get("/-/ready").status_code == 200, 10, "/-/ready")
    assert daemon.get("/-/healthy").status_code == 200
    assert daemon.value("probe_success", target="demo") == 1
    assert daemon.value("probe_backend_up", target="demo", backend="web-1") == 1
    assert daemon.value("probe_tls_version_info", target="demo", address="127.0.10.1", version="TLS 1.3") == 1
    assert daemon.value("probe_config_last_reload_successful") == 1
    assert daemon.value("probe_interval_seconds", target="demo") == 1  # interval: 1 in config_text
    assert "demo" in daemon.get("/").text
    for page in ("/metrics", "/"):
        assert "s3cr3t" not in daemon.get(page).text and "t0ken-value" not in daemon.get(page).text

    # A broken config is refused: the old target keeps running and the failure shows.
    daemon.config.write_text("targets: [{url: 'ftp://not-https.example/'}]\n")
    cycles = daemon.value("probe_cycles_total", target="demo") or 0
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.value("probe_config_last_reload_successful") == 0, 5, "a refused reload")
    wait_for(lambda: (daemon.value("probe_cycles_total", target="demo") or 0) > cycles + 1, 5, "more cycles")
    assert daemon.process.poll() is None

    # A good config replaces the target: the old one's series disappear.
    daemon.config.write_text(config_text(demo, int(daemon.base.rsplit(":", 1)[1]), name="demo-2"))
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.value("probe_config_last_reload_successful") == 1, 5, "a good reload")
    wait_for(lambda: daemon.value("probe_success", target="demo-2") == 1, 5, "the new target")
    assert not [key for key in daemon.samples() if ("target", "demo") in key[1]]

    start = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=10) == 0
    assert time.monotonic() - start < 5
    daemon.wait_datagram("STOPPING=1", timeout=2)
    assert daemon.stderr_path is not None
    stderr = daemon.stderr_path.read_text()
    assert 'msg="reload refused; the running configuration stays"' in stderr
    assert "targets[0].url: 'ftp://not-https.example/' must be an https:// or http:// URL" in stderr
    assert "Traceback" not in stderr
    for secret in (SECRET, "t0ken-value"):  # header values appear in no log line
        assert secret not in stderr


def test_histograms_are_opt_in_and_a_reload_turns_them_on_and_off(daemon: Daemon, demo: DemoLab) -> None:
    port = int(daemon.base.rsplit(":", 1)[1])
    daemon.wait_datagram("READY=1", timeout=10)
    wait_for(lambda: daemon.get("/-/ready").status_code == 200, 10, "/-/ready")
    text = daemon.get("/metrics").text
    # Default settings: the family is declared, no series; the per-cycle phase gauges are there.
    assert "# TYPE probe_phase_duration_seconds histogram\n" in text
    assert "probe_phase_duration_seconds_" not in text
    assert daemon.value("probe_http_duration_seconds", target="demo", address="127.0.10.1", phase="tls")

    daemon.config.write_text(config_text(demo, port, metrics={"histograms": True}))
    cycles = daemon.value("probe_cycles_total", target="demo") or 0
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGHUP)
    tls_count = {"target": "demo", "phase": "tls"}
    wait_for(lambda: daemon.value("probe_phase_duration_seconds_count", **tls_count), 5, "a histogram")
    assert time.monotonic() - started < 5
    # The target's settings did not change: it kept running and its counters kept counting.
    assert (daemon.value("probe_cycles_total", target="demo") or 0) >= cycles
    wait_for(lambda: (daemon.value("probe_phase_duration_seconds_count", **tls_count) or 0) >= 4, 5, "growth")
    buckets = [s for s in daemon.samples() if s[0] == "probe_phase_duration_seconds_bucket"]
    assert len(buckets) == 5 * 14  # five phases, 13 bounds and +Inf

    # Off again: the series go at once (at the reload, not at the next cycle).
    daemon.config.write_text(config_text(demo, port, metrics={"histograms": False}))
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "probe_phase_duration_seconds_" not in daemon.get("/metrics").text, 5, "no histogram")
    assert daemon.value("probe_config_last_reload_successful") == 1
    assert (daemon.value("probe_cycles_total", target="demo") or 0) > cycles


def test_bad_config_exits_3_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "probe.yaml"
    config.write_text("targets: [{url: 'https://www.corp.example/', timeouts: {dns: 0}}]\n")
    result = probe_cli("run", "--config", str(config), timeout=30)
    assert result.returncode == 3
    assert result.stderr == f"probe: {config}: targets[0].timeouts.dns: must be greater than 0 (got 0)\n"


def test_port_in_use_is_one_line_and_its_own_exit_code(tmp_path: Path, demo: DemoLab) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "probe.yaml"
        config.write_text(config_text(demo, port))
        result = probe_cli("run", "--config", str(config), timeout=30)
    assert result.returncode == ExitCode.LISTEN_FAILED == 4  # not 1, which means "warning"
    assert result.stderr.endswith(f"probe: cannot listen on 127.0.0.1:{port}: Address already in use\n")


def test_event_loop_lag_is_exported_and_a_stalled_loop_says_so(daemon: Daemon) -> None:
    daemon.wait_datagram("READY=1", timeout=10)
    wait_for(lambda: daemon.get("/-/ready").status_code == 200, 10, "/-/ready")
    wait_for(lambda: daemon.value("probe_event_loop_lag_seconds") is not None, 5, "the lag gauge")
    quiet = daemon.value("probe_event_loop_lag_seconds")
    assert quiet is not None and 0 <= quiet < 0.5  # one target: the loop keeps time (a busy CI box aside)

    # Stop the whole process for 0.4 s: its 100 ms timer wakes about 0.3 s late.
    daemon.process.send_signal(signal.SIGSTOP)
    time.sleep(0.4)
    daemon.process.send_signal(signal.SIGCONT)
    start = time.monotonic()
    lag = wait_for(
        lambda: (v := daemon.value("probe_event_loop_lag_seconds")) is not None and v >= 0.25 and v, 5, "lag"
    )
    assert 0.25 <= lag < 2
    assert time.monotonic() - start < 5
    assert daemon.stderr_path is not None
    log_path = daemon.stderr_path

    def warned() -> str | None:
        text = log_path.read_text()
        return text if "event loop late" in text else None

    stderr = wait_for(warned, 5, "the warning")
    assert 'msg="event loop late: timings are inflated"' in stderr and "lag_seconds=0." in stderr
    assert daemon.value("probe_success", target="demo") == 1  # the lag is no finding of the target
