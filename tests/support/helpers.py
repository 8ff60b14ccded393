"""Helpers for building targets, running cycles and running the ``probe`` command in tests."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from probe.config.load import build_config
from probe.config.models import TargetConfig
from probe.engine.cycle import run_cycle
from probe.engine.plan import plan
from probe.model.results import TargetResult
from probe.stages.plan import TargetPlan

REPO = Path(__file__).resolve().parents[2]
FAST = {"dns": 1, "connect": 1, "tls": 1, "http": 1, "deadline": 5}


def check_config(tmp_path: Path, target: dict[str, Any], *flags: str) -> tuple[int, str, float]:
    """``probe check --config`` in this process with one target (:data:`FAST` timeouts).

    Returns:
        ``(exit code, output, seconds)``.
    """
    from probe.cli.main import main  # the command, only for the tests that run it

    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump({"targets": [{"timeouts": dict(FAST), **target}]}))
    out = io.StringIO()
    start = time.monotonic()
    code = main(["check", "--config", str(path), *flags], stdout=out)
    return code, out.getvalue(), time.monotonic() - start


def target_data(**fields: Any) -> dict[str, Any]:
    """Target fields with fast test timeouts unless given."""
    fields.setdefault("timeouts", dict(FAST))
    return fields


def make_target(**fields: Any) -> TargetConfig:
    """A validated target from config fields."""
    return build_config({"targets": [target_data(**fields)]}).targets[0]


def make_plan(**fields: Any) -> TargetPlan:
    """A planned target (resolvers and SSL contexts ready) from config fields."""
    return plan(build_config({"targets": [target_data(**fields)]}))[0]


def run(target: TargetPlan | dict[str, Any]) -> TargetResult:
    """Run one cycle synchronously."""
    target_plan = target if isinstance(target, TargetPlan) else make_plan(**target)
    return asyncio.run(run_cycle(target_plan))


def reasons(result: TargetResult) -> set[str]:
    """The reason codes of a result, as strings."""
    return {f.reason.value for f in result.failures}


def environment_without_proxies() -> dict[str, str]:
    """The test's environment without proxy settings: tests only talk to loopback."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def probe_cli(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m probe ARGS`` from the repository, output captured as text; any exit status is returned.

    The environment is ``env``, by default the test's own without proxy settings.
    """
    return subprocess.run(
        [sys.executable, "-m", "probe", *args],
        cwd=REPO,
        env=environment_without_proxies() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
