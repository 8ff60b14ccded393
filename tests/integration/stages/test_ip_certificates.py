"""IP-address URLs without a server name: no SNI, the certificate verified against the address.

As curl verifies ``https://127.0.40.1/`` and ``openssl s_client -verify_ip`` does: the
address must be an iPAddress entry of the certificate's subjectAltName (RFC 5280
§4.2.1.6), never a DNS name that spells it, never the CN. Each case runs against a real
loopback TLS server from the lab and is put through curl and ``openssl s_client`` too.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client import CollectorRegistry

from probe._text import host_port
from probe.cli.main import main
from probe.cli.share import share_file
from probe.daemon.metrics import ProbeCollector
from probe.daemon.store import ResultStore
from probe.lab import Lab, Pki, TlsNode
from probe.lab.pki import Issued, issue
from probe.model.deadline import Deadline
from probe.model.reasons import ExitCode, Reason, Status
from probe.stages import ocsp as ocsp_stage
from tests.support.curl import CERTIFICATE_REFUSED, curl_get
from tests.support.helpers import FAST, make_plan, reasons, run
from tests.support.openssl import s_client

#: A check against one loopback node ends well within this (seconds).
BOUND = 3.0


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def echo_host(reader: asyncio.StreamReader, writer: Any) -> None:
    """Answer with the request's Host header as the backend's name (``X-Backend``)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    host = next(
        (line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("host:")), ""
    )
    writer.write(
        f"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Backend: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()


@pytest.fixture
def node(lab: Lab, tmp_path: Path) -> Any:
    """``node(address, cert)``: a TLS node at ``address`` sending ``cert``, answering with the Host it got."""
    started: list[TlsNode] = []

    def start(address: str, cert: Issued) -> TlsNode:
        server = lab.start_node(address, 0, cert=cert, handler=echo_host, workdir=tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        lab.stop(server)


def target(server: TlsNode, ca_file: Path, **fields: Any) -> dict[str, Any]:
    return {
        "url": f"https://{host_port(server.address, server.port)}/health",
        "ca_file": str(ca_file),
        "expect_networks": ["127.0.0.0/8", "::1/128"],
        "backend": {"header": "X-Backend"},
        "requests_per_address": 2,
        "timeouts": dict(FAST),
        **fields,
    }


def timed_run(fields: dict[str, Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = run(fields)
    return result, time.monotonic() - start


# --------------------------------------------------------------------------- the issue's inputs


def test_certificate_naming_only_the_address_verifies_without_sni(
    node: Any, new_ip: Any, pki: Pki, ca_file: Path
) -> None:
    address = new_ip()
    server = node(address, pki.address_leaf(address))
    result, elapsed = timed_run(target(server, ca_file))

    assert result.status is Status.OK, result.failures
    [probed] = result.addresses
    assert probed.tls.verified and probed.tls.leaf.ip_addresses == (address,)
    assert probed.tls.leaf.dns_names == ()
    # No SNI on any handshake (RFC 6066 §3), Host is the address and its port.
    assert server.sni_names == [None, None]
    assert result.backend_counts == {f"{address}:{server.port}": 2}
    # Pinned to the URL's address: nothing resolved.
    assert result.dns.pinned_by == "url" and result.dns.queries == ()
    assert result.target.hostname == address and result.target.name == address
    assert elapsed < BOUND
    # What a real client concludes.
    assert curl_get(ca_file, address, address, server.port).ok
    assert s_client(address, server.port, ca_file, "-verify_ip", address).ok


def test_certificate_for_another_address_is_a_mismatch_naming_both(
    node: Any, new_ip: Any, pki: Pki, ca_file: Path
) -> None:
    address, other = new_ip(), new_ip()
    server = node(address, pki.address_leaf(other))
    result, elapsed = timed_run(target(server, ca_file))

    assert result.status is Status.CRITICAL and reasons(result) == {Reason.CERT_HOSTNAME_MISMATCH.value}
    [failure] = result.failures
    assert failure.detail == f"certificate is valid for the addresses {other}, not {address}"
    assert str(failure.address) == address
    assert result.addresses[0].tls.verify_code == 64  # X509_V_ERR_IP_ADDRESS_MISMATCH
    assert result.addresses[0].attempts == ()  # as curl: no request to an unverified server
    assert elapsed < BOUND
    assert curl_get(ca_file, address, address, server.port).returncode == CERTIFICATE_REFUSED
    refused = s_client(address, server.port, ca_file, "-verify_ip", address)
    assert not refused.ok and refused.verify == "64 (IP address mismatch)", refused.output


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_ipv6_literal_url_verifies_against_the_address(node: Any, pki: Pki, ca_file: Path) -> None:
    server = node("::1", pki.address_leaf("::1"))
    result, elapsed = timed_run(target(server, ca_file))

    assert result.status is Status.OK, result.failures
    assert [str(a.address) for a in result.addresses] == ["::1"]
    assert server.sni_names == [None, None]
    assert result.backend_counts == {f"[::1]:{server.port}": 2}  # Host in brackets (RFC 9110 §7.2)
    assert result.target.name == "0::1"  # a target name starts with a letter or digit
    assert elapsed < BOUND
    assert curl_get(ca_file, "::1", "::1", server.port).ok
    assert s_client("::1", server.port, ca_file, "-verify_ip", "::1").ok


def test_with_server_name_the_name_is_verified_as_before(
    node: Any, new_ip: Any, pki: Pki, ca_file: Path
) -> None:
    address = new_ip()
    server = node(address, pki.leaf("appliance.corp.example", ip_addresses=(address,)))
    result, elapsed = timed_run(target(server, ca_file, server_name="appliance.corp.example"))

    assert result.status is Status.OK, result.failures
    assert server.sni_names == ["appliance.corp.example"] * 2
    assert result.backend_counts == {f"appliance.corp.example:{server.port}": 2}
    assert result.dns.pinned_by == "server_name" and elapsed < BOUND


# --------------------------------------------------------------------------- siblings


def test_address_written_as_a_dns_name_does_not_cover_it(
    node: Any, new_ip: Any, pki: Pki, ca_file: Path
) -> None:
    """A frequent mistake: ``DNS:127.0.40.1`` instead of ``IP:127.0.40.1``. curl and OpenSSL refuse it."""
    address = new_ip()
    server = node(address, issue(address, pki.intermediate, dns_names=(address,)))
    result, elapsed = timed_run(target(server, ca_file))

    assert reasons(result) == {Reason.CERT_HOSTNAME_MISMATCH.value}
    detail = result.failures[0].detail
    assert f"names {address} only as text (a DNS name {address}), not as an iPAddress" in detail
    assert "RFC 5280 §4.2.1.6" in detail and elapsed < BOUND
    assert curl_get(ca_file, address, address, server.port).returncode == CERTIFICATE_REFUSED
    assert s_client(address, server.port, ca_file, "-verify_ip", address).verify == "64 (IP address mismatch)"


def test_certificate_with_dns_names_only_says_to_give_the_server_name(
    node: Any, new_ip: Any, pki: Pki, ca_file: Path
) -> None:
    address = new_ip()
    server = node(address, pki.leaf("svc.corp.example"))
    result, _ = timed_run(target(server, ca_file))

    assert reasons(result) == {Reason.CERT_HOSTNAME_MISMATCH.value}
    assert result.failures[0].detail == (
        f"certificate names no IP address, so it is not valid for the address {address} "
        "(it names svc.corp.example); give the DNS name it is issued for with server_name (--server-name)"
    )


def test_stapling_handshake_sends_no_sni_for_an_address(
    node: Any, new_ip: Any, pki: Pki, ca_file: Path
) -> None:
    address = new_ip()
    server = node(address, pki.address_leaf(address))
    plan = make_plan(**target(server, ca_file, ocsp="staple"))
    staple = asyncio.run(ocsp_stage.staple(plan, plan.target.addresses[0], Deadline.after(3)))

    assert staple.error is None and staple.stapled is False  # the lab node staples nothing
    assert server.sni_names == [None]


def test_command_line_report_and_json(node: Any, new_ip: Any, pki: Pki, ca_file: Path) -> None:
    address = new_ip()
    server = node(address, pki.address_leaf(address))
    url = f"https://{address}:{server.port}/health"
    options = ["--ca-file", str(ca_file), "--expect-network", "127.0.0.0/8", "--timeout", "3"]
    out = io.StringIO()
    start = time.monotonic()
    code = main(["check", url, *options], stdout=out)
    text = out.getvalue()

    assert code == ExitCode.OK, text
    assert f"DNS      {address} → {address}  (the URL's address; no DNS query)" in text
    assert f"{address}  {url}  OK" in text
    out = io.StringIO()
    main(["check", url, "--json", *options], stdout=out)
    schema = json.loads(share_file("schema/check-v1.schema.json").read_text())
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(json.loads(out.getvalue()))) == []
    document = json.loads(out.getvalue())["targets"][0]
    assert document["hostname"] == address and document["name"] == address
    assert document["dns"]["pinned_by"] == "url" and document["dns"]["queries"] == []
    assert document["addresses"][0]["tls"]["leaf"]["ip_addresses"] == [address]
    assert time.monotonic() - start < 2 * BOUND


def test_baseline_and_metrics_name_the_target_by_its_address(
    node: Any, new_ip: Any, pki: Pki, ca_file: Path, tmp_path: Path
) -> None:
    address = new_ip()
    server = node(address, pki.address_leaf(address))
    url = f"https://{address}:{server.port}/health"
    options = ["--ca-file", str(ca_file), "--expect-network", "127.0.0.0/8", "--timeout", "3"]
    baseline = tmp_path / "before.json"
    assert main(["check", url, *options, "--save-baseline", str(baseline)], stdout=io.StringIO()) == 0
    assert [t["name"] for t in json.loads(baseline.read_text())["targets"]] == [address]
    out = io.StringIO()
    assert main(["check", url, *options, "--baseline", str(baseline), "--json"], stdout=out) == ExitCode.OK
    assert json.loads(out.getvalue())["baseline"]["changes"] == []  # the same target, the same address

    result = run(target(server, ca_file))
    store = ResultStore([result.target.name], time.time())
    store.record(result)
    registry = CollectorRegistry()
    registry.register(ProbeCollector(store))
    assert registry.get_sample_value("probe_dns_pinned", {"target": address}) == 1
    assert registry.get_sample_value("probe_tls_verified", {"target": address, "address": address}) == 1
    assert registry.get_sample_value("probe_dns_lookup_time_seconds", {"target": address}) is None
