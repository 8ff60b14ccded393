"""``probe run`` under the attacks of issue 17: a scraper gets every answer, the schedule keeps its interval.

One daemon (a real ``probe run`` probing the demo lab: three targets every second, basic
auth with a bcrypt hash of cost 10) serves on 127.0.0.1 with ``--web.client-timeout 1``:
the behaviour of the default 5 s, sooner. Each attack comes from other loopback addresses
(127.0.17.x, :mod:`tests.support.abuse`) for a few seconds, while a scraper with the valid
password scrapes ``/metrics`` every 0.5 s over a new connection; the test asserts what the
attackers got, that the scraper got every answer, and that the probing schedule kept its
interval (the gaps between cycles, each cycle's ``probe_duration_seconds``, the loop lag),
as ``/metrics`` showed them during the attack. The loop lag gauge is the largest of the
last 60 s, so a later test's reading also covers the earlier tests: stricter, never laxer.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import pytest
import yaml

from probe.daemon.web import REQUEST_BURST, REQUESTS_PER_SECOND
from probe.lab import DemoLab
from tests.integration.daemon.test_daemon import free_port, wait_for
from tests.support.abuse import Attack, Schedule, Scraper, basic, sources
from tests.support.helpers import REPO, environment_without_proxies

PASSWORD = "correct horse battery staple"
TARGETS = ["a", "b", "c"]
INTERVAL = 1.0
CLIENT_TIMEOUT = 1.0
ATTACK_SECONDS = 6.0

#: What "kept its interval" means here: cycles 1 s ± 0.5 s apart, each done in 0.75 s
#: (30-130 ms when quiet here; the issue saw 3.5-4.4 s under a password flood), the loop
#: lag at most 0.25 s (the issue: 9.7 s). Loose enough for a shared 2-core machine.
SLACK, LONGEST_CYCLE, MOST_LAG = 0.5, 0.75, 0.25


@dataclass
class Running:
    base: str
    port: int
    process: subprocess.Popen[str]
    log: Path

    def scraper(self) -> Scraper:
        return Scraper(self.base, {"Authorization": basic("prometheus", PASSWORD)})


@pytest.fixture(scope="module")
def daemon(demo: DemoLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("abuse")
    port = free_port()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    web = folder / "web.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    timeouts = {"dns": 0.5, "connect": 0.5, "tls": 0.5, "http": 0.5, "deadline": 1}
    targets = [demo.target(name=name, interval=INTERVAL, timeouts=timeouts) for name in TARGETS]
    config = folder / "probe.yaml"
    config.write_text(yaml.safe_dump({"listen": f"127.0.0.1:{port}", "targets": targets}))
    log = folder / "stderr.log"
    command = [sys.executable, "-m", "probe", "run", "--config", str(config), "--web.config.file", str(web)]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*command, "--web.client-timeout", str(CLIENT_TIMEOUT)],
            cwd=REPO,
            env=environment_without_proxies(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    running = Running(f"http://127.0.0.1:{port}", port, process, log)
    try:
        headers = {"Authorization": basic("prometheus", PASSWORD)}

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(running.base + "/-/ready", headers=headers, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 30, "the daemon's first cycles")
        time.sleep(INTERVAL)  # every target past its first cycles
        # The lag gauge is the largest of the last 60 s: a stall while the daemon started on a
        # busy machine (imports, the first handshakes) would count against every attack.
        quiet = running.scraper()
        wait_for(lambda: _lag(quiet) < MOST_LAG / 2, 65, "a loop lag below 0.125 s after start-up")
        quiet.client.close()
        yield running
    finally:
        process.terminate()
        process.wait(timeout=10)


def _lag(scraper: Scraper) -> float:
    """The daemon's ``probe_event_loop_lag_seconds`` as one scrape reads it (seconds)."""
    scrape = scraper.scrape()
    if scrape is None or not scrape.samples:
        return math.inf
    return scrape.samples.get(("probe_event_loop_lag_seconds", ()), math.inf)


def attacked(daemon: Running, attack: Attack | None) -> tuple[Scraper, Schedule]:
    """Scrape every 0.5 s while ``attack`` goes on; the scraper and the schedule it saw."""
    scraper = daemon.scraper()
    with attack or contextlib.nullcontext():
        time.sleep(0.5)  # the attack at full strength first
        scrapes = scraper.run(ATTACK_SECONDS)
    scraper.client.close()
    if attack is None:
        attack = Attack("", 0, "none", 0, [])
    schedule = Schedule.of(scrapes, TARGETS)
    lifetimes = sorted(attack.lifetimes)
    print(
        f"\n{attack.behaviour} x{attack.clients}: {scraper.summary()}; {schedule.summary()}; "
        f"{attack.connections} attacking connections, dropped after at most "
        f"{max(lifetimes, default=0):.2f} s; {len(attack.statuses)} answers {sorted(set(attack.statuses))}"
    )
    return scraper, schedule


def every_answer(scraper: Scraper) -> list[str]:
    """What the scraper missed (empty when it got every answer, each a 200 within 2 s)."""
    missed = list(scraper.failures)
    missed += [f"{s.status} after {s.seconds:.2f}s" for s in scraper.scrapes if s.status != 200]
    if len(scraper.scrapes) < ATTACK_SECONDS / scraper.period:
        missed.append(f"only {len(scraper.scrapes)} scrapes")
    return missed


def test_quiet_the_scraper_and_the_schedule_as_the_attacks_are_judged(daemon: Running) -> None:
    # The control: the same figures without an attack.
    scraper, schedule = attacked(daemon, None)

    assert every_answer(scraper) == []
    assert schedule.kept(INTERVAL, SLACK, LONGEST_CYCLE, MOST_LAG) == []


def test_100_clients_trickling_a_header_byte_a_second(daemon: Running) -> None:
    attack = Attack("127.0.0.1", daemon.port, "trickle", clients=100, addresses=sources(25), period=1.0)
    scraper, schedule = attacked(daemon, attack)

    assert every_answer(scraper) == []
    assert schedule.kept(INTERVAL, SLACK, LONGEST_CYCLE, MOST_LAG) == []
    # Every trickling connection was dropped at its deadline, however it trickled.
    assert attack.lifetimes and max(attack.lifetimes) < CLIENT_TIMEOUT + 0.75, max(attack.lifetimes)
    assert attack.connections >= 100


def test_100_idle_clients_that_reconnect_at_once_when_dropped(daemon: Running) -> None:
    # 10 per address: 8 are served until their deadline, 2 refused at once, again and again.
    attack = Attack("127.0.0.1", daemon.port, "idle", clients=100, addresses=sources(10))
    scraper, schedule = attacked(daemon, attack)

    assert every_answer(scraper) == []
    assert schedule.kept(INTERVAL, SLACK, LONGEST_CYCLE, MOST_LAG) == []
    assert attack.lifetimes and max(attack.lifetimes) < CLIENT_TIMEOUT + 0.75, max(attack.lifetimes)


def test_80_clients_sending_wrong_passwords(daemon: Running) -> None:
    attack = Attack("127.0.0.1", daemon.port, "wrong_password", clients=80, addresses=sources(10))
    scraper = daemon.scraper()
    assert scraper.scrape() is not None  # its password checked once, before the flood
    scraper, schedule = attacked(daemon, attack)

    assert every_answer(scraper) == []
    assert max(s.seconds for s in scraper.scrapes) < 0.5, [round(s.seconds, 3) for s in scraper.scrapes]
    assert schedule.kept(INTERVAL, SLACK, LONGEST_CYCLE, MOST_LAG) == []
    # The flood slowed only itself: 401 when its check ran, 503 when it waited past its time.
    assert set(attack.statuses) <= {401, 503} and 401 in attack.statuses, set(attack.statuses)


# --------------------------------------------------------------------------- floods of valid requests


#: The most answers a flood can get while :func:`attacked` runs it: the endpoint answers
#: 500 requests a second at most (``probe.daemon.web.REQUESTS_PER_SECOND``), 50 at once.
#: Unpaced, a flood of 401s got 2,500 a second; at 3 targets the schedule stays within the
#: slack even so, but at 500 it did not (docs/daemon.md).
MOST_FLOOD_ANSWERS = REQUESTS_PER_SECOND * (ATTACK_SECONDS + 1.5) + REQUEST_BURST


@pytest.mark.parametrize(
    ("path", "password", "status"),
    [("/metrics", PASSWORD, 200), ("/metrics", None, 401), ("/", PASSWORD, 200)],
    ids=["metrics-with-the-password", "metrics-without-a-password", "the-status-page"],
)
def test_100_clients_flooding_valid_requests(
    daemon: Running, path: str, password: str | None, status: int
) -> None:
    # 100 clients from 25 addresses asking again on kept-alive connections as soon as answered.
    auth = basic("prometheus", password) if password else ""
    attack = Attack("127.0.0.1", daemon.port, "flood", 100, sources(25), path=path, authorization=auth)
    scraper, schedule = attacked(daemon, attack)

    assert every_answer(scraper) == []
    assert schedule.kept(INTERVAL, SLACK, LONGEST_CYCLE, MOST_LAG) == []
    # The flood was answered too, only paced (renderings shared, each newer than its request).
    assert set(attack.statuses) == {status}, set(attack.statuses)
    assert 100 < len(attack.statuses) <= MOST_FLOOD_ANSWERS, len(attack.statuses)
