"""config/alerts.yml: every rule is labelled, annotated, documented and unit-tested both ways.

promtool itself runs the unit tests in tests/e2e/share/test_alert_rules_promtool.py; this checks, without
promtool, that those tests cover every rule firing and not firing, and that the runbooks
link sections of the documentation that exist.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.support import docs

REPO = docs.REPO
RULES = REPO / "config" / "alerts.yml"
RULE_TESTS = REPO / "tests" / "data" / "promtool" / "alerts_test.yml"
#: A runbook's links into the documentation: ``docs/PAGE.md#anchor``.
DOC_LINK = re.compile(r"\b(docs/[a-z0-9-]+\.md)#([a-z0-9_-]+)")

#: The issue's list, each with the rule(s) that cover it.
REQUIRED = {
    "target critical for N minutes": {"ProbeTargetCritical"},
    "one address down while the others work": {"ProbeAddressDown"},
    "backend missing": {"ProbeBackendMissing"},
    "certificate < 14 days, verified chain": {"ProbeCertificateExpiresIn14Days"},
    "certificate < 7 days, verified chain": {"ProbeCertificateExpiresIn7Days"},
    "certificate < 14 days, as sent (leaf first)": {"ProbeUnverifiedCertificateExpiresIn14Days"},
    "certificate < 7 days, as sent (leaf first)": {"ProbeUnverifiedCertificateExpiresIn7Days"},
    "certificate differs between addresses": {"ProbeCertificateDiffersBetweenAddresses"},
    "DNS address set changed": {"ProbeDnsAddressesChanged"},
    "config reload failed": {"ProbeConfigReloadFailed"},
    "no completed cycle in 3 intervals": {"ProbeCyclesStalled"},
    "probe down": {"ProbeDown"},
}


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_the_rules_cover_the_issue_list() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert set().union(*REQUIRED.values()) == names
    assert len(names) == len(alert_rules()), "an alert name is used twice"


def test_every_rule_has_a_severity_and_runbook_annotations() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
        assert "\n" not in rule["annotations"]["summary"], rule["alert"]
        assert "Docs: docs/" in rule["annotations"]["runbook"], rule["alert"]


def test_runbooks_link_sections_of_the_docs_that_exist() -> None:
    for rule in alert_rules():
        runbook = rule["annotations"]["runbook"]
        cited = DOC_LINK.findall(runbook.split("Docs:", 1)[1])
        assert cited, rule["alert"]
        for page, anchor in cited:
            assert docs.page_path(page).is_file(), f"{rule['alert']}: no page {page}"
            assert anchor in docs.anchors(docs.page(page)), f"{rule['alert']}: no section {page}#{anchor}"


def test_every_rule_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == ["../../../config/alerts.yml"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "rules never tested firing"
    assert names - quiet == set(), "rules never tested not firing"


def test_firing_tests_check_the_annotations() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            for alert in check.get("exp_alerts") or []:
                assert set(alert["exp_annotations"]) == {"summary", "description", "runbook"}, check


def test_docs_alerts_section_names_every_rule_and_the_file() -> None:
    section = docs.section("docs/metrics-and-alerts.md", "Alerts")
    assert "config/alerts.yml" in section
    for rule in alert_rules():
        assert f"`{rule['alert']}`" in section, rule["alert"]
