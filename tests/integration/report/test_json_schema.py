"""The shipped JSON Schemas hold for real outputs of ``probe check --json``, ``--watch --json``
and ``--save-baseline`` against loopback servers, in the situations the docs describe.

Every document is produced by the real command line (``probe.cli.main`` with a config file),
validated with ``jsonschema`` against the schema found through the installed package
(``probe share``), and the facts a user reads are asserted too.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from probe.cli.main import main
from probe.cli.share import share_file
from probe.lab import Lab, Pki
from tests.integration.judge.test_direct_backends import Farm, farm  # noqa: F401  (fixture)
from tests.integration.stages.test_ocsp import REVOKED_AT, openssl_ocsp, stapling  # noqa: F401  (fixture)

FAST = {"dns": 1, "connect": 1, "tls": 1, "http": 1, "deadline": 5}
#: A check of a few loopback targets ends well within its 5 s deadline.
BOUND = 6.0


def validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(share_file(f"schema/{kind}-v1.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


CHECK = validator("check")
WATCH = validator("watch")
BASELINE = validator("baseline")


def assert_valid(schema: jsonschema.Draft202012Validator, document: Any) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in schema.iter_errors(document)]
    assert errors == []


def check(tmp_path: Path, targets: list[dict[str, Any]], *extra: str) -> tuple[int, Any, float]:
    """``probe check --config FILE --json EXTRA``: exit code, the printed document(s), seconds taken."""
    config = tmp_path / f"probe-{time.monotonic_ns()}.yaml"
    config.write_text(json.dumps({"targets": [{"timeouts": FAST, **t} for t in targets]}))
    out = io.StringIO()
    start = time.monotonic()
    code = main(["check", "--config", str(config), "--json", *extra], stdout=out)
    elapsed = time.monotonic() - start
    text = out.getvalue()
    if "--watch" in extra:
        return code, [json.loads(line) for line in text.splitlines()], elapsed
    return code, json.loads(text), elapsed


def reasons_of(document: dict[str, Any]) -> set[str]:
    found = set()
    for target in document["targets"]:
        found |= {f["reason"] for f in target["failures"]}
        for address in target["addresses"]:
            found |= {f["reason"] for f in address["failures"]}
    return found


def test_ok_check_of_two_nodes_and_a_counted_balancer_is_valid(scene: Any, tmp_path: Path) -> None:
    one = scene(nodes=2)
    two = scene(nodes=1)
    code, document, elapsed = check(
        tmp_path,
        [
            {**one.target, "name": "www", "expect_backends": ["web-1", "web-2"]},
            {**two.target, "name": "api", "balancing": "weighted_random", "expect_backends": 2},
        ],
    )
    assert_valid(CHECK, document)
    assert document["schema_version"] == 1
    www, api = document["targets"]
    assert www["status"] == "ok" and len(www["addresses"]) == 2
    assert www["addresses"][0]["tls"]["handshake"] == "verified"
    assert www["addresses"][0]["tls"]["leaf"]["dns_names"] == [one.hostname]
    assert www["backends"]["counts"] == {"web-1": 4, "web-2": 4}
    assert api["balancing"]["counted"] is not None  # the counted shape is covered too
    assert code in (0, 1) and elapsed < BOUND


def test_critical_check_with_failures_everywhere_is_valid(
    scene: Any, dns: Any, new_ip: Any, pki: Pki, tmp_path: Path
) -> None:
    wrong = scene(cert=pki.leaf("other.corp.example"))
    half = scene()
    refused = new_ip()  # nothing listens there
    dns.set(half.hostname, ("A", half.nodes[0].address), ("A", refused))
    code, document, elapsed = check(
        tmp_path,
        [
            {**wrong.target, "name": "wrong-cert"},
            {**half.target, "name": "half", "expect_backends": 3},
            {**half.target, "name": "gone", "url": f"https://nx-{new_ip().replace('.', '-')}.corp.example/"},
        ],
    )
    assert_valid(CHECK, document)
    assert code == 2 and document["status"] == "critical"
    assert {"cert_hostname_mismatch", "tcp_refused", "backend_missing", "dns_nxdomain"} <= reasons_of(
        document
    )
    bad = document["targets"][0]["addresses"][0]
    assert bad["tls"]["handshake"] == "verify_failed" and bad["tls"]["leaf"]["subject"]
    assert document["targets"][2]["addresses"] == []
    assert elapsed < BOUND


def test_pinned_and_plain_http_checks_are_valid(scene: Any, tmp_path: Path) -> None:
    pinned = scene()
    plain = scene(tls=False)
    code, document, elapsed = check(
        tmp_path,
        [
            {**pinned.target, "name": "pinned", "addresses": [pinned.nodes[0].address]},
            {**plain.target, "name": "plain", "url": f"http://{plain.hostname}:{plain.port}/"},
        ],
    )
    assert_valid(CHECK, document)
    first, second = document["targets"]
    assert first["dns"]["pinned"] is True and first["dns"]["pinned_by"] == "addresses"
    assert first["dns"]["answers"][0]["ttl"] is None
    assert second["scheme"] == "http" and second["addresses"][0]["tls"]["handshake"] == "plain"
    assert second["addresses"][0]["tls"]["verified"] is None
    assert code == 0 and elapsed < BOUND


def test_ocsp_staples_good_and_revoked_are_valid(stapling: Any, pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    good, _ = stapling(lambda leaf: openssl_ocsp(tmp_path, leaf, pki.intermediate))
    revoked, _ = stapling(
        lambda leaf: openssl_ocsp(tmp_path, leaf, pki.intermediate, revoked=f"{REVOKED_AT},keyCompromise")
    )
    code, document, elapsed = check(tmp_path, [{**good, "name": "good"}, {**revoked, "name": "revoked"}])
    assert_valid(CHECK, document)
    good_ocsp = document["targets"][0]["addresses"][0]["ocsp"]
    revoked_ocsp = document["targets"][1]["addresses"][0]["ocsp"]
    assert good_ocsp["cert_status"] == "good" and good_ocsp["stapled"] is True
    assert revoked_ocsp["cert_status"] == "revoked" and revoked_ocsp["revocation_reason"]
    assert "ocsp_revoked" in reasons_of(document)
    assert code == 2 and elapsed < BOUND


def test_direct_backends_are_valid(farm: Farm, tmp_path: Path) -> None:  # noqa: F811
    farm.backend("web-1")
    farm.backend("web-2")
    target = farm.target(["web-1"], [farm.pinned("web-1"), farm.pinned("web-2")])
    code, document, elapsed = check(tmp_path, [{**target, "name": "farm"}])
    assert_valid(CHECK, document)
    members = document["targets"][0]["direct_backends"]
    assert [m["name"] for m in members] == ["web-1", "web-2"]
    assert members[0]["trust"] == "fingerprint_sha256" and members[0]["pin_matches"] is True
    assert members[0]["tls"]["leaf"] is not None and members[0]["http"]["status_code"] == 200
    assert "backend_not_in_rotation" in {f["reason"] for f in document["targets"][0]["failures"]}
    assert code == 2 and elapsed < BOUND


def test_baseline_file_and_baseline_diff_are_valid(scene: Any, lab: Lab, tmp_path: Path) -> None:
    s = scene(nodes=2)
    target = {**s.target, "name": "www", "expect_backends": ["web-1", "web-2"]}
    saved = tmp_path / "before.json"
    code, document, _ = check(tmp_path, [target], "--save-baseline", str(saved))
    assert code == 0 and document["baseline"] is None
    assert_valid(BASELINE, json.loads(saved.read_text()))

    lab.stop(s.nodes[1])  # one node goes away: its address now refuses
    code, document, elapsed = check(tmp_path, [target], "--baseline", str(saved))
    assert_valid(CHECK, document)
    diff = document["baseline"]
    assert diff["file"] == str(saved) and diff["regressions"] >= 1
    assert {"status"} <= {c["aspect"] for c in diff["changes"]}
    assert code == 2 and elapsed < BOUND


def test_watch_json_lines_are_valid(scene: Any, tmp_path: Path) -> None:
    s = scene(nodes=2)
    code, lines, elapsed = check(
        tmp_path,
        [{**s.target, "name": "www"}],
        "--watch",
        "--until",
        "stable",
        "--stable-rounds",
        "2",
        "--every",
        "0.2",
    )
    for line in lines:
        assert_valid(WATCH, line)
    assert [line["type"] for line in lines] == ["change", "change", "change", "summary"]
    assert lines[-1]["ended_by"] == "stable" and lines[-1]["exit_code"] == 0
    assert code == 0 and elapsed < 2 * BOUND


def test_the_schema_catches_a_renamed_or_mistyped_key(scene: Any, tmp_path: Path) -> None:
    s = scene()
    _, document, _ = check(tmp_path, [{**s.target, "name": "www"}])
    assert_valid(CHECK, document)
    renamed = json.loads(json.dumps(document))
    address = renamed["targets"][0]["addresses"][0]
    address["tls"]["handshake_time_seconds"] = address["tls"].pop("handshake_seconds")
    errors = [e.message for e in CHECK.iter_errors(renamed)]
    assert errors == ["'handshake_seconds' is a required property"]
    mistyped = json.loads(json.dumps(document))
    mistyped["targets"][0]["status"] = "OK"
    assert [e.message for e in CHECK.iter_errors(mistyped)] == [
        "'OK' is not one of ['ok', 'warning', 'critical']"
    ]
    added = json.loads(json.dumps(document))
    added["targets"][0]["a_field_added_within_version_1"] = True  # allowed: fields are only added
    assert_valid(CHECK, added)


@pytest.mark.parametrize("kind", ["check", "watch", "baseline"])
def test_each_schema_names_its_version(kind: str) -> None:
    from probe.judge.baseline import FORMAT_VERSION
    from probe.report.document import SCHEMA_VERSION
    from probe.report.watch import WATCH_SCHEMA_VERSION

    schema = json.loads(share_file(f"schema/{kind}-v1.schema.json").read_text())
    key = "format_version" if kind == "baseline" else "schema_version"
    version = {"check": SCHEMA_VERSION, "watch": WATCH_SCHEMA_VERSION, "baseline": FORMAT_VERSION}[kind]
    assert version == 1  # a new version means a new schema file, *-v2.schema.json
    if kind == "watch":
        assert schema["$defs"]["change"]["properties"][key] == {"const": version}
        assert schema["$defs"]["summary"]["properties"][key] == {"const": version}
    else:
        assert schema["properties"][key] == {"const": version}
