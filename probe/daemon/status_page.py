"""The daemon's status pages as HTML: the overview at ``/`` and one page per target.

Pure rendering (style rule 4): a :class:`~probe.daemon.store.Snapshot` and ``now`` in, a
complete HTML document out. The pages show what ``probe check`` shows: per address the
status, TLS version, certificate expiry and backends seen; per target the times of the
last cycle and of the last state change, its recent state changes (kept by the store, see
:func:`probe.daemon.store.state_changed`) and, on its own page, the text report of the last
cycle (:func:`probe.report.text.render_text`) with a link to its JSON document.

No JavaScript and nothing fetched from elsewhere: the CSS is inline and the icon is an
empty ``data:`` URL, and :data:`HEADERS` (a Content Security Policy) tells the browser to
load nothing else. Every text that comes from the network or the config (certificate
subjects, backend names, target names, findings) is HTML-escaped.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

from probe._text import plural, printable
from probe.daemon.store import Snapshot, StateChange, TargetState
from probe.model.reasons import Reason, Status
from probe.model.results import AddressResult, Failure, TargetResult
from probe.report.document import to_json
from probe.report.text import render_text
from probe.stages.certs import describe_age, format_time

#: Response headers of every status page: no script, no frame, nothing loaded from elsewhere.
HEADERS: tuple[tuple[str, str], ...] = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)

#: Where the target pages live; the target's name follows, percent-encoded.
TARGET_PREFIX = "/target/"

#: State changes listed on the overview page (newest first, all targets together).
OVERVIEW_CHANGES = 20

#: Findings listed per target on the overview page; its own page lists them all.
OVERVIEW_FINDINGS = 5

#: Reason codes about a certificate's dates: they colour the certificate column.
_EXPIRY_REASONS = frozenset({Reason.CERT_EXPIRED, Reason.CERT_EXPIRING_SOON, Reason.CERT_NOT_YET_VALID})

#: The TLS column when no handshake completed.
_HANDSHAKE_WORDS = {
    "verify_failed": "not verified",
    "timeout": "timed out",
    "failed": "failed",
    "not_attempted": "no connection",
    "plain": "plain HTTP",
}

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.2em 2em;color:#222;background:#fff}"
    "h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.4em 0 .4em}"
    "table{border-collapse:collapse;margin:.3em 0}"
    "th,td{padding:3px 10px;text-align:left;vertical-align:top;border-bottom:1px solid #e4e4e4}"
    "th{background:#f4f4f4;font-weight:600}"
    ".ok{color:#17702a}.warning{color:#9a5b00}.critical{color:#b3121f}.waiting{color:#666}"
    ".badge{font-weight:700;text-transform:uppercase;font-size:.85em}"
    ".dim{color:#666}.mono{font-family:ui-monospace,monospace}"
    "pre{background:#f7f7f7;border:1px solid #ddd;padding:.8em;overflow-x:auto;font-size:.85em}"
    "nav a{margin-right:.8em}a{color:#1d4f91}.alert{background:#fff3d6;padding:.4em .8em}"
)


def target_href(name: str) -> str:
    """The path of a target's page: ``/target/`` and the name, percent-encoded (RFC 3986)."""
    return TARGET_PREFIX + quote(name, safe="")


def json_href(name: str) -> str:
    """The path of the JSON document of a target's last cycle: its page's path plus ``.json``."""
    return target_href(name) + ".json"


def overview_page(snapshot: Snapshot, now: float, version: str) -> str:
    """The overview at ``/``: a row per target, a row per address, the recent state changes.

    Args:
        snapshot: the store's snapshot.
        now: Unix time of the request, for ages ("12 s ago", "in 89 days").
        version: probe's version, shown in the heading.

    Returns:
        A complete HTML document.
    """
    states = [(name, snapshot.targets.get(name)) for name in snapshot.configured]
    worst = Status.worst(s.result.status for _, s in states if s is not None)
    probed = sum(s is not None for _, s in states)
    summary = f"{plural(len(states), 'target')}, {probed} probed"
    body = [
        _header(snapshot, now, version),
        f"<h1>Targets <span class='badge {worst.value}'>{worst.value}</span>"
        f" <span class='dim'>{escape(summary)}</span></h1>",
        "<table class='targets'><thead><tr><th>target</th><th>status</th><th>url</th>"
        "<th>last cycle</th><th>last change</th><th>findings</th></tr></thead><tbody>",
        *(_target_row(name, state, now) for name, state in states),
        "</tbody></table>",
        "<h2>Addresses</h2>",
        _address_table([(name, state.result) for name, state in states if state is not None], now, True),
        "<h2>Recent state changes</h2>",
        _changes_table(
            sorted(
                ((name, c) for name, state in states if state is not None for c in state.changes),
                key=lambda item: item[1].timestamp,
                reverse=True,
            )[:OVERVIEW_CHANGES],
            now,
            with_target=True,
        ),
    ]
    return _document(f"probe: {worst.value}", body)


def target_page(name: str, snapshot: Snapshot, now: float, version: str) -> str | None:
    """The page of one target: its addresses, findings, state changes and text report.

    Args:
        name: the target's configured name.
        snapshot: the store's snapshot.
        now: Unix time of the request.
        version: probe's version, shown in the heading.

    Returns:
        A complete HTML document; ``None`` when no target has that name.
    """
    if name not in snapshot.configured:
        return None
    state = snapshot.targets.get(name)
    head = _header(snapshot, now, version)
    if state is None:
        body = [
            head,
            f"<h1>{escape(name)} <span class='badge waiting'>waiting</span></h1>",
            "<p>No cycle of this target has completed yet.</p>",
        ]
        return _document(f"probe: {name}", body)
    result = state.result
    report = io.StringIO()
    render_text([result], report, now, color=False)
    body = [
        head,
        f"<h1>{escape(name)} {_badge(result.status)}</h1>",
        f"<p class='facts'><span class='mono'>{escape(printable(result.target.url))}</span><br>"
        f"last cycle {_cycle_time(result, now)}; "
        f"last change {_when(state.last_change_timestamp, now)}; "
        f"{plural(state.cycles, 'cycle')} since the target was configured<br>"
        f"<a href='{escape(json_href(name))}'>JSON of the last cycle</a></p>",
        "<h2>Addresses</h2>",
        _address_table([(name, result)], now, False),
        "<h2>Findings</h2>",
        _findings_list(result.failures),
        f"<h2>State changes <span class='dim'>(last {len(state.changes)})</span></h2>",
        _changes_table([(name, c) for c in reversed(state.changes)], now, with_target=False),
        "<h2>Report of the last cycle</h2>",
        f"<pre class='report'>{escape(report.getvalue())}</pre>",
    ]
    return _document(f"probe: {name} {result.status.value}", body)


def target_json(name: str, snapshot: Snapshot, now: float) -> str | None:
    """The JSON document of a target's last cycle, as ``probe check --json`` writes it.

    Args:
        name: the target's configured name.
        snapshot: the store's snapshot.
        now: Unix time of the request (the document's ``generated_timestamp``).

    Returns:
        The document (:func:`probe.report.document.to_json` of the last result), indented, with a
        final newline; ``None`` when the target is unknown or has no completed cycle yet.
    """
    state = snapshot.targets.get(name) if name in snapshot.configured else None
    if state is None:
        return None
    return json.dumps(to_json([state.result], now), indent=2) + "\n"


# --------------------------------------------------------------------------- pieces


def _document(title: str, body: Iterable[str]) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><link rel='icon' href='data:,'><style>{_CSS}</style></head>"
        "<body>" + "\n".join(body) + "</body></html>\n"
    )


def _header(snapshot: Snapshot, now: float, version: str) -> str:
    reload = (
        ""
        if snapshot.reload_successful
        else (
            "<p class='alert warning'>The last configuration reload was refused; "
            "the previous configuration is still running (see the log).</p>"
        )
    )
    return (
        f"<nav><a href='/'>probe {escape(version)}</a><a href='/metrics'>Metrics</a>"
        "<a href='/-/healthy'>Health</a><a href='/-/ready'>Readiness</a>"
        f"<span class='dim'>page of {_clock(now)}; configuration loaded "
        f"{_when(snapshot.reload_success_timestamp, now)}</span></nav>{reload}"
    )


def _badge(status: Status) -> str:
    return f"<span class='badge {status.value}'>{status.value}</span>"


def _target_row(name: str, state: TargetState | None, now: float) -> str:
    link = f"<a href='{escape(target_href(name))}'>{escape(name)}</a>"
    if state is None:
        return (
            f"<tr class='target' data-target='{escape(name)}'><td>{link}</td>"
            "<td class='status waiting'>waiting</td><td></td>"
            "<td class='dim'>no cycle completed yet</td><td></td><td></td></tr>"
        )
    result = state.result
    findings = [_finding_text(f) for f in result.failures[:OVERVIEW_FINDINGS]]
    more = len(result.failures) - OVERVIEW_FINDINGS
    if more > 0:
        findings.append(f"<span class='dim'>and {more} more on the target's page</span>")
    return (
        f"<tr class='target' data-target='{escape(name)}'><td>{link}</td>"
        f"<td class='status {result.status.value}'>{result.status.value}</td>"
        f"<td class='mono'>{escape(printable(result.target.url))}</td>"
        f"<td>{_cycle_time(result, now)}</td><td>{_when(state.last_change_timestamp, now)}</td>"
        f"<td>{'<br>'.join(findings)}</td></tr>"
    )


def _finding_text(failure: Failure) -> str:
    where = f" {failure.address}" if failure.address is not None else ""
    text = f"{failure.reason.value}{where}: {printable(failure.detail)}"
    return f"<span class='{failure.severity.value}'>{escape(text)}</span>"


def _findings_list(failures: Sequence[Failure]) -> str:
    if not failures:
        return "<p class='ok'>No findings.</p>"
    return "<ul class='findings'>" + "".join(f"<li>{_finding_text(f)}</li>" for f in failures) + "</ul>"


def _address_table(results: Sequence[tuple[str, TargetResult]], now: float, with_target: bool) -> str:
    rows = [
        _address_row(name, result, a, now, with_target) for name, result in results for a in result.addresses
    ]
    if not rows:
        return "<p class='dim'>No address probed yet.</p>"
    head = "<th>target</th>" if with_target else ""
    return (
        f"<table class='addresses'><thead><tr>{head}<th>address</th><th>status</th><th>TLS</th>"
        "<th>certificate expires</th><th>HTTP</th><th>backends seen</th><th>findings</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )


def _address_row(
    name: str, result: TargetResult, address: AddressResult, now: float, with_target: bool
) -> str:
    tls = address.tls
    if tls.version:
        version = escape(tls.version)
    else:
        version = f"<span class='dim'>{_HANDSHAKE_WORDS.get(tls.handshake_outcome, 'failed')}</span>"
    codes = ", ".join(dict.fromkeys(f.reason.value for f in address.failures))
    first = f"<td>{escape(name)}</td>" if with_target else ""
    return (
        f"<tr class='address' data-target='{escape(name)}' data-address='{address.address}'>{first}"
        f"<td class='mono'>{address.address}</td>"
        f"<td class='status {address.status.value}'>{address.status.value}</td>"
        f"<td>{version}</td>{_expiry_cell(result, address, now)}"
        f"<td class='mono'>{_http_codes(address)}</td><td>{_backends(result, address)}</td>"
        f"<td>{escape(codes)}</td></tr>"
    )


def _expiry_cell(result: TargetResult, address: AddressResult, now: float) -> str:
    tls = address.tls
    leaf = tls.leaf
    if leaf is None:
        return "<td class='dim'>-</td>"
    expiry = leaf.not_after_timestamp
    text = f"{format_time(expiry)} ({describe_age(expiry, now)})"
    chain = tls.verified_chain_expiry_timestamp
    if chain is not None and chain < expiry:
        text += f"; chain {format_time(chain)} ({describe_age(chain, now)})"
    dated = [
        f.severity
        for f in result.failures
        if f.reason in _EXPIRY_REASONS and (f.address is None or f.address == address.address)
    ]
    css = f" class='{Status.worst(dated).value}'" if dated else ""
    subject = escape(printable(leaf.common_name or leaf.subject or "(empty subject)"))
    return f"<td{css}>{escape(text)}<br><span class='dim'>{subject}</span></td>"


def _http_codes(address: AddressResult) -> str:
    if not address.attempts:
        return "<span class='dim'>-</span>"
    return " ".join("ERR" if a.status_code is None else str(a.status_code) for a in address.attempts)


def _backends(result: TargetResult, address: AddressResult) -> str:
    if result.target.expect_redirect is not None:
        return "<span class='dim'>not judged (redirect expected)</span>"
    if not address.attempts:
        return "<span class='dim'>-</span>"
    if result.target.identifying_rule is None:
        return "<span class='dim'>no backend rule</span>"
    counts = address.backend_counts
    answered = sum(a.status_code is not None for a in address.attempts)
    own = sum(a.load_balancer is not None for a in address.attempts)
    unnamed = answered - sum(counts.values()) - own
    parts = [f"{escape(printable(n))} ×{c}" for n, c in sorted(counts.items())]
    if own > 0:
        parts.append(f"<span class='dim'>{plural(own, 'response')} from the load balancer itself</span>")
    if unnamed > 0:
        parts.append(f"<span class='dim'>{plural(unnamed, 'response')} not identified</span>")
    return ", ".join(parts) or "<span class='dim'>none</span>"


def _changes_table(changes: Sequence[tuple[str, StateChange]], now: float, with_target: bool) -> str:
    if not changes:
        return "<p class='dim'>No state change recorded yet.</p>"
    head = "<th>target</th>" if with_target else ""
    rows = []
    for name, change in changes:
        before = (
            "<span class='dim'>first cycle</span>"
            if change.previous is None
            else f"<span class='{change.previous.value}'>{change.previous.value}</span>"
        )
        cell = f"<td><a href='{escape(target_href(name))}'>{escape(name)}</a></td>" if with_target else ""
        rows.append(
            f"<tr class='change' data-target='{escape(name)}'><td>{_when(change.timestamp, now)}</td>{cell}"
            f"<td>{before} → <span class='{change.status.value}'>{change.status.value}</span></td>"
            f"<td>{escape(', '.join(change.reasons)) or '<span class=dim>none</span>'}</td>"
            f"<td>{escape(printable(change.detail))}</td></tr>"
        )
    return (
        f"<table class='changes'><thead><tr><th>when</th>{head}<th>change</th><th>reasons</th>"
        "<th>first finding</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _cycle_time(result: TargetResult, now: float) -> str:
    ended = result.started_timestamp + result.duration_seconds
    took = (
        f"{result.duration_seconds * 1000:.0f} ms"
        if result.duration_seconds < 10
        else (f"{result.duration_seconds:.1f} s")
    )
    return f"{_when(ended, now)}, took {took}"


def _when(timestamp: float | None, now: float) -> str:
    """``<time>`` with the UTC time to the second and how long ago."""
    if timestamp is None:
        return "<span class='dim'>-</span>"
    iso = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    age = escape(_ago(timestamp, now))
    return f"<time datetime='{iso}'>{_clock(timestamp)}</time> <span class='dim'>({age})</span>"


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(timestamp: float, now: float) -> str:
    """``"12 s ago"``, ``"5 min ago"``, then as :func:`probe.stages.certs.describe_age`."""
    delta = now - timestamp
    seconds = abs(delta)
    if seconds >= 2 * 3600:
        return describe_age(timestamp, now)
    amount = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return f"{amount} ago" if delta >= 0 else f"in {amount}"
