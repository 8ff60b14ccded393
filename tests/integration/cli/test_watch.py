"""``probe check --watch`` against real loopback servers whose state changes mid-watch."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import jsonschema
import pytest
import yaml

from probe.cli.main import main
from probe.cli.share import share_file
from probe.lab import Lab, Pki
from probe.model.reasons import ExitCode
from tests.support.helpers import REPO, environment_without_proxies

#: Every watch below must end within this many seconds (start-up of the interpreter included).
BOUND = 30.0


class Watcher:
    """``python -m probe check ARGS`` with its stdout read line by line as it comes."""

    def __init__(self, *args: str, stdout: int | IO[Any] = subprocess.PIPE) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "probe", "check", *args],
            cwd=REPO,
            env=environment_without_proxies(),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        if self.process.stdout is not None:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, wanted: Callable[[str], bool], timeout: float = BOUND) -> str:
        """The first line (from now on) for which ``wanted`` is true."""
        ends = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, ends - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout}s; got {self.lines}") from None
            if line is None:
                raise AssertionError(f"output ended; got {self.lines}")
            self.lines.append(line)
            if wanted(line):
                return line

    def finish(self, timeout: float = BOUND) -> tuple[int, str, float]:
        """Wait for the exit; returns ``(exit code, stderr, seconds since start)``."""
        try:
            self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            while (line := self._queue.get(timeout=5)) is not None:
                self.lines.append(line)
            self.process.stdout.close()
        assert self.process.stderr is not None
        with self.process.stderr:
            stderr = self.process.stderr.read()
        return self.process.returncode, stderr, time.monotonic() - self.started


def watch_args(scene: Any, *extra: str) -> list[str]:
    target = scene.target
    return [
        target["url"],
        "--resolver",
        target["resolvers"][0],
        "--ca-file",
        target["ca_file"],
        "--expect-network",
        "127.0.0.0/8",
        "--backend-header",
        "X-Backend",
        "--timeout",
        "3",
        "--watch",
        "--every",
        "0.3",
        *extra,
    ]


def restart(lab: Lab, node: Any, cert: Any, scene: Any, tmp_path: Path) -> Any:
    """Start ``node`` again on its own address and port, sending ``cert``."""
    return lab.start_node(node.address, node.port, cert=cert, backends=scene.backends, workdir=tmp_path)


def test_a_node_that_refuses_then_accepts_is_one_transition_and_the_watch_ends_ok(
    lab: Lab, scene: Any, pki: Pki, tmp_path: Path
) -> None:
    leaf = pki.leaf("watch-refused.corp.example")
    s = scene(nodes=2, cert=leaf, hostname="watch-refused.corp.example")
    down = s.nodes[1]
    lab.stop(down)
    watcher = Watcher(*watch_args(s, "--until", "ok", "--max-time", "25"))
    started = None
    try:
        first = watcher.wait_for(lambda line: f" {down.address} " in line)
        assert first.endswith(f"{s.hostname} {down.address} critical (tcp_refused)")
        time.sleep(1.0)  # a few rounds see it refused: no line for them
        started = restart(lab, down, leaf, s, tmp_path)  # the same certificate as its peer
        code, stderr, took = watcher.finish()
    finally:
        if started is not None:
            lab.stop(started)
    out = "\n".join(watcher.lines)
    assert code == ExitCode.OK and stderr == "", (out, stderr)
    assert took < BOUND
    ups = [line for line in watcher.lines if "critical→ok" in line]
    assert len(ups) == 2, out  # the target as a whole, then the address that changed
    cleared = "critical→ok (tcp_refused cleared; outage of at least "
    assert f"{s.hostname} (target) {cleared}" in ups[0]
    assert f"{s.hostname} {down.address} {cleared}" in ups[1]
    assert ups[1].endswith(" s, from the first round)")  # it was under way when the watch started
    assert watcher.lines[watcher.lines.index(ups[1]) + 1].startswith("watch: ")  # then the summary
    assert "ended at the first all-ok round (--until ok)" in out
    assert "  first ok        after " in out and "  worst seen      critical" in out  # it started broken
    assert "  final           ok (exit 0)" in out
    assert any(f"{down.address}  1 flip   worst critical  now ok since " in line for line in watcher.lines), (
        out
    )
    assert "\r" not in out and "\033[" not in out  # a pipe gets no status line and no colour


@dataclass
class NodeOutage:
    """A watch of two nodes, one stopped and started again mid-watch (see :func:`node_outage`)."""

    scene: Any
    watcher: Watcher
    code: int
    stderr: str
    down_for: float  # seconds from stopping the node to starting it again

    @property
    def node(self) -> Any:
        return self.scene.nodes[1]


def node_outage(lab: Lab, scene: Any, pki: Pki, tmp_path: Path, *extra: str) -> NodeOutage:
    """Watch two healthy nodes; stop the second for about 2 s, start it again on its address and port.

    The watch ends 10 identical rounds (3 s) after the node is back: more than the rounds
    of the outage, so it never ends during it.
    """
    leaf = pki.leaf("outage.corp.example")
    s = scene(nodes=2, cert=leaf, hostname="outage.corp.example")
    node = s.nodes[1]
    args = watch_args(s, "--until", "stable", "--stable-rounds", "10", "--max-time", "25", *extra)
    watcher = Watcher(*args)
    restarted = None
    try:
        watcher.wait_for(lambda line: node.address in line)
        time.sleep(0.7)  # a few healthy rounds: the watch starts healthy
        lab.stop(node)
        stopped = time.monotonic()
        watcher.wait_for(lambda line: node.address in line and "critical" in line)
        time.sleep(1.5)
        restarted = restart(lab, node, leaf, s, tmp_path)
        down_for = time.monotonic() - stopped
        code, stderr, took = watcher.finish()
    finally:
        if restarted is not None:
            lab.stop(restarted)
    assert took < BOUND
    return NodeOutage(s, watcher, code, stderr, down_for)


def test_a_node_stopped_and_started_again_is_one_outage_with_its_times_and_length(
    lab: Lab, scene: Any, pki: Pki, tmp_path: Path
) -> None:
    # A request under way when the node stops may fail otherwise (http_protocol_error,
    # tls_handshake_failed) before the next rounds find the port closed: the outage's
    # reasons are all of them, tcp_refused among them.
    seen = node_outage(lab, scene, pki, tmp_path)
    host, node, lines = seen.scene.hostname, seen.node.address, seen.watcher.lines
    out = "\n".join(lines)
    assert seen.code == ExitCode.OK and seen.stderr == "", out

    # The target goes critical in the same round as its node, and both say when it ended.
    down = [line for line in lines if "ok→critical" in line]
    assert [line[9:].split(" (")[0] for line in down] == [f"{host}", f"{host} {node} ok→critical"], out
    assert down[0][9:].startswith(f"{host} (target) ok→critical (") and down[0][:8] == down[1][:8]
    began = down[0][:8]
    up = [line for line in lines if "critical→ok" in line]
    assert [line[9:].split(" cleared; ")[0].rsplit(" (", 1)[0] for line in up] == [
        f"{host} (target) critical→ok",
        f"{host} {node} critical→ok",
    ], out
    ended = up[1][:8]
    match = re.search(r" cleared; outage of (\d+\.\d+) s since (\d\d:\d\d:\d\d)\)$", up[1])
    assert match is not None and match[2] == began, out
    length = float(match[1])
    assert seen.down_for - 1.0 < length < seen.down_for + 1.5, (length, seen.down_for)

    # The summary: no meaningless "first ok" (it started healthy), the outage with its times.
    summary = lines[lines.index(next(x for x in lines if x.startswith("watch: "))) :]
    assert not any(line.startswith("  first ok") for line in summary), out
    assert f"  longest outage  {match[1]} s, {host} (target) {began} → {ended}" in summary, out
    assert f"  last change     {ended}" in summary
    row = next(i for i, line in enumerate(summary) if line.startswith(f"  {host} {node} "))
    assert summary[row].endswith(f"worst critical  now ok since {ended}"), out
    assert summary[row + 1].startswith(f"    outage {began} → {ended}  {match[1]} s  critical ("), out
    assert "tcp_refused" in summary[row + 1] and summary[row + 2 :] == []  # one outage, the last row
    other = next(line for line in summary if line.startswith(f"  {host} {seen.scene.nodes[0].address} "))
    assert "0 flips  worst ok        now ok since " in other


def test_a_node_outage_in_json_lines(lab: Lab, scene: Any, pki: Pki, tmp_path: Path) -> None:
    seen = node_outage(lab, scene, pki, tmp_path, "--json")
    records = [json.loads(line) for line in seen.watcher.lines]
    schema = json.loads(share_file("schema/watch-v1.schema.json").read_text())
    for record in records:
        jsonschema.validate(record, schema)
    assert seen.code == ExitCode.OK and seen.stderr == ""

    node = seen.node.address
    changes = [r for r in records if r["type"] == "change" and r["address"] == node]
    went = next(r for r in changes if r["old"] == "ok" and r["new"] == "critical")
    came = next(r for r in changes if r["old"] == "critical" and r["new"] == "ok")
    assert went["outage"]["ended_timestamp"] is None
    assert went["outage"]["started_timestamp"] == went["timestamp"]
    outage = came["outage"]
    assert (outage["started_timestamp"], outage["ended_timestamp"]) == (went["timestamp"], came["timestamp"])
    assert outage["worst"] == "critical" and "tcp_refused" in outage["reasons"]
    assert seen.down_for - 1.0 < outage["seconds"] < seen.down_for + 1.5

    summary = records[-1]
    assert summary["type"] == "summary" and summary["first_round_status"] == "ok"
    longest = summary["longest_outage"]
    assert longest["address"] is None and longest["seconds"] >= outage["seconds"]
    per = {r["address"]: r for r in summary["addresses"]}
    assert per[node]["outages"] == [outage] and per[node]["longest_outage"] == outage
    assert per[node]["ok_since_timestamp"] == came["timestamp"] == per[node]["last_change_timestamp"]
    assert per[seen.scene.nodes[0].address]["outages"] == []
    assert summary["last_change_timestamp"] == came["timestamp"]


def test_a_certificate_swapped_mid_watch_in_json_lines(
    lab: Lab, scene: Any, pki: Pki, tmp_path: Path
) -> None:
    s = scene(nodes=1, cert=pki.leaf("other.corp.example"))
    node = s.nodes[0]
    watcher = Watcher(*watch_args(s, "--until", "ok", "--max-time", "25", "--json", "--platform", "aws"))
    swapped = None
    try:
        watcher.wait_for(lambda line: '"cert_hostname_mismatch"' in line)
        lab.stop(node)
        swapped = restart(lab, node, pki.leaf(s.hostname), s, tmp_path)
        code, stderr, took = watcher.finish()
    finally:
        if swapped is not None:
            lab.stop(swapped)
    records = [json.loads(line) for line in watcher.lines]
    assert code == ExitCode.OK and stderr == "" and took < BOUND
    first = [r for r in records if r["type"] == "change" and r["old"] is None]
    assert {(r["address"], r["new"]) for r in first} == {(None, "critical"), (node.address, "critical")}
    bad = next(r for r in first if r["address"] == node.address)
    assert bad["reasons"] == ["cert_hostname_mismatch"]
    assert "other.corp.example" in bad["failures"][0]["detail"]
    # the hint, as in the JSON document, in the platform's words
    assert bad["failures"][0]["hint"].startswith("the listener's default certificate does not cover the name")
    later = [r for r in records if r["type"] == "change" and r["old"] is not None]
    assert later[-1]["old"] == "critical" and later[-1]["new"] == "ok"
    assert later[-1]["cleared"] == ["cert_hostname_mismatch"] and later[-1]["address"] == node.address
    summary = records[-1]
    assert summary["type"] == "summary" and summary["ended_by"] == "ok" and summary["exit_code"] == 0
    assert summary["worst"] == "critical" and summary["status"] == "ok"
    assert 0 < summary["first_ok_seconds"] < BOUND and summary["first_ok_round"] >= 2
    per_address = {a["address"]: a for a in summary["addresses"]}
    assert per_address[node.address]["flips"] >= 1 and per_address[node.address]["worst"] == "critical"
    assert all(r["schema_version"] == 1 for r in records)


def test_until_stable_with_a_config_file_exits_with_the_final_state(
    lab: Lab, scene: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = scene(nodes=2)
    lab.stop(s.nodes[0])
    path = tmp_path / "probe.yaml"
    target = {**s.target, "name": "www", "timeouts": {"deadline": 3}}
    path.write_text(yaml.safe_dump({"targets": [target]}))
    out = io.StringIO()
    started = time.monotonic()

    code = main(
        [
            "check",
            "--config",
            str(path),
            "--watch",
            "--until",
            "stable",
            "--stable-rounds",
            "2",
            "--every",
            "0.2",
        ],
        stdout=out,
    )

    assert time.monotonic() - started < 10
    assert code == ExitCode.CRITICAL and capsys.readouterr().err == ""
    text = out.getvalue().splitlines()
    assert text[:3] == [
        text[0][:9] + "www (target) critical (tcp_refused)",
        text[1][:9] + f"www {s.nodes[0].address} critical (tcp_refused)",
        text[2][:9] + f"www {s.nodes[1].address} ok",
    ]
    assert text[3].startswith("watch: 2 rounds in ") and text[3].endswith(
        "ended after 2 identical rounds (--until stable)"
    )
    assert "  first ok        never" in text and "  final           critical (exit 2)" in text


def test_max_time_cuts_a_round_under_way(lab: Lab, new_ip: Any, dns: Any, ca_file: Path) -> None:
    address = new_ip()
    with socket.socket() as hanging:  # accepts TCP in the kernel, never speaks TLS
        hanging.bind((address, 0))
        hanging.listen(8)
        port = hanging.getsockname()[1]
        dns.set("hang-watch.corp.example", ("A", address))
        out = io.StringIO()
        started = time.monotonic()
        code = main(
            [
                "check",
                f"https://hang-watch.corp.example:{port}/",
                "--resolver",
                dns.where,
                "--ca-file",
                str(ca_file),
                "--expect-network",
                "127.0.0.0/8",
                "--timeout",
                "8",
                "--watch",
                "--max-time",
                "1",
                "--json",
            ],
            stdout=out,
        )
        took = time.monotonic() - started
    summary = json.loads(out.getvalue().splitlines()[-1])
    assert took < 2.5
    assert code == ExitCode.UNKNOWN  # no round completed: no verdict
    assert summary["ended_by"] == "max_time" and summary["rounds"] == 0 and summary["status"] is None
    assert summary["round_cut"] is True and summary["max_time_seconds"] == 1


def test_max_time_ends_before_a_round_that_would_pass_it_and_says_so(scene: Any) -> None:
    # Rounds start every 2 s; the third would start at 4 s, after --max-time 3s: the watch
    # ends after the second round (about 2 s in), and the summary says why it ended early.
    s = scene(nodes=1)
    watcher = Watcher(*watch_args(s, "--every", "2", "--max-time", "3s"))  # the last --every counts
    code, stderr, took = watcher.finish()

    assert code == ExitCode.OK and stderr == "" and took < 3.0 + 2.0
    header = next(line for line in watcher.lines if line.startswith("watch: "))
    assert header.startswith("watch: 2 rounds in ")
    assert header.endswith(", ended: the next round would have passed --max-time (3.00 s)")
    assert not any(line.startswith("  cut short") for line in watcher.lines)


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_ends_the_watch_with_the_summary_and_the_current_exit_code(
    scene: Any, lab: Lab, signal_number: signal.Signals
) -> None:
    s = scene(nodes=2)
    lab.stop(s.nodes[1])
    watcher = Watcher(*watch_args(s))
    watcher.wait_for(lambda line: f"{s.nodes[1].address} critical (tcp_refused)" in line)
    time.sleep(0.5)
    watcher.process.send_signal(signal_number)
    code, stderr, took = watcher.finish(timeout=10)

    assert code == ExitCode.CRITICAL
    assert stderr == ""  # no traceback, no "interrupted" complaint
    assert took < BOUND
    summary = [line for line in watcher.lines if line.startswith("watch: ")]
    assert len(summary) == 1 and summary[0].endswith(", interrupted")
    assert "  final           critical (exit 2)" in watcher.lines


@pytest.mark.parametrize("gap", [0.001, 0.05, 0.1])
def test_ctrl_c_pressed_twice_still_ends_with_the_summary_and_the_exit_code(
    scene: Any, lab: Lab, gap: float
) -> None:
    # The second Ctrl-C comes as the watch writes its summary or as the interpreter exits
    # (about 0.1 s): it neither loses the summary nor turns exit 2 into a traceback or SIGINT.
    s = scene(nodes=2)
    lab.stop(s.nodes[1])
    watcher = Watcher(*watch_args(s))
    watcher.wait_for(lambda line: f"{s.nodes[1].address} critical (tcp_refused)" in line)
    time.sleep(0.5)
    watcher.process.send_signal(signal.SIGINT)
    time.sleep(gap)
    watcher.process.send_signal(signal.SIGINT)
    code, stderr, _ = watcher.finish(timeout=10)

    assert (code, stderr) == (ExitCode.CRITICAL, "")
    assert "  final           critical (exit 2)" in watcher.lines


def test_ctrl_c_in_json_mode_ends_with_the_summary_line(scene: Any) -> None:
    s = scene(nodes=1)
    watcher = Watcher(*watch_args(s, "--json"))
    watcher.wait_for(lambda line: '"address": null' in line)
    watcher.process.send_signal(signal.SIGINT)
    code, stderr, _ = watcher.finish(timeout=10)

    assert code == ExitCode.OK and stderr == ""
    summary = json.loads(watcher.lines[-1])
    assert summary["type"] == "summary" and summary["ended_by"] == "interrupted" and summary["status"] == "ok"


@pytest.mark.parametrize("json_lines", [False, True], ids=["text", "json"])
def test_a_reader_that_goes_away_ends_the_watch_without_another_change(scene: Any, json_lines: bool) -> None:
    # ``probe check --watch | head -1``: head exits after the first line; nothing changes
    # afterwards, so no write would fail. The watch must notice the pipe without readers
    # and end quietly with the verdict so far, not run until Ctrl-C.
    s = scene(nodes=1)
    read_end, write_end = os.pipe()
    watcher = Watcher(*watch_args(s, *(["--json"] if json_lines else [])), stdout=write_end)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        # Like head -1 (or grep -m1) that read the whole first round before it exited;
        # whether a write after its exit fails or not is then left to chance no more.
        first, second = reader.readline(), reader.readline()
    closed = time.monotonic()
    code, stderr, _ = watcher.finish(timeout=10)

    assert ('"address": null' in first) if json_lines else ("(target) ok" in first)
    assert s.nodes[0].address in second
    assert code == ExitCode.OK and stderr == ""
    assert time.monotonic() - closed < 5  # a status-line refresh (1 s) and a round


def test_on_a_terminal_a_status_line_is_refreshed_in_place(scene: Any) -> None:
    s = scene(nodes=1)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))  # 40 rows, 200 columns
    try:
        watcher = Watcher(*watch_args(s, "--until", "stable", "--color", "never"), stdout=terminal)
        os.close(terminal)
        terminal = -1
        code, stderr, took = watcher.finish()
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    text = output.decode()
    assert code == ExitCode.OK and stderr == "" and took < BOUND
    assert "\r\033[Kround 1…" in text
    assert f"round 3 · {s.hostname} ok ({s.nodes[0].address} ok) · no change in" in text
    assert text.count(f"{s.hostname} {s.nodes[0].address} ok\r\n") == 1  # one change line, not one per round
    tail = text.rsplit("watch: ", 1)[0]
    assert tail.endswith("\r\033[K")  # the status line is cleared before the summary


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--every", "1"], "--every needs --watch"),
        (["--until", "ok"], "--until needs --watch"),
        (["--max-time", "5"], "--max-time needs --watch"),
        (["--watch", "--stable-rounds", "4"], "--stable-rounds needs --until stable"),
        (
            ["--watch", "--until", "stable", "--stable-rounds", "1"],
            "--stable-rounds: must be at least 2 (got 1)",
        ),
        (["--watch", "--every", "0"], "argument --every: must be greater than 0 (got '0')"),
        (
            ["--watch", "--max-time", "soon"],
            "argument --max-time: 'soon' is not a duration (e.g. 5s, 500ms, 1m30s, or seconds)",
        ),
        (
            ["--watch", "--until", "never"],
            "argument --until: invalid choice: 'never' (choose from 'ok', 'stable')",
        ),
    ],
)
def test_bad_watch_arguments_exit_3_with_one_line(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["check", "https://www.corp.example/", "--resolver", "127.0.0.1", *extra], stdout=io.StringIO()
    )
    assert code == ExitCode.UNKNOWN
    err = capsys.readouterr().err
    assert err.startswith(f"probe: {message}") and err.count("\n") == 1
