"""The benchmark's pure helpers: /proc parsing, expositions, HAProxy stats, summaries."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bench import measure
from bench.backends import parse_spec
from bench.timings import REQUEST_PHASES, Timing, blackbox_timing, excess, probe_slow_timings
from tests.support import docs

# A stat line whose command name holds spaces and parentheses, as proc(5) allows.
STAT = "4242 (probe (run) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 89 10 20 0 3 0 100 1 2"


def test_cpu_seconds_counts_fields_after_the_last_parenthesis() -> None:
    assert measure.cpu_seconds(STAT, 100) == pytest.approx((1234 + 567) / 100)
    assert measure.cpu_seconds(STAT, 100, children=True) == pytest.approx((1234 + 567 + 89 + 10) / 100)


def test_cpu_seconds_of_this_process_grows_with_work() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    before = measure.cpu_seconds(Path("/proc/self/stat").read_text(), ticks)
    total = 0
    while measure.cpu_seconds(Path("/proc/self/stat").read_text(), ticks) <= before:
        total += sum(range(10_000))
    assert total > 0


def test_status_bytes_reads_kilobytes() -> None:
    status = "Name:\tprobe\nVmHWM:\t   65536 kB\nVmRSS:\t   1024 kB\n"
    assert measure.status_bytes(status, "VmHWM") == 64 * 2**20
    assert measure.status_bytes(status, "VmRSS") == 2**20
    with pytest.raises(KeyError):
        measure.status_bytes(status, "VmSwap")


EXPOSITION = """\
# HELP probe_success 1 if ok
# TYPE probe_success gauge
probe_success{target="slow"} 1.0
probe_success{target="a \\"quoted\\" b\\\\c"} 0.0
probe_duration_seconds{target="slow"} 0.321
probe_last_cycle_timestamp_seconds{target="slow"} 1.7e+09
probe_http_duration_seconds{target="slow",address="127.0.90.1",phase="resolve"} 0.001
probe_http_duration_seconds{target="slow",address="127.0.90.1",phase="connect"} 0.002
probe_http_duration_seconds{target="slow",address="127.0.90.1",phase="tls"} 0.004
probe_http_duration_seconds{target="slow",address="127.0.90.1",phase="processing"} 0.301
probe_http_duration_seconds{target="slow",address="127.0.90.1",phase="transfer"} 0.0005
probe_phase_duration_seconds_bucket{target="slow",phase="tls",le="+Inf"} 3
probe_targets 2 1700000000000
"""


def test_parse_samples_reads_labels_escapes_and_special_values() -> None:
    samples = measure.parse_samples(EXPOSITION)
    assert len(samples) == 11
    assert samples[1].labels == {"target": 'a "quoted" b\\c'}
    assert samples[-2].labels["le"] == "+Inf"
    assert samples[-1] == measure.Sample("probe_targets", {}, 2.0)  # the timestamp is ignored
    assert measure.values(samples, "probe_success", target="slow") == [1.0]
    with pytest.raises(ValueError, match="no value"):
        measure.parse_samples("probe_targets\n")


def test_probe_slow_timings_compare_one_address_probe_like_blackbox() -> None:
    ended, timings = probe_slow_timings(measure.parse_samples(EXPOSITION))
    assert ended == 1.7e9
    # total: DNS + connect + TLS + the request of one address, as blackbox's probe_duration_seconds;
    # request: the request phases without resolve; cycle: probe's whole cycle.
    assert timings == [
        Timing(total=pytest.approx(0.3085), request=pytest.approx(0.3075), success=True, cycle=0.321)
    ]
    assert "resolve" not in REQUEST_PHASES


def test_blackbox_timing_reads_a_probe_response() -> None:
    body = b"""\
probe_duration_seconds 0.3042
probe_http_duration_seconds{phase="connect"} 0.0001
probe_http_duration_seconds{phase="processing"} 0.3003
probe_http_duration_seconds{phase="resolve"} 2e-06
probe_http_duration_seconds{phase="tls"} 0.0019
probe_http_duration_seconds{phase="transfer"} 0.0001
probe_success 1
"""
    timing = blackbox_timing(body)
    assert timing.total == pytest.approx(0.3042)
    assert timing.request == pytest.approx(0.3024)
    assert timing.success is True
    assert blackbox_timing(body.replace(b"probe_success 1", b"probe_success 0")).success is False


def test_excess_is_reported_minus_the_backend_delay() -> None:
    timings = [Timing(0.310, 0.305, True, 0.312), Timing(0.330, 0.301, True), Timing(0.320, 0.303, False)]
    result = excess(timings)
    assert result["cycle_median"] == pytest.approx(0.012)
    assert result["samples"] == 3
    assert result["total_median"] == pytest.approx(0.020)
    assert result["total_max"] == pytest.approx(0.030)
    assert result["request_median"] == pytest.approx(0.003)
    assert result["all_success"] is False
    assert excess([])["total_median"] is None


_HEADER = (
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,status,req_tot,conn_tot"
)
STATS = f"""\
# {_HEADER}
fe_probe,FRONTEND,,,0,3,262121,2000,0,0,0,0,0,,,OPEN,1000,2000
fe_bb,FRONTEND,,,0,3,262121,1000,0,0,0,0,0,,,OPEN,1000,1000
be_probe,web-1,0,0,0,1,,500,0,0,,0,,0,0,no check,500,
be_probe,BACKEND,0,0,0,1,26213,1000,0,0,0,0,,0,0,UP,1000,
"""


def test_cpu_window_counts_address_probes_and_target_cycles_of_several_requests() -> None:
    from bench.phases import _window

    before = {("fe_probe", "FRONTEND"): {"req_tot": "1000", "conn_tot": "1000"}}
    after = {("fe_probe", "FRONTEND"): {"req_tot": "1400", "conn_tot": "1400"}}
    # 400 requests, 4 per address-probe, 2 address-probes per target-cycle, in 2 s of CPU.
    window = _window(2.0, "fe_probe", before, after, 10.0, 4)
    assert window["requests"] == 400
    assert window["address_probes"] == 100
    assert window["connections_per_request"] == 1.0
    assert window["cpu_seconds_per_request"] == pytest.approx(0.005)
    assert window["cpu_seconds_per_address_probe"] == pytest.approx(0.020)
    assert window["cpu_seconds_per_target_cycle"] == pytest.approx(0.040)
    assert window["core_percent"] == pytest.approx(20.0)


def test_haproxy_stats_by_proxy_and_server() -> None:
    stats = measure.haproxy_stats(STATS)
    assert measure.counter(stats, "fe_probe", "req_tot") == 1000
    assert measure.counter(stats, "fe_probe", "conn_tot") == 2000
    assert measure.counter(stats, "be_probe", "conn_tot") == 0  # empty field
    assert measure.counter(stats, "fe_missing", "req_tot") == 0
    assert stats["be_probe", "web-1"]["stot"] == "500"
    with pytest.raises(ValueError, match="header"):
        measure.haproxy_stats("fe_probe,FRONTEND\n")


def test_percentile_interpolates_like_numpy() -> None:
    data = [float(x) for x in range(1, 101)]
    assert measure.percentile(data, 50) == pytest.approx(50.5)
    assert measure.percentile(data, 99) == pytest.approx(99.01)
    assert measure.percentile([3.0], 99) == 3.0
    assert measure.median([5.0, 1.0, 3.0]) == 3.0
    with pytest.raises(ValueError):
        measure.percentile([], 50)


def test_ratio_and_goal() -> None:
    assert measure.ratio(1.6, 2.0) == pytest.approx(0.8)
    assert measure.ratio(None, 2.0) is None
    assert measure.ratio(1.0, 0) is None
    assert measure.Goal("g", 0.8, 0.8, "x").met is True
    assert measure.Goal("g", 0.81, 0.8, "x").met is False
    assert measure.Goal("g", None, 0.8, "x").met is None


def test_format_value_by_unit() -> None:
    assert measure.format_value(0.0123, "ms") == "12.3 ms"
    assert measure.format_value(64 * 2**20, "MiB") == "64.0 MiB"
    assert measure.format_value(12.345, "%") == "12.3 %"
    assert measure.format_value(0.8, "x") == "0.80x"
    assert measure.format_value(10_000_000, "MB") == "10.00 MB"
    assert measure.format_value(120.0, "") == "120"
    assert measure.format_value(None, "ms") == "-"


# One IPv4 and one IPv6 table as /proc/net shows them (header line first).
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 015A007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 0100007F:D431 015A007F:2710 01 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 0100007F:D432 0200000A:01BB 01 00000000:00000000 00:00000000 00000000     0        0 333 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100007F:0035 01 0:0 0:0 0 0 0 444 1
   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:0035 01 0:0 0:0 0 0 0 555 1
"""


def test_socket_peers_decode_proc_net_tables() -> None:
    peers = measure.socket_peers(TCP)
    assert peers == {111: ("0.0.0.0", 0), 222: ("127.0.90.1", 10000), 333: ("10.0.0.2", 443)}
    peers6 = measure.socket_peers(TCP6)
    assert peers6 == {444: ("127.0.0.1", 53), 555: ("::1", 53)}


def test_non_loopback_flags_any_other_address() -> None:
    peers = {**measure.socket_peers(TCP), **measure.socket_peers(TCP6)}
    assert measure.non_loopback(peers.values()) == {"10.0.0.2"}
    assert measure.non_loopback([("127.0.0.1", 1), ("::1", 2), ("0.0.0.0", 0)]) == set()


def test_backend_spec() -> None:
    assert parse_spec("slow=127.0.91.3:0.3") == ("slow", "127.0.91.3", 0.3)
    assert parse_spec("web-1=127.0.91.1") == ("web-1", "127.0.91.1", 0.0)
    with pytest.raises(ValueError, match="loopback"):
        parse_spec("web=10.0.0.1")
    with pytest.raises(ValueError, match="NAME=IP"):
        parse_spec("web")


def test_verdicts_count_targets_by_status_and_reason() -> None:
    from bench.timings import verdicts

    text = """\
probe_status{target="slow"} 0
probe_status{target="t0000"} 0
probe_status{target="t0001"} 2
probe_status{target="t0002"} 1
probe_failure_info{target="t0001",stage="http",reason="http_timeout",severity="critical",address="a"} 1
probe_failure_info{target="t0001",stage="http",reason="http_timeout",severity="critical",address="b"} 1
probe_failure_info{target="t0002",stage="cert",reason="cert_expiring_soon",severity="warning",address=""} 1
"""
    result = verdicts(measure.parse_samples(text))
    assert (result["ok"], result["warning"], result["critical"], result["slow_ok"]) == (1, 1, 1, True)
    assert result["reasons"] == {"cert_expiring_soon": 1, "http_timeout": 1}
    assert verdicts([])["slow_ok"] is False


def _smoke_report() -> tuple[Any, Any]:
    import json

    from bench.report import Report
    from bench.settings import Settings

    data = json.loads((Path(__file__).parents[2] / "data" / "bench" / "smoke.json").read_text())
    return Report(**data), Settings(**data["settings"])


def test_a_recorded_smoke_run_renders_with_every_goal_present() -> None:
    from bench.report import evaluate, render_table

    report, settings = _smoke_report()
    evaluate(report, settings)
    assert report.problems == report.findings == []
    assert len(report.goals) == 9
    assert all(goal["value"] is not None for goal in report.goals)
    table = render_table(report)
    assert "CPU per address-probe" in table
    assert "CPU per target-cycle (2 addresses × 1 request)" in table
    assert "verdicts ok, after the window | 10/10 (+slow ok) |" in " ".join(table.split())


def test_a_target_that_is_not_ok_or_a_foreign_socket_is_a_problem() -> None:
    from bench.report import evaluate

    report, settings = _smoke_report()
    load = report.figures["load"]
    load["verdicts"]["probe_after_window"].update(ok=9, critical=1, reasons={"http_timeout": 1})
    load["sockets"]["blackbox"]["not_loopback"] = ["10.0.0.2"]
    load["cpu"]["blackbox"]["cpu_seconds_per_address_probe"] = None
    evaluate(report, settings)
    assert any("9 of 10 targets ok" in p and "http_timeout" in p for p in report.findings)
    assert "blackbox: sockets to addresses outside loopback: 10.0.0.2" in report.problems
    assert "missing figure: CPU per address-probe, probe / blackbox_exporter" in report.problems


def test_ci_runs_the_smoke_benchmark_and_the_readmes_document_it() -> None:
    assert "./dev bench --smoke" in (docs.REPO / ".ci" / "run").read_text()
    bench_readme = docs.page("bench/README.md")
    assert "./dev bench" in bench_readme and "nproc" in docs.section("bench/README.md", "Results")
    assert "bench/README.md" in docs.page("README.md")
    assert "./dev bench --smoke" in docs.page("CONTRIBUTING.md")
    assert "## Lever → what it bought" in bench_readme
    assert "| baseline" in bench_readme


def test_requests_and_tree_switches(tmp_path: Path) -> None:
    from bench.run import parse_args

    settings, _ = parse_args(["--requests", "4", "--targets", "300"])
    assert (settings.requests, settings.targets, settings.tree) == (4, 300, None)
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "__init__.py").write_text('"""probe."""\n')
    assert parse_args(["--tree", str(tmp_path)])[0].tree == str(tmp_path.resolve())
    with pytest.raises(SystemExit):
        parse_args(["--tree", str(tmp_path / "elsewhere")])
    with pytest.raises(SystemExit):
        parse_args(["--requests", "0"])
