"""``probe run`` at many targets under a flood of valid requests to its endpoint.

Starts the benchmark's lab (``bench/daemon.py --serve``: HAProxy, dnsmasq, the backends on
127.0.90.0/23), a real ``probe run`` with ``--targets`` targets (the bench's config, its
endpoint on 127.0.90.102, with ``--password`` a basic-auth user of bcrypt cost 10), then,
for each ``--attack``, a scraper that scrapes ``/metrics`` every 0.5 s over a new
connection for ``--window`` seconds while the attack floods the endpoint from 127.0.17.x
(:class:`tests.support.abuse.Attack`, behaviour ``flood``). Prints, per attack, what the
scraper got and the probing schedule as its scrapes showed it: the gaps between each
target's cycles, ``probe_duration_seconds``, the loop lag, the cycles completed.

Attacks: ``none``; ``metrics`` (``/metrics``, right password when there is one);
``401`` (``/metrics``, no password: only with ``--password``); ``page`` (``/``, the
overview page); ``target`` (``/target/t0000``); ``json`` (``/target/t0000.json``).

Usage::

    .venv/bin/python bench/flood.py --targets 500 --interval 10 --attack none --attack metrics --attack page

Network: loopback only (the lab's 127.0.90.x, the attackers' 127.0.17.x).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.daemon import LISTEN_ADDRESS, config_text  # noqa: E402
from tests.support.abuse import Attack, basic, sources  # noqa: E402

PASSWORD = "correct horse battery staple"
PATHS = {
    "metrics": "/metrics",
    "401": "/metrics",
    "page": "/",
    "target": "/target/t0000",
    "json": "/target/t0000.json",
}
_SAMPLE = re.compile(
    rb'^(probe_last_cycle_timestamp_seconds|probe_duration_seconds)\{target="([^"]+)"\} (\S+)$', re.M
)
_LAG = re.compile(rb"^probe_event_loop_lag_seconds (\S+)$", re.M)


@dataclass
class Seen:
    """What the scrapes of one run saw: their times, failures, each target's cycles, the lag."""

    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    ends: dict[str, set[float]] = field(default_factory=dict)
    durations: dict[str, set[float]] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)

    def add(self, body: bytes) -> None:
        """The schedule's samples of one answer."""
        for name, target, value in _SAMPLE.findall(body):
            into = self.ends if name == b"probe_last_cycle_timestamp_seconds" else self.durations
            into.setdefault(target.decode(), set()).add(float(value))
        self.lags += [float(v) for v in _LAG.findall(body)]

    def figures(self) -> dict[str, object]:
        """The run's figures (milliseconds, seconds for the gaps between a target's cycles)."""
        gaps = [b - a for values in self.ends.values() for a, b in itertools.pairwise(sorted(values))]
        durations = sorted(d for values in self.durations.values() for d in values) or [math.nan]
        times = sorted(self.times) or [math.nan]
        statuses = sum(f.isdigit() for f in self.failures)
        return {
            "scrapes": len(self.times) + len(self.failures) - statuses,
            "answered_200": len(self.times) - statuses,
            "failures": sorted(set(self.failures)),
            "scrape_ms_median": 1000 * statistics.median(times),
            "scrape_ms_max": 1000 * times[-1],
            "gap_min": min(gaps, default=None),
            "gap_max": max(gaps, default=None),
            "cycles_seen": len(gaps),
            "duration_ms_p50": 1000 * statistics.median(durations),
            "duration_ms_p99": 1000 * durations[int(0.99 * (len(durations) - 1))],
            "duration_ms_max": 1000 * durations[-1],
            "loop_lag_ms": 1000 * max(self.lags[-3:], default=0.0),
        }


def scrape_run(base: str, headers: dict[str, str], seconds: float) -> dict[str, object]:
    """Scrape every 0.5 s for ``seconds``; the scraper's and the schedule's figures."""
    client = httpx.Client(headers={**headers, "Connection": "close"}, timeout=2, trust_env=False)
    seen = Seen()
    next_at = time.monotonic()
    stop = next_at + seconds
    while next_at < stop:
        start = time.monotonic()
        try:
            response = client.get(base + "/metrics")
        except httpx.HTTPError as exc:
            seen.failures.append(type(exc).__name__)
        else:
            seen.times.append(time.monotonic() - start)
            if response.status_code != 200:
                seen.failures.append(str(response.status_code))
            seen.add(response.content)
        next_at += 0.5
        time.sleep(max(0.0, next_at - time.monotonic()))
    client.close()
    return seen.figures()


def main() -> None:
    """Lab, daemon, then each attack in turn; one JSON line per attack."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=500)
    parser.add_argument("--interval", type=float, default=10)
    parser.add_argument("--window", type=float, default=20)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--addresses", type=int, default=25)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--password", action="store_true")
    parser.add_argument("--attack", action="append", choices=["none", *PATHS])
    parser.add_argument("--tree", default=str(ROOT), help="PYTHONPATH of the probe run (default this tree)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="probe-flood-") as tmp:
        folder = Path(tmp)
        lab_process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "daemon.py"), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert lab_process.stdout is not None and lab_process.stdin is not None
        lab = json.loads(lab_process.stdout.readline())
        config = folder / "probe.yaml"
        port = 9_500 + (int(time.time()) % 400)
        config.write_text(
            f"listen: '{LISTEN_ADDRESS}:{port}'\n" + config_text(lab, args.targets, args.interval)
        )
        command = [sys.executable, "-m", "probe", "run", "--config", str(config)]
        headers = {}
        if args.password:
            hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
            (folder / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
            command += ["--web.config.file", str(folder / "web.yml")]
            headers["Authorization"] = basic("prometheus", PASSWORD)
        env = {"PYTHONPATH": args.tree, "PATH": "/usr/bin:/bin", "NO_PROXY": "*"}
        with (folder / "log").open("w") as log:
            daemon = subprocess.Popen(command, cwd=args.tree, env=env, stdout=subprocess.DEVNULL, stderr=log)
        base = f"http://{LISTEN_ADDRESS}:{port}"
        try:
            for _ in range(int(args.interval * 3 + 60)):
                time.sleep(1)
                try:
                    if httpx.get(base + "/-/ready", headers=headers, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(args.interval + 3)
            for name in args.attack or ["none"]:
                print(json.dumps({"attack": name, **run_one(args, name, base, port, headers)}), flush=True)
        finally:
            daemon.terminate()
            daemon.wait(10)
            lab_process.stdin.close()
            lab_process.wait(30)
            print((folder / "log").read_text()[-2000:], file=sys.stderr)


def run_one(
    args: argparse.Namespace, name: str, base: str, port: int, headers: dict[str, str]
) -> dict[str, object]:
    """One attack (or none) for ``args.window`` seconds with the scraper beside it."""
    if name == "none":
        return scrape_run(base, headers, args.window)
    authorization = "" if name == "401" else headers.get("Authorization", "")
    attack = Attack(
        LISTEN_ADDRESS,
        port,
        "flood",
        clients=args.clients,
        addresses=sources(args.addresses),
        path=PATHS[name],
        authorization=authorization,
        depth=args.depth,
    )
    with attack:
        time.sleep(0.5)
        figures = scrape_run(base, headers, args.window)
    statuses: dict[int, int] = {}
    for status in attack.statuses:
        statuses[status] = statuses.get(status, 0) + 1
    figures.update(attack_connections=attack.connections, attack_answers=statuses)
    time.sleep(2)  # the daemon's queues drain before the next
    return figures


if __name__ == "__main__":
    main()
