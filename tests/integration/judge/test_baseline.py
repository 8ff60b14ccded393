"""``--save-baseline`` and ``--baseline`` against real loopback scenes: save, change something, compare."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.cli.main import main
from probe.lab import Lab, Pki, TlsNode
from probe.lab.pki import Issued, issue
from probe.model.reasons import ExitCode
from tests.integration.conftest import Scene

#: Every check here runs against loopback servers that answer at once.
TIME_BOUND = 5.0


def check(*args: str) -> tuple[int, str, float]:
    out = io.StringIO()
    started = time.monotonic()
    code = main(["check", *args], stdout=out)
    return code, out.getvalue(), time.monotonic() - started


def adhoc(scene: Scene) -> list[str]:
    t = scene.target
    return [
        t["url"],
        "--resolver",
        t["resolvers"][0],
        "--ca-file",
        t["ca_file"],
        "--expect-network",
        "127.0.0.0/8",
        "--backend-header",
        "X-Backend",
    ]


def saved(scene: Scene, path: Path) -> dict[str, Any]:
    """``--save-baseline path``: the file's document; stderr says where it wrote and what."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, _, elapsed = check(*adhoc(scene), "--save-baseline", str(path))
    assert code == ExitCode.OK and elapsed < TIME_BOUND
    addresses = ", ".join(node.address for node in scene.nodes)
    assert err.getvalue() == (
        f"probe: baseline saved to {path}: {scene.hostname} ({scene.target['url']}) at {addresses}\n"
    )
    return json.loads(path.read_text())


def compare_json(scene: Scene, path: Path) -> tuple[int, dict[str, Any]]:
    code, out, elapsed = check(*adhoc(scene), "--baseline", str(path), "--json")
    assert elapsed < TIME_BOUND
    return code, json.loads(out)


def changes(document: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    return [(c["address"], c["aspect"], c["impact"]) for c in document["baseline"]["changes"]]


@pytest.fixture
def restart(lab: Lab, tmp_path: Path) -> Iterator[Any]:
    """``restart(scene, index, cert)``: stop node ``index`` (unless stopped), start it again in place."""
    started: list[TlsNode] = []

    def run(scene: Scene, index: int, cert: Issued, *, stopped: bool = False) -> TlsNode:
        old = scene.nodes[index]
        if not stopped:
            lab.stop(old)
        node = lab.start_node(old.address, old.port, cert=cert, backends=scene.backends, workdir=tmp_path)
        scene.nodes[index] = node
        started.append(node)
        return node

    yield run
    for node in started:
        try:
            lab.stop(node)
        except Exception:
            continue


def test_an_unchanged_service_shows_no_changes_and_the_file_holds_the_facts(
    scene: Any, tmp_path: Path
) -> None:
    s = scene(nodes=2)
    path = tmp_path / "before.json"
    document = saved(s, path)

    assert document["format_version"] == 1
    [target] = document["targets"]
    assert target["name"] == s.hostname and target["url"] == s.target["url"] and target["status"] == "ok"
    assert target["addresses"] == [n.address for n in s.nodes]
    assert target["backends"] == ["web-1", "web-2"]
    first = target["per_address"][s.nodes[0].address]
    assert first["status"] == "ok" and first["tls_version"] == "TLSv1.3" and first["alpn"] == "http/1.1"
    assert first["backends"] == ["web-1", "web-2"]
    assert first["leaf"]["subject"] == f"CN={s.hostname}"
    assert first["leaf"]["issuer"] == "CN=probe test Intermediate CA"
    assert len(first["leaf"]["sha256_fingerprint"]) == 64
    assert not list(tmp_path.glob(".before.json.*"))  # the temporary file was renamed

    code, out, elapsed = check(*adhoc(s), "--baseline", str(path))
    assert code == ExitCode.OK and elapsed < TIME_BOUND
    assert f"Baseline {path} (saved " in out and out.rstrip().endswith("no changes")

    code, report = compare_json(s, path)
    assert code == ExitCode.OK
    assert report["baseline"]["changes"] == [] and report["baseline"]["regressions"] == 0
    assert report["baseline"]["file"] == str(path)


def test_a_certificate_renewed_by_the_same_issuer_is_neutral(
    scene: Any, pki: Pki, restart: Any, tmp_path: Path
) -> None:
    s = scene(nodes=2)
    path = tmp_path / "before.json"
    saved(s, path)
    renewed = pki.leaf(s.hostname, days=120)
    restart(s, 0, renewed)
    restart(s, 1, renewed)  # a load balancer's nodes all send its certificate

    code, out, elapsed = check(*adhoc(s), "--baseline", str(path))

    assert code == ExitCode.OK and elapsed < TIME_BOUND
    assert ": 2 neutral\n" in out
    lines = [line for line in out.splitlines() if line.startswith("  neutral")]
    assert [line.split()[2] for line in lines] == [n.address for n in s.nodes]
    assert all(
        "certificate renewed by the same issuer (probe test Intermediate CA); expires " in x for x in lines
    )
    code, document = compare_json(s, path)
    assert changes(document) == [(n.address, "certificate", "neutral") for n in s.nodes]


def test_a_certificate_from_another_issuer_expiring_earlier_is_a_regression(
    scene: Any, pki: Pki, restart: Any, tmp_path: Path
) -> None:
    s = scene(nodes=2)
    path = tmp_path / "before.json"
    saved(s, path)
    other = issue("probe test Other Intermediate CA", pki.root, ca=True, days=1825)
    replaced = issue(s.hostname, other, dns_names=(s.hostname,), days=60)
    restart(s, 0, replaced)
    restart(s, 1, replaced)

    code, document = compare_json(s, path)

    assert document["status"] == "ok"  # the new certificate verifies: only the comparison objects
    assert code == ExitCode.WARNING
    assert changes(document) == [(n.address, "certificate", "regression") for n in s.nodes]
    detail = document["baseline"]["changes"][0]["detail"]
    assert "new issuer probe test Other Intermediate CA (was probe test Intermediate CA)" in detail
    assert "expires earlier" in detail
    assert document["baseline"]["regressions"] == 2


def test_a_certificate_for_another_name_by_the_same_ca_is_a_regression_that_says_so(
    scene: Any, pki: Pki, restart: Any, tmp_path: Path
) -> None:
    # The issue's case: the leaf swapped for one issued to other.corp.example by the same
    # CA. Same issuer, similar expiry: before, "neutral … replaced by the same issuer".
    s = scene(nodes=2)
    path = tmp_path / "before.json"
    document = saved(s, path)
    leaf = document["targets"][0]["per_address"][s.nodes[0].address]["leaf"]
    assert leaf["dns_names"] == [s.hostname] and leaf["ip_addresses"] == [] and leaf["key"] == "EC P-256"
    other = pki.leaf("other.corp.example")
    restart(s, 0, other)
    restart(s, 1, other)

    code, out, elapsed = check(*adhoc(s), "--baseline", str(path))

    assert code == ExitCode.CRITICAL and elapsed < TIME_BOUND  # the check itself: cert_hostname_mismatch
    lines = [line for line in out.splitlines() if "certificate " in line and line.startswith("  regression")]
    assert [line.split()[2] for line in lines] == [n.address for n in s.nodes], out
    assert all(
        "by the same issuer (probe test Intermediate CA); no longer covers "
        f"{s.hostname} (the target's name): now for other.corp.example;" in line
        for line in lines
    ), out
    code, document = compare_json(s, path)
    assert [(a, i) for a, aspect, i in changes(document) if aspect == "certificate"] == [
        (n.address, "regression") for n in s.nodes
    ]


def test_a_baseline_saved_with_a_config_compares_with_an_ad_hoc_check_of_the_same_url(
    scene: Any, tmp_path: Path
) -> None:
    # Saved with --config (target "www"), compared with an ad hoc check of the same URL
    # (target named after its host): the same target, no "baseline of another target".
    s = scene(nodes=2)
    config = tmp_path / "probe.yaml"
    config.write_text(yaml.safe_dump({"targets": [{"name": "www", **s.target}]}))
    path = tmp_path / "before.json"
    code, _, _ = check("--config", str(config), "--save-baseline", str(path))
    assert code == ExitCode.OK and json.loads(path.read_text())["targets"][0]["name"] == "www"

    code, out, elapsed = check(*adhoc(s), "--baseline", str(path))
    assert code == ExitCode.OK and elapsed < TIME_BOUND
    assert out.rstrip().endswith(": no changes"), out
    code, document = compare_json(s, path)
    assert code == ExitCode.OK and document["baseline"]["changes"] == []
    assert document["targets"][0]["name"] == s.hostname  # compared under the name checked now


def test_backends_seen_at_one_address_by_the_rotations_phase_are_no_change(
    scene: Any, tmp_path: Path
) -> None:
    # The lab's two nodes share one backend pool, each with its own round-robin. With one
    # request per address, which backend each node answers with is the rotation's phase:
    # here node 1 is one connection ahead (another client), so the baseline sees web-1 at
    # node 0 and web-2 at node 1, and the next check the other way round. Both backends
    # answer for the target in both checks: nothing changed.
    s = scene(nodes=2)
    one = ["--requests", "1"]
    host, port, ahead = s.hostname, s.port, s.nodes[1].address
    code, _, _ = check(*adhoc(s), *one, "--resolve", f"{host}:{port}:{ahead}")  # another client at node 1
    assert code == ExitCode.OK
    path = tmp_path / "before.json"
    code, _, _ = check(*adhoc(s), *one, "--save-baseline", str(path))
    per_address = json.loads(path.read_text())["targets"][0]["per_address"]
    assert [per_address[n.address]["backends"] for n in s.nodes] == [["web-1"], ["web-2"]]

    code, out, elapsed = check(*adhoc(s), *one, "--baseline", str(path), "--json")
    document = json.loads(out)
    seen = {a["address"]: list(a["backend_counts"]) for a in document["targets"][0]["addresses"]}
    assert seen == {s.nodes[0].address: ["web-2"], s.nodes[1].address: ["web-1"]}  # the phase moved
    assert code == ExitCode.OK and elapsed < TIME_BOUND
    assert document["baseline"]["changes"] == []  # no "no longer answers via this address"


def test_a_stopped_backend_is_a_regression(scene: Any, lab: Lab, tmp_path: Path) -> None:
    s = scene(nodes=2)
    path = tmp_path / "before.json"
    saved(s, path)
    lab.stop(s.backends[1])

    code, out, elapsed = check(*adhoc(s), "--baseline", str(path))

    assert code == ExitCode.CRITICAL and elapsed < TIME_BOUND
    assert "backend web-2 no longer answers (seen now: web-1)" in out
    code, document = compare_json(s, path)
    found = changes(document)
    assert (None, "backend", "regression") in found
    assert (None, "status", "regression") in found
    assert all(impact == "regression" for _, _, impact in found)


def test_backends_are_not_compared_without_a_backend_rule_now(scene: Any, tmp_path: Path) -> None:
    # Saved with --backend-header, compared without it: the backends could not be
    # identified, which is no sign that web-1 and web-2 stopped answering.
    s = scene(nodes=2)
    path = tmp_path / "before.json"
    saved(s, path)
    without_rule = [a for a in adhoc(s) if a not in ("--backend-header", "X-Backend")]

    code, out, elapsed = check(*without_rule, "--baseline", str(path))

    assert code == ExitCode.OK and elapsed < TIME_BOUND
    assert "no longer answers" not in out and "regression" not in out
    assert "backends not compared: no backend rule now" in out and "the baseline saw web-1, web-2" in out
    code, out, _ = check(*without_rule, "--baseline", str(path), "--json")
    document = json.loads(out)
    assert code == ExitCode.OK
    assert changes(document) == [(None, "backend", "neutral")]
    assert document["baseline"]["regressions"] == 0


def test_a_stopped_node_is_a_status_regression_and_its_return_an_improvement(
    scene: Any, lab: Lab, pki: Pki, restart: Any, tmp_path: Path
) -> None:
    cert = pki.leaf("returning.corp.example")
    s = scene(nodes=2, hostname="returning.corp.example", cert=cert)
    path = tmp_path / "before.json"
    saved(s, path)
    lab.stop(s.nodes[1])

    code, out, elapsed = check(
        *adhoc(s), "--baseline", str(path), "--save-baseline", str(tmp_path / "during.json")
    )

    assert code == ExitCode.CRITICAL and elapsed < TIME_BOUND
    assert f"{s.hostname} {s.nodes[1].address}  status ok → critical (tcp_refused)" in out
    assert f"{s.hostname}  status ok → critical (tcp_refused)" in out

    restart(s, 1, cert, stopped=True)
    code, document = compare_json(s, tmp_path / "during.json")
    assert code == ExitCode.OK
    found = changes(document)
    assert (None, "status", "improvement") in found
    assert (s.nodes[1].address, "status", "improvement") in found
    details = [c["detail"] for c in document["baseline"]["changes"]]
    assert "status critical → ok (tcp_refused cleared)" in details


def test_an_address_gone_from_the_answer_is_a_regression(scene: Any, dns: Any, tmp_path: Path) -> None:
    s = scene(nodes=2)
    path = tmp_path / "before.json"
    saved(s, path)
    dns.set(s.hostname, ("A", s.nodes[0].address))

    code, document = compare_json(s, path)

    assert document["status"] == "ok" and code == ExitCode.WARNING
    [change] = document["baseline"]["changes"]
    assert change["address"] == s.nodes[1].address and change["aspect"] == "address"
    assert change["impact"] == "regression"
    assert change["detail"] == f"gone from the answer (now: {s.nodes[0].address})"


def test_compare_then_save_into_the_same_file(scene: Any, lab: Lab, tmp_path: Path) -> None:
    s = scene(nodes=2)
    path = tmp_path / "baseline.json"
    saved(s, path)
    lab.stop(s.nodes[0])

    code, out, _ = check(*adhoc(s), "--baseline", str(path), "--save-baseline", str(path))
    assert code == ExitCode.CRITICAL and "status ok → critical" in out

    code, document = compare_json(s, path)  # compared with the state saved just now
    assert code == ExitCode.CRITICAL and document["baseline"]["changes"] == []


def test_several_targets_are_keyed_by_url(
    scene: Any, lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = scene(nodes=1), scene(nodes=1)
    config = tmp_path / "probe.yaml"
    targets = [{"name": "one", **first.target}, {"name": "two", **second.target}]
    config.write_text(yaml.safe_dump({"targets": targets}))
    path = tmp_path / "before.json"

    code, _, _ = check("--config", str(config), "--save-baseline", str(path))
    assert code == ExitCode.OK
    one, two = (f"({s.target['url']}) at {s.nodes[0].address}" for s in (first, second))
    assert capsys.readouterr().err == f"probe: baseline saved to {path}: 2 targets: one {one}; two {two}\n"
    assert [(t["name"], t["url"]) for t in json.loads(path.read_text())["targets"]] == [
        ("one", first.target["url"]),
        ("two", second.target["url"]),
    ]

    lab.stop(second.backends[0])
    code, out, elapsed = check("--config", str(config), "--target", "one", "--baseline", str(path), "--json")
    assert code == ExitCode.OK and elapsed < TIME_BOUND
    assert json.loads(out)["baseline"]["changes"] == []  # "two" is not checked, so not compared

    code, out, _ = check("--config", str(config), "--baseline", str(path), "--json")
    document = json.loads(out)
    assert code == ExitCode.CRITICAL
    assert {c["target"] for c in document["baseline"]["changes"]} == {"two"}
    assert ("two", "backend", "regression") in [
        (c["target"], c["aspect"], c["impact"]) for c in document["baseline"]["changes"]
    ]


def _refused(scene: Scene, path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    before = [n.connections for n in scene.nodes]
    code, out, elapsed = check(*adhoc(scene), "--baseline", str(path))
    err = capsys.readouterr().err
    assert code == ExitCode.UNKNOWN and out == "" and elapsed < TIME_BOUND
    assert [n.connections for n in scene.nodes] == before  # refused before anything was probed
    assert err.count("\n") == 1 and err.startswith(f"probe: {path}: ")
    return err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"format_version": 1, "saved_timestamp": 17800', "not valid JSON (Expecting"),
        (
            "targets:\n  - www\n",
            "not valid JSON (Expecting value at line 1 column 1): corrupt, truncated or not a baseline file",
        ),
        ("", "empty file, not a probe baseline"),
        ('{"schema_version": 1, "targets": []}', "not a probe baseline (no format_version)"),
        (
            '{"format_version": 2, "saved_timestamp": 0, "targets": []}',
            "written in baseline format_version 2 by a newer probe; this probe reads format_version 1",
        ),
        (
            '{"format_version": 1, "saved_timestamp": 0, "targets": [{"name": "x"}]}',
            "corrupt baseline: targets[0].url: Field required",
        ),
    ],
    ids=["truncated", "yaml", "empty", "json-report", "newer", "missing-field"],
)
def test_an_unusable_baseline_is_refused_with_one_line(
    scene: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    s = scene(nodes=1)
    path = tmp_path / "baseline.json"
    path.write_text(content)
    assert message in _refused(s, path, capsys)


def test_a_truncated_saved_baseline_is_refused(
    scene: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = scene(nodes=1)
    path = tmp_path / "baseline.json"
    text = json.dumps(saved(s, path), indent=2)
    path.write_text(text[: len(text) // 2])
    assert "not valid JSON (Expecting" in _refused(s, path, capsys)


def test_a_baseline_of_another_target_is_refused(
    scene: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other, s = scene(nodes=1), scene(nodes=1)
    path = tmp_path / "other.json"
    saved(other, path)
    err = _refused(s, path, capsys)
    assert f"baseline of another URL: it holds {other.hostname} ({other.target['url']})" in err
    assert f"not {s.hostname} ({s.target['url']})" in err


def test_a_baseline_of_the_same_name_at_another_url_is_refused(
    scene: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = scene(nodes=1)
    path = tmp_path / "baseline.json"
    document = saved(s, path)
    document["targets"][0]["url"] = s.target["url"] + "health"
    path.write_text(json.dumps(document))
    err = _refused(s, path, capsys)
    assert f"baseline of another URL: {s.hostname} was {s.target['url']}health, now {s.target['url']}" in err


def test_a_missing_baseline_and_an_unwritable_save_path_are_refused_before_probing(
    scene: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = scene(nodes=1)
    assert "no such file" in _refused(s, tmp_path / "nothing.json", capsys)

    code, out, _ = check(*adhoc(s), "--save-baseline", str(tmp_path / "no" / "such" / "dir.json"))
    err = capsys.readouterr().err
    assert code == ExitCode.UNKNOWN and out == "" and s.nodes[0].connections == 0
    where = tmp_path / "no" / "such"
    assert err == f"probe: {where}/dir.json: cannot save the baseline: directory {where} does not exist\n"


def test_save_baseline_over_the_config_file_is_refused_before_probing(
    scene: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = scene(nodes=1)
    config = tmp_path / "probe.yaml"
    config.write_text(yaml.safe_dump({"targets": [s.target]}))
    before = config.read_text()

    code, out, _ = check("--config", str(config), "--save-baseline", str(config))

    err = capsys.readouterr().err
    assert code == ExitCode.UNKNOWN and out == "" and s.nodes[0].connections == 0
    assert err == f"probe: {config}: is the --config file; give another file to save the baseline in\n"
    assert config.read_text() == before
