"""Mutual TLS against real ``openssl s_server -Verify 1 -CAfile client-ca.pem`` listeners on 127.x.

TLS 1.2 listeners refuse a client certificate in the handshake, TLS 1.3 ones after it (on
the first read). Each case is also put through ``curl --cert/--key`` and ``openssl
s_client -cert``: the verdicts agree (curl words one TLS 1.2 alert differently, as the
finding says).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from probe.cli.main import main
from probe.cli.share import share_file
from probe.lab import Lab, Pki
from probe.lab.pki import Issued, issue
from probe.model.deadline import Deadline
from probe.model.reasons import ExitCode, Reason, Status
from probe.report.text import render_text
from probe.stages import ocsp as ocsp_stage
from tests.support.curl import curl_get
from tests.support.helpers import FAST, make_plan, reasons, run
from tests.support.openssl import s_client
from tests.support.s_server import VERSIONS, SServer

#: A cycle against one loopback s_server: two requests, and after a refusal the handshake
#: that reads the listener's request (seconds).
BOUND = 3.0
NOW = dt.datetime.now(dt.UTC)
GET = b"GET / HTTP/1.0\r\n\r\n"


@pytest.fixture(scope="module")
def clients() -> Pki:
    """The CA the listeners trust for client certificates."""
    return Pki.create("probe test clients")


@pytest.fixture(scope="module")
def others() -> Pki:
    """A CA no listener trusts."""
    return Pki.create("probe test others")


@pytest.fixture
def client_files(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """``client_files(issued, name, chain=None)``: its certificate (with intermediates) and key, written."""

    def write(issued: Issued, name: str, chain: bytes | None = None) -> dict[str, str]:
        cert_file, key_file = issued.write(tmp_path / "clients", name, chain=chain)
        return {"cert_file": str(cert_file), "key_file": str(key_file)}

    return write


@pytest.fixture
def listener(
    new_ip: Any, pki: Pki, clients: Pki, ca_file: Path, tmp_path: Path
) -> Iterator[Callable[..., tuple[SServer, dict[str, Any]]]]:
    """``listener(version, *options, verify="-Verify")``: an s_server asking for a client certificate.

    Returns the server and the target fields that probe it (an IP-address URL with the
    server's name, so nothing is resolved).
    """
    started: list[SServer] = []
    client_ca = clients.write_ca(tmp_path / "client-ca.pem")

    def start(version: str, *options: str, verify: str = "-Verify") -> tuple[SServer, dict[str, Any]]:
        address = new_ip()
        name = f"mtls-{address.replace('.', '-')}.corp.example"
        asks = [verify, "1", "-verify_return_error", "-CAfile", str(client_ca)] if verify else []
        server = SServer(tmp_path, address, pki.leaf(name), VERSIONS[version], *asks, *options)
        started.append(server)
        target = {
            "url": f"https://{address}:{server.port}/",
            "server_name": name,
            "ca_file": str(ca_file),
            "expect_networks": ["127.0.0.0/8"],
            "requests_per_address": 2,
            "timeouts": dict(FAST),
        }
        return server, target

    yield start
    for server in started:
        server.stop()


def timed_run(target: dict[str, Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = run(target)
    return result, time.monotonic() - start


def reference(server: SServer, ca_file: Path, files: dict[str, str] | None) -> tuple[Any, Any]:
    """What curl --cert/--key and openssl s_client -cert conclude against ``server``."""
    host = server_name(server)
    curl_extra = ["--cert", files["cert_file"], "--key", files["key_file"]] if files else []
    curl = curl_get(ca_file, host, server.address, server.port, *curl_extra)
    openssl_extra = ["-servername", host, "-ign_eof"]
    if files:
        openssl_extra += [
            "-cert",
            files["cert_file"],
            "-cert_chain",
            files["cert_file"],
            "-key",
            files["key_file"],
        ]
    return curl, s_client(server.address, server.port, ca_file, *openssl_extra, stdin=GET)


def server_name(server: SServer) -> str:
    return f"mtls-{server.address.replace('.', '-')}.corp.example"


# --------------------------------------------------------------------------- the issue's inputs


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_good_client_certificate_is_presented_and_reported(
    listener: Any, clients: Pki, client_files: Any, ca_file: Path, version: str
) -> None:
    server, target = listener(version)
    files = client_files(clients.client("probe-good"), f"good{version}")
    result, elapsed = timed_run({**target, "tls_client": files})

    assert result.status is Status.OK, result.failures
    assert [a.status_code for a in result.addresses[0].attempts] == [200, 200]
    assert result.addresses[0].tls.version == f"TLSv{version}"
    client = result.target.client_certificate
    assert client is not None and client.cert_file == files["cert_file"]
    assert (
        client.leaf.subject == "CN=probe-good"
        and client.leaf.issuer == "CN=probe test clients Intermediate CA"
    )
    assert [c.common_name for c in client.chain] == ["probe test clients Intermediate CA"]
    assert elapsed < BOUND
    curl, openssl = reference(server, ca_file, files)
    assert curl.ok, curl.stderr
    assert openssl.returncode == 0 and "HTTP/1.0 200 ok" in openssl.output


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_expired_client_certificate_is_refused_with_its_alert_and_date(
    listener: Any, clients: Pki, client_files: Any, ca_file: Path, version: str
) -> None:
    server, target = listener(version)
    expired = clients.client(
        "probe-old", not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=3)
    )
    files = client_files(expired, f"expired{version}")
    result, elapsed = timed_run({**target, "tls_client": files})

    assert result.status is Status.CRITICAL
    assert reasons(result) == {
        Reason.TLS_CLIENT_CERT_REFUSED.value,
        Reason.TLS_CLIENT_CERT_EXPIRING_SOON.value,
    }
    refused = next(f for f in result.failures if f.reason is Reason.TLS_CLIENT_CERT_REFUSED)
    assert "the server refused the client certificate (alert certificate_expired)" in refused.detail
    assert (
        "probe presented 'probe-old' issued by CN=probe test clients Intermediate CA, which expired on"
        in refused.detail
    )
    assert "(3 days ago)" in refused.detail
    accepted = "the listener accepts certificates from CN=probe test clients Root CA"
    assert f"{accepted}, which issued this certificate's chain" in refused.detail
    warning = next(f for f in result.failures if f.reason is Reason.TLS_CLIENT_CERT_EXPIRING_SOON)
    assert warning.detail.startswith(f"client certificate 'probe-old' ({files['cert_file']}) expired on ")
    assert elapsed < BOUND
    curl, openssl = reference(server, ca_file, files)
    assert not curl.ok and openssl.returncode != 0 and "alert certificate expired" in openssl.output
    if version == "1.2":  # the difference the finding states
        assert curl.returncode == 60 and "curl reports this alert as its exit 60" in refused.detail
        assert refused.address is not None and result.addresses[0].attempts == ()
    else:  # after the handshake: the requests' finding
        assert "alert certificate expired" in curl.stderr and refused.detail.startswith("2 of 2 requests: ")


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_client_certificate_from_another_ca_is_refused_naming_the_accepted_ca(
    listener: Any, others: Pki, client_files: Any, ca_file: Path, version: str
) -> None:
    server, target = listener(version)
    files = client_files(others.client("probe-stranger"), f"other{version}")
    result, elapsed = timed_run({**target, "tls_client": files})

    assert result.status is Status.CRITICAL and reasons(result) == {Reason.TLS_CLIENT_CERT_REFUSED.value}
    [refused] = result.failures
    assert "(alert unknown_ca)" in refused.detail
    assert "probe presented 'probe-stranger' issued by CN=probe test others Intermediate CA" in refused.detail
    assert refused.detail.endswith(
        "the listener accepts certificates from CN=probe test clients Root CA, none of which issued this "
        "certificate's chain"
    )
    assert elapsed < BOUND
    curl, openssl = reference(server, ca_file, files)
    assert not curl.ok and "alert unknown ca" in curl.stderr
    assert openssl.returncode != 0 and "alert unknown ca" in openssl.output


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_no_client_certificate_where_one_is_required(listener: Any, ca_file: Path, version: str) -> None:
    server, target = listener(version)
    result, elapsed = timed_run(target)

    assert result.status is Status.CRITICAL and reasons(result) == {Reason.TLS_CLIENT_CERT_REQUIRED.value}
    [required] = result.failures
    expected_alert = "certificate_required" if version == "1.3" else "handshake_failure"
    assert f"(alert {expected_alert})" in required.detail
    assert "no client certificate is configured (tls_client, --cert/--key)" in required.detail
    assert required.detail.endswith("the listener accepts certificates from CN=probe test clients Root CA")
    assert result.target.client_certificate is None and elapsed < BOUND
    curl, openssl = reference(server, ca_file, None)
    assert not curl.ok and openssl.returncode != 0
    openssl_alert = "certificate required" if version == "1.3" else "handshake failure"
    assert f"alert {openssl_alert}" in openssl.output and f"alert {openssl_alert}" in curl.stderr


# --------------------------------------------------------------------------- siblings


def test_server_certificate_used_as_a_client_certificate_is_unsupported(
    listener: Any, clients: Pki, client_files: Any, ca_file: Path
) -> None:
    """A certificate with extended key usage serverAuth only: OpenSSL's listener checks the purpose."""
    server, target = listener("1.3")
    files = client_files(
        issue("svc.corp.example", clients.intermediate, dns_names=("svc.corp.example",)), "srv"
    )
    result, elapsed = timed_run({**target, "tls_client": files})

    assert reasons(result) == {Reason.TLS_CLIENT_CERT_REFUSED.value}
    detail = result.failures[0].detail
    assert "(alert unsupported_certificate)" in detail
    assert "its extended key usage (serverAuth) does not include clientAuth" in detail and elapsed < BOUND
    curl, _ = reference(server, ca_file, files)
    assert "alert unsupported certificate" in curl.stderr


def test_certificate_file_without_the_intermediate(
    listener: Any, clients: Pki, client_files: Any, ca_file: Path
) -> None:
    """The listener trusts the root; without the intermediate in cert_file it cannot build the chain."""
    server, target = listener("1.2")
    leaf = clients.client("probe-lonely")
    files = client_files(leaf, "lonely", chain=leaf.cert_pem)
    result, elapsed = timed_run({**target, "tls_client": files})

    assert reasons(result) == {Reason.TLS_CLIENT_CERT_REFUSED.value}
    detail = result.failures[0].detail
    assert "(alert unknown_ca)" in detail
    assert "(cert_file holds no intermediate: only the certificate was sent)" in detail
    assert detail.endswith("none of which issued it directly") and elapsed < BOUND
    curl, _ = reference(server, ca_file, files)
    assert "alert unknown ca" in curl.stderr


def test_listener_that_names_no_ca(listener: Any, others: Pki, client_files: Any) -> None:
    """Like an ALB that does not advertise its trust store's CA names."""
    _, target = listener("1.3", "-no_ca_names")
    files = client_files(others.client("probe-stranger"), "noname")
    result, _ = timed_run({**target, "tls_client": files})

    assert reasons(result) == {Reason.TLS_CLIENT_CERT_REFUSED.value}
    assert result.failures[0].detail.endswith("the listener names no CA it accepts")


@pytest.mark.parametrize("with_certificate", [False, True])
def test_listener_that_asks_but_does_not_require(
    listener: Any, clients: Pki, client_files: Any, with_certificate: bool
) -> None:
    """``-verify 1``: a certificate is asked for, not required; none is fine, a good one is sent."""
    _, target = listener("1.2", verify="-verify")
    if with_certificate:
        target = {**target, "tls_client": client_files(clients.client("probe-optional"), "optional")}
    result, elapsed = timed_run(target)

    assert result.status is Status.OK, result.failures
    assert [a.status_code for a in result.addresses[0].attempts] == [200, 200] and elapsed < BOUND


def test_encrypted_key_with_a_passphrase_file(
    listener: Any, clients: Pki, client_files: Any, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    _, target = listener("1.3")
    issued = clients.client("probe-locked")
    files = client_files(issued, "locked")
    Path(files["key_file"]).write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"open sesame"),
        )
    )
    secret = tmp_path / "locked.pass"
    secret.write_bytes(b"open sesame\n")
    secret.chmod(0o600)
    result, _ = timed_run({**target, "tls_client": {**files, "key_password_file": str(secret)}})

    assert result.status is Status.OK, result.failures


def test_client_certificate_expiring_soon_is_a_warning(
    listener: Any, clients: Pki, client_files: Any
) -> None:
    _, target = listener("1.3")
    soon = clients.client("probe-soon", not_after=NOW + dt.timedelta(days=10))
    files = client_files(soon, "soon")
    result, _ = timed_run({**target, "tls_client": files, "cert_expiry_warning_days": 14})

    assert result.status is Status.WARNING and reasons(result) == {Reason.TLS_CLIENT_CERT_EXPIRING_SOON.value}
    assert "client certificate 'probe-soon'" in result.failures[0].detail
    assert (
        "expires on" in result.failures[0].detail
        and "(in 10 days; warning at 14 days)" in result.failures[0].detail
    )
    assert result.addresses[0].status is Status.OK  # about the target, not an address


def test_stapling_handshake_presents_the_client_certificate(
    listener: Any, clients: Pki, client_files: Any
) -> None:
    """TLS 1.2: without a certificate the stapling handshake would fail as the first one does."""
    _, target = listener("1.2")
    files = client_files(clients.client("probe-staple"), "staple")
    plan = make_plan(**{**target, "tls_client": files, "ocsp": "staple"})
    staple = asyncio.run(ocsp_stage.staple(plan, plan.target.addresses[0], Deadline.after(3)))
    assert staple.error is None and staple.stapled is False  # s_server without -status_file staples nothing
    bare = make_plan(**{**target, "ocsp": "staple"})
    refused = asyncio.run(ocsp_stage.staple(bare, bare.target.addresses[0], Deadline.after(3)))
    assert refused.error is not None and "handshake failure" in refused.error


def test_direct_backend_with_its_own_client_certificate(
    scene: Any, listener: Any, clients: Pki, others: Pki, client_files: Any, ca_file: Path
) -> None:
    """The target's listener needs none; the backend checked directly requires one of its own."""
    _, hop = listener("1.3")
    lb = scene(backends=("web-1",))
    good = client_files(clients.client("probe-hop"), "hop")
    wrong = client_files(others.client("probe-wrong"), "wrong")
    entry = {"name": "web-1", "url": hop["url"], "server_name": hop["server_name"], "ca_file": str(ca_file)}
    target = {**lb.target, "tls_client": wrong, "backend": None, "timeouts": dict(FAST)}

    passed = run({**target, "direct_backends": [{**entry, "tls_client": good}]})
    assert passed.status is Status.OK, passed.failures
    [check] = passed.direct_backends
    assert check.status is Status.OK and check.client_certificate is not None
    assert check.client_certificate.leaf.common_name == "probe-hop"
    text = io.StringIO()
    render_text([passed], text, time.time())
    assert (
        "           client certificate CN=probe-hop ← CN=probe test clients Intermediate CA;"
        in text.getvalue()
    )
    assert "  client   certificate CN=probe-wrong ← CN=probe test others Intermediate CA;" in text.getvalue()

    inherited = run({**target, "direct_backends": [entry]})  # the target's certificate, refused
    [check] = inherited.direct_backends
    assert check.client_certificate is None
    assert [f.reason for f in check.failures] == [Reason.TLS_CLIENT_CERT_REFUSED]
    assert reasons(inherited) == {Reason.BACKEND_DIRECT_FAILED.value}
    assert "tls_client_cert_refused" in inherited.failures[0].detail


def test_command_line_report_json_and_refusals(
    listener: Any, clients: Pki, client_files: Any, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, target = listener("1.3")
    files = client_files(clients.client("probe-cli"), "cli")
    base = [target["url"], "--server-name", target["server_name"], "--ca-file", str(ca_file)]
    base += ["--expect-network", "127.0.0.0/8", "--timeout", "3", "--requests", "1"]
    tls = ["--cert", files["cert_file"], "--key", files["key_file"]]

    out = io.StringIO()
    assert main(["check", *base, *tls], stdout=out) == ExitCode.OK, out.getvalue()
    assert (
        "  client   certificate CN=probe-cli ← CN=probe test clients Intermediate CA; expires "
        in out.getvalue()
    )
    assert f"{files['cert_file']}, sent with 1 intermediate" in out.getvalue()

    out = io.StringIO()
    main(["check", *base, *tls, "--json"], stdout=out)
    schema = json.loads(share_file("schema/check-v1.schema.json").read_text())
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(json.loads(out.getvalue()))) == []
    document = json.loads(out.getvalue())["targets"][0]
    assert document["client_certificate"]["cert_file"] == files["cert_file"]
    assert document["client_certificate"]["certificate"]["subject"] == "CN=probe-cli"
    assert [c["common_name"] for c in document["client_certificate"]["chain"]] == [
        "probe test clients Intermediate CA"
    ]

    Path(files["key_file"]).chmod(0o644)
    capsys.readouterr()
    assert main(["check", *base, *tls], stdout=io.StringIO()) == ExitCode.UNKNOWN
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"probe: --key: {files['key_file']} holds a private key and is open"
    )

    assert main(["check", *base, "--key", files["key_file"]], stdout=io.StringIO()) == ExitCode.UNKNOWN
    assert capsys.readouterr().err == "probe: --cert: required\n"


def test_config_file_with_relative_paths_and_a_refused_key(
    listener: Any, clients: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Relative paths are next to the config file; a refusal names the file, the field and why."""
    _, target = listener("1.2")
    folder = tmp_path / "etc"
    clients.client("probe-config").write(folder, "client")
    config = folder / "probe.yaml"
    target = {**target, "tls_client": {"cert_file": "client.crt", "key_file": "client.key"}}
    config.write_text(yaml.safe_dump({"targets": [target]}))
    out = io.StringIO()
    assert main(["check", "--config", str(config)], stdout=out) == ExitCode.OK, out.getvalue()
    assert f"{folder / 'client.crt'}, sent with 1 intermediate" in out.getvalue()

    (folder / "client.key").chmod(0o640)
    capsys.readouterr()
    assert main(["check", "--config", str(config)], stdout=io.StringIO()) == ExitCode.UNKNOWN
    assert capsys.readouterr().err == (
        f"probe: {config}: targets[0].tls_client.key_file: {folder / 'client.key'} holds a private key "
        f"and is open to group (mode 0640); make it readable by its owner only (chmod 600 "
        f"{folder / 'client.key'}), as ssh requires of a private key\n"
    )


async def per_location_auth(reader: asyncio.StreamReader, writer: Any) -> None:
    """Ask for a client certificate after the request arrived, as Apache's per-location client auth.

    TLS 1.3 post-handshake authentication: a client that did not offer it gets a 403 (as
    from Apache); one that offered it and sends a certificate the CA issued gets a 200
    naming it; one that sends none gets OpenSSL's certificate_required alert.
    """
    await reader.readuntil(b"\r\n\r\n")
    tls = writer.get_extra_info("ssl_object")
    try:
        tls.verify_client_post_handshake()
    except ssl.SSLError:  # the client did not offer post-handshake authentication
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return
    writer.write(b"HTTP/1.1 ")  # the CertificateRequest goes out before these bytes
    await writer.drain()
    for _ in range(200):
        subject = dict(rdn[0] for rdn in (tls.getpeercert() or {}).get("subject", ()))
        if subject:
            break
        await asyncio.sleep(0.01)
    name = subject.get("commonName", "none")
    writer.write(f"200 OK\r\nContent-Length: 0\r\nX-Backend: {name}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()


@pytest.mark.parametrize("with_certificate", [True, False])
def test_certificate_asked_after_the_handshake(
    lab: Lab,
    new_ip: Any,
    pki: Pki,
    clients: Pki,
    client_files: Any,
    ca_file: Path,
    tmp_path: Path,
    with_certificate: bool,
) -> None:
    """TLS 1.3 post-handshake authentication, which probe offers as curl does."""
    address = new_ip()
    name = f"pha-{address.replace('.', '-')}.corp.example"
    node = lab.start_node(
        address,
        cert=pki.leaf(name),
        handler=per_location_auth,
        client_ca=clients.write_ca(tmp_path / "pha-ca.pem"),
        post_handshake_auth=True,
        workdir=tmp_path,
    )
    try:
        files = client_files(clients.client("probe-later"), "later")
        target = {
            "url": f"https://{address}:{node.port}/",
            "server_name": name,
            "ca_file": str(ca_file),
            "expect_networks": ["127.0.0.0/8"],
            "backend": {"header": "X-Backend"},
            "requests_per_address": 2,
            "timeouts": dict(FAST),
            **({"tls_client": files} if with_certificate else {}),
        }
        result, elapsed = timed_run(target)
        curl = curl_get(
            ca_file,
            name,
            address,
            node.port,
            *(["--cert", files["cert_file"], "--key", files["key_file"]] if with_certificate else []),
        )
    finally:
        lab.stop(node)

    assert elapsed < BOUND
    if with_certificate:
        assert result.status is Status.OK, result.failures
        assert result.backend_counts == {"probe-later": 2}  # the certificate reached the handler
        assert curl.ok, curl.stderr
    else:  # offered, answered with no certificate: the listener's alert
        assert reasons(result) == {Reason.TLS_CLIENT_CERT_REQUIRED.value}
        assert "(alert certificate_required)" in result.failures[0].detail
        assert not curl.ok and "alert certificate required" in curl.stderr
