"""config/alerts.yml with the real promtool: the rules load, and their unit tests pass.

The unit tests (tests/data/promtool/alerts_test.yml) feed each rule series that make it
fire and series that must not, and compare the alerts with their labels and annotations.
Without promtool the tests are skipped, unless ``PROBE_REQUIRE_E2E=1`` (CI).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e._procs import require_programs

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "config" / "alerts.yml"
RULE_TESTS = REPO / "tests" / "data" / "promtool" / "alerts_test.yml"
#: Bound on one promtool run (seconds); it takes well under one.
PROMTOOL_TIMEOUT = 60


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_programs(
        ("promtool",), "alert rule tests need {missing} on PATH; on Debian/Ubuntu: apt-get install prometheus"
    )["promtool"]


def run(argv: list[str]) -> tuple[int, str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT, check=False)
    return done.returncode, done.stdout + done.stderr


def test_promtool_checks_the_rules(promtool: str) -> None:
    code, output = run([promtool, "check", "rules", str(RULES)])
    assert code == 0, output
    assert "SUCCESS: 12 rules found" in output, output


def test_promtool_unit_tests_of_every_rule_pass(promtool: str) -> None:
    code, output = run([promtool, "test", "rules", str(RULE_TESTS)])
    assert (code, output.strip().splitlines()[-1].strip()) == (0, "SUCCESS"), output


def test_promtool_unit_tests_fail_when_a_rule_breaks(promtool: str, tmp_path: Path) -> None:
    # The tests can fail: with ProbeAddressDown's threshold inverted they must.
    broken = RULES.read_text().replace("probe_address_success == 0\n", "probe_address_success == 1\n")
    assert broken != RULES.read_text()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "alerts.yml").write_text(broken)
    tests_dir = tmp_path / "tests" / "data" / "promtool"
    tests_dir.mkdir(parents=True)
    (tests_dir / "alerts_test.yml").write_text(RULE_TESTS.read_text())
    code, output = run([promtool, "test", "rules", str(tests_dir / "alerts_test.yml")])
    assert code != 0
    assert "alertname: ProbeAddressDown" in output, output
