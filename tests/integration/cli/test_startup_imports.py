"""What each command loads: ``--help`` nothing heavy, ``check`` no daemon, web, bcrypt, metrics.

A behaviour test, not a timing test: it runs the command in a fresh interpreter against the
demo lab and reads ``sys.modules`` at its end.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probe.lab import DemoLab
from tests.support.helpers import REPO, environment_without_proxies

_SCRIPT = """
import json, sys
from probe.cli.main import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as out:
    json.dump(sorted(sys.modules), out)
sys.exit(code)
"""

#: Never loaded by ``probe check`` (pyOpenSSL only with ``--ocsp staple``).
NOT_FOR_CHECK = (
    "probe.daemon.main",
    "probe.daemon.web",
    "probe.daemon.httpserver",
    "probe.daemon.webconfig",
    "probe.daemon.metrics",
    "probe.daemon.metric_specs",
    "probe.daemon.scheduler",
    "probe.daemon.store",
    "bcrypt",
    "prometheus_client",
    "OpenSSL",
    "yaml",  # no config file
    "probe.cli.demo",
    "probe.cli.watch",  # only with --watch
    "probe.report.watch",
    "probe.cli.push",  # only with --push
    "re2",  # only where a regex is compiled (body_regex, --backend-regex): ~4 ms
)
#: Not loaded for ``--help`` either: the modules of the commands load when a command runs.
NOT_FOR_HELP = (
    *NOT_FOR_CHECK,
    "probe.cli.check",
    "probe.cli.cycles",
    "probe.cli.head_start",
    "probe.config.models",
    "probe.config.load",
    "probe.config.errors",
    "probe.engine.cycle",
    "probe.judge.watch",
    "probe.model.results",
    "pydantic",
    "httpx",
    "cryptography",
    "dns",
    "asyncio",
)


def loaded(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = tmp_path / "modules.json"
    complete = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=environment_without_proxies(),
    )
    return complete, set(json.loads(out.read_text()))


def present(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == n or m.startswith(f"{n}.") for n in names)}


@pytest.mark.parametrize(
    "args",
    [["--help"], ["check", "--help"], ["run", "--help"], ["--version"], ["share"], ["completion", "bash"]],
)
def test_help_loads_no_config_machinery_nor_stages(tmp_path: Path, args: list[str]) -> None:
    complete, modules = loaded(tmp_path, *args)
    assert complete.returncode == 0, complete.stderr
    assert "probe" in complete.stdout
    assert present(modules, NOT_FOR_HELP) == set()


def check_args(demo: DemoLab, *extra: str) -> list[str]:
    return [
        "check",
        *demo.adhoc_args(),
        "--timeout",
        "10",
        *extra,
    ]


def test_check_loads_neither_the_daemon_nor_the_web_nor_pyopenssl(demo: DemoLab, tmp_path: Path) -> None:
    start = time.monotonic()
    complete, modules = loaded(tmp_path, *check_args(demo))

    assert complete.returncode == 0, complete.stdout + complete.stderr
    assert "Status: OK" in complete.stdout and complete.stderr == ""
    assert present(modules, NOT_FOR_CHECK) == set()
    assert {"probe.engine.cycle", "probe.report.text", "httpx"} <= modules  # it did probe and report
    assert time.monotonic() - start < 30


def test_check_with_ocsp_staple_loads_pyopenssl(demo: DemoLab, tmp_path: Path) -> None:
    complete, modules = loaded(tmp_path, *check_args(demo, "--ocsp", "staple", "--json"))

    assert complete.returncode == 0, complete.stdout + complete.stderr
    document = json.loads(complete.stdout)
    assert document["targets"][0]["status"] == "ok"
    assert "OpenSSL" in modules
    assert present(modules, tuple(n for n in NOT_FOR_CHECK if n != "OpenSSL")) == set()


def test_check_with_a_backend_regex_loads_re2_and_finds_the_backend(demo: DemoLab, tmp_path: Path) -> None:
    complete, modules = loaded(tmp_path, *check_args(demo, "--backend-regex", r"served by (\S+)", "--json"))

    assert complete.returncode == 0, complete.stdout + complete.stderr
    document = json.loads(complete.stdout)
    assert document["targets"][0]["status"] == "ok"
    assert "re2" in modules
    assert present(modules, tuple(n for n in NOT_FOR_CHECK if n != "re2")) == set()


def test_check_with_push_loads_the_renderer_but_not_prometheus_client(demo: DemoLab, tmp_path: Path) -> None:
    # Nothing listens on the port: the push is refused, which is enough to load its code.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    complete, modules = loaded(tmp_path, *check_args(demo, "--push", f"http://127.0.0.1:{port}"))

    assert complete.returncode == 5, complete.stdout + complete.stderr
    assert "connection refused" in complete.stderr
    assert {"probe.cli.push", "probe.daemon.metrics", "probe.daemon.store"} <= modules
    lazy = (
        "probe.daemon.main",
        "probe.daemon.web",
        "probe.daemon.httpserver",
        "probe.daemon.webconfig",
        "probe.daemon.scheduler",
        "bcrypt",
        "prometheus_client",
    )
    assert present(modules, lazy) == set()


#: Run ``probe check`` and note which modules were loaded when the first datagram (or
#: connected UDP socket) went to the resolver: an audit hook on ``socket.connect`` and
#: ``socket.sendto``, the events CPython raises before the system call.
_FIRST_QUERY_SCRIPT = """
import json, socket, sys
out, resolver_host, resolver_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = []
def hook(event, args):
    if seen or event not in ("socket.connect", "socket.sendto"):
        return
    sock, address = args[0], args[-1]
    if sock.type == socket.SOCK_DGRAM and address[:2] == (resolver_host, resolver_port):
        seen.append(sorted(sys.modules))
sys.addaudithook(hook)
from probe.cli.main import main
try:
    code = main(sys.argv[4:])
except SystemExit as exc:
    code = exc.code
with open(out, "w") as handle:
    json.dump(seen[0] if seen else None, handle)
sys.exit(code)
"""

#: Not loaded yet when ``probe check URL --resolver R`` sends its first DNS query (issue 9:
#: ≤ 150 ms to it): neither the stages after DNS nor the config machinery (the query leaves
#: while pydantic loads, see probe.cli.head_start).
NOT_BEFORE_FIRST_QUERY = (
    "probe.engine.cycle",
    "probe.stages.tls",
    "probe.stages.http",
    "probe.stages.http_rules",
    "httpx",
    "h2",
    "cryptography",
    "pydantic",
    "probe.config.models",
    "probe.config.load",
    "probe.config.errors",
)


def test_check_sends_its_first_dns_query_before_loading_the_config_models_and_the_stages(
    demo: DemoLab, tmp_path: Path
) -> None:
    out = tmp_path / "modules.json"
    host, port = demo.dns_server.where.rsplit(":", 1)
    asked = [q for q in demo.dns_server.queries if q[0] == demo.hostname]
    start = time.monotonic()
    complete = subprocess.run(
        [sys.executable, "-c", _FIRST_QUERY_SCRIPT, str(out), host, port, *check_args(demo, "--json")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=environment_without_proxies(),
    )

    assert complete.returncode == 0, complete.stdout + complete.stderr
    assert complete.stderr == ""
    target = json.loads(complete.stdout)["targets"][0]
    assert target["status"] == "ok" and target["failures"] == []
    at_first_query = json.loads(out.read_text())
    assert at_first_query is not None, "no DNS query reached the resolver"
    assert "dns" in at_first_query and "probe.stages.dns" in at_first_query
    assert present(set(at_first_query), NOT_BEFORE_FIRST_QUERY) == set()
    # That early query was the check's own: the name was asked once (one A query).
    assert [q for q in demo.dns_server.queries if q[0] == demo.hostname][len(asked) :] == [
        (demo.hostname, "A", "udp")
    ]
    assert time.monotonic() - start < 30
