"""The report says what happened: each case runs ``probe check`` against real loopback servers.

Every test reads what a user reads (the text rows, the JSON fields, the exit code) and
checks that the check stayed within its ``--timeout`` bound.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import itertools
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.cli.main import main
from probe.lab import Lab, Pki
from probe.lab.pki import issue
from probe.model.reasons import ExitCode
from tests.integration.conftest import Scene
from tests.support import docs

BOUND = 5.0  # the --timeout given to every check here (seconds)
LIMIT = BOUND + 1.0  # the deadline, the cycle's 0.5 s backstop grace and the command's own start
_N = itertools.count(1)


def fresh_name() -> str:
    return f"r{next(_N)}.report.corp.example"


def check(scene: Scene, *extra: str, ca_file: bool = True, timeout: float = BOUND) -> tuple[int, str, float]:
    """``probe check`` of the scene's URL with loopback resolver and network; (code, stdout, seconds)."""
    args = [
        "check",
        scene.target["url"],
        "--resolver",
        scene.target["resolvers"][0],
        "--expect-network",
        "127.0.0.0/8",
        "--timeout",
        str(timeout),
        *(["--ca-file", scene.target["ca_file"]] if ca_file else []),
        *extra,
    ]
    out = io.StringIO()
    start = time.monotonic()
    code = main(args, stdout=out)
    return code, out.getvalue(), time.monotonic() - start


def row(text: str, address: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"  {address} "))


def test_expiring_certificate_marks_the_address_rows_warning(scene: Any, pki: Pki) -> None:
    name = fresh_name()
    s = scene(nodes=2, hostname=name, cert=pki.leaf(name, days=5))

    code, text, seconds = check(s)
    assert code == ExitCode.WARNING and seconds < LIMIT
    for node in s.nodes:
        assert re.search(r"TLSv1\.3 +\d+ ms  warning   " + re.escape(name), row(text, node.address))
    assert f"warning  cert_expiring_soon {s.nodes[0].address}: leaf '{name}' expires on" in text

    code, out, _ = check(s, "--json")
    target = json.loads(out)["targets"][0]
    assert target["status"] == "warning"
    assert [a["status"] for a in target["addresses"]] == ["warning", "warning"]
    assert [f["reason"] for f in target["addresses"][0]["failures"]] == ["cert_expiring_soon"]


def test_addresses_with_different_leaves_show_both_chains_and_warn(
    scene: Any, pki: Pki, lab: Lab, dns: Any, new_ip: Any, tmp_path: Path
) -> None:
    name = fresh_name()
    s = scene(hostname=name)
    renewed = pki.leaf(name, days=200)
    second = lab.start_node(new_ip(), s.port, cert=renewed, backends=s.backends, workdir=tmp_path)
    try:
        dns.set(name, ("A", s.nodes[0].address), ("A", second.address))
        code, text, seconds = check(s)
    finally:
        lab.stop(second)

    assert code == ExitCode.WARNING and seconds < LIMIT
    assert "  warning   " in row(text, s.nodes[0].address) and "  warning   " in row(text, second.address)
    assert f"  chain as sent by {s.nodes[0].address}:\n" in text
    assert f"  chain as sent by {second.address}:\n" in text
    expiry = renewed.cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    assert (
        f"    0  {name}  ← probe test Intermediate CA  expires {expiry}"
        in text.split(second.address + ":")[1]
    )
    assert "warning  cert_differs_between_addresses: 2 different leaf certificates" in text


def test_without_a_backend_rule_the_report_says_so_and_counts_the_responses(scene: Any) -> None:
    s = scene(nodes=2)
    code, text, seconds = check(s)
    assert code == ExitCode.OK and seconds < LIMIT
    assert (
        "  backends not identified: no backend rule configured (backend.header or backend.body_regex)"
        "  8 responses\n" in text
    )
    _, out, _ = check(s, "--json")
    backends = json.loads(out)["targets"][0]["backends"]
    assert backends["rule"] is None and backends["responses"] == 8 and backends["identified"] == 0


def test_a_rule_that_identifies_nothing_still_counts_the_responses(scene: Any) -> None:
    s = scene(nodes=2)
    code, text, seconds = check(s, "--backend-header", "X-Served-By")
    assert code == ExitCode.CRITICAL and seconds < LIMIT
    assert "  backends none identified  of 8 responses, by header X-Served-By\n" in text
    assert "critical backend_unidentified" in text


def test_tls_column_tells_a_refused_certificate_from_a_failed_handshake(scene: Any, pki: Pki) -> None:
    name = fresh_name()
    refused = scene(hostname=name, cert=pki.leaf("other.corp.example"))
    code, text, seconds = check(refused)
    assert code == ExitCode.CRITICAL and seconds < LIMIT
    assert re.search(
        r"\d+ ms +not verified  critical  other\.corp\.example; .*; NOT verified$",
        row(text, refused.nodes[0].address),
    )
    _, out, _ = check(refused, "--json")
    tls = json.loads(out)["targets"][0]["addresses"][0]["tls"]
    assert tls["handshake"] == "verify_failed" and tls["verify_code"] == 62

    async def http_server(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.read(4096)  # a TLS ClientHello is a bad request to an HTTP server
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()

    plain = scene(handler=http_server, tls=False, backends=())
    code, text, seconds = check(plain)
    assert code == ExitCode.CRITICAL and seconds < 1
    assert re.search(r"\d+ ms +failed  critical  -$", row(text, plain.nodes[0].address))
    assert "tls_handshake_failed" in text and "did not answer with TLS" in text
    _, out, _ = check(plain, "--json")
    assert json.loads(out)["targets"][0]["addresses"][0]["tls"]["handshake"] == "failed"

    async def silent(reader: asyncio.StreamReader, writer: Any) -> None:
        await asyncio.sleep(30)

    stalled = scene(handler=silent, tls=False, backends=())
    code, text, seconds = check(stalled, timeout=1)
    assert code == ExitCode.CRITICAL and seconds < 1 + 1
    assert re.search(r"\d+ ms +timed out  critical  -$", row(text, stalled.nodes[0].address))


def test_insecure_says_that_certificates_were_not_verified(scene: Any) -> None:
    name = fresh_name()
    s = scene(hostname=name, cert=issue(name, None, dns_names=(name,)))  # self-signed
    code, text, seconds = check(s, "--insecure", ca_file=False)
    assert code == ExitCode.OK and seconds < LIMIT
    assert text.startswith(f"{name}  {s.target['url']}  OK, certificates NOT verified  (")
    assert "NOT verified (insecure_skip_verify)" in row(text, s.nodes[0].address)
    assert text.rstrip().endswith(
        f"Status: OK (1 ok; certificates NOT verified for {name} (insecure_skip_verify))"
    )
    _, out, _ = check(s, "--insecure", "--json", ca_file=False)
    document = json.loads(out)
    assert document["status"] == "ok" and document["certificates_verified"] is False
    assert document["targets"][0]["notes"][0].startswith(
        "certificates were NOT verified (insecure_skip_verify)"
    )
    assert document["targets"][0]["addresses"][0]["tls"]["handshake"] == "unverified"


def test_reused_connections_are_said(scene: Any, tmp_path: Path) -> None:
    s = scene(nodes=2)
    path = tmp_path / "probe.yaml"
    target = {**s.target, "name": "reuse", "reuse_connections": True, "timeouts": {"deadline": BOUND}}
    path.write_text(yaml.safe_dump({"targets": [target]}))
    out = io.StringIO()
    start = time.monotonic()
    code = main(["check", "--config", str(path)], stdout=out)
    assert time.monotonic() - start < LIMIT
    assert code in (ExitCode.OK, ExitCode.WARNING)  # the balance over backends is not the point here
    assert (
        "  note     requests to each address shared one connection (reuse_connections): a balancer "
        "that balances per connection sends them all to one backend\n" in out.getvalue()
    )
    out = io.StringIO()
    main(["check", "--config", str(path), "--json"], stdout=out)
    document = json.loads(out.getvalue())["targets"][0]
    assert document["reuse_connections"] is True and "reuse_connections" in document["notes"][0]


def test_expired_trust_anchor_is_named_with_its_depth_and_the_probe_clock(scene: Any, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    root = issue(
        "probe expired Root CA",
        ca=True,
        not_before=now - dt.timedelta(days=3650),
        not_after=now - dt.timedelta(days=2),
    )
    intermediate = issue(
        "probe expired Intermediate CA", root, ca=True, not_before=now - dt.timedelta(days=30)
    )
    name = fresh_name()
    leaf = issue(name, intermediate, dns_names=(name,))
    anchor = tmp_path / "expired-root.pem"
    anchor.write_bytes(root.cert_pem)
    s = scene(hostname=name, cert=leaf)  # sends leaf and intermediate, not the root
    s.target["ca_file"] = str(anchor)

    code, out, seconds = check(s, "--json")
    assert code == ExitCode.CRITICAL and seconds < LIMIT
    failure = json.loads(out)["targets"][0]["failures"][0]
    assert failure["reason"] == "cert_expired"
    expired_on = root.cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    assert failure["detail"].startswith(
        "root 'probe expired Root CA' (depth 2, a trust anchor from the trust store, not sent by the "
        f"server) expired on {expired_on} (2 days ago); probe's clock: "
    )
    clock = dt.datetime.strptime(failure["detail"].rsplit("probe's clock: ", 1)[1], "%Y-%m-%d %H:%M UTC")
    assert abs(clock.replace(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=2)

    # OpenSSL's own verdict for the same files: the same error, at the same depth.
    leaf_file, untrusted = tmp_path / "leaf.pem", tmp_path / "untrusted.pem"
    leaf_file.write_bytes(leaf.cert_pem)
    untrusted.write_bytes(intermediate.cert_pem)
    verdict = subprocess.run(
        ["openssl", "verify", "-CAfile", str(anchor), "-untrusted", str(untrusted), str(leaf_file)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert verdict.returncode != 0
    assert "error 10 at 2 depth lookup: certificate has expired" in verdict.stdout + verdict.stderr


def test_expired_leaf_detail_gives_the_probe_clock(scene: Any, pki: Pki) -> None:
    name = fresh_name()
    now = dt.datetime.now(dt.UTC)
    s = scene(hostname=name, cert=pki.leaf(name, not_before=now - dt.timedelta(days=60), days=59))
    code, text, seconds = check(s)
    assert code == ExitCode.CRITICAL and seconds < LIMIT
    line = next(line for line in text.splitlines() if "cert_expired" in line)
    assert f"leaf '{name}' (depth 0) expired on " in line
    assert re.search(r"\(\d+ hours ago\); probe's clock: \d{4}-\d\d-\d\d \d\d:\d\d UTC$", line)
    assert "not verified" in row(text, s.nodes[0].address)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "https://xn--zz.x.test/",
            "probe: URL: 'xn--zz.x.test' is not a valid DNS name: 'xn--zz' is not a valid A-label "
            "(IDNA 2008, RFC 5891 §5.4)\n",
        ),
        (
            "https://www.xn--a.corp.example/",
            "probe: URL: 'www.xn--a.corp.example' is not a valid DNS name: 'xn--a' is not a valid "
            "A-label (IDNA 2008, RFC 5891 §5.4)\n",
        ),
    ],
)
def test_malformed_a_label_on_the_command_line_is_one_line_and_exit_3(
    url: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    start = time.monotonic()
    code = main(["check", url, "--resolver", "127.0.0.1"], stdout=out)
    assert time.monotonic() - start < 1  # refused before any query is sent
    assert code == ExitCode.UNKNOWN and out.getvalue() == ""
    assert capsys.readouterr().err == message


def _json_keys(
    value: Any, skip: frozenset[str] = frozenset({"counts", "backend_counts", "request_headers"})
) -> set[str]:
    """Every object key in a JSON document, except inside maps keyed by data (backend names, headers)."""
    keys: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            keys.add(key)
            if key not in skip:
                keys |= _json_keys(item, skip)
    elif isinstance(value, list):
        for item in value:
            keys |= _json_keys(item, skip)
    return keys


def test_docs_json_section_names_exactly_the_keys_of_the_document(scene: Any, tmp_path: Path) -> None:
    # The JSON section of the docs was merged by hand from several branches; it must name
    # every key the document has, and no key it does not have.
    s = scene(nodes=2)
    hostname = s.target["url"].split("/")[2].split(":")[0]
    before = tmp_path / "before.json"
    assert check(s, "--json", "--save-baseline", str(before))[0] == ExitCode.OK
    saved = json.loads(before.read_text())
    saved["targets"][0]["status"] = "ok" if saved["targets"][0]["status"] != "ok" else "warning"
    before.write_text(json.dumps(saved))  # a change, so that a change's keys are in the document
    code, out, seconds = check(
        s,
        "--json",
        "--baseline",
        str(before),
        "--ocsp",
        "staple",
        "--backend-header",
        "X-Backend",
        "--expect-backends",
        "3",
        "--expect-same-addresses-as",
        hostname,
        "--balancing",  # so that the counted rotation's keys are in the document
        "weighted_random",
    )
    # 2 of 3 backends in 8 responses: with weighted_random undecided, a warning.
    assert code == ExitCode.WARNING and seconds < LIMIT
    document = json.loads(out)
    assert document["targets"][0]["addresses"][0]["ocsp"] is not None
    assert document["targets"][0]["failures"] and document["targets"][0]["addresses"][0]["http"]
    assert document["baseline"]["changes"]
    section = docs.section("docs/json-document.md", "JSON document").split("```")[1]
    without_comments = "\n".join(line.split("#", 1)[0] for line in section.splitlines())
    documented = set(re.findall(r'"([a-z_0-9]+)"', without_comments))
    # Quoted words of the section that are values or keys of the other shapes, not keys seen here.
    values = {"ok", "warning", "critical", "verified", "unverified", "verify_failed", "timeout"}
    values |= {"failed", "not_attempted", "gzip", "1", "body_regex", "header", "X-Backend"}
    values |= {"target", "status", "address", "backend", "certificate", "tls_version", "alpn"}  # aspects
    values |= {"neutral", "improvement", "regression"}  # impacts (also "neutral": n)
    values |= {"www", "server_name", "generic", "aws"}  # a target name; a pinned_by value; platforms
    # Keys of a direct_backends member and its trust values: checked in test_direct_backends.py.
    values |= {"answered", "pin_matches", "pinned_fingerprint", "trust", "ca_file", "fingerprint_sha256"}
    values |= {"round_robin", "least_outstanding_requests", "weighted_random", "any"}  # balancing
    values |= {"plain", "https"}  # tls.handshake of an http:// target; scheme and expect_redirect values
    values |= {"cert_file"}  # of a client_certificate (null here): test_client_certificates.py has them
    # An attempt's load_balancer (null here: no answer of the balancer's own) and its kinds:
    # tests/integration/stages/test_lb_answers.py has them.
    values |= {"kind", "balancer", "what", "evidence", "load_balancer"}
    values |= {"authenticate", "blocked", "fixed_response", "redirect", "no_healthy_target", "error"}
    assert _json_keys(document) - documented == set()
    assert documented - _json_keys(document) - values == set()
