"""The status pages rendered from hand-built results: what an SRE reads, and nothing hostile runs."""

from __future__ import annotations

import io
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType

import pytest

from probe.daemon import status_page
from probe.daemon.status_page import json_href, overview_page, target_href, target_json, target_page
from probe.daemon.store import Snapshot, TargetState, accumulate
from probe.model.reasons import Reason
from probe.model.results import Failure, TargetResult, TlsResult
from probe.report.document import to_json
from probe.report.text import render_text
from probe.stages.certs import format_time
from tests.support.builders import (
    DAY,
    NOW,
    address_result,
    cert,
    http_attempt,
    target_result,
    tls_result,
    unconnected_tls,
)
from tests.support.htmlpage import Page, parse

A1 = ipaddress.ip_address("10.0.0.1")
A2 = ipaddress.ip_address("10.0.0.2")
A3 = ipaddress.ip_address("10.0.0.3")
VERSION = "9.9.9"

LEAF = cert("www.corp.example", NOW + 40 * DAY)
INTERMEDIATE = cert("Corp Intermediate CA", NOW + 400 * DAY, issuer="Corp Root")
ROOT = cert("Corp Root", NOW + 4000 * DAY, issuer="Corp Root")
HOSTILE_NAME = "<b>evil</b>"
HOSTILE_CN = "<script>alert(1)</script>.corp.example"
HOSTILE_BACKEND = "<img src=x onerror=alert(1)>"
HOSTILE_DETAIL = "body was '</pre><script>alert(2)</script>'"


def healthy(name: str = "www", started: float = NOW - 65) -> TargetResult:
    """Two addresses (TLS 1.3 and 1.2), three requests each, backends by header."""
    chain, verified = (LEAF, INTERMEDIATE), (LEAF, INTERMEDIATE, ROOT)
    addresses = [
        address_result(
            A1, tls_result(A1, chain, verified), [http_attempt(b) for b in ("web-1", "web-2", "web-1")]
        ),
        address_result(
            A2,
            tls_result(A2, chain, verified, version="TLSv1.2"),
            [http_attempt("web-2"), http_attempt(None)] * 1,
        ),
    ]
    return target_result(name, addresses, started=started, backend_rule=("header", "X-Backend"))


def hostile(started: float = NOW - 5) -> TargetResult:
    leaf = cert(HOSTILE_CN, NOW + 5 * DAY)
    expiring = Failure(Reason.CERT_EXPIRING_SOON, "the certificate expires in 5 days", A1)
    body = Failure(Reason.HTTP_BODY_MISMATCH, HOSTILE_DETAIL, A1)
    attempt = http_attempt(HOSTILE_BACKEND, failures=(body,))
    address = address_result(A1, tls_result(A1, (leaf, INTERMEDIATE), (leaf, INTERMEDIATE, ROOT)), [attempt])
    refused = Failure(Reason.TCP_REFUSED, "connection refused", A3)
    down = address_result(A3, unconnected_tls(A3, refused))
    return target_result(
        HOSTILE_NAME,
        [address, down],
        extra=(expiring,),
        started=started,
        backend_rule=("header", "X-Backend"),
        url="https://x.corp.example/?q=<i>&a=1",
    )


def snapshot(
    *histories: Sequence[TargetResult], configured: Sequence[str] = (), reload_ok: bool = True
) -> Snapshot:
    """A snapshot whose targets went through these cycles, plus ``configured`` ones still waiting."""
    targets: dict[str, TargetState] = {}
    for cycles in histories:
        state: TargetState | None = None
        for result in cycles:
            state = accumulate(state, result)
        assert state is not None
        targets[state.result.target.name] = state
    names = (*targets, *configured)
    return Snapshot(MappingProxyType(targets), names, reload_ok, NOW - 3600)


def overview(snap: Snapshot) -> tuple[str, Page]:
    html = overview_page(snap, NOW, VERSION)
    return html, parse(html)


# --------------------------------------------------------------------------- overview


def test_overview_has_a_row_per_address_with_status_tls_expiry_and_backends() -> None:
    _, page = overview(snapshot([healthy()]))
    rows = page.rows_of("address")
    assert [(r.attrs["data-target"], r.attrs["data-address"]) for r in rows] == [
        ("www", "10.0.0.1"),
        ("www", "10.0.0.2"),
    ]
    expiry = f"{format_time(NOW + 40 * DAY)} (in 40 days) www.corp.example"
    assert rows[0].cells == [
        "www",
        "10.0.0.1",
        "ok",
        "TLSv1.3",
        expiry,
        "200 200 200",
        "web-1 ×2, web-2 ×1",
        "",
    ]
    assert rows[1].cells[3] == "TLSv1.2"
    assert rows[1].cells[6] == "web-2 ×1, 1 response not identified"


def test_overview_has_a_row_per_target_with_the_last_cycle_and_the_last_change() -> None:
    ok = healthy(started=NOW - 600)
    broken = replace(healthy(started=NOW - 300), failures=(Failure(Reason.TCP_REFUSED, "refused", A2),))
    again = replace(broken, started_timestamp=NOW - 65)
    _, page = overview(snapshot([ok, broken, again], configured=["api"]))
    www, api = page.rows_of("target")
    assert www.cells[:3] == ["www", "critical", "https://www.corp.example/"]
    # The last cycle ended 64.9 s ago; the state changed when the cycle 300 s ago ended.
    assert www.cells[3] == "2026-05-28 20:25:35 UTC (65 s ago), took 100 ms"
    assert www.cells[4] == "2026-05-28 20:21:40 UTC (5 min ago)"
    assert www.cells[5] == "tcp_refused 10.0.0.2: refused"
    assert api.cells[:2] == ["api", "waiting"] and "no cycle completed yet" in api.cells[3]
    assert "/target/www" in page.links and "/target/api" in page.links
    assert page.title == "probe: critical"


def test_overview_lists_recent_state_changes_newest_first_across_targets() -> None:
    expiring = Failure(Reason.CERT_EXPIRING_SOON, "the certificate expires in 5 days", A1)
    www = [healthy(started=NOW - 600), replace(healthy(started=NOW - 300), failures=(expiring,))]
    api = [healthy("api", started=NOW - 400)]
    _, page = overview(snapshot(www, api))
    changes = page.rows_of("change")
    assert [(r.attrs["data-target"], r.cells[2]) for r in changes] == [
        ("www", "ok → warning"),
        ("api", "first cycle → ok"),
        ("www", "first cycle → ok"),
    ]


def test_overview_escapes_everything_from_the_network_and_the_config() -> None:
    html, page = overview(snapshot([hostile()]))
    assert "script" not in page.tags and "img" not in page.tags and "i" not in page.tags
    assert "<script>" not in html and "<img" not in html and "<b>evil" not in html
    rows = page.rows_of("address")
    assert [r.attrs["data-target"] for r in rows] == [HOSTILE_NAME, HOSTILE_NAME]
    assert HOSTILE_CN in rows[0].cells[4]
    assert rows[0].cells[6] == f"{HOSTILE_BACKEND} ×1"
    assert HOSTILE_DETAIL in page.text
    assert "https://x.corp.example/?q=<i>&a=1" in page.text
    assert (
        target_href(HOSTILE_NAME) == "/target/%3Cb%3Eevil%3C%2Fb%3E"
        and target_href(HOSTILE_NAME) in page.links
    )


def test_overview_colours_the_expiry_of_an_address_with_an_expiry_finding() -> None:
    html, page = overview(snapshot([hostile()]))
    down = page.rows_of("address")[1]
    assert down.cells[2:7] == ["critical", "no connection", "-", "-", "-"]
    assert down.cells[7] == "tcp_refused"
    assert f"<td class='warning'>{format_time(NOW + 5 * DAY)} (in 5 days)" in html


def test_a_plain_http_address_shows_no_tls_facts() -> None:
    tls = TlsResult(A1, 80, 0.001, None, None, None, None, False, None, None, (), (), (), plain=True)
    plain = target_result(addresses=[address_result(A1, tls, [http_attempt()])], scheme="http")
    _, page = overview(snapshot([plain]))
    row = page.rows_of("address")[0]
    assert row.cells[3:5] == ["plain HTTP", "-"]
    assert row.cells[6] == "no backend rule"


def test_overview_says_when_the_last_reload_was_refused() -> None:
    _, refused = overview(snapshot([healthy()], reload_ok=False))
    _, fine = overview(snapshot([healthy()]))
    assert "last configuration reload was refused" in refused.text
    assert "reload was refused" not in fine.text
    assert "2026-05-28 19:26:40 UTC (60 min ago)" in fine.text  # when the configuration was loaded


def test_overview_before_any_cycle() -> None:
    _, page = overview(snapshot(configured=["www"]))
    assert [r.cells[1] for r in page.rows_of("target")] == ["waiting"]
    assert not page.rows_of("address") and "No address probed yet" in page.text
    assert "No state change recorded yet" in page.text


def test_overview_shows_the_first_findings_and_points_to_the_target_page_for_more() -> None:
    many = tuple(Failure(Reason.TCP_REFUSED, f"refused {n}", A1) for n in range(8))
    result = replace(healthy(), failures=many)
    _, page = overview(snapshot([result]))
    findings = page.rows_of("target")[0].cells[5]
    assert "refused 4" in findings and "refused 5" not in findings
    assert findings.endswith("and 3 more on the target's page")


# --------------------------------------------------------------------------- target page


def test_target_page_has_the_text_report_of_the_last_cycle_and_a_link_to_its_json() -> None:
    result = hostile()
    snap = snapshot([healthy(HOSTILE_NAME, started=NOW - 100), result])
    html = target_page(HOSTILE_NAME, snap, NOW, VERSION)
    assert html is not None
    page = parse(html)
    expected = io.StringIO()
    render_text([result], expected, NOW, color=False)
    assert page.pres == [expected.getvalue()]  # the same text as `probe check`, escaped into <pre>
    assert "\x1b[" not in html and "script" not in page.tags
    assert json_href(HOSTILE_NAME) in page.links
    assert [r.attrs["data-address"] for r in page.rows_of("address")] == ["10.0.0.1", "10.0.0.3"]
    assert [r.cells[1] for r in page.rows_of("change")] == ["ok → critical", "first cycle → ok"]
    assert page.rows_of("change")[0].cells[3] == f"http_body_mismatch 10.0.0.1: {HOSTILE_DETAIL}"
    assert "2 cycles since the target was configured" in page.text


def test_target_page_of_a_waiting_target_and_of_an_unknown_one() -> None:
    snap = snapshot(configured=["www"])
    html = target_page("www", snap, NOW, VERSION)
    assert html is not None and "No cycle of this target has completed yet" in html
    assert target_page("nope", snap, NOW, VERSION) is None
    assert target_json("www", snap, NOW) is None
    assert target_json("nope", snap, NOW) is None


def test_target_json_is_the_check_document_of_the_last_cycle() -> None:
    result = hostile()
    snap = snapshot([healthy(HOSTILE_NAME), result])
    text = target_json(HOSTILE_NAME, snap, NOW)
    assert text is not None and text.endswith("\n")
    assert json.loads(text) == json.loads(json.dumps(to_json([result], NOW)))


@pytest.mark.parametrize("page", ["overview", "target"])
def test_pages_load_nothing_from_elsewhere_and_run_no_script(page: str) -> None:
    snap = snapshot([hostile()])
    html = (
        overview_page(snap, NOW, VERSION)
        if page == "overview"
        else target_page(HOSTILE_NAME, snap, NOW, VERSION)
    )
    assert html is not None
    parsed = parse(html)
    allowed = {"html", "head", "meta", "title", "link", "style", "body", "nav", "a", "span", "p", "h1", "h2"}
    allowed |= {"table", "thead", "tbody", "tr", "th", "td", "br", "time", "ul", "li", "pre"}
    assert set(parsed.tags) <= allowed
    assert "<link rel='icon' href='data:,'>" in html and html.count("<link") == 1
    assert all(link.startswith("/") for link in parsed.links)
    policy = dict(status_page.HEADERS)["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
