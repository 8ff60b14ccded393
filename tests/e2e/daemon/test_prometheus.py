"""End to end: ``probe run`` as a user runs it, checked by promtool and scraped by a real Prometheus.

The demo lab runs in this process (DNS, two TLS nodes on 127.0.10.1-2, backends web-1 and
web-2). ``probe run`` runs as a subprocess with a small interval; Prometheus scrapes it
every second, and the tests ask Prometheus's HTTP API what a user would ask in a
dashboard or an alert. Everything listens on and connects to 127.0.0.1 (and the lab's
127.0.0.0/8 addresses) only.

Without ``prometheus`` or ``promtool`` the tests are skipped, unless
``PROBE_REQUIRE_E2E=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from probe.daemon.metric_specs import SPECS, Spec
from probe.daemon.scheduler import STOP_GRACE
from probe.lab import DemoLab
from tests.e2e._procs import Process, require_programs, start_server
from tests.support import docs

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[3]
LOOPBACK = "127.0.0.1"
TARGET = "demo"  # the name DemoLab gives its target
JOB = "probe"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PHASES = {"resolve", "connect", "tls", "processing", "transfer"}

#: The daemon's cycle interval and deadline in the scraped run (seconds). Cycles against
#: the lab take well under 0.2 s; the generous deadline keeps a slow CI machine green.
INTERVAL = 2.0
TIMEOUTS = {"dns": 1, "connect": 1, "tls": 2, "http": 2, "deadline": 2}
#: Bound on ``/-/ready`` (the first cycle starts within one interval) and on Prometheus's /-/ready.
READY_TIMEOUT = 15.0
#: Bound on Prometheus's first scrape: its discovery and scrape managers sync every 5 s, so the
#: first scrape comes about 5-6 s after start (10 s when their tickers fall badly).
SCRAPE_TIMEOUT = 25.0
#: Bound on the daemon's exit after SIGTERM: in-flight cycles get STOP_GRACE seconds.
STOP_TIMEOUT = STOP_GRACE + 5.0

# urllib without the environment's proxies: everything here is on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class Tools:
    prometheus: str
    promtool: str


@pytest.fixture(scope="module")
def tools() -> Tools:
    """The prometheus and promtool executables; skip (or fail with PROBE_REQUIRE_E2E=1) without them."""
    found = require_programs(
        ("prometheus", "promtool"),
        "Prometheus end-to-end tests need {missing} on PATH; on Debian/Ubuntu: apt-get install prometheus",
    )
    return Tools(prometheus=found["prometheus"], promtool=found["promtool"])


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> Response:
    """GET ``url`` (loopback only, no proxy); an HTTP error status is a response, not an exception."""
    assert urllib.parse.urlsplit(url).hostname == LOOPBACK, url
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=timeout) as reply:
            return Response(reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def _status(url: str) -> int | None:
    try:
        return http_get(url, timeout=1.0).status
    except OSError:
        return None  # not listening yet


# --------------------------------------------------------------------------- processes


def _environment() -> dict[str, str]:
    """The test's environment without proxies or systemd's variables, with the repository importable."""
    drop = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _server(name: str, argv: list[str], log_path: Path, config: str) -> Process:
    """A server run from the repository in the test's environment; ``stop`` gives it ``STOP_TIMEOUT``."""
    return Process(name, argv, log_path, config, cwd=REPO_ROOT, env=_environment(), stop_timeout=STOP_TIMEOUT)


def _start(
    name: str,
    launch: Callable[[int, int], Process],
    ready_url: Callable[[int], str],
) -> tuple[Process, int]:
    """Start a server on a free loopback port, and wait (bounded) until ``ready_url`` answers 200."""
    return start_server(
        name,
        launch,
        lambda port: _status(ready_url(port)) == 200,
        (LOOPBACK,),
        (socket.SOCK_STREAM,),
        timeout=READY_TIMEOUT,
        poll=0.05,
    )


@dataclass
class Daemon:
    server: Process
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def start_daemon(directory: Path, targets: list[dict[str, Any]]) -> Daemon:
    """``probe run`` with these targets on a free port, once ``/-/ready`` says 200 (first cycles done)."""

    def launch(port: int, attempt: int) -> Process:
        # Histograms on: the phase latency tests and every family of SPECS need them.
        document = {"listen": f"{LOOPBACK}:{port}", "metrics": {"histograms": True}, "targets": targets}
        config = yaml.safe_dump(document, sort_keys=False)
        path = directory / f"probe-{attempt}.yaml"
        path.write_text(config)
        argv = [sys.executable, "-m", "probe", "run", "--config", str(path)]
        return _server("probe run", argv, directory / f"probe-{attempt}.log", config)

    server, port = _start("probe run", launch, lambda port: f"http://{LOOPBACK}:{port}/-/ready")
    return Daemon(server, port)


@dataclass
class Prometheus:
    server: Process
    port: int

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one unlabelled sample) of ``expr`` evaluated now."""
        url = f"http://{LOOPBACK}:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        reply = http_get(url)
        document = json.loads(reply.body)
        assert reply.status == 200 and document["status"] == "success", (expr, document)
        assert not document.get("warnings"), (expr, document["warnings"])
        data = document["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", (expr, data)
        return data["result"]  # type: ignore[no-any-return]

    def value(self, expr: str) -> float:
        """The value of the single series ``expr`` returns."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: expected one series, got {result}"
        return float(result[0]["value"][1])

    def api(self, path: str) -> Any:
        reply = http_get(f"http://{LOOPBACK}:{self.port}/api/v1/{path}")
        document = json.loads(reply.body)
        assert reply.status == 200 and document["status"] == "success", (path, document)
        return document["data"]

    def wait_for(self, expr: str, what: str, timeout: float = SCRAPE_TIMEOUT) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns a series with a finite value (bounded)."""
        limit = time.monotonic() + timeout
        while True:
            result = [r for r in self.query(expr) if math.isfinite(float(r["value"][1]))]
            if result:
                return result
            if time.monotonic() > limit:
                pytest.fail(f"{what}: {expr} returned nothing within {timeout:g}s", pytrace=False)
            time.sleep(0.2)


def start_prometheus(tools: Tools, daemon: Daemon, directory: Path) -> Prometheus:
    """A Prometheus scraping the daemon (and nothing else) every second."""
    config = f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: {JOB}
    static_configs:
      - targets: ["{LOOPBACK}:{daemon.port}"]
"""
    config_path = directory / "prometheus.yml"
    config_path.write_text(config)
    check = subprocess.run(
        [tools.promtool, "check", "config", str(config_path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr

    def launch(port: int, attempt: int) -> Process:
        argv = [
            tools.prometheus,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={directory / f'tsdb-{attempt}'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--log.level=warn",  # quiet: anything it logs is worth reading
        ]
        return _server("prometheus", argv, directory / f"prometheus-{attempt}.log", config)

    server, port = _start("prometheus", launch, lambda port: f"http://{LOOPBACK}:{port}/-/ready")
    return Prometheus(server, port)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoLab]:
    """This module's own demo scene (the session's ``demo`` stays undisturbed by the daemon's cycles)."""
    with DemoLab(tmp_path_factory.mktemp("prom-lab")) as scene:
        yield scene


@pytest.fixture(scope="module")
def daemon(tools: Tools, lab: DemoLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """``probe run`` on the lab, ready (first cycle done); stopped with SIGTERM at the end."""
    target = lab.target(interval=INTERVAL, timeouts=TIMEOUTS)
    running = start_daemon(tmp_path_factory.mktemp("prom-daemon"), [target])
    try:
        yield running
    finally:
        code = running.server.stop()
    if code != 0:
        pytest.fail(
            f"probe run did not exit with status 0 on SIGTERM within {STOP_TIMEOUT:g}s (status {code})\n"
            f"{running.server.describe()}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def prometheus(
    tools: Tools, daemon: Daemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Prometheus scraping the daemon, after its first scrape of the target's series."""
    running = start_prometheus(tools, daemon, tmp_path_factory.mktemp("prometheus"))
    try:
        running.wait_for(f'probe_success{{job="{JOB}",target="{TARGET}"}}', "first scrape")
        yield running
    finally:
        running.server.stop()


def family_name(spec: Spec) -> str:
    """The family name in OpenMetrics and in Prometheus's metadata: no ``_total`` or ``_info`` suffix."""
    if spec.kind == "counter":
        return spec.name.removesuffix("_total")
    if spec.kind == "info":
        return spec.name.removesuffix("_info")
    return spec.name


def fingerprint(certificate: Any) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


# --------------------------------------------------------------------------- the endpoint


def test_metrics_pass_promtool_check(daemon: Daemon, tools: Tools) -> None:
    reply = http_get(f"{daemon.url}/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")

    check = subprocess.run(
        [tools.promtool, "check", "metrics"],
        input=reply.body,
        capture_output=True,
        timeout=30,
        check=False,
    )
    output = (check.stdout + check.stderr).decode(errors="replace")
    assert (check.returncode, output) == (0, ""), f"promtool check metrics:\n{output}"


def test_openmetrics_is_negotiated(daemon: Daemon) -> None:
    reply = http_get(f"{daemon.url}/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})

    assert reply.status == 200
    media_type, *parameters = (p.strip() for p in reply.headers["content-type"].split(";"))
    assert media_type == "application/openmetrics-text"
    assert "version=1.0.0" in parameters
    text = reply.body.decode()
    assert text.endswith("# EOF\n")
    # A strict OpenMetrics parser accepts it, with the families and types of SPECS.
    families = text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
    types = {family.name: family.type for family in families}
    assert types == {family_name(spec): spec.kind for spec in SPECS}


def test_metrics_are_gzipped_on_request(daemon: Daemon) -> None:
    reply = http_get(f"{daemon.url}/metrics", {"Accept-Encoding": "gzip"})

    assert reply.status == 200
    assert reply.headers.get("content-encoding") == "gzip"
    text = gzip.decompress(reply.body).decode()
    assert f'probe_success{{target="{TARGET}"}} 1.0\n' in text


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_scrapes_the_daemon_cleanly(prometheus: Prometheus, daemon: Daemon) -> None:
    [target] = prometheus.api("targets?state=active")["activeTargets"]
    assert target["scrapeUrl"] == f"{daemon.url}/metrics"
    assert (target["health"], target["lastError"]) == ("up", "")
    assert prometheus.value(f'up{{job="{JOB}"}}') == 1
    # Prometheus logs at level warn here: a scrape or ingestion problem would show.
    assert prometheus.server.output() == "", prometheus.server.describe()


def test_prometheus_sees_the_types_of_every_family(prometheus: Prometheus) -> None:
    metadata = prometheus.api("metadata")
    for spec in SPECS:
        assert [m["type"] for m in metadata.get(family_name(spec), [])] == [spec.kind], spec.name


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (f'probe_success{{target="{TARGET}"}}', 1),
        (f'probe_status{{target="{TARGET}"}}', 0),
        ('probe_backend_up{backend="web-1"}', 1),
        ('probe_backend_up{backend="web-2"}', 1),
        (f'probe_backends_seen{{target="{TARGET}"}}', 2),
        (f'probe_dns_alias_match{{target="{TARGET}"}}', 1),
        (f'count(probe_address_success{{target="{TARGET}"}} == 1)', 2),
        (f'count(probe_tls_verified{{target="{TARGET}"}} == 1)', 2),
        (f'count(probe_http_status_code{{target="{TARGET}"}} == 200)', 2),
        (f'count(probe_failure_info{{target="{TARGET}"}}) or vector(0)', 0),
        ("probe_targets", 1),
        ("probe_config_last_reload_successful", 1),
    ],
)
def test_user_queries(prometheus: Prometheus, expr: str, expected: float) -> None:
    assert prometheus.value(expr) == expected


def test_backend_requests_accumulate(prometheus: Prometheus) -> None:
    # One cycle sends 4 requests to each of the 2 addresses; the counter only grows.
    assert prometheus.value(f'sum(probe_backend_requests_total{{target="{TARGET}"}})') >= 8
    per_series = prometheus.query(f'probe_backend_requests_total{{target="{TARGET}"}}')
    assert {(s["metric"]["address"], s["metric"]["backend"]) for s in per_series} == {
        (address, backend) for address in DemoLab.node_addresses for backend in ("web-1", "web-2")
    }


def test_leaf_certificate_of_each_address(prometheus: Prometheus, lab: DemoLab) -> None:
    assert prometheus.value(f'count(probe_ssl_last_chain_info{{target="{TARGET}"}})') == 2
    series = prometheus.query(f'probe_ssl_last_chain_info{{target="{TARGET}"}}')
    assert sorted(s["metric"]["address"] for s in series) == list(lab.node_addresses)
    for s in series:
        labels = s["metric"]
        assert labels["fingerprint_sha256"] == fingerprint(lab.leaf.cert)
        assert labels["subject"] == f"CN={lab.hostname}"
        assert labels["issuer"] == "CN=probe demo Intermediate CA"
        assert labels["subjectalternative"] == lab.hostname
        assert float(s["value"][1]) == 1


def test_tls_version_of_each_address(prometheus: Prometheus, lab: DemoLab) -> None:
    series = prometheus.query(f'probe_tls_version_info{{target="{TARGET}",version="TLS 1.3"}}')
    assert sorted(s["metric"]["address"] for s in series) == list(lab.node_addresses)


def test_chain_expiry_is_the_leaf_not_after(prometheus: Prometheus, lab: DemoLab) -> None:
    not_after = lab.leaf.cert.not_valid_after_utc.timestamp()
    for name in ("probe_ssl_last_chain_expiry_timestamp_seconds", "probe_ssl_earliest_cert_expiry"):
        series = prometheus.query(f'{name}{{target="{TARGET}"}}')
        assert {s["metric"]["address"]: float(s["value"][1]) for s in series} == dict.fromkeys(
            lab.node_addresses, not_after
        ), name
    # The usual alert input: days left, here about 90.
    days = prometheus.value(
        f'min(probe_ssl_last_chain_expiry_timestamp_seconds{{target="{TARGET}"}} - time()) / 86400'
    )
    assert 80 < days <= 91


def test_phase_latency_quantiles(prometheus: Prometheus) -> None:
    bucket = f'probe_phase_duration_seconds_bucket{{target="{TARGET}"}}'
    # From the cumulative counts, available after the first scrape.
    quantiles = prometheus.query(f"histogram_quantile(0.9, sum by (le, phase) ({bucket}))")
    assert {q["metric"]["phase"] for q in quantiles} == PHASES
    for q in quantiles:
        assert 0 < float(q["value"][1]) <= 10, q  # 10 s: the largest finite bucket
    # As a dashboard shows it: over a rate window, once two scrapes saw the counts grow.
    tls = f'probe_phase_duration_seconds_bucket{{target="{TARGET}",phase="tls"}}'
    [q] = prometheus.wait_for(
        f"histogram_quantile(0.9, sum by (le) (rate({tls}[10s])))",
        "a second cycle's observations",
    )
    assert 0 < float(q["value"][1]) <= 10, q


# --------------------------------------------------------------------------- examples in the docs


_FENCED = re.compile(r"^(?P<fence>```|~~~)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=fence)[^\n]*$", re.M | re.S)


def _code_blocks(section: str) -> list[tuple[str, str]]:
    """``(info string, body)`` of the fenced code blocks."""
    return [(m["info"].strip().lower(), m["body"]) for m in _FENCED.finditer(section)]


@dataclass(frozen=True)
class Example:
    kind: str  # "alert", "record" or "query"
    name: str
    expr: str


def _rules(node: Any) -> Iterator[Example]:
    """Every ``expr`` in a YAML document (a rule file, a list of rules, one rule), however nested."""
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str | int | float):
            kind = "alert" if "alert" in node else "record" if "record" in node else "query"
            yield Example(kind, str(node.get(kind, "")), str(node["expr"]).strip())
        for value in node.values():
            yield from _rules(value)
    elif isinstance(node, list):
        for value in node:
            yield from _rules(value)


def doc_examples(text: str) -> tuple[list[Example], list[str]]:
    """PromQL examples in a page's metrics or alerting sections, and the YAML rule files there."""
    examples: list[Example] = []
    rule_files: list[str] = []
    for section in docs.sections(text, re.compile(r"metric|alert", re.I)):
        for info, body in _code_blocks(section):
            if info.startswith("promql"):
                for paragraph in re.split(r"\n\s*\n", body):
                    expr = "\n".join(line for line in paragraph.splitlines() if not line.startswith("#"))
                    if expr.strip():
                        examples.append(Example("query", "", expr.strip()))
            elif info.startswith(("yaml", "yml")) or re.search(r"^\s*-?\s*expr:", body, re.M):
                document = yaml.safe_load(body)
                if isinstance(document, dict) and "groups" in document:
                    rule_files.append(body)
                examples.extend(_rules(document))
        # Inline queries such as "A latency panel: `histogram_quantile(0.95, ...)`" (a function
        # of probe's metrics; a bare metric name in a table is not a query example).
        prose = _FENCED.sub("", section)
        for span in re.findall(r"`([^`\n]+)`", prose):
            if "probe_" in span and re.search(r"\b[a-z_]+\s*\(", span):
                examples.append(Example("query", "", span.strip()))
    return examples, rule_files


def every_doc_example() -> tuple[list[Example], list[str]]:
    """The PromQL examples and YAML rule files of every page of documentation (docs.pages())."""
    examples: list[Example] = []
    rule_files: list[str] = []
    for name in docs.pages():
        more_examples, more_rule_files = doc_examples(docs.page(name))
        examples += more_examples
        rule_files += more_rule_files
    return examples, rule_files


def test_docs_alert_examples_evaluate(prometheus: Prometheus, tools: Tools, tmp_path: Path) -> None:
    examples, rule_files = every_doc_example()
    if not examples:
        pytest.skip("the docs have no example alert expression in a metrics or alerting section yet")

    for index, body in enumerate(rule_files):
        path = tmp_path / f"doc-rules-{index}.yml"
        path.write_text(body)
        check = subprocess.run(
            [tools.promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        output = check.stdout + check.stderr
        assert check.returncode == 0, f"a rule file in the docs does not pass promtool check rules:\n{output}"

    exposed = {spec.name for spec in SPECS if spec.kind != "histogram"} | {
        f"{spec.name}{suffix}" for spec in SPECS if spec.kind == "histogram" for suffix in HISTOGRAM_SUFFIXES
    }
    for example in examples:
        unknown = set(re.findall(r"\bprobe_\w+", example.expr)) - exposed
        assert not unknown, f"docs example {example.expr!r} uses metrics probe does not expose: {unknown}"
        result = prometheus.query(example.expr)  # fails on a syntax error or an evaluation error
        if example.kind == "alert":
            # The lab is healthy: no example alert may fire.
            assert result == [], f"docs alert {example.name} fires on the healthy lab: {result}"
        elif example.kind == "query":
            # A dashboard query shows data for the lab's target (once two scrapes saw counters grow).
            ours = re.sub(r'target="[^"]*"', f'target="{TARGET}"', example.expr)
            prometheus.wait_for(ours, f"docs query {example.expr!r} on the lab's target")


# --------------------------------------------------------------------------- stopping


def test_daemon_exits_0_on_sigterm_with_a_cycle_in_flight(lab: DemoLab, tmp_path: Path) -> None:
    # Its own daemon (no Prometheus needed) with a second target whose resolver never answers:
    # that target's cycles wait on their DNS timeout back to back, so one is in flight at SIGTERM.
    timeouts = {"dns": 1, "connect": 1, "tls": 1, "http": 1, "deadline": 1}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOPBACK, 0))
        resolver = f"{LOOPBACK}:{silent.getsockname()[1]}"
        targets = [
            lab.target(interval=1, timeouts=timeouts),
            lab.target(name="silent", resolvers=[resolver], interval=1, timeouts=timeouts),
        ]
        running = start_daemon(tmp_path, targets)
        assert http_get(f"{running.url}/metrics").status == 200
        started = time.monotonic()
        code = running.server.stop()
        elapsed = time.monotonic() - started

    assert code == 0, running.server.describe()
    assert elapsed < STOP_GRACE + 2.0, f"took {elapsed:.1f}s\n{running.server.describe()}"
    output = running.server.output()
    assert "msg=stopping" in output, output
    assert "Traceback" not in output, output
    assert _status(f"{running.url}/-/healthy") is None  # the endpoint is closed
