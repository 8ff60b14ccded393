"""The endpoint locked down with an exporter-toolkit web config: TLS, client certs, basic auth."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from probe.config.errors import ConfigError
from probe.daemon.httpserver import WebServer
from probe.daemon.store import ResultStore
from probe.daemon.web import make_app
from probe.daemon.webconfig import BasicAuth, load_web_config, server_context
from probe.lab import Pki
from probe.lab.pki import issue
from tests.support.helpers import probe_cli

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("web")
    server_pki = Pki.create("endpoint")
    server = issue("127.0.0.1", server_pki.intermediate, ip_addresses=("127.0.0.1",))
    server_crt, server_key = server.write(folder, "server")
    clients = Pki.create("scrapers")
    client = issue("prometheus", clients.intermediate, client=True)
    client_crt, client_key = client.write(folder, "client")
    stranger = issue("stranger", Pki.create("strangers").intermediate, client=True)
    stranger_crt, stranger_key = stranger.write(folder, "stranger")
    client_ca = folder / "client-ca.pem"
    client_ca.write_bytes(clients.root.cert_pem + clients.intermediate.cert_pem)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    config = folder / "web.yml"
    config.write_text(
        "tls_server_config:\n"
        f"  cert_file: {server_crt}\n"
        f"  key_file: {server_key}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {client_ca}\n"
        "basic_auth_users:\n"
        f"  prometheus: '{hashed}'\n"
    )
    return {
        "config": config,
        "ca": server_pki.write_ca(folder / "server-ca.pem"),
        "client_crt": client_crt,
        "client_key": client_key,
        "stranger_crt": stranger_crt,
        "stranger_key": stranger_key,
        "folder": folder,
    }


@pytest.fixture(scope="module")
def endpoint(files: dict[str, Path]) -> Iterator[str]:
    config = load_web_config(files["config"])
    assert config.tls_server_config is not None
    store = ResultStore(["www"], time.time())
    app = make_app(store, BasicAuth(config.basic_auth_users))
    server = WebServer("127.0.0.1", 0, app, ssl_context=server_context(config.tls_server_config))
    host, port = server.start()
    yield f"https://{host}:{port}"
    server.stop()


def client(files: dict[str, Path], cert: str | None = "client", **kwargs: Any) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(files["ca"]))
    if cert:
        context.load_cert_chain(files[f"{cert}_crt"], files[f"{cert}_key"])
    return httpx.Client(verify=context, trust_env=False, timeout=5, **kwargs)


def test_scraper_with_certificate_and_password_gets_metrics(endpoint: str, files: dict[str, Path]) -> None:
    with client(files, auth=("prometheus", PASSWORD)) as scraper:
        response = scraper.get(endpoint + "/metrics")
        again = scraper.get(endpoint + "/-/healthy")  # second check comes from the cache
    assert response.status_code == 200
    assert "probe_targets 1.0" in response.text
    assert again.status_code == 200


def test_wrong_or_missing_password_is_401(endpoint: str, files: dict[str, Path]) -> None:
    with client(files, auth=("prometheus", "wrong")) as scraper:
        wrong = scraper.get(endpoint + "/metrics")
    with client(files) as scraper:
        missing = scraper.get(endpoint + "/metrics")
    with client(files, auth=("nobody", PASSWORD)) as scraper:
        unknown = scraper.get(endpoint + "/-/ready")
    for response in (wrong, missing, unknown):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic")
        assert "probe_" not in response.text


@pytest.mark.parametrize("path", ["/", "/target/www", "/target/www.json", "/target/nope"])
def test_status_pages_need_the_password_too(endpoint: str, files: dict[str, Path], path: str) -> None:
    with client(files) as browser:
        missing = browser.get(endpoint + path)
    with client(files, auth=("prometheus", "wrong")) as browser:
        wrong = browser.get(endpoint + path)
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.text == "unauthorized\n"
    with client(files, auth=("prometheus", PASSWORD)) as browser:
        allowed = browser.get(endpoint + path)
    assert allowed.status_code == {"/target/www.json": 503, "/target/nope": 404}.get(path, 200)


def innermost(caught: pytest.ExceptionInfo[httpx.HTTPError]) -> BaseException:
    """The exception at the bottom of an httpx error's chain: what the TLS or socket layer saw."""
    error: BaseException = caught.value
    while (below := error.__cause__ or error.__context__) is not None:
        error = below
    return error


def alert(caught: pytest.ExceptionInfo[httpx.HTTPError]) -> str | None:
    """The TLS alert the server sent, as OpenSSL names it (``ssl.SSLError.reason``)."""
    error = innermost(caught)
    assert isinstance(error, ssl.SSLError), repr(error)
    return error.reason


# TLS 1.3: the server judges the client's certificate after the client has finished its side of the
# handshake, so the client learns of the refusal from the alert on its first read (httpx.ReadError).


def test_client_without_certificate_is_refused(endpoint: str, files: dict[str, Path]) -> None:
    with (
        client(files, cert=None, auth=("prometheus", PASSWORD)) as scraper,
        pytest.raises(httpx.ReadError) as caught,
    ):
        scraper.get(endpoint + "/metrics")
    assert alert(caught) == "TLSV13_ALERT_CERTIFICATE_REQUIRED"


def test_client_with_a_certificate_from_another_ca_is_refused(endpoint: str, files: dict[str, Path]) -> None:
    with (
        client(files, cert="stranger", auth=("prometheus", PASSWORD)) as scraper,
        pytest.raises(httpx.ReadError) as caught,
    ):
        scraper.get(endpoint + "/metrics")
    assert alert(caught) == "TLSV1_ALERT_UNKNOWN_CA"


def test_plain_http_to_the_tls_endpoint_gets_nothing_and_the_server_goes_on(
    endpoint: str, files: dict[str, Path]
) -> None:
    plain = endpoint.replace("https://", "http://")
    with httpx.Client(trust_env=False, timeout=5) as scraper, pytest.raises(httpx.ReadError) as caught:
        scraper.get(plain + "/metrics")
    # OpenSSL sends no alert to a plaintext request; the connection is closed unread, i.e. reset
    assert isinstance(innermost(caught), ConnectionResetError), repr(innermost(caught))
    with client(files, auth=("prometheus", PASSWORD)) as scraper:
        assert scraper.get(endpoint + "/metrics").status_code == 200


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config: {cert_file: a}\n", "tls_server_config.key_file: Field required"),
        (
            "basic_auth_users: {u: plain}\n",
            "basic_auth_users: the password of 'u' must be a bcrypt hash ($2y$...)",
        ),
        ("http_server_config: {http2: true}\n", "http_server_config: unknown or unsupported key"),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireAnyClientCert}\n",
            "tls_server_config.client_auth_type: RequireAnyClientCert (accepting client certificates "
            "without verifying them) is not supported; use one of NoClientCert, VerifyClientCertIfGiven, "
            "RequireAndVerifyClientCert",
        ),
        (
            "tls_server_config: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}\n",
            "tls_server_config.cert_file: /nonexistent.crt: no such file",
        ),
    ],
)
def test_bad_web_config_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert str(caught.value) == f"{path}: {message}"


def test_daemon_refuses_a_bad_web_config_with_exit_3(tmp_path: Path) -> None:
    config = tmp_path / "probe.yaml"
    config.write_text("targets: [{url: 'https://www.corp.example/', resolvers: [127.0.0.1]}]\n")
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {u: plain}\n")
    result = probe_cli("run", "--config", str(config), "--web.config.file", str(web), timeout=30)
    assert result.returncode == 3
    assert (
        result.stderr
        == f"probe: {web}: basic_auth_users: the password of 'u' must be a bcrypt hash ($2y$...)\n"
    )
