"""``probe check URL --resolver R``: the first DNS query leaves while the configuration loads.

The early query counts only when the validated target asks the same (``DnsPlan`` equality);
otherwise it is dropped and the DNS stage starts again. Its lookup time is read as the
answer arrives, not after the configuration has loaded. Everything runs against the demo
lab on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.cli import head_start as ahead
from probe.cli.adhoc import config_from_args
from probe.cli.cycles import check_once
from probe.cli.main import main
from probe.cli.parser import build_parser
from probe.config.values import parse_network
from probe.lab import Behaviour, DemoLab, Lab
from probe.model.reasons import Status
from probe.model.results import TargetResult
from probe.stages import dns as dns_stage


def _args(*argv: str) -> Any:
    return build_parser().parse_args(["check", *argv])


def _validated_plan(args: Any) -> dns_stage.DnsPlan:
    target = config_from_args(args).targets[0]
    assert target.resolvers is not None
    return dns_stage.DnsPlan.of(target, target.resolvers)


@pytest.mark.parametrize(
    "argv",
    [
        ["https://www.corp.example/", "--resolver", "127.0.0.1"],
        ["https://WWW.Corp.Example./health?x=1", "--resolver", "127.0.0.1:5353"],
        ["http://www.corp.example:8080/", "--resolver", "127.0.0.1", "--resolver", "[::1]:53"],
        ["https://straße.example/", "--resolver", "127.0.0.1"],
        ["https://www.corp.example/", "--resolver", "127.0.0.1", "--expect-network", "127.0.10.0/24"],
        ["https://www.corp.example/", "--resolver", "127.0.0.1", "--ip-family", "both"],
        ["https://www.corp.example/", "--resolver", "127.0.0.1", "--timeout", "1500ms"],
        ["https://www.corp.example/", "--resolver", "127.0.0.1", "--timeout", "1"],
        ["https://www.corp.example/", "--resolver", "127.0.0.1", "--timeout", "1m"],
        ["https://www.corp.example/", "--resolver", "127.0.0.1", "--requests", "2", "--insecure", "--json"],
    ],
)
def test_the_early_plan_is_the_validated_targets(argv: list[str]) -> None:
    args = _args(*argv)
    early = ahead.head_start(args)

    assert early is not None
    assert early == _validated_plan(args)


@pytest.mark.parametrize(
    "argv",
    [
        ["https://www.corp.example/"],  # the system's resolvers: never before the arguments are valid
        ["--config", "probe.yaml"],
        ["https://www.corp.example/", "--resolver", "127.0.0.1", "--watch"],
        ["https://www.corp.example/", "--resolver", "127.0.0.1", "--baseline", "b.json"],
        ["https://www.corp.example/", "--resolver", "127.0.0.1", "--save-baseline", "b.json"],
        [
            "https://www.corp.example/",
            "--resolver",
            "127.0.0.1",
            "--resolve",
            "www.corp.example:443:127.0.10.1",
        ],
        ["https://www.corp.example/", "--resolver", "127.0.0.1", "--expect-same-addresses-as", "lb.example"],
        ["https://127.0.10.1/", "--resolver", "127.0.0.1", "--server-name", "www.corp.example"],
        ["ftp://www.corp.example/", "--resolver", "127.0.0.1"],
        ["https://www.corp.example/", "--resolver", "dns.example"],
        ["https://www.corp.example/", "--resolver", "127.0.0.1", "--expect-network", "127.0.0.1/8"],
        ["https://www.corp.example/", "--resolver", "127.0.0.1", "--timeout", "5 sec"],
        ["https://-bad-.example/", "--resolver", "127.0.0.1"],
    ],
)
def test_no_early_query_for_what_it_does_not_read(argv: list[str]) -> None:
    assert ahead.head_start(_args(*argv)) is None


def _demo_args(demo: DemoLab, *extra: str) -> Any:
    return _args(*demo.adhoc_args(*extra))


def _queries_for(demo: DemoLab) -> int:
    return sum(1 for name, _, _ in demo.dns_server.queries if name == demo.hostname)


@pytest.fixture
def answers_late(demo: DemoLab) -> Iterator[float]:
    """The demo name's answers leave the lab's DNS server 50 ms late."""
    late = 0.05
    demo.dns_server.delay(demo.hostname, late)
    try:
        yield late
    finally:
        demo.dns_server.delay(demo.hostname, 0)


def test_an_early_query_is_used_once_and_timed_as_it_arrives(
    demo: DemoLab, answers_late: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Loading the configuration stands in for pydantic's import: 0.4 s of Python holding
    # the interpreter. The answer arrives 50 ms after the query, long before that ends.
    load = config_from_args

    def slow_load(args: Any) -> Any:
        until = time.monotonic() + 0.4
        while time.monotonic() < until:
            sum(range(100))
        return load(args)

    monkeypatch.setattr(ahead, "config_from_args", slow_load)
    args = _demo_args(demo, "--timeout", "10")
    early = ahead.head_start(args)
    assert early is not None
    before = _queries_for(demo)
    start = time.monotonic()

    (result,) = asyncio.run(ahead.check_ahead(args, early))

    assert result.status is Status.OK, result.failures
    assert _queries_for(demo) - before == 1  # the early query was the target's, not asked again
    assert answers_late <= result.dns.lookup_seconds < 0.25  # not the 0.4 s of loading
    assert time.monotonic() - start < 10


def test_an_early_query_that_asked_something_else_is_dropped(demo: DemoLab) -> None:
    args = _demo_args(demo, "--timeout", "10")
    config = config_from_args(args)
    target = config.targets[0]
    assert target.resolvers is not None
    # Early, the expected networks were read differently: its answers would all be unexpected.
    other = dataclasses.replace(
        dns_stage.DnsPlan.of(target, target.resolvers), expect_networks=(parse_network("127.0.20.0/24"),)
    )
    before = _queries_for(demo)

    async def check() -> list[TargetResult]:
        lookup = dns_stage.resolve_early(other)
        await asyncio.sleep(0.2)  # its answer is in
        return await check_once(config, ahead=(other, lookup))

    (result,) = asyncio.run(check())

    assert result.status is Status.OK, result.failures
    assert all(answer.expected for answer in result.dns.answers)  # judged by 127.0.10.0/24
    assert _queries_for(demo) - before == 2  # the dropped query, then the target's own


@pytest.fixture
def silent_resolver(lab: Lab) -> Iterator[str]:
    """A lab DNS server that never answers (a dead or filtered resolver): its ``IP:port``."""
    silent = lab.start_dns("127.0.53.21")
    silent.default = Behaviour.DROP
    try:
        yield silent.where
    finally:
        lab.stop(silent)


@pytest.mark.parametrize("ca_file", ["missing.pem", "."])
def test_an_unreadable_ca_file_is_refused_at_once_not_after_a_silent_resolver(
    silent_resolver: str,
    ca_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The query leaves before the arguments are validated; the trust anchors load only after
    # the lookups end. A typo in --ca-file must not wait out the resolver's 2 s timeout.
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()

    code = main(["check", "https://www.corp.example/", "--resolver", silent_resolver, "--ca-file", ca_file])

    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    why = "no such file" if ca_file == "missing.pem" else "is a directory, not a file"
    assert code == 3
    assert captured.out == ""
    assert captured.err == f"probe: --ca-file: {ca_file}: {why}\n"
    assert elapsed < 1.0  # the DNS timeout is 2 s


def test_an_unreadable_ca_file_in_a_config_is_refused_at_once(
    silent_resolver: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "probe.yaml"
    config.write_text(
        "targets:\n"
        "  - url: https://www.corp.example/\n"
        f"    resolvers: ['{silent_resolver}']\n"
        "    direct_backends:\n"
        "      - {name: web-1, url: 'https://127.0.20.1/', server_name: www.corp.example,\n"
        "         ca_file: web.pem}\n"
    )
    start = time.monotonic()

    code = main(["check", "--config", str(config)])

    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    assert code == 3
    assert captured.err == (
        f"probe: {config}: targets[0].direct_backends[0].ca_file: {tmp_path / 'web.pem'}: no such file\n"
    )
    assert elapsed < 1.0
