"""Every reason code is produced by a test against real servers (the issue's rule)."""

from __future__ import annotations

from pathlib import Path

from probe.model.reasons import Reason

TESTS = Path(__file__).resolve().parents[2]

# Codes no loopback peer can produce, with where they are tested instead.
UNIT_ONLY = {
    Reason.TCP_ERROR: "connect() to loopback fails only as refused or timed out; "
    "tests/unit/stages/test_classify.py maps EHOSTUNREACH and friends",
}


def _text(*folders: str) -> str:
    files = (p for folder in folders for p in (TESTS / folder).rglob("test_*.py"))
    return "".join(p.read_text() for p in files if p.name != Path(__file__).name)


def _mentions(text: str, reason: Reason) -> bool:
    return any(form in text for form in (f"Reason.{reason.name}", f'"{reason.value}"', f"'{reason.value}'"))


def test_every_reason_is_produced_by_an_integration_or_e2e_test() -> None:
    real = _text("integration", "e2e")
    missing = [r.value for r in Reason if r not in UNIT_ONLY and not _mentions(real, r)]
    assert missing == []


def test_unit_only_reasons_have_unit_tests() -> None:
    unit = _text("unit")
    assert all(_mentions(unit, r) for r in UNIT_ONLY)
