"""Pinned addresses: ``--resolve`` / ``addresses:`` and IP-address URLs, with or without ``--server-name``.

Every check here runs against real loopback servers from the lab. A pinned name is probed
without a DNS query for it: the lab's DNS server records every query it gets, and the
tests assert it got none for the pinned name.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.cli.main import main
from probe.lab import DnsServer
from probe.model.reasons import ExitCode
from tests.integration.conftest import Scene

#: Every check here must end well within this (seconds): the timeouts are short and
#: loopback answers at once.
BOUND = 5.0


def check(*args: str) -> tuple[int, str, float]:
    out = io.StringIO()
    start = time.monotonic()
    code = main(["check", *args], stdout=out)
    return code, out.getvalue(), time.monotonic() - start


def common(scene: Scene, ca_file: Path, dns: DnsServer) -> list[str]:
    return [
        "--resolver",
        dns.where,
        "--ca-file",
        str(ca_file),
        "--expect-network",
        "127.0.0.0/8",
        "--backend-header",
        "X-Backend",
        "--timeout",
        "4",
    ]


def queries_for(dns: DnsServer, name: str) -> list[tuple[str, str, str]]:
    return [q for q in dns.queries if q[0].rstrip(".") == name]


def test_pinned_name_that_is_not_in_dns_checks_one_node_of_two(
    scene: Any, ca_file: Path, dns: DnsServer
) -> None:
    lab: Scene = scene(nodes=2)
    dns.remove(lab.hostname)  # the record does not exist yet: NXDOMAIN if anyone asked
    node, other = lab.nodes[0].address, lab.nodes[1].address
    code, out, took = check(
        f"https://{lab.hostname}:{lab.port}/",
        "--resolve",
        f"{lab.hostname}:{lab.port}:{node}",
        "--expect-backends",
        "web-1,web-2",
        *common(lab, ca_file, dns),
    )

    assert code == ExitCode.OK, out
    assert f"DNS      {lab.hostname} → {node}  (pinned with --resolve; no DNS query)" in out
    assert f"  {node} " in out and other not in out  # only the pinned node was probed
    assert "backends web-1 2  web-2 2" in out  # Host and SNI were the name: the node served it
    assert queries_for(dns, lab.hostname) == []
    assert took < BOUND


def test_pinned_json_says_pinned_with_no_ttl_and_no_query(scene: Any, ca_file: Path, dns: DnsServer) -> None:
    lab: Scene = scene(nodes=2)
    dns.remove(lab.hostname)
    addresses = [n.address for n in lab.nodes]
    code, out, took = check(
        f"https://{lab.hostname}:{lab.port}/",
        "--resolve",
        f"{lab.hostname}:{lab.port}:{','.join(reversed(addresses))}",
        "--json",
        *common(lab, ca_file, dns),
    )
    target = json.loads(out)["targets"][0]

    assert code == ExitCode.OK, out
    assert target["dns"]["pinned"] is True and target["dns"]["pinned_by"] == "--resolve"
    assert target["dns"]["queries"] == [] and target["dns"]["resolver"] is None
    assert target["dns"]["answers"] == [{"address": a, "ttl": None, "expected": True} for a in addresses]
    assert [a["address"] for a in target["addresses"]] == addresses
    assert all(a["tls"]["verified"] for a in target["addresses"])
    assert queries_for(dns, lab.hostname) == []
    assert took < BOUND


def test_pinned_without_any_resolver_needs_none(scene: Any, ca_file: Path, dns: DnsServer) -> None:
    """No --resolver: nothing is resolved, so /etc/resolv.conf is never used (the guard would fail)."""
    lab: Scene = scene(nodes=1)
    dns.remove(lab.hostname)
    args = [a for a in common(lab, ca_file, dns) if a not in ("--resolver", dns.where)]
    code, out, took = check(
        f"https://{lab.hostname}:{lab.port}/",
        "--resolve",
        f"{lab.hostname}:{lab.port}:{lab.nodes[0].address}",
        *args,
    )

    assert code == ExitCode.OK, out
    assert "no DNS query" in out
    assert took < BOUND


def test_addresses_in_a_config_file(scene: Any, ca_file: Path, dns: DnsServer, tmp_path: Path) -> None:
    lab: Scene = scene(nodes=2)
    dns.remove(lab.hostname)
    config = tmp_path / "probe.yaml"
    target = {
        **lab.target,
        "name": "pinned",
        "addresses": [lab.nodes[1].address],
        "timeouts": {"deadline": 4},
    }
    config.write_text(yaml.safe_dump({"targets": [target]}))
    code, out, took = check("--config", str(config))

    assert code == ExitCode.OK, out
    assert f"{lab.hostname} → {lab.nodes[1].address}  (pinned with addresses; no DNS query)" in out
    assert lab.nodes[0].address not in out
    assert queries_for(dns, lab.hostname) == []
    assert took < BOUND


def test_ip_literal_url_with_server_name(scene: Any, ca_file: Path, dns: DnsServer) -> None:
    lab: Scene = scene(nodes=1)
    dns.remove(lab.hostname)
    node = lab.nodes[0].address
    code, out, took = check(
        f"https://{node}:{lab.port}/",
        "--server-name",
        lab.hostname,
        "--json",
        *common(lab, ca_file, dns),
    )
    target = json.loads(out)["targets"][0]

    assert code == ExitCode.OK, out
    assert target["name"] == lab.hostname and target["hostname"] == lab.hostname
    assert target["dns"]["pinned_by"] == "--server-name" and target["dns"]["queries"] == []
    address = target["addresses"][0]
    assert address["address"] == node
    # The certificate was verified for the name, and the name was the Host the node saw.
    assert address["tls"]["verified"] is True and address["tls"]["leaf"]["dns_names"] == [lab.hostname]
    assert target["backends"]["counts"] == {"web-1": 2, "web-2": 2}
    assert dns.queries == [q for q in dns.queries if lab.hostname not in q[0]]
    assert took < BOUND


def test_ip_literal_url_with_server_name_text(scene: Any, ca_file: Path, dns: DnsServer) -> None:
    lab: Scene = scene(nodes=1)
    node = lab.nodes[0].address
    code, out, took = check(
        f"https://{node}:{lab.port}/", "--server-name", lab.hostname, *common(lab, ca_file, dns)
    )

    assert code == ExitCode.OK, out
    assert (
        f"DNS      {lab.hostname} → {node}  (the URL's address, server name from --server-name; no DNS query)"
    ) in out
    assert took < BOUND


def test_ip_literal_url_with_a_server_name_the_certificate_lacks(
    scene: Any, ca_file: Path, dns: DnsServer
) -> None:
    lab: Scene = scene(nodes=1)
    node = lab.nodes[0].address
    code, out, took = check(
        f"https://{node}:{lab.port}/",
        "--server-name",
        "other.corp.example",
        "--json",
        *common(lab, ca_file, dns),
    )
    target = json.loads(out)["targets"][0]

    assert code == ExitCode.CRITICAL
    [failure] = target["failures"]
    assert failure["reason"] == "cert_hostname_mismatch" and failure["address"] == node
    assert "other.corp.example" in failure["detail"] and lab.hostname in failure["detail"]
    assert took < BOUND


def test_ip_literal_url_without_server_name_verifies_the_address(
    scene: Any, ca_file: Path, dns: DnsServer
) -> None:
    """Once refused; now checked as curl checks it: the node's certificate names no address."""
    lab: Scene = scene(nodes=1)
    node = lab.nodes[0].address
    code, out, took = check(f"https://{node}:{lab.port}/health", *common(lab, ca_file, dns))

    assert code == ExitCode.CRITICAL, out
    assert f"DNS      {node} → {node}  (the URL's address; no DNS query)" in out
    assert f"cert_hostname_mismatch {node}: certificate names no IP address" in out
    assert f"(it names {lab.hostname})" in out and "--server-name" in out
    assert set(lab.nodes[0].sni_names) == {None}  # the handshake and the one reading the chain
    assert queries_for(dns, node) == [] and took < BOUND


def test_pinned_set_differs_from_the_alias(scene: Any, ca_file: Path, dns: DnsServer) -> None:
    lab: Scene = scene(nodes=2)
    dns.remove(lab.hostname)
    alias = f"internal-{lab.hostname.split('.')[0]}-alb.elb.example"
    dns.set(alias, *[("A", n.address) for n in lab.nodes])
    node, other = lab.nodes[0].address, lab.nodes[1].address
    code, out, took = check(
        f"https://{lab.hostname}:{lab.port}/",
        "--resolve",
        f"{lab.hostname}:{lab.port}:{node}",
        "--expect-same-addresses-as",
        alias,
        "--json",
        *common(lab, ca_file, dns),
    )
    target = json.loads(out)["targets"][0]

    assert code == ExitCode.CRITICAL
    [failure] = target["failures"]
    assert failure["reason"] == "dns_alias_mismatch"
    assert failure["detail"] == (
        f"the addresses pinned for {lab.hostname} (with --resolve) differ from those {alias} "
        f"resolves to: only {alias} has {other}"
    )
    assert target["dns"]["alias"] == {
        "name": alias,
        "addresses": [node, other],
        "resolved": True,
        "matches": False,
    }
    # The alias was asked; the pinned name was not.
    assert queries_for(dns, alias) and queries_for(dns, lab.hostname) == []
    assert target["addresses"][0]["status"] == "ok"  # the node itself is fine
    assert took < BOUND


def test_pinned_set_equal_to_the_alias_matches(scene: Any, ca_file: Path, dns: DnsServer) -> None:
    lab: Scene = scene(nodes=2)
    dns.remove(lab.hostname)
    alias = f"internal-{lab.hostname.split('.')[0]}-alb.elb.example"
    dns.set(alias, *[("A", n.address) for n in lab.nodes])
    code, out, took = check(
        f"https://{lab.hostname}:{lab.port}/",
        "--resolve",
        f"{lab.hostname}:{lab.port}:{lab.nodes[1].address}",
        "--resolve",
        f"{lab.hostname}:{lab.port}:{lab.nodes[0].address}",
        "--expect-same-addresses-as",
        alias,
        *common(lab, ca_file, dns),
    )

    assert code == ExitCode.OK, out
    assert f"alias    {alias}: same addresses" in out
    assert queries_for(dns, lab.hostname) == []
    assert took < BOUND


def test_pinned_address_outside_expect_networks_is_never_connected_to(
    scene: Any, ca_file: Path, dns: DnsServer
) -> None:
    """10.0.1.17 is data only: the conftest guard fails any connect to it (internal_error here)."""
    lab: Scene = scene(nodes=1)
    dns.remove(lab.hostname)
    node = lab.nodes[0].address
    code, out, took = check(
        f"https://{lab.hostname}:{lab.port}/",
        "--resolve",
        f"{lab.hostname}:{lab.port}:10.0.1.17,{node}",
        "--json",
        *common(lab, ca_file, dns),
    )
    target = json.loads(out)["targets"][0]

    assert code == ExitCode.CRITICAL
    [failure] = target["failures"]
    assert failure["reason"] == "dns_unexpected_address" and failure["address"] == "10.0.1.17"
    assert failure["detail"] == (
        f"{lab.hostname} is pinned to 10.0.1.17 (with --resolve), outside the expected networks "
        "(127.0.0.0/8); not connected to"
    )
    assert {"address": "10.0.1.17", "ttl": None, "expected": False} in target["dns"]["answers"]
    assert [a["address"] for a in target["addresses"]] == [node]  # never connected to 10.0.1.17
    assert target["addresses"][0]["status"] == "ok"
    assert took < BOUND


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "www.corp.example:443",
            "--resolve: 'www.corp.example:443' must be NAME:PORT:ADDR[,ADDR...], as for curl",
        ),
        (
            "www.corp.example:https:127.0.10.1",
            "--resolve: 'www.corp.example:https:127.0.10.1' must be NAME:PORT:ADDR[,ADDR...], as for curl",
        ),
        (
            "www.corp.example:443:127.0.10.1,lb-node",
            "--resolve: 'lb-node' in 'www.corp.example:443:127.0.10.1,lb-node' is not an IP address",
        ),
        (
            "www.corp.example:8443:127.0.10.1",
            "--resolve: 'www.corp.example:8443:127.0.10.1' is for www.corp.example:8443, but the URL is "
            "for www.corp.example:443; curl would ignore this entry silently, probe refuses it",
        ),
        (
            "admin.corp.example:443:127.0.10.1",
            "--resolve: 'admin.corp.example:443:127.0.10.1' is for admin.corp.example:443, but the URL "
            "is for www.corp.example:443; curl would ignore this entry silently, probe refuses it",
        ),
    ],
)
def test_bad_resolve_is_one_line_and_exit_3(
    entry: str, message: str, capsys: pytest.CaptureFixture[str], dns: DnsServer
) -> None:
    before = len(dns.queries)
    code, out, took = check("https://www.corp.example/", "--resolve", entry, "--resolver", dns.where)
    err = capsys.readouterr().err

    assert code == ExitCode.UNKNOWN and out == ""
    assert err == f"probe: {message}\n"
    assert len(dns.queries) == before  # refused before anything was sent
    assert took < BOUND
