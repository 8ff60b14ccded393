"""A reload that fails for any reason keeps the running configuration and says so."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from probe.config.load import build_config
from probe.daemon import main as daemon_module
from probe.daemon.main import Daemon
from probe.daemon.sdnotify import Notifier
from probe.engine.plan import plan


def test_unexpected_error_during_reload_is_refused_with_one_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = build_config({"targets": [{"url": "https://www.corp.example/", "resolvers": ["127.0.0.1"]}]})
    running = Daemon(config, plan(config), Notifier({}), config_path=tmp_path / "probe.yaml")

    def explode(path: Path) -> None:
        raise MemoryError("too big")

    monkeypatch.setattr(daemon_module, "load_config", explode)
    caplog.set_level(logging.ERROR, logger="probe")
    applied = asyncio.run(running.reload())

    assert applied is False
    assert running.store.snapshot().reload_successful is False
    assert running.scheduler.targets == ("www.corp.example",)
    [record] = [r for r in caplog.records if r.name == "probe.daemon"]
    assert record.getMessage() == "reload failed; the running configuration stays"
    assert record.error == "MemoryError: too big"  # type: ignore[attr-defined]
