"""config/dashboard.json: the panels the issue asks for, wired to the two variables.

Whether each query returns data is tested against a real Prometheus in
tests/e2e/share/test_dashboard_queries.py; this checks the structure without one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from probe.daemon.metric_specs import SPECS

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = json.loads((REPO / "config" / "dashboard.json").read_text())
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PER_TARGET = {spec.name for spec in SPECS if "target" in spec.labels}


def panels() -> list[dict[str, Any]]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def test_variables_are_datasource_and_target() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert set(variables) == {"datasource", "target"}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    target = variables["target"]
    assert target["datasource"] == DATASOURCE
    assert target["query"]["query"] == "label_values(probe_success, target)"
    assert target["multi"] and target["includeAll"]


def test_the_issue_panels_are_there() -> None:
    titles = [p["title"] for p in panels()]
    for wanted in (
        "Status per target",
        "Status per address",
        "Backends seen",
        "Phase latencies",
        "Days to certificate expiry",
        "Findings by reason",
        "DNS answers",
    ):
        assert any(title.startswith(wanted) for title in titles), wanted


def test_every_query_uses_the_datasource_variable_and_the_target_filter() -> None:
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            expr = target["expr"]
            for name, labels in re.findall(r"\b(probe_\w+?)(?:_bucket)?(\{[^}]*\})?(?=[\s\[)*]|$)", expr):
                base = name if name in PER_TARGET else name.removesuffix("_bucket")
                if base in PER_TARGET:
                    assert 'target=~"$target"' in labels, (panel["title"], expr)


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        g = panel["gridPos"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert g["x"] + g["w"] <= 24, panel["title"]
        assert not cells & taken, panel["title"]
        taken |= cells
    assert len({p["id"] for p in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])
