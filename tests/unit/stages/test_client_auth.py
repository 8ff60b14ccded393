"""The client certificate's files, checked at config load, and the alerts of a refusal (no network)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from probe.config.models import TlsClientConfig
from probe.lab.pki import Issued, Pki, issue
from probe.model.facts import ClientCertificate
from probe.model.reasons import Reason
from probe.model.results import Failure
from probe.stages import client_auth
from probe.stages.client_auth import CertificateRequest, ClientCertError, classify_alert, explain
from tests.support.builders import DAY, NOW, cert


@pytest.fixture(scope="module")
def clients() -> Pki:
    return Pki.create("unit clients")


@pytest.fixture(scope="module")
def client(clients: Pki) -> Issued:
    return clients.client("probe-unit")


def write(client: Issued, folder: Path, name: str = "client") -> tuple[Path, Path]:
    return client.write(folder, name)


def load(cert_file: Path, key_file: Path | None = None, password: Path | None = None) -> Any:
    files = {"cert_file": cert_file, "key_file": key_file, "key_password_file": password}
    return client_auth.load(TlsClientConfig(**{k: str(v) for k, v in files.items() if v is not None}))


def refused(field: str, match: str, *args: Path | None) -> None:
    with pytest.raises(ClientCertError, match=match) as raised:
        load(*args)  # type: ignore[arg-type]
    assert raised.value.field == field and "\n" not in str(raised.value)


# --------------------------------------------------------------------------- accepted


def test_certificate_with_its_chain_and_key(client: Issued, tmp_path: Path) -> None:
    cert_file, key_file = write(client, tmp_path)
    loaded = load(cert_file, key_file)
    assert loaded.facts.cert_file == str(cert_file)
    assert loaded.facts.leaf.common_name == "probe-unit"
    assert [c.common_name for c in loaded.facts.chain] == ["unit clients Intermediate CA"]
    assert loaded.key_file == key_file and loaded.password is None and loaded.usage is None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_auth.install(context, loaded)  # OpenSSL takes them too


def test_key_in_the_certificate_file(client: Issued, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(client.chain_pem() + client.key_pem)
    both.chmod(0o600)
    assert load(both).key_file == both


def test_encrypted_key_with_its_passphrase_file(client: Issued, tmp_path: Path) -> None:
    cert_file, key_file = write(client, tmp_path)
    key_file.write_bytes(encrypted(client, b"s3cret"))
    secret = tmp_path / "pass"
    secret.write_bytes(b"s3cret\n")
    secret.chmod(0o600)
    assert load(cert_file, key_file, secret).password == b"s3cret"


# --------------------------------------------------------------------------- refused at load


def test_key_readable_by_others_is_refused(client: Issued, tmp_path: Path) -> None:
    cert_file, key_file = write(client, tmp_path)
    key_file.chmod(0o644)
    refused(
        "key_file",
        rf"^{key_file} holds a private key and is open to group and others \(mode 0644\); make it "
        rf"readable by its owner only \(chmod 600 {key_file}\), as ssh requires of a private key$",
        cert_file,
        key_file,
    )


def test_group_readable_key_in_the_certificate_file_is_refused(client: Issued, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(client.chain_pem() + client.key_pem)
    both.chmod(0o640)
    refused("cert_file", r"holds a private key and is open to group \(mode 0640\)", both)


def test_encrypted_key_without_a_passphrase_is_refused(client: Issued, tmp_path: Path) -> None:
    cert_file, key_file = write(client, tmp_path)
    key_file.write_bytes(encrypted(client, b"s3cret"))
    refused(
        "key_file",
        rf"^{key_file}: the private key is encrypted and no passphrase is given "
        r"\(key_password_file, --key-password-file\)$",
        cert_file,
        key_file,
    )


def test_wrong_passphrase_is_refused(client: Issued, tmp_path: Path) -> None:
    cert_file, key_file = write(client, tmp_path)
    key_file.write_bytes(encrypted(client, b"s3cret"))
    secret = tmp_path / "pass"
    secret.write_bytes(b"wrong\n")
    secret.chmod(0o600)
    refused(
        "key_password_file",
        rf"^the passphrase does not decrypt the private key in {key_file}$",
        cert_file,
        key_file,
        secret,
    )


def test_passphrase_file_readable_by_others_is_refused(client: Issued, tmp_path: Path) -> None:
    cert_file, key_file = write(client, tmp_path)
    secret = tmp_path / "pass"
    secret.write_bytes(b"s3cret\n")
    secret.chmod(0o604)
    refused(
        "key_password_file",
        r"holds a passphrase and is open to others \(mode 0604\)",
        cert_file,
        key_file,
        secret,
    )


def test_key_of_another_certificate_is_refused(clients: Pki, client: Issued, tmp_path: Path) -> None:
    cert_file, _ = write(client, tmp_path)
    _, other_key = write(clients.client("someone-else"), tmp_path, "other")
    refused(
        "key_file",
        rf"^the private key in {other_key} does not match the certificate in {cert_file} "
        r"\(CN=probe-unit\): they are not one key pair$",
        cert_file,
        other_key,
    )


def test_certificate_file_without_a_key_and_no_key_file(client: Issued, tmp_path: Path) -> None:
    cert_file, _ = write(client, tmp_path)
    refused("cert_file", rf"^{cert_file}: holds no PEM private key; give key_file \(--key\)$", cert_file)


def test_missing_and_empty_files(client: Issued, tmp_path: Path) -> None:
    _, key_file = write(client, tmp_path)
    refused("cert_file", "no such file", tmp_path / "absent.crt", key_file)
    empty = tmp_path / "empty.crt"
    empty.write_bytes(b"")
    refused("cert_file", rf"^{empty}: holds no PEM certificate$", empty, key_file)


def test_a_server_certificate_is_noted_as_not_made_for_clients(clients: Pki, tmp_path: Path) -> None:
    server = issue("svc.corp.example", clients.intermediate, dns_names=("svc.corp.example",))
    cert_file, key_file = write(server, tmp_path, "server")
    assert (
        load(cert_file, key_file).usage == "its extended key usage (serverAuth) does not include clientAuth"
    )


def encrypted(client: Issued, passphrase: bytes) -> bytes:
    return client.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


# --------------------------------------------------------------------------- alerts and explanations


@pytest.mark.parametrize(
    ("code", "reason", "alert"),
    [
        ("TLSV1_ALERT_UNKNOWN_CA", Reason.TLS_CLIENT_CERT_REFUSED, "unknown_ca"),
        ("SSLV3_ALERT_CERTIFICATE_EXPIRED", Reason.TLS_CLIENT_CERT_REFUSED, "certificate_expired"),
        ("SSLV3_ALERT_BAD_CERTIFICATE", Reason.TLS_CLIENT_CERT_REFUSED, "bad_certificate"),
        ("SSLV3_ALERT_UNSUPPORTED_CERTIFICATE", Reason.TLS_CLIENT_CERT_REFUSED, "unsupported_certificate"),
        ("SSLV3_ALERT_CERTIFICATE_REVOKED", Reason.TLS_CLIENT_CERT_REFUSED, "certificate_revoked"),
        ("TLSV1_ALERT_ACCESS_DENIED", Reason.TLS_CLIENT_CERT_REFUSED, "access_denied"),
        ("TLSV13_ALERT_CERTIFICATE_REQUIRED", Reason.TLS_CLIENT_CERT_REQUIRED, "certificate_required"),
    ],
)
def test_certificate_alerts_are_named_as_rfc_8446_names_them(code: str, reason: Reason, alert: str) -> None:
    exc = ssl.SSLError(1, "alert")
    exc.reason = code  # type: ignore[attr-defined]
    found = classify_alert(exc)
    assert found is not None and found[0] is reason and f"(alert {alert})" in found[1]


def test_an_alert_missing_from_pythons_table_is_read_from_openssls_text() -> None:
    exc = ssl.SSLError(1, "[SSL: UNKNOWN] tlsv13 alert certificate required (_ssl.c:2580)")
    exc.reason = None  # type: ignore[attr-defined]
    assert classify_alert(exc) == (
        Reason.TLS_CLIENT_CERT_REQUIRED,
        "the server requires a client certificate and got none (alert certificate_required)",
    )


def test_other_alerts_are_not_about_the_client_certificate() -> None:
    exc = ssl.SSLError(1, "alert")
    exc.reason = "SSLV3_ALERT_HANDSHAKE_FAILURE"  # type: ignore[attr-defined]
    assert classify_alert(exc) is None and client_auth.is_bare_handshake_failure(exc)


def test_without_a_client_certificate_any_refusal_says_one_is_required() -> None:
    failure = Failure(
        Reason.TLS_CLIENT_CERT_REFUSED, "the server refused the client certificate (alert bad_certificate)"
    )
    request = CertificateRequest(True, ("CN=Corp Client CA", *(f"CN=CA {n}" for n in range(6))))
    explained = explain(failure, None, request, NOW)
    assert explained.reason is Reason.TLS_CLIENT_CERT_REQUIRED
    assert explained.detail == (
        "the server refused the client certificate (alert bad_certificate); no client certificate is "
        "configured (tls_client, --cert/--key); the listener accepts certificates from CN=Corp Client CA, "
        "CN=CA 0, CN=CA 1, CN=CA 2, CN=CA 3 (and 2 more CAs)"
    )


def test_a_not_yet_valid_certificate_says_check_the_clocks(client: Issued, tmp_path: Path) -> None:
    loaded = load(*write(client, tmp_path))
    early = ClientCertificate("c.crt", cert("probe-unit", NOW + 90 * DAY, not_before=NOW + 2 * DAY))
    credentials = client_auth.ClientCredentials(
        cert_file=loaded.cert_file,
        key_file=loaded.key_file,
        password=None,
        facts=early,
        certificates=loaded.certificates,
        key=loaded.key,
    )
    failure = Failure(
        Reason.TLS_CLIENT_CERT_REFUSED,
        "the server refused the client certificate (alert certificate_expired)",
    )
    detail = explain(failure, credentials, CertificateRequest(True), NOW).detail
    assert "which is valid only from" in detail and "(in 2 days; check the clocks)" in detail
    assert detail.endswith("the listener names no CA it accepts")
