"""The documentation (README.md, docs/) and the example config stay true to the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from probe.config.load import load_config
from probe.config.models import TargetConfig, Timeouts
from probe.model.reasons import Reason
from tests.support import docs

REPO = docs.REPO
EXAMPLE = REPO / "config" / "probe.example.yaml"


def test_docs_document_every_reason_code_with_its_stage_and_severity() -> None:
    table = docs.section("docs/reason-codes.md", "Reason codes")
    rows = re.findall(r"^\| `([a-z_]+)` \| ([a-z]+) \| (critical|warning) \| (.+) \|$", table, re.M)
    documented = {code: (stage, severity, text) for code, stage, severity, text in rows}
    expected = {r.value: (r.stage.value, r.severity.value, r.summary) for r in Reason}
    assert documented == expected


def test_docs_config_table_names_every_setting() -> None:
    page = docs.page("docs/configuration.md")
    fields = set(TargetConfig.model_fields) - {"hostname", "port", "path", "timeouts", "pinned_by", "scheme"}
    for field in fields:
        assert f"| `{field}` |" in page, field
    for field in Timeouts.model_fields:
        assert f"| `timeouts.{field}` |" in page, field


def test_example_config_is_valid_and_shows_every_setting() -> None:
    config = load_config(EXAMPLE)
    assert [t.name for t in config.targets] == ["www", "admin", "www-node-a", "legacy-lab", "www-http"]
    text = EXAMPLE.read_text()
    for field in set(TargetConfig.model_fields) - {"hostname", "port", "path", "pinned_by", "scheme"}:
        assert re.search(rf"^\s*(- )?#?\s*{field}:", text, re.M), field


def test_readme_quickstart_gives_the_two_commands() -> None:
    quickstart = docs.section("README.md", "Quickstart")
    assert "./dev demo" in quickstart and "./dev test" in quickstart
    ci = (REPO / ".ci" / "run").read_text()
    assert "./dev test" in ci


def test_readme_quickstart_names_everything_dev_test_installs() -> None:
    quickstart = docs.section("README.md", "Quickstart")
    dev = (REPO / "dev").read_text()
    servers = dev[dev.index("setup_test_servers() {") :].split("\n}\n")[0]
    apt = {name for line in re.findall(r"^\s*apt_install (.+)$", servers, re.M) for name in line.split()}
    assert {"haproxy", "chromium", "prometheus-pushgateway", "zsh"} <= apt
    for package in apt:
        assert f"`{package}`" in quickstart, package
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    for requirement in extra:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert name is not None and name[0] in quickstart, requirement
    assert "apt-get update" in quickstart


def test_readme_config_example_is_valid(tmp_path: Path) -> None:
    section = docs.section("README.md", "Running it continuously: `probe run`")
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if b.startswith("# /etc/probe/")]
    path = tmp_path / "probe.yaml"
    path.write_text(block)
    config = load_config(path)
    assert [t.name for t in config.targets] == ["www"]
    assert yaml.safe_load(block)["listen"] == "0.0.0.0:9798"


def test_docs_document_every_metric() -> None:
    from probe.daemon.metric_specs import SPECS

    table = docs.section("docs/metrics-and-alerts.md", "Metrics")
    rows = re.findall(r"^\| `(probe_[a-z_]+)` \| ([a-z]+) \| (.+?) \| (.+) \|$", table, re.M)
    documented = {name: (kind, labels, text) for name, kind, labels, text in rows}
    expected = {s.name: (s.kind, ", ".join(f"`{label}`" for label in s.labels) or "—", s.help) for s in SPECS}
    assert documented == expected


def test_docs_document_every_watch_option() -> None:
    from probe.cli.parser import build_parser

    section = docs.section("docs/checking-during-a-change.md", "Watching a change: `--watch`")
    check = build_parser()._subparsers._group_actions[0].choices["check"]  # type: ignore[union-attr]
    watch_group = next(g for g in check._action_groups if g.title and g.title.startswith("watching"))
    flags = [flag for action in watch_group._group_actions for flag in action.option_strings]
    assert flags == ["--watch", "--every", "--until", "--stable-rounds", "--max-time"]
    for flag in flags:
        assert f"`{flag}" in section, flag
