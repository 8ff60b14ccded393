"""Every PromQL expression of config/dashboard.json and config/alerts.yml, run on real data.

A real Prometheus scrapes a running ``probe run`` (as in test_prometheus.py) with two
targets on the loopback lab: ``demo``, healthy, and ``broken``, whose name resolves to one
good node, a node that refuses (127.0.10.3), a node whose leaf expires in 5 days
(127.0.10.4) and a node whose leaf is from another CA and expires in 5 days (127.0.10.5),
and that expects a backend nobody runs (web-3). During the set-up its DNS answer gains an
address (127.0.10.6, refusing too), the daemon is sent a configuration it must refuse, and
the scrape job holds a second endpoint where nothing listens. The same Prometheus loads
config/alerts.yml.

Each dashboard expression (template variables replaced by real values) must parse and
return data; each alert expression must return exactly the series of the failing parts,
never the healthy target's. Everything listens on and connects to 127.0.0.0/8 only.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.lab import DemoLab
from probe.lab.pki import Pki
from tests.e2e._procs import free_port, require_programs
from tests.e2e.daemon.test_prometheus import (
    JOB,
    LOOPBACK,
    SCRAPE_TIMEOUT,
    Daemon,
    Prometheus,
    Tools,
    _server,
    _start,
    start_daemon,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "config" / "dashboard.json"
RULES = REPO / "config" / "alerts.yml"

HEALTHY = "demo"
BROKEN = "broken"
GOOD_NODE = "127.0.10.1"
REFUSING = "127.0.10.3"
EXPIRING = "127.0.10.4"  # verified, leaf expires in 5 days
UNTRUSTED = "127.0.10.5"  # another CA's leaf, expires in 5 days
ADDED = "127.0.10.6"  # joins the DNS answer during the set-up; refuses
DAYS_LEFT = 5

INTERVAL = 2.0
TIMEOUTS = {"dns": 1, "connect": 1, "tls": 2, "http": 2, "deadline": 2}
#: What the dashboard's variables stand for here: both targets, and a rate window holding
#: several scrapes (every second) and cycles (every 2 s).
VARIABLES = {"target": f"{HEALTHY}|{BROKEN}", "__rate_interval": "20s"}


@dataclass
class Scene:
    lab: DemoLab
    daemon: Daemon
    prometheus: Prometheus
    dead_endpoint: str  # host:port in the scrape job where nothing listens


@pytest.fixture(scope="module")
def tools() -> Tools:
    found = require_programs(
        ("prometheus", "promtool"),
        "dashboard query tests need {missing} on PATH; on Debian/Ubuntu: apt-get install prometheus",
    )
    return Tools(prometheus=found["prometheus"], promtool=found["promtool"])


def _start_prometheus(tools: Tools, endpoints: list[str], directory: Path) -> Prometheus:
    """Prometheus scraping ``endpoints`` as job ``probe`` every second, with config/alerts.yml."""
    document = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": endpoints}]}],
    }
    config = yaml.safe_dump(document, sort_keys=False)
    config_path = directory / "prometheus.yml"
    config_path.write_text(config)

    def launch(port: int, attempt: int) -> Any:
        argv = [
            tools.prometheus,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={directory / f'tsdb-{attempt}'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--log.level=warn",
        ]
        return _server("prometheus", argv, directory / f"prometheus-{attempt}.log", config)

    server, port = _start("prometheus", launch, lambda port: f"http://{LOOPBACK}:{port}/-/ready")
    return Prometheus(server, port)


@pytest.fixture(scope="module")
def scene(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    directory = tmp_path_factory.mktemp("dashboard")
    soon = datetime.now(UTC) + timedelta(days=DAYS_LEFT)
    with DemoLab(directory / "lab") as lab:
        expiring = lab.pki.leaf(lab.hostname, not_after=soon)
        stranger = Pki.create("another CA").leaf(lab.hostname, not_after=soon)
        lab.start_node(EXPIRING, lab.port, cert=expiring, backends=lab.backends, workdir=lab.workdir)
        lab.start_node(UNTRUSTED, lab.port, cert=stranger, backends=lab.backends, workdir=lab.workdir)
        dns = lab.start_dns("127.0.53.11")
        for address in (GOOD_NODE, REFUSING, EXPIRING, UNTRUSTED):
            dns.add(lab.hostname, "A", address)
        broken = lab.target(
            name=BROKEN,
            resolvers=[dns.where],
            expect_backends=["web-1", "web-2", "web-3"],
            interval=INTERVAL,
            timeouts=TIMEOUTS,
        )
        del broken["expect_same_addresses_as"]
        targets = [lab.target(interval=INTERVAL, timeouts=TIMEOUTS), broken]
        (directory / "daemon").mkdir()
        daemon = start_daemon(directory / "daemon", targets)
        dead = f"{LOOPBACK}:{free_port((LOOPBACK,), (socket.SOCK_STREAM,))}"  # nothing listens there
        try:
            prometheus = _start_prometheus(tools, [f"{LOOPBACK}:{daemon.port}", dead], directory)
            try:
                prometheus.wait_for(f'probe_dns_addresses_hash{{target="{BROKEN}"}}', "first scrape")
                # The load balancer's address set changes ...
                dns.add(lab.hostname, "A", ADDED)
                prometheus.wait_for(
                    f'changes(probe_dns_addresses_hash{{target="{BROKEN}"}}[5m]) > 0', "a changed address set"
                )
                # ... and a bad configuration is refused (the old one runs on).
                config_path = Path(daemon.server.argv[-1])
                config_path.write_text("targets: [{url: 'ftp://not-https.example/'}]\n")
                daemon.server.proc.send_signal(signal.SIGHUP)
                prometheus.wait_for("probe_config_last_reload_successful == 0", "a refused reload")
                prometheus.wait_for(f'up{{instance="{dead}"}} == 0', "the dead endpoint's failed scrape")
                yield Scene(lab, daemon, prometheus, dead)
            finally:
                prometheus.server.stop()
        finally:
            daemon.server.stop()


# --------------------------------------------------------------------------- extraction


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every query target, rows' nested panels included."""
    found: list[tuple[str, str]] = []

    def visit(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
            visit(panel.get("panels", []))

    visit(dashboard["panels"])
    return found


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's ``$name`` and ``${name}`` replaced by values (longest names first)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    assert "$" not in expr, f"a variable without a value in {expr!r}"
    return expr


def alert_expressions() -> dict[str, str]:
    document = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule["expr"] for group in document["groups"] for rule in group["rules"]}


def test_extraction_finds_every_panel_query() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = dashboard_expressions(dashboard)
    assert len(expressions) >= 15
    assert substitute('rate(x{target=~"$target"}[$__rate_interval])', VARIABLES) == (
        f'rate(x{{target=~"{HEALTHY}|{BROKEN}"}}[20s])'
    )


# --------------------------------------------------------------------------- the dashboard


def test_every_dashboard_expression_returns_data(scene: Scene) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    started = time.monotonic()
    for title, expr in dashboard_expressions(dashboard):
        query = substitute(expr, VARIABLES)
        # Parses (the API answers 200 "success"), and has at least one finite value.
        scene.prometheus.wait_for(query, f"panel {title!r}")
    assert time.monotonic() - started < 2 * SCRAPE_TIMEOUT


def test_target_variable_lists_both_targets(scene: Scene) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "target"]
    match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"]["query"])
    assert match is not None, variable
    metric, label = match.groups()
    values = scene.prometheus.api(f"label/{label}/values?match[]={metric}")
    assert set(values) == {HEALTHY, BROKEN}


def test_per_target_panels_show_both_targets(scene: Scene) -> None:
    result = scene.prometheus.query(
        substitute('max by (target) (probe_status{target=~"$target"})', VARIABLES)
    )
    assert {r["metric"]["target"]: float(r["value"][1]) for r in result} == {HEALTHY: 0, BROKEN: 2}


# --------------------------------------------------------------------------- the alerts


def _keys(result: list[dict[str, Any]], *labels: str) -> set[tuple[str, ...]]:
    return {tuple(r["metric"].get(label, "") for label in labels) for r in result}


def test_alert_expressions_fire_for_the_failing_parts_only(scene: Scene) -> None:
    expressions = alert_expressions()
    expected: dict[str, tuple[tuple[str, ...], set[tuple[str, ...]]]] = {
        "ProbeTargetCritical": (("target",), {(BROKEN,)}),
        "ProbeAddressDown": (
            ("target", "address"),
            {(BROKEN, REFUSING), (BROKEN, UNTRUSTED), (BROKEN, ADDED)},
        ),
        "ProbeBackendMissing": (("target", "backend"), {(BROKEN, "web-3")}),
        "ProbeCertificateExpiresIn14Days": (("target", "address"), {(BROKEN, EXPIRING)}),
        "ProbeCertificateExpiresIn7Days": (("target", "address"), {(BROKEN, EXPIRING)}),
        "ProbeUnverifiedCertificateExpiresIn14Days": (("target", "address"), {(BROKEN, UNTRUSTED)}),
        "ProbeUnverifiedCertificateExpiresIn7Days": (("target", "address"), {(BROKEN, UNTRUSTED)}),
        "ProbeCertificateDiffersBetweenAddresses": (("target",), {(BROKEN,)}),
        "ProbeDnsAddressesChanged": (("target",), {(BROKEN,)}),
        "ProbeConfigReloadFailed": (("instance",), {(f"{LOOPBACK}:{scene.daemon.port}",)}),
        "ProbeCyclesStalled": (("target",), set()),  # needs a stuck scheduler: see below
        "ProbeDown": (("instance",), {(scene.dead_endpoint,)}),
    }
    assert set(expressions) == set(expected)
    for name, expr in expressions.items():
        labels, keys = expected[name]
        assert _keys(scene.prometheus.query(expr), *labels) == keys, name


def test_stalled_cycles_inputs_return_data(scene: Scene) -> None:
    # ProbeCyclesStalled cannot be driven here (the scheduler never hangs on purpose); its
    # inputs are there for both targets, and the age is well under its threshold.
    ages = scene.prometheus.query("time() - probe_last_cycle_timestamp_seconds")
    intervals = scene.prometheus.query("probe_interval_seconds")
    assert _keys(ages, "target") == _keys(intervals, "target") == {(HEALTHY,), (BROKEN,)}
    assert {float(r["value"][1]) for r in intervals} == {INTERVAL}
    assert all(float(r["value"][1]) < 3 * INTERVAL for r in ages), ages


def test_prometheus_loads_and_evaluates_every_rule(scene: Scene) -> None:
    groups = scene.prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == set(alert_expressions())
    for rule in rules:
        assert (rule["health"], rule.get("lastError", "")) == ("ok", ""), rule
    # Without a "for" an alert fires at its first evaluation; the others are pending.
    limit = time.monotonic() + 10
    while True:
        states = {
            rule["name"]: rule["state"]
            for group in scene.prometheus.api("rules")["groups"]
            for rule in group["rules"]
        }
        if states["ProbeDnsAddressesChanged"] == "firing" or time.monotonic() > limit:
            break
        time.sleep(0.2)
    assert states["ProbeDnsAddressesChanged"] == "firing"
    assert states["ProbeCertificateExpiresIn7Days"] == "firing"
    assert states["ProbeTargetCritical"] == "pending"
    assert states["ProbeCyclesStalled"] == "inactive"
