"""The daemon's HTTP endpoint, served for real on loopback and read with httpx."""

from __future__ import annotations

import gzip
import ipaddress
import platform
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from probe.daemon import httpserver, web
from probe.daemon.httpserver import WebServer
from probe.daemon.metrics import exposition, render_target
from probe.daemon.store import ResultStore
from probe.daemon.web import make_app
from probe.model.facts import TargetFacts
from probe.model.reasons import Reason
from probe.model.results import DnsResult, Failure, TargetResult
from tests.support.htmlpage import parse

NOW = 1_780_000_000.0
A1 = ipaddress.ip_address("10.0.0.1")


def result(name: str, failures: tuple[Failure, ...] = (), url: str | None = None) -> TargetResult:
    dns = DnsResult(f"{name}.corp.example", (), (), None, None, (), 0.001, None, ())
    return TargetResult(
        target=TargetFacts(
            name=name, url=url or f"https://{name}.corp.example/", hostname=f"{name}.corp.example", port=443
        ),
        started_timestamp=NOW,
        duration_seconds=0.1,
        dns=dns,
        addresses=(),
        failures=failures,
    )


@dataclass
class Served:
    store: ResultStore
    host: str
    port: int
    client: httpx.Client

    def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Send bytes on a new connection and read until the server closes it."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as conn:
            conn.sendall(data)
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def serve(store: ResultStore, host: str = "127.0.0.1") -> Iterator[Served]:
    server = WebServer(host, 0, make_app(store))
    bound_host, port = server.start()
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    client = httpx.Client(base_url=f"http://{shown}:{port}", trust_env=False, timeout=5.0)
    try:
        yield Served(store, bound_host, port, client)
    finally:
        client.close()
        server.stop()


@pytest.fixture(scope="module")
def _shared() -> Iterator[Served]:
    # One server for the module: stopping one waits for serve_forever's 0.5 s poll.
    yield from serve(ResultStore(["www", "api"], NOW, render=render_target))


@pytest.fixture
def served(_shared: Served) -> Served:
    """The shared server with its store back to two configured targets and no result."""
    _shared.store.configure([], NOW)
    _shared.store.configure(["www", "api"], NOW)
    return _shared


# --------------------------------------------------------------------------- /metrics


def test_metrics_as_text_by_default(served: Served) -> None:
    served.store.record(result("www"))
    response = served.client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    content_type = response.headers["content-type"]
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type
    assert "content-encoding" not in response.headers
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["probe_success"].samples[0].labels == {"target": "www"}
    assert families["probe_targets"].samples[0].value == 2


def test_metrics_as_openmetrics_when_asked(served: Served) -> None:
    served.store.record(result("www", (Failure(Reason.TCP_REFUSED, "refused", A1),)))
    response = served.client.get(
        "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "identity"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(response.text)}  # type: ignore[no-untyped-call]
    assert families["probe_failure"].type == "info"
    assert families["probe_cycles"].type == "counter"


def test_metrics_gzip_when_accepted(served: Served) -> None:
    with served.client.stream("GET", "/metrics", headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    text = gzip.decompress(raw).decode()
    assert "probe_targets 2.0" in text


def test_metrics_gzip_is_the_same_text_with_its_length(served: Served) -> None:
    served.store.record(result("www"))
    plain = served.client.get("/metrics", headers={"Accept-Encoding": "identity"})
    with served.client.stream("GET", "/metrics", headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-length"] == str(len(raw))
    assert plain.headers["content-length"] == str(len(plain.content))
    assert gzip.decompress(raw) == plain.content
    assert len(raw) < len(plain.content)


def test_a_body_larger_than_a_batch_is_served_whole_in_both_encodings() -> None:
    names = [f"t{i:04d}" for i in range(4000)]
    store = ResultStore(names, NOW, render=render_target)
    for name in names:
        store.record(result(name))
    expected = exposition(store.snapshot())
    assert len(expected) > 3 * web.BATCH_BYTES  # several pieces
    for served in serve(store):
        start = time.monotonic()
        plain = served.client.get("/metrics", headers={"Accept-Encoding": "identity"})
        with served.client.stream("GET", "/metrics", headers={"Accept-Encoding": "gzip"}) as response:
            raw = b"".join(response.iter_raw())
        assert time.monotonic() - start < 2
    assert plain.status_code == 200 and plain.content == expected
    assert plain.headers["content-length"] == str(len(expected))
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-length"] == str(len(raw))
    assert gzip.decompress(raw) == expected


def test_pieces_of_the_body_join_to_it_and_stay_near_the_batch_size() -> None:
    parts = [bytes([65 + i % 26]) * (1000 + i * 37 % 5000) for i in range(2000)]
    pieces = list(web._batches(parts))
    assert b"".join(pieces) == b"".join(parts)
    assert all(len(p) < web.BATCH_BYTES + 6000 for p in pieces) and len(pieces) > 10
    assert list(web._batches([])) == [] and list(web._batches([b"x"])) == [b"x"]
    assert gzip.decompress(web._gzip(iter(pieces))) == b"".join(parts)


def test_the_mmap_threshold_is_fixed_with_glibc() -> None:
    # glibc (Debian, the supported systems): set; elsewhere nothing changes.
    assert httpserver.fix_mmap_threshold() is (platform.libc_ver()[0] == "glibc")


def test_metrics_in_openmetrics_with_an_odd_version_is_text_not_an_error(served: Served) -> None:
    response = served.client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=x"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# EOF" not in response.text


def test_metrics_name_filter(served: Served) -> None:
    response = served.client.get("/metrics", params={"name[]": "probe_targets"})
    assert [f.name for f in text_string_to_metric_families(response.text)] == ["probe_targets"]


def test_head_metrics(served: Served) -> None:
    response = served.client.head("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


def test_head_healthy(served: Served) -> None:
    response = served.client.head("/-/healthy")
    assert response.status_code == 200
    assert response.content == b""


def test_head_response_has_no_body(served: Served) -> None:
    answer = served.raw(b"HEAD /-/healthy HTTP/1.0\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")  # the server's version (RFC 9110, 2.5)
    assert b"\r\nContent-Length: 3\r\n" in head
    assert body == b""


# --------------------------------------------------------------------------- health and readiness


def test_healthy(served: Served) -> None:
    response = served.client.get("/-/healthy")
    assert (response.status_code, response.text) == (200, "OK\n")


def test_ready_only_once_every_target_has_a_result(served: Served) -> None:
    response = served.client.get("/-/ready")
    assert response.status_code == 503
    assert response.text == "not ready: waiting for the first cycle of www, api\n"
    served.store.record(result("api"))
    response = served.client.get("/-/ready")
    assert response.status_code == 503
    assert "www" in response.text and "api" not in response.text
    served.store.record(result("www", (Failure(Reason.TCP_REFUSED, "refused", A1),)))
    response = served.client.get("/-/ready")
    assert (response.status_code, response.text) == (200, "ready\n")


def test_not_ready_again_when_a_target_is_added(served: Served) -> None:
    served.store.record(result("www"))
    served.store.record(result("api"))
    served.store.configure(["www", "api", "new"], NOW + 1)
    response = served.client.get("/-/ready")
    assert response.status_code == 503
    assert response.text.endswith("of new\n")


# --------------------------------------------------------------------------- status page


def test_status_page_lists_targets_status_and_escaped_reasons(served: Served) -> None:
    hostile = Failure(Reason.HTTP_BODY_MISMATCH, "body does not match '<script>alert(1)</script>'", A1)
    served.store.record(result("www", (hostile,), url="https://www.corp.example/?a=<b>&c=1"))
    response = served.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    page = parse(response.text)
    assert "script" not in page.tags and "b" not in page.tags
    www, api = page.rows_of("target")
    assert www.cells[:3] == ["www", "critical", "https://www.corp.example/?a=<b>&c=1"]
    assert www.cells[5] == "http_body_mismatch 10.0.0.1: body does not match '<script>alert(1)</script>'"
    assert api.cells[:2] == ["api", "waiting"]  # in config order
    assert "/metrics" in page.links and "/target/www" in page.links


def test_status_page_joins_several_findings(served: Served) -> None:
    findings = (
        Failure(Reason.DNS_RESOLVER_FAILOVER, "resolver failed"),
        Failure(Reason.TCP_REFUSED, "no", A1),
    )
    served.store.record(result("www", findings))
    www = parse(served.client.get("/").text).rows_of("target")[0]
    assert www.cells[1] == "critical"
    assert www.cells[5] == "dns_resolver_failover: resolver failed tcp_refused 10.0.0.1: no"


def test_target_page_and_its_json(served: Served) -> None:
    served.store.record(result("www", (Failure(Reason.TCP_REFUSED, "refused", A1),)))
    response = served.client.get("/target/www")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = parse(response.text)
    assert len(page.pres) == 1 and "tcp_refused 10.0.0.1: refused" in page.pres[0]
    assert "/target/www.json" in page.links
    document = served.client.get("/target/www.json")
    assert document.status_code == 200
    assert document.headers["content-type"] == "application/json; charset=utf-8"
    body = document.json()
    assert body["schema_version"] == 1 and body["status"] == "critical"
    assert [t["name"] for t in body["targets"]] == ["www"]
    assert body["targets"][0]["failures"][0]["reason"] == "tcp_refused"


def test_target_page_before_the_first_cycle(served: Served) -> None:
    response = served.client.get("/target/api")
    assert response.status_code == 200
    assert "No cycle of this target has completed yet" in response.text
    document = served.client.get("/target/api.json")
    assert document.status_code == 503
    assert document.text == "no cycle of api has completed yet\n"


@pytest.mark.parametrize(
    "path", ["/target/nope", "/target/nope.json", "/target/", "/target/www/x", "/target/WWW"]
)
def test_unknown_target_is_404(served: Served, path: str) -> None:
    served.store.record(result("www"))
    response = served.client.get(path)
    assert response.status_code == 404
    assert response.text == "no such target; see /\n"


def test_target_names_are_percent_encoded_in_links_and_paths(served: Served) -> None:
    name = "zoé/<1> a.json"
    served.store.configure(["www", name], NOW)
    served.store.record(result(name))
    page = parse(served.client.get("/").text)
    href = "/target/zo%C3%A9%2F%3C1%3E%20a.json"
    assert href in page.links
    assert [r.cells[0] for r in page.rows_of("target")] == ["www", name]
    assert served.client.get(href).status_code == 200
    assert served.client.get(href + ".json").json()["targets"][0]["name"] == name
    assert served.client.get("/target/zo%E9").status_code == 404  # not UTF-8


def test_head_target_page(served: Served) -> None:
    served.store.record(result("www"))
    response = served.client.head("/target/www")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


# --------------------------------------------------------------------------- methods and paths


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/metrics", "/", "/-/ready", "/nowhere"])
def test_other_methods_are_not_allowed(served: Served, method: str, path: str) -> None:
    response = served.client.request(method, path, content=b"x=1")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/nowhere", "/metrics/x", "/-/", "/index.html"])
def test_unknown_path_is_404(served: Served, path: str) -> None:
    response = served.client.get(path)
    assert response.status_code == 404
    assert "/metrics" in response.text


# --------------------------------------------------------------------------- hostile clients


def test_huge_request_line_is_refused_and_the_server_goes_on(served: Served) -> None:
    answer = served.raw(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:100]
    assert served.client.get("/-/healthy").status_code == 200


def test_huge_header_is_refused_and_the_server_goes_on(served: Served) -> None:
    answer = served.raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n")
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:100]
    assert served.client.get("/metrics").status_code == 200


def test_garbage_request_gets_a_400(served: Served) -> None:
    # A TLS ClientHello on the plain HTTP port.
    answer = served.raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert served.client.get("/-/healthy").status_code == 200


def test_a_silent_client_does_not_block_a_scrape(served: Served) -> None:
    silent = [socket.create_connection((served.host, served.port)) for _ in range(3)]
    try:
        time.sleep(0.05)  # let the server accept them
        start = time.monotonic()
        response = served.client.get("/metrics")
        elapsed = time.monotonic() - start
        assert response.status_code == 200
        assert elapsed < 1.0
    finally:
        for conn in silent:
            conn.close()


def test_a_silent_client_loses_its_connection() -> None:
    server = WebServer("127.0.0.1", 0, make_app(ResultStore(["www"], NOW)), client_timeout=0.2)
    assert WebServer("127.0.0.1", 0, make_app(ResultStore([], NOW))).client_timeout == 5.0  # the default
    host, port = server.start()
    try:
        with socket.create_connection((host, port), timeout=5) as conn:
            start = time.monotonic()
            assert conn.recv(100) == b""
            assert time.monotonic() - start < 3
    finally:
        server.stop()


# --------------------------------------------------------------------------- server


def test_start_returns_the_bound_port_and_stop_closes_it() -> None:
    store = ResultStore(["www"], NOW)
    server = WebServer("127.0.0.1", 0, make_app(store))
    host, port = server.start()
    assert host == "127.0.0.1" and port > 0
    with httpx.Client(trust_env=False, timeout=5) as client:
        assert client.get(f"http://127.0.0.1:{port}/-/healthy").status_code == 200
        server.stop()
        server.stop()  # a second stop is harmless
        with pytest.raises(httpx.ConnectError):
            client.get(f"http://127.0.0.1:{port}/-/healthy")


def test_listening_on_ipv6_loopback() -> None:
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:  # pragma: no cover - no IPv6 in this environment
        pytest.skip("no IPv6")
    for served in serve(ResultStore(["www"], NOW), host="::1"):
        assert served.host == "::1"
        assert served.client.get("/-/healthy").status_code == 200


def test_start_on_a_port_in_use_raises_oserror() -> None:
    store = ResultStore(["www"], NOW)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = WebServer("127.0.0.1", taken.getsockname()[1], make_app(store))
        with pytest.raises(OSError):
            server.start()
