"""End to end: the daemon's status pages opened in a real headless Chromium, as an SRE opens them.

``probe run`` runs as a subprocess against the demo lab (DNS, TLS nodes on 127.0.10.1-2,
backends web-1 and web-2) with two targets: ``demo`` (healthy) and ``pinned`` (its second
address, 127.0.10.9, refuses connections). Debian's ``chromium`` loads the pages with
``--dump-dom`` (the DOM after parsing and rendering) and ``--screenshot``; the screenshots
are written to ``${PROBE_ARTIFACTS:-/tmp/probe-artifacts}`` for CI to keep.

Chromium has no network at all: each page is fetched from this test's own loopback server
by the test and rendered from a saved copy by a Chromium started in a network namespace of
its own (``unshare --net``), so nothing it tries (DNS, Chromium's IPv6 reachability check,
updates) can leave the machine. Its switches also turn background networking off and make
its resolver answer "not found", and the pages carry a Content Security Policy that forbids
loading anything; the pages need nothing besides themselves.

Without ``chromium`` the tests are skipped, unless ``PROBE_REQUIRE_E2E=1`` (CI), which
turns the skip into a failure.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from probe.daemon.httpserver import WebServer
from probe.daemon.store import ResultStore
from probe.daemon.web import make_app
from probe.lab import DemoLab
from probe.model.reasons import Reason
from probe.model.results import Failure
from tests.e2e._procs import require_programs
from tests.support.builders import DAY, address_result, cert, http_attempt, target_result, tls_result
from tests.support.helpers import REPO, environment_without_proxies
from tests.support.htmlpage import Page, parse

pytestmark = pytest.mark.e2e

LOOPBACK = "127.0.0.1"
DOWN = "127.0.10.9"  # nothing listens there: the pinned target's second address is refused
#: Bound on one Chromium run (start, load, render, exit); about 2 s on an idle machine.
BROWSER_TIMEOUT = 60.0
#: Bound on the daemon having a result for both targets (the first cycles start within 1 s).
READY_TIMEOUT = 20.0
WINDOW = "1400,1000"

#: Switches that keep Chromium quiet and offline: no background requests, no sync, no
#: component or extension updates, no reporting, no proxy from the environment, and a host
#: resolver that resolves no name (pages are loaded by IP literal).
CHROMIUM_SWITCHES = (
    "--headless",
    "--no-sandbox",  # tests may run as root, where the sandbox refuses to start
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-sync",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--no-pings",
    "--metrics-recording-only",
    "--no-proxy-server",
    "--hide-scrollbars",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,"
    "AsyncDns",
    f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {LOOPBACK}",
)


# --------------------------------------------------------------------------- Chromium


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary (Debian's, without its launcher script's extra switches)."""
    found = require_programs(
        ("chromium",),
        "status page tests need {missing} on PATH; on Debian/Ubuntu: apt-get install chromium",
    )
    # Debian's /usr/bin/chromium is a shell script that adds switches (remote extensions
    # among them); the browser itself is beside its libraries.
    real = Path("/usr/lib/chromium/chromium")
    return str(real) if real.is_file() else found["chromium"]


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("PROBE_ARTIFACTS") or "/tmp/probe-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Browser:
    binary: str
    profile: Path

    def run(self, url: str, *switches: str) -> tuple[str, float]:
        """Render a page of this test's own loopback server in Chromium; its stdout and seconds.

        The page is fetched here (loopback only) and Chromium renders the saved copy inside
        a network namespace of its own (``unshare --net``): it has no network at all, so
        nothing it does (DNS, IPv6 reachability checks, updates) can leave this machine.
        The pages need nothing else: no scripts, no images, inline CSS.
        """
        parts = urllib.parse.urlsplit(url)
        assert parts.scheme == "http" and parts.hostname == LOOPBACK, url
        page = httpx.get(url, timeout=5, trust_env=False)  # a 404 page is rendered too
        copy = self.profile.parent / f"page-{abs(hash(url))}.html"
        copy.write_bytes(page.content)
        started = time.monotonic()
        done = subprocess.run(
            [
                "unshare",
                "--net",
                self.binary,
                *CHROMIUM_SWITCHES,
                f"--user-data-dir={self.profile}",
                *switches,
                copy.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=BROWSER_TIMEOUT,
            env=environment_without_proxies(),
            stdin=subprocess.DEVNULL,
        )
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stderr[-3000:]
        assert elapsed < BROWSER_TIMEOUT
        return done.stdout, elapsed

    def dom(self, url: str) -> Page:
        """The page's DOM after Chromium parsed and rendered it."""
        html, _ = self.run(url, "--dump-dom")
        assert html.strip(), "Chromium dumped no DOM"
        return parse(html)

    def screenshot(self, url: str, path: Path) -> Path:
        path.unlink(missing_ok=True)
        self.run(url, f"--screenshot={path}", f"--window-size={WINDOW}")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"no PNG at {path}"
        print(f"status page screenshot: {path}")
        return path


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Browser:
    return Browser(chromium, tmp_path_factory.mktemp("chromium-profile"))


# --------------------------------------------------------------------------- the daemon


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Daemon:
    base: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def daemon(demo: DemoLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """``probe run`` with the ``demo`` target and ``pinned`` (one of its two addresses is down)."""
    folder = tmp_path_factory.mktemp("status-daemon")
    port = _free_port()
    timeouts = {"dns": 1, "connect": 1, "tls": 1, "http": 1, "deadline": 1}
    demo_target = demo.target(interval=1, timeouts=timeouts)
    pinned = demo.target(
        name="pinned",
        interval=1,
        timeouts=timeouts,
        addresses=["127.0.10.1", DOWN],
        expect_same_addresses_as=None,
    )
    pinned.pop("resolvers")
    config = folder / "probe.yaml"
    config.write_text(yaml.safe_dump({"listen": f"{LOOPBACK}:{port}", "targets": [demo_target, pinned]}))
    log = (folder / "stderr.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "probe", "run", "--config", str(config)],
        cwd=REPO,
        env=environment_without_proxies(),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://{LOOPBACK}:{port}"

    def both_probed() -> bool:
        try:
            page = parse(httpx.get(base + "/", timeout=2, trust_env=False).text)
        except httpx.HTTPError:
            return False
        return {r.attrs.get("data-target") for r in page.rows_of("address")} == {"demo", "pinned"}

    try:
        _wait_for(both_probed, READY_TIMEOUT, "a result of both targets on the status page")
        yield Daemon(base, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


# --------------------------------------------------------------------------- tests


def test_overview_in_chromium_has_a_row_per_address(
    daemon: Daemon, browser: Browser, artifacts: Path, demo: DemoLab
) -> None:
    page = browser.dom(daemon.base + "/")
    rows = {(r.attrs["data-target"], r.attrs["data-address"]): r.cells for r in page.rows_of("address")}
    assert set(rows) == {
        ("demo", "127.0.10.1"),
        ("demo", "127.0.10.2"),
        ("pinned", "127.0.10.1"),
        ("pinned", DOWN),
    }
    # target, address, status, TLS, certificate expires, HTTP, backends seen, findings
    hostname = urllib.parse.urlsplit(demo.url).hostname
    for address in ("127.0.10.1", "127.0.10.2"):
        cells = rows[("demo", address)]
        assert cells[2:4] == ["ok", "TLSv1.3"]
        assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d UTC \(in \d+ days\) {hostname}", cells[4]), cells[
            4
        ]
        seen = dict(re.findall(r"(web-\d) ×(\d+)", cells[6]))
        assert seen and set(seen) <= {"web-1", "web-2"}, cells[6]
        assert sum(map(int, seen.values())) == len(cells[5].split()) and set(cells[5].split()) == {"200"}
        assert cells[7] == ""
    down = rows[("pinned", DOWN)]
    assert down[2:5] == ["critical", "no connection", "-"]
    assert down[7] == "tcp_refused"
    targets = {r.attrs["data-target"]: r.cells for r in page.rows_of("target")}
    assert targets["demo"][1] == "ok" and targets["pinned"][1] == "critical"
    assert "s ago" in targets["demo"][3] and "took" in targets["demo"][3]
    assert any(
        r.attrs["data-target"] == "pinned" and "first cycle → critical" in r.cells
        for r in page.rows_of("change")
    )
    assert "script" not in page.tags
    browser.screenshot(daemon.base + "/", artifacts / "status-page.png")


def test_target_page_in_chromium_has_the_report_and_the_json_link(
    daemon: Daemon, browser: Browser, artifacts: Path
) -> None:
    page = browser.dom(daemon.base + "/target/pinned")
    assert [r.attrs["data-address"] for r in page.rows_of("address")] == ["127.0.10.1", DOWN]
    assert len(page.pres) == 1
    report = page.pres[0]
    assert "pinned" in report and f"tcp_refused {DOWN}" in report and "CRITICAL" in report
    assert "/target/pinned.json" in page.links
    document = httpx.get(daemon.base + "/target/pinned.json", timeout=2, trust_env=False).json()
    assert document["targets"][0]["name"] == "pinned" and document["status"] == "critical"
    browser.screenshot(daemon.base + "/target/pinned", artifacts / "status-target.png")


def test_unknown_target_is_404_in_chromium_too(daemon: Daemon, browser: Browser) -> None:
    assert httpx.get(daemon.base + "/target/nope", timeout=2, trust_env=False).status_code == 404
    page = browser.dom(daemon.base + "/target/nope")
    assert "no such target" in page.text


@pytest.fixture(scope="module")
def hostile_site() -> Iterator[str]:
    """The endpoint in this process with hand-built results full of markup from the network."""
    now = time.time()
    a1 = ipaddress.ip_address("127.0.10.1")
    leaf = cert("<script>document.title='pwned'</script>.corp.example", now + 30 * DAY)
    body = Failure(Reason.HTTP_BODY_MISMATCH, "body was '</pre><script>document.title=1</script>'", a1)
    attempt = http_attempt("<img src=x onerror=alert(1)>", failures=(body,))
    address = address_result(a1, tls_result(a1, (leaf,), (leaf,)), [attempt])
    result = target_result("<b>x</b>", [address], started=now - 2, backend_rule=("header", "X-Backend"))
    store = ResultStore([result.target.name], now)
    store.record(result)
    server = WebServer(LOOPBACK, 0, make_app(store))
    host, port = server.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_hostile_names_stay_text_in_chromium(hostile_site: str, browser: Browser) -> None:
    for path in ("/", "/target/%3Cb%3Ex%3C%2Fb%3E"):
        page = browser.dom(hostile_site + path)
        assert not {"script", "img", "b"} & set(page.tags), path
        assert "<script>document.title='pwned'</script>.corp.example" in page.text
        assert "pwned" not in page.title and page.title.startswith("probe")
    overview = browser.dom(hostile_site + "/")
    assert [r.cells[6] for r in overview.rows_of("address")] == ["<img src=x onerror=alert(1)> ×1"]
