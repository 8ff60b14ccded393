"""End to end: ``probe check --push`` against a real Pushgateway (Debian's prometheus-pushgateway).

The Pushgateway listens on 127.0.0.1 (a free port, no persistence file); ``probe check``
runs as a subprocess against the session's demo lab (DNS, two TLS nodes on 127.0.10.1-2,
backends web-1 and web-2) and pushes there. The tests read what a user reads: the
gateway's ``/metrics`` (what Prometheus would scrape), its ``/api/v1/metrics`` (the groups
and their labels), and the check's exit code and stderr.

Without ``prometheus-pushgateway`` the tests are skipped, unless ``PROBE_REQUIRE_E2E=1`` (CI).
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from probe.daemon.metric_specs import SPECS
from probe.lab import DemoLab
from tests.e2e._procs import Process, free_port, require_programs, start_server
from tests.e2e.daemon.test_prometheus import (
    LOOPBACK,
    SCRAPE_TIMEOUT,
    Prometheus,
    _server,
    _start,
    http_get,
)
from tests.support import docs
from tests.support.helpers import probe_cli

pytestmark = pytest.mark.e2e

#: Bound on one ``probe check --push`` against the lab (seconds): the check, the push, Python's start.
CHECK_BOUND = 20.0
#: Bound on a refused push: connection refused comes at once.
REFUSED_BOUND = 15.0
#: Families that describe a daemon, never pushed by a one-shot check.
PROCESS_WIDE = {spec.name for spec in SPECS if "target" not in spec.labels}


@dataclass
class Gateway:
    process: Process
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of the gateway's ``/metrics``: ``(name, labels, value)``."""
        reply = http_get(f"{self.url}/metrics")
        assert reply.status == 200
        families = text_string_to_metric_families(reply.body.decode())  # type: ignore[no-untyped-call]
        return [(s.name, s.labels, s.value) for family in families for s in family.samples]

    def series(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """The samples named ``name`` whose labels include ``labels``."""
        return [
            (sample_labels, value)
            for sample_name, sample_labels, value in self.samples()
            if sample_name == name and labels.items() <= sample_labels.items()
        ]

    def groups(self) -> list[dict[str, Any]]:
        """The groups the gateway holds (its API), each with its ``labels``."""
        reply = http_get(f"{self.url}/api/v1/metrics")
        assert reply.status == 200
        document = json.loads(reply.body)
        assert document["status"] == "success", document
        return document["data"]  # type: ignore[no-any-return]

    def delete_all(self) -> None:
        """Empty the gateway (admin API), so each test starts from nothing."""
        import urllib.request

        request = urllib.request.Request(f"{self.url}/api/v1/admin/wipe", method="PUT")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=5) as reply:
            assert reply.status == 202


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A real Pushgateway on 127.0.0.1, in memory only, with the admin API to wipe it between tests."""
    found = require_programs(
        ("prometheus-pushgateway",),
        "Pushgateway tests need {missing} on PATH; on Debian/Ubuntu: apt-get install prometheus-pushgateway",
    )
    directory = tmp_path_factory.mktemp("pushgateway")

    def launch(port: int, attempt: int) -> Process:
        argv = [
            found["prometheus-pushgateway"],
            f"--web.listen-address={LOOPBACK}:{port}",
            "--persistence.file=",  # in memory only
            "--web.enable-admin-api",
            "--log.level=warn",
        ]
        return Process("pushgateway", argv, directory / f"pushgateway-{attempt}.log")

    def ready(port: int) -> bool:
        try:
            return http_get(f"http://{LOOPBACK}:{port}/-/ready", timeout=1.0).status == 200
        except OSError:
            return False

    process, port = start_server("pushgateway", launch, ready, (LOOPBACK,), (socket.SOCK_STREAM,))
    try:
        yield Gateway(process, port)
    finally:
        process.stop()


@pytest.fixture
def empty_gateway(gateway: Gateway) -> Gateway:
    gateway.delete_all()
    assert gateway.groups() == []
    return gateway


def check(demo: DemoLab, *extra: str) -> tuple[Any, float]:
    """``probe check`` on the demo lab (loopback resolver, the lab's CA) with ``extra``; and its duration."""
    start = time.monotonic()
    complete = probe_cli(
        "check",
        *demo.adhoc_args(),
        "--backend-header",
        "X-Backend",
        "--timeout",
        "10",
        *extra,
        timeout=60,
    )
    return complete, time.monotonic() - start


# --------------------------------------------------------------------------- pushing


def test_push_puts_the_daemons_series_under_job_target_and_labels(
    demo: DemoLab, empty_gateway: Gateway
) -> None:
    complete, seconds = check(
        demo,
        "--expect-backends",
        "web-1,web-2",
        "--push",
        empty_gateway.url,
        "--push-label",
        "vpc=vpc-a",
        "--push-label",
        "bastion=bastion-a-1",
    )

    assert complete.returncode == 0, complete.stdout + complete.stderr
    assert "Status: OK" in complete.stdout
    assert complete.stderr == ""
    assert seconds < CHECK_BOUND
    # One group: job (default probe) plus target plus the --push-label pairs.
    [group] = empty_gateway.groups()
    key = {"job": "probe", "target": demo.hostname, "vpc": "vpc-a", "bastion": "bastion-a-1"}
    assert group["labels"] == key
    # The daemon's names, with the grouping labels on every series (and no instance of its own).
    [(labels, value)] = empty_gateway.series("probe_success", target=demo.hostname)
    assert (labels, value) == ({**key, "instance": ""}, 1.0)
    assert empty_gateway.series("probe_status", **key)[0][1] == 0
    assert {lb["backend"]: v for lb, v in empty_gateway.series("probe_backend_up", **key)} == {
        "web-1": 1.0,
        "web-2": 1.0,
    }
    verified = empty_gateway.series("probe_tls_verified", **key)
    assert sorted((lb["address"], v) for lb, v in verified) == [(a, 1.0) for a in demo.node_addresses]
    assert empty_gateway.series("probe_cycles_total", **key)[0][1] == 1
    pushed = {name for name, labels, _ in empty_gateway.samples() if labels.get("job") == "probe"}
    assert {"probe_ssl_last_chain_info", "probe_http_duration_seconds", "probe_dns_answers"} <= pushed
    assert pushed.isdisjoint(PROCESS_WIDE)  # a one-shot check is not a daemon
    # The gateway's own record of the push: when it happened, and no failed push.
    assert empty_gateway.series("push_time_seconds", **key)[0][1] > time.time() - 60
    assert empty_gateway.series("push_failure_time_seconds", **key)[0][1] == 0


def test_each_push_replaces_its_group_so_cleared_findings_vanish(
    demo: DemoLab, empty_gateway: Gateway, tmp_path: Path
) -> None:
    # A config-file target whose name is not path-safe ("www:blue"): sent base64-encoded.
    def config(**overrides: Any) -> str:
        path = tmp_path / "probe.yaml"
        target = demo.target(name="www:blue", **overrides)
        path.write_text(yaml.safe_dump({"targets": [target]}))
        return str(path)

    start = time.monotonic()
    during = probe_cli(
        "check",
        "--config",
        config(expect_backends=["web-1", "web-2", "web-3"]),
        "--push",
        empty_gateway.url,
        "--push-job",
        "change-1234",
        timeout=60,
    )
    assert during.returncode == 2, during.stdout + during.stderr
    assert during.stderr == ""
    key = {"job": "change-1234", "target": "www:blue"}
    assert [g["labels"] for g in empty_gateway.groups()] == [key]
    assert empty_gateway.series("probe_success", **key)[0][1] == 0
    [(finding, _)] = empty_gateway.series("probe_failure_info", **key)
    assert (finding["reason"], finding["severity"]) == ("backend_missing", "critical")
    assert {lb["backend"]: v for lb, v in empty_gateway.series("probe_backend_up", **key)}["web-3"] == 0

    after = probe_cli("check", "--config", config(), "--push", empty_gateway.url, "--push-job", "change-1234")

    assert after.returncode == 0, after.stdout + after.stderr
    assert empty_gateway.series("probe_success", **key)[0][1] == 1
    # PUT replaced the whole group: the finding and web-3's series are gone, not left stale.
    assert empty_gateway.series("probe_failure_info", **key) == []
    assert {lb["backend"] for lb, _ in empty_gateway.series("probe_backend_up", **key)} == {"web-1", "web-2"}
    assert time.monotonic() - start < 2 * CHECK_BOUND


# --------------------------------------------------------------------------- failing pushes


def test_a_refused_push_is_one_line_and_exit_5_when_the_verdict_is_ok(demo: DemoLab) -> None:
    port = free_port((LOOPBACK,), (socket.SOCK_STREAM,))  # nothing listens there
    url = f"http://{LOOPBACK}:{port}"

    complete, seconds = check(demo, "--push", url, "--json")

    assert complete.returncode == 5
    assert json.loads(complete.stdout)["targets"][0]["status"] == "ok"  # the report is whole
    assert complete.stderr == (
        f"probe: push to {url} failed for {demo.hostname}: connection refused (the verdict above stands)\n"
    )
    assert seconds < REFUSED_BOUND


def test_a_refused_push_never_hides_a_critical_verdict(demo: DemoLab) -> None:
    port = free_port((LOOPBACK,), (socket.SOCK_STREAM,))
    url = f"http://{LOOPBACK}:{port}"

    complete, seconds = check(demo, "--expect-backends", "web-1,web-2,web-3", "--push", url)

    assert complete.returncode == 2
    assert "Status: CRITICAL" in complete.stdout and "backend_missing" in complete.stdout
    assert complete.stderr.count("\n") == 1
    assert complete.stderr.startswith(f"probe: push to {url} failed for {demo.hostname}: connection refused")
    assert seconds < REFUSED_BOUND


def test_a_push_the_gateway_refuses_names_its_answer(demo: DemoLab, gateway: Gateway) -> None:
    url = f"{gateway.url}/not-the-route-prefix"

    complete, seconds = check(demo, "--push", url)

    assert complete.returncode == 5
    assert complete.stderr.startswith(f"probe: push to {url} failed for {demo.hostname}: HTTP 404")
    assert complete.stderr.count("\n") == 1
    assert seconds < CHECK_BOUND


# --------------------------------------------------------------------------- the same dashboards


def docs_scrape_config() -> dict[str, Any]:
    """The scrape config for the Pushgateway in docs/checking-during-a-change.md."""
    heading = "Pushing a check's result to a Pushgateway: `--push`"
    section = docs.section("docs/checking-during-a-change.md", heading)
    [block] = re.findall(r"```yaml\n(.*?)```", section, re.S)
    document: dict[str, Any] = yaml.safe_load(block)
    return document


def test_prometheus_keeps_the_pushed_job_and_labels(
    demo: DemoLab, empty_gateway: Gateway, tmp_path: Path
) -> None:
    found = require_programs(
        ("prometheus",), "needs {missing} on PATH; on Debian/Ubuntu: apt-get install prometheus"
    )
    complete, _ = check(demo, "--push", empty_gateway.url, "--push-label", "bastion=bastion-a-1")
    assert complete.returncode == 0, complete.stdout + complete.stderr
    # The docs' scrape config, pointed at this gateway, scraping every second.
    document = docs_scrape_config()
    [job] = document["scrape_configs"]
    assert job["honor_labels"] is True
    job["static_configs"] = [{"targets": [f"{LOOPBACK}:{empty_gateway.port}"]}]
    document["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s"}
    config = yaml.safe_dump(document, sort_keys=False)
    path = tmp_path / "prometheus.yml"
    path.write_text(config)

    def launch(port: int, attempt: int) -> Process:
        argv = [
            found["prometheus"],
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / f'tsdb-{attempt}'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--log.level=warn",
        ]
        return _server("prometheus", argv, tmp_path / f"prometheus-{attempt}.log", config)

    server, port = _start("prometheus", launch, lambda port: f"http://{LOOPBACK}:{port}/-/ready")
    try:
        prometheus = Prometheus(server, port)
        # The daemon's queries work on the pushed result: job "probe" as pushed, not exported_job.
        [series] = prometheus.wait_for(
            f'probe_success{{job="probe",target="{demo.hostname}"}}', "scrape of the gateway", SCRAPE_TIMEOUT
        )
        assert series["metric"] == {
            "__name__": "probe_success",
            "job": "probe",
            "target": demo.hostname,
            "bastion": "bastion-a-1",
        }  # the empty instance label is no label at all
        assert float(series["value"][1]) == 1
        verified = prometheus.query(f'count(probe_tls_verified{{target="{demo.hostname}"}} == 1)')
        assert float(verified[0]["value"][1]) == 2
    finally:
        server.stop()
