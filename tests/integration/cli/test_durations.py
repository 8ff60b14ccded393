"""Durations and fitted timeouts, end to end: ``probe check`` against the loopback lab.

Each test asserts what a user reads (exit code, status, reason, the effective timeouts
in the JSON document) and that the check ended within its (fitted) deadline.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from probe.cli.main import main
from probe.lab import DemoLab
from probe.model.reasons import ExitCode

SLACK = 0.6  # seconds of allowance over a configured bound for a loaded 2-core machine


def check(*args: str) -> tuple[int, dict[str, Any], float]:
    out = io.StringIO()
    start = time.monotonic()
    code = main(["check", *args, "--json"], stdout=out)
    return code, json.loads(out.getvalue()), time.monotonic() - start


def config_file(tmp_path: Path, target: dict[str, Any]) -> str:
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump({"targets": [target]}))
    return str(path)


async def silent(reader: asyncio.StreamReader, writer: Any) -> None:
    await asyncio.sleep(30)


def test_interval_alone_loads_and_the_deadline_fits_it(demo: DemoLab, tmp_path: Path) -> None:
    """``interval: 5`` alone was refused ("25s is longer than the interval"); now it runs."""
    target = demo.target()
    del target["timeouts"]
    path = config_file(tmp_path, {**target, "interval": 5})

    code, document, elapsed = check("--config", path)

    assert code == ExitCode.OK
    (result,) = document["targets"]
    assert result["status"] == "ok" and result["failures"] == []
    assert result["timeouts_seconds"] == {"dns": 2, "connect": 3, "tls": 5, "http": 5, "deadline": 5}
    assert result["backends"]["counts"] == {"web-1": 4, "web-2": 4}
    assert elapsed < 5 + SLACK


def test_adhoc_check_with_a_500ms_timeout(demo: DemoLab) -> None:
    code, document, elapsed = check(
        *demo.adhoc_args(),
        "--requests",
        "1",
        "--timeout",
        "500ms",
    )

    (result,) = document["targets"]
    assert result["timeouts_seconds"] == {
        "dns": 0.5,
        "connect": 0.5,
        "tls": 0.5,
        "http": 0.5,
        "deadline": 0.5,
    }
    assert code == ExitCode.OK and result["status"] == "ok", result["failures"]
    assert [a["address"] for a in result["addresses"]] == list(demo.node_addresses)
    assert elapsed < 0.5 + SLACK


def test_duration_strings_in_the_config_reach_the_stages(scene: Any, tmp_path: Path) -> None:
    """A ``300ms`` TLS timeout inside a deadline fitted to ``interval: 2s``."""
    s = scene(handler=silent, tls=False, backends=())
    path = config_file(tmp_path, {**s.target, "interval": "2s", "timeouts": {"tls": "300ms"}})

    code, document, elapsed = check("--config", path)

    assert code == ExitCode.CRITICAL
    (result,) = document["targets"]
    assert result["timeouts_seconds"] == {"dns": 2, "connect": 2, "tls": 0.3, "http": 2, "deadline": 2}
    assert [f["reason"] for f in result["failures"]] == ["tls_handshake_timeout"]
    assert "0.3" in result["failures"][0]["detail"]
    assert elapsed < 0.3 + SLACK


def test_a_fitted_deadline_ends_the_cycle(scene: Any, tmp_path: Path) -> None:
    """No timeout set, ``interval: 1s``: every bound shrinks to 1 s, and the check ends then."""
    s = scene(handler=silent, tls=False, backends=())
    path = config_file(tmp_path, {**s.target, "interval": "1s"})

    code, document, elapsed = check("--config", path)

    assert code == ExitCode.CRITICAL
    (result,) = document["targets"]
    assert result["timeouts_seconds"] == {"dns": 1, "connect": 1, "tls": 1, "http": 1, "deadline": 1}
    # The TLS timeout equals the deadline, and the connect used some of it: the deadline fires.
    assert [f["reason"] for f in result["failures"]] == ["cycle_deadline_exceeded"]
    assert re.fullmatch(r"TLS handshake did not complete within 0\.\d+s", result["failures"][0]["detail"])
    assert elapsed < 1 + SLACK


def test_a_bad_duration_is_one_line_and_exit_3(tmp_path: Path, capsys: Any) -> None:
    path = config_file(tmp_path, {"url": "https://www.corp.example/", "timeouts": {"tls": "5 sec"}})
    assert main(["check", "--config", path], stdout=io.StringIO()) == ExitCode.UNKNOWN
    assert capsys.readouterr().err == (
        f"probe: {path}: targets[0].timeouts.tls: "
        "'5 sec' is not a duration (e.g. 5s, 500ms, 1m30s, or seconds)\n"
    )
