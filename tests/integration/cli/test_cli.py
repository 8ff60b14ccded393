"""The ``probe`` command: exit codes, one-line errors, text and JSON output."""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from probe.cli.main import main
from probe.lab import DemoLab
from probe.model.reasons import ExitCode
from tests.support.helpers import REPO, environment_without_proxies, probe_cli


def check(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["check", *args], stdout=out)
    return code, out.getvalue()


def adhoc_args(demo: DemoLab) -> list[str]:
    return [
        *demo.adhoc_args(),
        "--backend-header",
        "X-Backend",
        "--expect-backends",
        "web-1,web-2",
    ]


def test_adhoc_check_json_document(demo: DemoLab) -> None:
    code, out = check(*adhoc_args(demo), "--expect-same-addresses-as", demo.alias, "--json")
    document = json.loads(out)

    assert code == ExitCode.OK
    assert document["schema_version"] == 1 and document["status"] == "ok"
    target = document["targets"][0]
    assert target["name"] == demo.hostname and target["status"] == "ok" and target["failures"] == []
    assert target["dns"]["resolver"] == demo.dns_server.where and target["dns"]["rcode"] == "NOERROR"
    assert [a["address"] for a in target["dns"]["answers"]] == list(demo.node_addresses)
    assert target["dns"]["alias"]["matches"] is True
    assert [a["address"] for a in target["addresses"]] == list(demo.node_addresses)
    tls = target["addresses"][0]["tls"]
    assert tls["verified"] is True and tls["version"] == "TLSv1.3"
    assert tls["leaf"]["dns_names"] == [demo.hostname]
    assert [c["subject"] for c in tls["chain"]] == [f"CN={demo.hostname}", "CN=probe demo Intermediate CA"]
    assert tls["verified_chain"][-1]["subject"] == "CN=probe demo Root CA"
    assert tls["verified_chain_expiry_timestamp"] == tls["leaf"]["not_after_timestamp"]
    assert target["backends"]["counts"] == {"web-1": 4, "web-2": 4}
    assert target["addresses"][0]["backend_counts"] == {"web-1": 2, "web-2": 2}
    phases = target["addresses"][0]["http"][0]["phases"]
    assert set(phases) == {"connect", "tls", "processing", "transfer"}


def test_text_report_rows_without_colour(demo: DemoLab) -> None:
    code, out = check(*adhoc_args(demo))
    assert code == ExitCode.OK
    assert "\033[" not in out
    for address in demo.node_addresses:
        assert f"  {address}" in out
    assert "backends web-1 4  web-2 4" in out
    assert "chain as sent by 127.0.10.1" in out
    assert out.rstrip().endswith("Status: OK (1 ok)")


def test_colour_on_request(demo: DemoLab) -> None:
    _, out = check(*adhoc_args(demo), "--color", "always")
    assert "\033[32mOK\033[0m" in out


def test_critical_exit_code_and_failure_lines(demo: DemoLab) -> None:
    code, out = check(*adhoc_args(demo)[:-1], "web-1,web-2,web-3")
    assert code == ExitCode.CRITICAL
    assert "critical backend_missing: backend web-3 answered none" in out


def test_warning_exit_code(demo: DemoLab) -> None:
    code, _ = check(*adhoc_args(demo)[:-1], "web-1")
    assert code == ExitCode.WARNING


def test_config_file_and_target_selection(demo: DemoLab, tmp_path: Path) -> None:
    # The second target fails without sending requests (nothing listens on port 9), so
    # the two targets, probed concurrently, do not share the nodes' round-robin.
    closed = demo.url.replace(f":{demo.port}/", ":9/")
    data = {"targets": [demo.target(name="first"), demo.target(name="second", url=closed)]}
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(data))

    code, out = check("--config", str(path), "--target", "first", "--json")
    document = json.loads(out)
    assert code == ExitCode.OK
    assert [t["name"] for t in document["targets"]] == ["first"]

    code, out = check("--config", str(path), "--json")
    assert code == ExitCode.CRITICAL
    assert [t["status"] for t in json.loads(out)["targets"]] == ["ok", "critical"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "probe: give a command: check, run or demo (see 'probe --help')"),
        (["check"], "probe: give a URL to check or --config FILE (see 'probe check --help')"),
        (["check", "--bogus"], "probe: unrecognized arguments: --bogus (see 'probe check --help')"),
        (
            ["check", "ftp://www.corp.example/", "--resolver", "127.0.0.1"],
            "probe: URL: 'ftp://www.corp.example/' must be an https:// or http:// URL",
        ),
        (
            ["check", "http://www.corp.example/", "--http-version", "2", "--resolver", "127.0.0.1"],
            "probe: --http-version: 2 needs an https:// URL: probe speaks HTTP/1.1 to an http:// "
            "target (HTTP/2 over plain TCP, h2c, is not supported)",
        ),
        (
            ["check", "https://www.corp.example/", "--resolver", "dns.example"],
            "probe: --resolver: 'dns.example' is not an IP address (resolvers are given by address)",
        ),
        (
            ["check", "https://www.corp.example/", "--expect-backends", "2"],
            "probe: --expect-backends: needs 'backend' to tell the backends apart",
        ),
        (
            ["check", "https://www.corp.example/", "--requests", "many"],
            "probe: argument --requests: 'many' is not a whole number (see 'probe check --help')",
        ),
        (
            ["check", "--config", "/nonexistent.yaml"],
            "probe: /nonexistent.yaml: no such file",
        ),
        (
            ["check", "--config", "x.yaml", "https://www.corp.example/"],
            "probe: https://www.corp.example/ cannot be combined with --config (put it in the config file)",
        ),
        (["check", "--target", "a"], "probe: --target needs --config"),
    ],
)
def test_bad_input_is_one_line_and_exit_3(args: list[str], message: str) -> None:
    result = probe_cli(*args)
    assert result.returncode == ExitCode.UNKNOWN
    assert result.stderr == message + "\n"
    assert result.stdout == ""


def test_bad_config_value_is_one_line_and_exit_3(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("targets:\n  - url: https://www.corp.example/\n    timeouts: {tls: -1}\n")
    result = probe_cli("check", "--config", str(path))
    assert result.returncode == ExitCode.UNKNOWN
    assert result.stderr == f"probe: {path}: targets[0].timeouts.tls: must be greater than 0 (got -1)\n"


def test_unloadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    result = probe_cli("check", "https://www.corp.example/", "--resolver", "127.0.0.1", "--ca-file", str(bad))
    assert result.returncode == ExitCode.UNKNOWN
    assert (
        result.stderr
        == f"probe: --ca-file: {bad}: not a PEM certificate bundle (no certificate or crl found)\n"
    )


def test_demo_command_runs_the_lab() -> None:
    result = probe_cli("demo", "--once", "--json")
    assert result.returncode == ExitCode.OK, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    target = document["targets"][0]
    assert target["status"] == "ok"
    assert target["backends"]["counts"] == {"web-1": 4, "web-2": 4}
    assert [a["address"] for a in target["addresses"]] == ["127.0.10.1", "127.0.10.2"]


def test_demo_keeps_probing_with_the_metrics_endpoint_up() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "probe", "demo", "--listen", f"127.0.0.1:{port}"],
        cwd=REPO,
        env=environment_without_proxies(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline and 'probe_success{target="demo"} 1.0' not in text:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=1).text
            except httpx.HTTPError:
                time.sleep(0.1)
        assert 'probe_success{target="demo"} 1.0' in text
        assert httpx.get(f"http://127.0.0.1:{port}/-/ready", trust_env=False).status_code == 200
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "Status: OK (1 ok)" in stdout
    assert f"metrics at http://127.0.0.1:{port}/metrics" in stdout


def test_secret_header_value_never_appears_in_the_output(demo: DemoLab) -> None:
    code, out = check(*adhoc_args(demo), "--header", "Authorization: Bearer s3cr3t-t0ken", "--json")
    assert code == ExitCode.OK
    assert "s3cr3t-t0ken" not in out
    assert json.loads(out)["targets"][0]["request_headers"] == {"Authorization": "(secret)"}


def test_header_value_with_a_line_break_is_refused_without_echoing_it(demo: DemoLab) -> None:
    result = probe_cli(
        "check", demo.url, "--resolver", demo.dns_server.where, "--header", "Authorization: Bearer x\r\ny"
    )
    assert result.returncode == ExitCode.UNKNOWN
    assert result.stderr == (
        "probe: --header: must be printable ASCII without line breaks or leading/trailing spaces "
        "(the value is not shown here)\n"
    )


def test_insecure_flag_probes_a_server_with_an_untrusted_certificate(demo: DemoLab) -> None:
    args = [a for a in adhoc_args(demo) if a != str(demo.ca_file) and a != "--ca-file"]
    code, out = check(*args, "--json")
    assert code == ExitCode.CRITICAL  # the system store does not know the lab's root
    code, out = check(*args, "--insecure", "--json")
    document = json.loads(out)["targets"][0]
    assert code == ExitCode.OK
    assert document["insecure_skip_verify"] is True
    assert document["addresses"][0]["tls"]["verified"] is False
    assert document["backends"]["counts"] == {"web-1": 4, "web-2": 4}


EXPECT_BACKENDS_FORMS = (
    "takes a count (at least 1) or comma-separated backend names, each once, e.g. 2 or web-1,web-2"
)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-2", f"--expect-backends: {EXPECT_BACKENDS_FORMS} (got '-2')"),
        ("0", f"--expect-backends: {EXPECT_BACKENDS_FORMS} (got '0')"),
        ("", f"--expect-backends: {EXPECT_BACKENDS_FORMS} (got '')"),
        (" , ", f"--expect-backends: {EXPECT_BACKENDS_FORMS} (got ' , ')"),
        ("web-1,web-2,web-1", f"--expect-backends: names web-1 twice; it {EXPECT_BACKENDS_FORMS}"),
    ],
    ids=["negative", "zero", "empty", "commas-only", "twice"],
)
def test_a_bad_backend_count_or_list_is_refused_saying_what_the_option_takes(
    value: str, message: str
) -> None:
    result = probe_cli(
        "check", "https://www.corp.example/", "--backend-header", "X-Backend", "--expect-backends", value
    )
    assert result.returncode == ExitCode.UNKNOWN and result.stdout == ""
    assert result.stderr == f"probe: {message}\n"


PIPE_SIZE = 4096  # the smallest pipe Linux allows; every report below is larger


def run_into_a_pipe_closed_after_the_first_line(*args: str) -> tuple[int, str, bytes]:
    """Run ``python -m probe ARGS`` writing into a 4 KiB pipe whose reader closes after one line.

    The report is larger than the pipe, so probe is still writing when the reader goes
    away and its next write fails with EPIPE (as with ``| head -1``).

    Returns:
        ``(exit code, stderr, the line read)``.
    """
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    assert fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ) == PIPE_SIZE
    process = subprocess.Popen(
        [sys.executable, "-m", "probe", *args],
        cwd=REPO,
        env=environment_without_proxies(),
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write_end)
    line = b""
    try:
        while not line.endswith(b"\n"):
            byte = os.read(read_end, 1)
            assert byte, "probe wrote no line"
            line += byte
    finally:
        os.close(read_end)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stderr, line


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({}, ExitCode.OK),
        ({"cert_expiry_warning_days": 3650}, ExitCode.WARNING),
        ({"expect_backends": ["web-1", "web-2", "web-3"]}, ExitCode.CRITICAL),
    ],
    ids=["ok", "warning", "critical"],
)
@pytest.mark.parametrize("output", ["text", "json"])
def test_output_closed_early_exits_with_the_verdict(
    demo: DemoLab, tmp_path: Path, fields: dict[str, Any], code: ExitCode, output: str
) -> None:
    # Ten targets on the demo lab, without backend checks unless asked: each verdict is fixed.
    base = {"backend": None, "expect_backends": None, "expect_same_addresses_as": None, **fields}
    if base["expect_backends"]:
        base["backend"] = {"header": "X-Backend"}
    targets = [demo.target(name=f"t{i}", **base) for i in range(10)]
    path = tmp_path / "probe.yaml"
    path.write_text(
        yaml.safe_dump({"targets": [{k: v for k, v in t.items() if v is not None} for t in targets]})
    )
    json_flag = ["--json"] if output == "json" else []
    complete = probe_cli("check", "--config", str(path), *json_flag)
    assert complete.returncode == code, complete.stdout
    assert len(complete.stdout.encode()) > 2 * PIPE_SIZE

    start = time.monotonic()
    returncode, stderr, line = run_into_a_pipe_closed_after_the_first_line(
        "check", "--config", str(path), *json_flag
    )
    assert returncode == code
    assert stderr == ""
    if output == "json":
        assert line == b"{\n"
    else:
        assert line.decode().startswith(f"t0  {demo.url}  {code.name}  (")
    assert time.monotonic() - start < 30


def test_demo_output_closed_early_exits_with_the_verdict() -> None:
    returncode, stderr, line = run_into_a_pipe_closed_after_the_first_line("demo", "--once", "--json")
    assert (returncode, stderr, line) == (ExitCode.OK, "", b"{\n")


def test_output_closed_early_ends_quietly() -> None:
    result = subprocess.run(
        f"set -o pipefail; {sys.executable} -m probe demo --once | head -1",
        shell=True,
        executable="/bin/bash",
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.startswith("probe demo: lab on loopback")
    assert "Traceback" not in result.stderr


def test_http_version_flag_sets_the_alpn_of_both_stages(demo: DemoLab) -> None:
    code, out = check(*adhoc_args(demo), "--http-version", "1.1", "--json")
    document = json.loads(out)["targets"][0]
    assert code == ExitCode.OK
    assert {a["tls"]["alpn"] for a in document["addresses"]} == {"http/1.1"}
    code, out = check(*adhoc_args(demo), "--http-version", "2", "--json")
    document = json.loads(out)["targets"][0]
    assert code == ExitCode.CRITICAL  # the demo nodes speak HTTP/1.1 only
    assert {f["reason"] for f in document["failures"]} == {"tls_alpn_mismatch"}
    assert "offered no h2" in document["failures"][0]["detail"]


def test_http_version_flag_refuses_other_versions() -> None:
    result = probe_cli("check", "https://www.corp.example/", "--http-version", "3")
    assert result.returncode == ExitCode.UNKNOWN
    assert result.stderr.count("\n") == 1 and "--http-version" in result.stderr
