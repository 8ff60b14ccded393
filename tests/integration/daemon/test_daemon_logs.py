"""``probe run``'s log as an operator reads it: every first result, and what a reload changed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from probe.lab import DemoLab
from tests.integration.daemon.test_daemon import free_port, wait_for
from tests.support.helpers import REPO, environment_without_proxies


def config_text(demo: DemoLab, port: int, targets: dict[str, dict[str, Any]]) -> str:
    """Targets on the demo lab, ok by construction (no backend count, so sharing is fine)."""
    fast = {"dns": 0.5, "connect": 0.5, "tls": 0.5, "http": 0.5, "deadline": 1}
    data = [
        {**demo.target(name=name, interval=1, expect_backends=None), "timeouts": fast, **extra}
        for name, extra in targets.items()
    ]
    return yaml.safe_dump({"listen": f"127.0.0.1:{port}", "targets": data})


def lines_with(log: Path, *parts: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if all(p in line for p in parts)]


def test_first_results_and_reload_changes_are_logged(demo: DemoLab, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "probe.yaml"
    config.write_text(config_text(demo, port, {"a": {}, "b": {}}))
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "probe", "run", "--config", str(config), "--log-level", "info"],
            cwd=REPO,
            env=environment_without_proxies(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
        try:
            # Both targets are ok, and each one's first result is still logged at info.
            for name in ("a", "b"):
                wait_for(
                    lambda n=name: lines_with(log, 'msg="first result"', f"target={n} ", "status=ok"),
                    10,
                    f"the first result of {name}",
                )
            # Remove a, change b, add c.
            config.write_text(config_text(demo, port, {"b": {"requests_per_address": 2}, "c": {}}))
            start = time.monotonic()
            process.send_signal(signal.SIGHUP)
            (applied,) = wait_for(lambda: lines_with(log, 'msg="configuration applied"'), 10, "the reload")
            assert time.monotonic() - start < 5
            assert "level=info" in applied
            assert "targets=2 added=c removed=a restarted=b unchanged=0" in applied
            assert '=""' not in applied
            wait_for(
                lambda: lines_with(log, 'msg="first result"', "target=c ", "status=ok"), 10, "c's result"
            )

            # A reload that changes nothing says so, and names nothing.
            process.send_signal(signal.SIGHUP)
            wait_for(
                lambda: len(lines_with(log, 'msg="configuration applied"')) == 2, 10, "the second reload"
            )
            again = lines_with(log, 'msg="configuration applied"')[1]
            assert again.endswith("targets=2 unchanged=2")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    text = log.read_text()
    assert "Traceback" not in text
    assert len(lines_with(log, 'msg="first result"', "target=a ")) == 1, text
