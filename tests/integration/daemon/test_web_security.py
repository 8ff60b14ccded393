"""The endpoint locked down with an exporter-toolkit web config: TLS, client certs, basic auth."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from probe.config.errors import ConfigError
from probe.daemon.httpserver import WebServer
from probe.daemon.store import ResultStore
from probe.daemon.web import make_app
from probe.daemon.webconfig import BasicAuth, load_web_config, server_context
from probe.lab import DemoLab, Pki
from probe.lab.pki import issue
from tests.integration.daemon.test_daemon import free_port, wait_for
from tests.support.helpers import REPO, environment_without_proxies, probe_cli

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


@pytest.mark.parametrize(
    ("users", "message"),
    [
        ("{u: plain}", "the password of 'u' must be a bcrypt hash ($2y$...)"),
        (
            "{alice: $2y$10$short}",
            "the password hash of 'alice' is not a valid bcrypt hash: "
            "$2y$, a cost of 04 to 31, $ and 53 characters, as htpasswd -nB writes it",
        ),
    ],
)
def test_daemon_refuses_a_bad_web_config_with_exit_3(tmp_path: Path, users: str, message: str) -> None:
    config = tmp_path / "probe.yaml"
    config.write_text("targets: [{url: 'https://www.corp.example/', resolvers: [127.0.0.1]}]\n")
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users: {users}\n")
    result = probe_cli("run", "--config", str(config), "--web.config.file", str(web), timeout=30)
    assert result.returncode == 3
    assert result.stderr == f"probe: {web}: basic_auth_users: {message}\n"


@pytest.mark.parametrize(
    ("password", "name"),
    [(PASSWORD + "x" * 60, "over 72 bytes"), ("x" * 10_000, "10,000 bytes"), ("a\0b", "a NUL byte")],
)
def test_a_password_bcrypt_cannot_check_is_a_401(
    endpoint: str, files: dict[str, Path], password: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with client(files, auth=("prometheus", password)) as scraper:
        response = scraper.get(endpoint + "/metrics")
    assert response.status_code == 401, name
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


def exchange(endpoint: str, files: dict[str, Path], request: bytes) -> bytes:
    """Send ``request`` as raw bytes over TLS with the client certificate; the answer's first bytes."""
    host, port = endpoint.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(files["ca"]))
    context.load_cert_chain(files["client_crt"], files["client_key"])
    with (
        socket.create_connection((host, int(port)), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        tls.sendall(request)
        return tls.recv(4096)


@pytest.mark.parametrize(
    "value",
    [b"Basic \xc3\xa9t\xc3\xa9", b"Basic \xff\xfe", "Basic prométheus:x".encode()],
)
def test_an_authorization_header_that_is_not_ascii_is_a_401_without_a_traceback(
    endpoint: str, files: dict[str, Path], value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # It was a 500 and a traceback in the log for every such request, from any client.
    request = b"GET /metrics HTTP/1.1\r\nHost: probe\r\nAuthorization: " + value + b"\r\n\r\n"
    answer = exchange(endpoint, files, request)
    assert answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), answer
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


@pytest.mark.parametrize("field", ["cert_file", "key_file", "client_ca_file"])
def test_the_web_config_files_are_read_with_the_pem_cap(
    tmp_path: Path, files: dict[str, Path], field: str
) -> None:
    settings = {
        "cert_file": str(files["folder"] / "server.crt"),
        "key_file": str(files["folder"] / "server.key"),
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": str(files["folder"] / "client-ca.pem"),
        field: "/dev/zero",
    }
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"tls_server_config": settings}))
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert str(caught.value) == (
        f"{path}: tls_server_config.{field}: /dev/zero: is a character device, not a regular file"
    )


def test_sighup_reloads_the_web_config_and_refuses_a_bad_one(demo: DemoLab, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "probe.yaml"
    target = demo.target(
        interval=1, timeouts={"dns": 0.5, "connect": 0.5, "tls": 0.5, "http": 0.5, "deadline": 1}
    )
    config.write_text(yaml.safe_dump({"listen": f"127.0.0.1:{port}", "targets": [target]}))
    web = tmp_path / "web.yml"
    old = bcrypt.hashpw(b"old", bcrypt.gensalt(rounds=4)).decode()
    web.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": old}}))
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "probe", "run", "--config", str(config), "--web.config.file", str(web)],
            cwd=REPO,
            env=environment_without_proxies(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    base = f"http://127.0.0.1:{port}/-/healthy"

    def status(password: str) -> int:
        try:
            return httpx.get(base, auth=("prometheus", password), timeout=2, trust_env=False).status_code
        except httpx.HTTPError:
            return 0

    try:
        wait_for(lambda: status("old") == 200, 20, "the daemon")
        web.write_text("basic_auth_users: {prometheus: $2y$10$short}\n")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in log.read_text(), 10, "the refusal")
        assert status("old") == 200  # the running web config stays
        new = bcrypt.hashpw(b"new", bcrypt.gensalt(rounds=4)).decode()
        web.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": new}}))
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: status("new") == 200, 10, "the new password")
        assert status("old") == 401
    finally:
        process.terminate()
        process.wait(10)
    refused = [line for line in log.read_text().splitlines() if "reload refused" in line]
    assert len(refused) == 1
    assert "the password hash of 'prometheus' is not a valid bcrypt hash" in refused[0]
