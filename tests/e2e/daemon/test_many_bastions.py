"""End to end: many bastions into one Prometheus, with Prometheus's agent mode and remote write.

The scene, on loopback only: ``probe run`` on this module's demo lab; two Prometheus
agents (``--enable-feature=agent``), standing for two bastions in two VPCs, each scrape it
every second and remote-write to a third Prometheus started with
``--web.enable-remote-write-receiver``, the central store. Each agent's configuration is
the agent file of docs/many-bastions.md with only its addresses, intervals and
vantage-point values replaced, so the documented file is the tested one. The tests ask
the central Prometheus's HTTP API what a user of the fleet would ask.

Without ``prometheus`` or ``promtool`` the tests are skipped, unless ``PROBE_REQUIRE_E2E=1`` (CI).
"""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.lab import DemoLab
from tests.e2e._procs import Process, require_programs
from tests.e2e.daemon.test_prometheus import (
    INTERVAL,
    LOOPBACK,
    TIMEOUTS,
    Daemon,
    Prometheus,
    Tools,
    _server,
    _start,
    start_daemon,
)
from tests.support import docs

pytestmark = pytest.mark.e2e

#: The two vantage points: (vpc, az, bastion).
BASTIONS = (("vpc-a", "eu-west-1a", "bastion-a-1"), ("vpc-b", "eu-west-1b", "bastion-b-1"))
#: Bound on the first samples reaching the central store: an agent's first scrape comes
#: 5-10 s after its start (its discovery and scrape managers sync every 5 s), then the
#: remote-write queue sends within its 1 s batch deadline.
ARRIVAL_TIMEOUT = 40.0


def section() -> str:
    """The page docs/many-bastions.md."""
    return docs.section("docs/many-bastions.md", "Many bastions, one Prometheus")


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", section(), re.S)


def promql_queries() -> list[str]:
    [block] = re.findall(r"```promql\n(.*?)```", section(), re.S)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def agent_document() -> dict[str, Any]:
    """The page's agent file, parsed."""
    [block] = [b for b in yaml_blocks() if "external_labels" in b]
    document: dict[str, Any] = yaml.safe_load(block)
    return document


def agent_config(daemon: Daemon, receiver: Prometheus, vantage: tuple[str, str, str]) -> str:
    """The page's agent file for one bastion, with loopback addresses and a 1 s interval."""
    document = copy.deepcopy(agent_document())
    vpc, az, bastion = vantage
    document["global"]["scrape_interval"] = "1s"
    document["global"]["scrape_timeout"] = "1s"
    document["global"]["external_labels"] = {"vpc": vpc, "az": az, "bastion": bastion}
    [job] = document["scrape_configs"]
    job["static_configs"] = [{"targets": [f"{LOOPBACK}:{daemon.port}"]}]
    [remote] = document["remote_write"]
    remote["url"] = f"http://{LOOPBACK}:{receiver.port}/api/v1/write"
    del remote["basic_auth"]  # the receiver here has no web config
    remote["queue_config"]["batch_send_deadline"] = "1s"
    return yaml.safe_dump(document, sort_keys=False)


# --------------------------------------------------------------------------- processes


@dataclass
class Agent:
    process: Process
    port: int
    vantage: tuple[str, str, str]


def start_receiver(tools: Tools, directory: Path) -> Prometheus:
    """The central store: a Prometheus that scrapes nothing and accepts remote writes."""
    config = "global:\n  evaluation_interval: 1s\n"
    path = directory / "central.yml"
    path.write_text(config)

    def launch(port: int, attempt: int) -> Process:
        argv = [
            tools.prometheus,
            f"--config.file={path}",
            f"--storage.tsdb.path={directory / f'tsdb-{attempt}'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--web.enable-remote-write-receiver",
            "--log.level=warn",
        ]
        return _server("central prometheus", argv, directory / f"central-{attempt}.log", config)

    server, port = _start("central prometheus", launch, lambda port: f"http://{LOOPBACK}:{port}/-/ready")
    return Prometheus(server, port)


def start_agent(
    tools: Tools, daemon: Daemon, receiver: Prometheus, vantage: tuple[str, str, str], directory: Path
) -> Agent:
    """A Prometheus in agent mode with the page's agent file for ``vantage``."""
    config = agent_config(daemon, receiver, vantage)
    path = directory / f"agent-{vantage[2]}.yml"
    path.write_text(config)
    check = subprocess.run(
        [tools.promtool, "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    def launch(port: int, attempt: int) -> Process:
        argv = [
            tools.prometheus,
            "--enable-feature=agent",  # Prometheus 2.x (Debian 12 has 2.42); 3.x says --agent
            f"--config.file={path}",
            f"--storage.agent.path={directory / f'wal-{vantage[2]}-{attempt}'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--log.level=warn",
        ]
        return _server(f"agent {vantage[2]}", argv, directory / f"agent-{vantage[2]}-{attempt}.log", config)

    server, port = _start(f"agent {vantage[2]}", launch, lambda port: f"http://{LOOPBACK}:{port}/-/ready")
    return Agent(server, port, vantage)


@pytest.fixture(scope="module")
def programs() -> Tools:
    """prometheus and promtool; skip (or fail with PROBE_REQUIRE_E2E=1) without them."""
    found = require_programs(
        ("prometheus", "promtool"),
        "the many-bastions tests need {missing} on PATH; on Debian/Ubuntu: apt-get install prometheus",
    )
    return Tools(prometheus=found["prometheus"], promtool=found["promtool"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoLab]:
    with DemoLab(tmp_path_factory.mktemp("bastions-lab")) as scene:
        yield scene


@pytest.fixture(scope="module")
def fleet(
    programs: Tools,
    lab: DemoLab,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Prometheus, list[Agent]]]:
    """``probe run``, the central Prometheus and one agent per bastion; all stopped at the end."""
    directory = tmp_path_factory.mktemp("bastions")
    stack: list[Any] = []
    try:
        daemon = start_daemon(directory, [lab.target(interval=INTERVAL, timeouts=TIMEOUTS)])
        stack.append(daemon.server)
        receiver = start_receiver(programs, directory)
        stack.append(receiver.server)
        agents = []
        for vantage in BASTIONS:
            agent = start_agent(programs, daemon, receiver, vantage, directory)
            stack.append(agent.process)
            agents.append(agent)
        yield receiver, agents
    finally:
        for process in reversed(stack):
            process.stop()


# --------------------------------------------------------------------------- tests


def test_docs_agent_file_sets_the_vantage_point_as_external_labels() -> None:
    document = agent_document()
    assert set(document["global"]["external_labels"]) == {"vpc", "az", "bastion"}
    assert [job["job_name"] for job in document["scrape_configs"]] == ["probe"]
    assert document["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:9798"]}]
    assert len(document["remote_write"]) == 1


def test_docs_remote_write_snippets_pass_promtool(programs: Tools, tmp_path: Path) -> None:
    blocks = yaml_blocks()
    kinds = " ".join(blocks)
    for needle in ("/api/v1/write", "/api/v1/receive", "/api/v1/push", "sigv4:", "X-Scope-OrgID"):
        assert needle in kinds, needle
    for index, block in enumerate(blocks):
        path = tmp_path / f"snippet-{index}.yml"
        path.write_text(block)
        # --syntax-only: the agent file names a password file that exists only on a bastion.
        check = subprocess.run(
            [programs.promtool, "check", "config", "--syntax-only", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, f"docs block {index}:\n{block}\n{check.stdout}{check.stderr}"


def test_probe_success_arrives_with_each_vantage_point(
    fleet: tuple[Prometheus, list[Agent]], lab: DemoLab
) -> None:
    receiver, agents = fleet
    for vpc, az, bastion in BASTIONS:
        [series] = receiver.wait_for(
            f'probe_success{{vpc="{vpc}",az="{az}",bastion="{bastion}"}}',
            f"remote write from {bastion}",
            timeout=ARRIVAL_TIMEOUT,
        )
        labels = series["metric"]
        assert labels == {
            "__name__": "probe_success",
            "job": "probe",
            "instance": labels["instance"],
            "target": "demo",
            "vpc": vpc,
            "az": az,
            "bastion": bastion,
        }
        assert float(series["value"][1]) == 1
    # The same target from two places: two series, told apart only by the vantage point.
    grouped = receiver.query('count by (vpc, az, bastion, target, instance) (probe_success{target="demo"})')
    assert sorted(s["metric"]["bastion"] for s in grouped) == ["bastion-a-1", "bastion-b-1"]
    assert len({s["metric"]["instance"] for s in grouped}) == 1
    # Every series carries the labels, per-address ones and the agent's own "up" too.
    for _, _, bastion in BASTIONS:
        assert receiver.value(f'up{{job="probe",bastion="{bastion}"}}') == 1
        addresses = receiver.query(f'probe_address_success{{bastion="{bastion}"}}')
        assert sorted(s["metric"]["address"] for s in addresses) == list(lab.node_addresses)
    for agent in agents:
        assert agent.process.running
        assert agent.process.output() == "", agent.process.describe()  # logs at warn: nothing to say


def test_docs_fleet_queries_evaluate_on_the_central_store(fleet: tuple[Prometheus, list[Agent]]) -> None:
    receiver, _ = fleet
    receiver.wait_for('probe_success{bastion="bastion-b-1"}', "remote write", timeout=ARRIVAL_TIMEOUT)
    queries = promql_queries()
    assert len(queries) == 5
    for query in queries:
        assert receiver.query(query) == [], query  # every probe succeeds, every bastion sends
    # The first query's counterpart sees each vantage point with its one target.
    per_bastion = receiver.query("count by (vpc, az, bastion) (probe_success == 1)")
    assert sorted((s["metric"]["bastion"], s["value"][1]) for s in per_bastion) == [
        ("bastion-a-1", "1"),
        ("bastion-b-1", "1"),
    ]
