"""The baseline file and the classification of changes, with hand-built results."""

from __future__ import annotations

import io
import json
import os
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from probe.judge import baseline
from probe.judge.baseline import Aspect, Baseline, BaselineError, Change, Comparison, Impact
from probe.model.reasons import Reason, Status
from probe.model.results import Failure, TargetResult
from probe.report.document import to_json
from probe.report.text import render_baseline
from tests.support.builders import (
    DAY,
    NOW,
    address_result,
    cert,
    dns_result,
    facts,
    http_attempt,
    target_result,
    tls_result,
    unconnected_tls,
)

A, B, C = ip_address("10.0.2.31"), ip_address("10.0.3.31"), ip_address("10.0.4.31")
LEAF = cert("www.corp.example", NOW + 60 * DAY, fingerprint="aa" * 32)
INTERMEDIATE = cert("Corp Intermediate CA", NOW + 900 * DAY, issuer="Corp Root CA")


def healthy(
    *,
    leaf: Any = LEAF,
    version: str = "TLSv1.3",
    alpn: str | None = "h2",
    backends: tuple[tuple[str, ...], ...] = (("web-1", "web-2"), ("web-1", "web-2")),
    addresses: tuple[Any, ...] = (A, B),
    name: str = "www",
) -> TargetResult:
    results = [
        address_result(
            ip,
            tls_result(ip, (leaf, INTERMEDIATE), (leaf, INTERMEDIATE), version=version, alpn=alpn),
            [http_attempt(b) for b in seen],
        )
        for ip, seen in zip(addresses, backends, strict=True)
    ]
    return target_result(name, results)


def refused(ip: Any) -> Any:
    failure = Failure(Reason.TCP_REFUSED, "connection refused", ip)
    return address_result(ip, unconnected_tls(ip, failure))


def saved(*results: TargetResult) -> Baseline:
    return baseline.parse(json.dumps(baseline.snapshot(results, NOW - DAY)), "before.json")


def found(before: Baseline, *results: TargetResult) -> list[tuple[Any, Aspect, Impact]]:
    return [(c.address, c.aspect, c.impact) for c in baseline.compare(before, results).changes]


# --------------------------------------------------------------------------- the document


def test_snapshot_holds_what_matters_across_a_change() -> None:
    failing = target_result(
        "www",
        [address_result(A, tls_result(A, (LEAF,), (LEAF,)), [http_attempt("web-1")]), refused(B)],
        dns=dns_result([A, B, C], unexpected=[C]),
    )
    document = baseline.snapshot([failing], NOW)

    assert document["format_version"] == baseline.FORMAT_VERSION == 1
    assert document["saved_timestamp"] == NOW and document["generator"].startswith("probe ")
    [target] = document["targets"]
    assert target["name"] == "www" and target["url"] == "https://www.corp.example/"
    assert target["status"] == "critical" and target["reasons"] == ["tcp_refused"]
    assert target["addresses"] == ["10.0.2.31", "10.0.3.31", "10.0.4.31"]  # the whole answer
    assert target["backends"] == ["web-1"]
    assert list(target["per_address"]) == ["10.0.2.31", "10.0.3.31"]  # the probed ones
    assert target["per_address"]["10.0.2.31"] == {
        "status": "ok",
        "reasons": [],
        "tls_version": "TLSv1.3",
        "alpn": "http/1.1",
        "leaf": {
            "sha256_fingerprint": "aa" * 32,
            "subject": "CN=www.corp.example",
            "issuer": "CN=Corp Intermediate CA",
            "not_after_timestamp": NOW + 60 * DAY,
            "dns_names": ["www.corp.example"],
            "ip_addresses": [],
            "key": "EC P-256",
        },
        "backends": ["web-1"],
    }
    down = target["per_address"]["10.0.3.31"]
    assert down["leaf"] is None and down["tls_version"] is None and down["status"] == "critical"
    assert down["reasons"] == ["tcp_refused"]


def test_an_address_probed_without_being_in_the_answer_is_in_the_set() -> None:
    pinned = target_result("www", [refused(A)], dns=dns_result([]))
    assert baseline.snapshot([pinned], NOW)["targets"][0]["addresses"] == ["10.0.2.31"]


def test_the_same_results_compare_without_changes() -> None:
    result = healthy()
    comparison = baseline.compare(saved(result), [result], "before.json")
    assert comparison.changes == () and not comparison.regressed
    assert comparison.path == "before.json" and comparison.saved_timestamp == NOW - DAY


# --------------------------------------------------------------------------- classification


def test_a_worse_status_is_a_regression_and_names_the_new_reasons() -> None:
    before = saved(healthy())
    now = target_result(
        "www", [address_result(A, healthy().addresses[0].tls, [http_attempt("web-1")]), refused(B)]
    )
    changes = baseline.compare(before, [now]).changes
    target = next(c for c in changes if c.aspect is Aspect.STATUS and c.address is None)
    assert target == Change(
        "www", None, Aspect.STATUS, Impact.REGRESSION, "ok", "critical", "status ok → critical (tcp_refused)"
    )
    address = next(c for c in changes if c.aspect is Aspect.STATUS and c.address == B)
    assert address.impact is Impact.REGRESSION and address.detail == "status ok → critical (tcp_refused)"
    # B answered nothing: its backends are not reported as lost there, it shows as a status change
    assert (B, Aspect.BACKEND, Impact.REGRESSION) not in found(before, now)


def test_a_better_status_is_an_improvement_and_names_what_cleared() -> None:
    before = saved(target_result("www", [refused(A)]))
    changes = baseline.compare(before, [healthy(addresses=(A,), backends=(("web-1",),))]).changes
    status = [c for c in changes if c.aspect is Aspect.STATUS]
    assert [(c.address, c.impact, c.detail) for c in status] == [
        (None, Impact.IMPROVEMENT, "status critical → ok (tcp_refused cleared)"),
        (A, Impact.IMPROVEMENT, "status critical → ok (tcp_refused cleared)"),
    ]
    assert (None, Aspect.BACKEND, Impact.IMPROVEMENT) in found(
        before, healthy(addresses=(A,), backends=(("web-1",),))
    )


def test_an_address_gone_is_a_regression_and_a_new_one_neutral() -> None:
    before = saved(healthy())
    now = healthy(addresses=(A, C))
    changes = baseline.compare(before, [now]).changes
    assert [(c.address, c.aspect, c.impact, c.detail) for c in changes] == [
        (B, Aspect.ADDRESS, Impact.REGRESSION, "gone from the answer (now: 10.0.2.31, 10.0.4.31)"),
        (C, Aspect.ADDRESS, Impact.NEUTRAL, "new in the answer"),
    ]


def test_a_backend_gone_everywhere_is_one_target_regression_and_a_new_one_an_improvement() -> None:
    before = saved(healthy())
    now = healthy(backends=(("web-1", "web-3"), ("web-1", "web-3")))
    changes = baseline.compare(before, [now]).changes
    assert [(c.address, c.aspect, c.impact, c.detail) for c in changes] == [
        (None, Aspect.BACKEND, Impact.REGRESSION, "backend web-2 no longer answers (seen now: web-1, web-3)"),
        (None, Aspect.BACKEND, Impact.IMPROVEMENT, "backend web-3 answers now"),
    ]


def test_backends_are_compared_for_the_target_never_per_address() -> None:
    """Which backend answered at one address is the rotation's phase, not the change."""
    before = saved(healthy())
    now = healthy(backends=(("web-1", "web-1"), ("web-1", "web-2")))  # web-2 still answers for the target
    assert baseline.compare(before, [now]).changes == ()


def rotating(balancing: str, *seen: tuple[str, ...]) -> TargetResult:
    """Target www with ``balancing`` whose addresses A and B answered from ``seen`` backends."""
    results = [
        address_result(ip, healthy().addresses[0].tls, [http_attempt(b) for b in backends])
        for ip, backends in zip((A, B), seen, strict=True)
    ]
    return target_result("www", results, balancing=balancing)


@pytest.mark.parametrize(
    ("balancing", "responses", "impact", "words"),
    [
        ("round_robin", 2, Impact.REGRESSION, "backend web-2 no longer answers (seen now: web-1)"),
        (
            "weighted_random",
            8,
            Impact.NEUTRAL,
            "backend web-2 not seen now (seen: web-1); with weighted_random a healthy backend goes "
            "unseen in 8 identified responses up to 0.781 % of the time: not judged before 21 "
            "(e.g. --requests 11)",
        ),
        (
            "weighted_random",
            21,
            Impact.REGRESSION,
            "backend web-2 no longer answers (seen now: web-1; none of 21 identified responses: with "
            "weighted_random a healthy backend goes unseen that long less than one in a million times)",
        ),
        (
            "any",
            40,
            Impact.NEUTRAL,
            "backend web-2 not seen now (seen: web-1); balancing any makes no claim about which "
            "backends answer: not judged",
        ),
    ],
)
def test_a_backend_not_seen_now_is_judged_with_the_targets_balancing_rule(
    balancing: str, responses: int, impact: Impact, words: str
) -> None:
    before = saved(rotating(balancing, ("web-1", "web-2"), ("web-1", "web-2")))
    half = responses // 2
    now = rotating(balancing, ("web-1",) * half, ("web-1",) * (responses - half))
    [change] = baseline.compare(before, [now]).changes
    assert (change.address, change.aspect, change.impact, change.detail) == (
        None,
        Aspect.BACKEND,
        impact,
        words,
    )


def test_backends_are_not_compared_when_no_response_identified_one_now() -> None:
    before = saved(healthy())
    now = target_result("www", [refused(A), refused(B)], backend_rule=("header", "X-Backend"))
    changes = baseline.compare(before, [now]).changes
    [backends] = [c for c in changes if c.aspect is Aspect.BACKEND]
    assert backends.impact is Impact.NEUTRAL
    assert backends.detail == (
        "backends not compared: no response identified a backend now (the status says why); "
        "the baseline saw web-1, web-2"
    )


RENEWED = cert("www.corp.example", NOW + 150 * DAY, fingerprint="bb" * 32)


@pytest.mark.parametrize(
    ("new", "impact", "words"),
    [
        (RENEWED, Impact.NEUTRAL, "certificate renewed by the same issuer (Corp Intermediate CA); expires "),
        (
            cert("www.corp.example", NOW + 60 * DAY, fingerprint="bb" * 32),
            Impact.NEUTRAL,
            "certificate replaced by the same issuer (Corp Intermediate CA); same expiry",
        ),
        (
            cert("www.corp.example", NOW + 20 * DAY, fingerprint="bb" * 32),
            Impact.REGRESSION,
            "certificate replaced by the same issuer (Corp Intermediate CA); expires earlier: ",
        ),
        (
            cert("www.corp.example", NOW + 150 * DAY, fingerprint="bb" * 32, issuer="Other CA"),
            Impact.REGRESSION,
            "certificate renewed by a new issuer Other CA (was Corp Intermediate CA): clients that trust "
            "or pin only the old CA will refuse it; expires ",
        ),
    ],
    ids=["renewed", "reissued", "earlier", "new-issuer"],
)
def test_a_new_leaf_is_classified_by_issuer_and_expiry(new: Any, impact: Impact, words: str) -> None:
    before = saved(healthy())
    changes = baseline.compare(before, [healthy(leaf=new)]).changes
    assert [(c.address, c.aspect, c.impact) for c in changes] == [
        (A, Aspect.CERTIFICATE, impact),
        (B, Aspect.CERTIFICATE, impact),
    ]
    assert changes[0].detail.startswith(words)
    assert changes[0].before is not None and changes[0].before.startswith(
        "aaaaaaaaaaaaaaaa… Corp Intermediate CA"
    )
    assert changes[0].after is not None and changes[0].after.startswith("bbbbbbbbbbbbbbbb…")


def _leaf(names: tuple[str, ...], *, key: str = "EC P-256", cn: str = "www.corp.example") -> Any:
    """A new leaf by the same issuer with the same expiry: only its names (and key) differ."""
    leaf = cert(cn, NOW + 60 * DAY, fingerprint="bb" * 32, dns_names=names)
    return type(leaf)(**{**_fields(leaf), "key": key})


@pytest.mark.parametrize(
    ("names", "impact", "words"),
    [
        (
            ("other.corp.example",),
            Impact.REGRESSION,
            "certificate replaced by the same issuer (Corp Intermediate CA); no longer covers "
            "www.corp.example (the target's name): now for other.corp.example; same expiry ",
        ),
        (
            ("*.corp.example",),
            Impact.NEUTRAL,
            "certificate replaced by the same issuer (Corp Intermediate CA); now also for *.corp.example; "
            "same expiry ",
        ),
        (
            ("www.corp.example", "api.corp.example"),
            Impact.NEUTRAL,
            "certificate replaced by the same issuer (Corp Intermediate CA); now also for api.corp.example; ",
        ),
        (
            ("www.corp.example",),
            Impact.NEUTRAL,
            "certificate replaced by the same issuer (Corp Intermediate CA); same expiry ",
        ),
    ],
    ids=["other-name", "wildcard", "one-more-name", "same-names"],
)
def test_the_names_of_a_new_leaf_are_compared(names: tuple[str, ...], impact: Impact, words: str) -> None:
    """A leaf for another name by the same issuer is no neutral change: it loses the target's name."""
    before = saved(healthy())
    [first, _] = baseline.compare(before, [healthy(leaf=_leaf(names))]).changes
    assert (first.aspect, first.impact) == (Aspect.CERTIFICATE, impact)
    assert first.detail.startswith(words)


def test_losing_any_name_the_old_leaf_covered_is_a_regression_and_says_which() -> None:
    both = cert("www.corp.example", NOW + 60 * DAY, fingerprint="aa" * 32, dns_names=("*.corp.example",))
    before = saved(healthy(leaf=both))
    [change, _] = baseline.compare(before, [healthy(leaf=_leaf(("www.corp.example",)))]).changes
    assert change.impact is Impact.REGRESSION
    assert "no longer covers *.corp.example: now for www.corp.example" in change.detail


@pytest.mark.parametrize(
    ("key", "impact", "words"),
    [
        (
            "RSA 2048",
            Impact.REGRESSION,
            "key EC P-256 → RSA 2048: clients that support or pin only EC keys refuse it",
        ),
        ("EC P-384", Impact.NEUTRAL, "key EC P-256 → EC P-384;"),
        ("EC P-224", Impact.REGRESSION, "key EC P-256 → EC P-224: a smaller key"),
    ],
)
def test_the_key_type_of_a_new_leaf_is_compared(key: str, impact: Impact, words: str) -> None:
    before = saved(healthy())
    [change, _] = baseline.compare(before, [healthy(leaf=_leaf(("www.corp.example",), key=key))]).changes
    assert change.impact is impact and words in change.detail


def test_a_baseline_of_an_older_probe_compares_the_targets_name_only_and_says_so() -> None:
    document = baseline.snapshot([healthy()], NOW - DAY)
    for address in document["targets"][0]["per_address"].values():
        for key in ("dns_names", "ip_addresses", "key"):
            del address["leaf"][key]  # as probe wrote it before the names and key type were saved
    older = baseline.parse(json.dumps(document), "old.json")
    note = "; names and key type not compared: the baseline, saved by an older probe, holds neither"

    [other, _] = baseline.compare(
        older, [healthy(leaf=_leaf(("other.corp.example",), key="RSA 2048"))]
    ).changes
    assert other.impact is Impact.REGRESSION
    assert "no longer covers www.corp.example (the target's name): now for other.corp.example" in other.detail
    assert other.detail.endswith(note + " (only the target's name was); save a new baseline")
    assert "key EC" not in other.detail  # the key type is not compared
    [same_name, _] = baseline.compare(older, [healthy(leaf=_leaf(("www.corp.example",)))]).changes
    assert same_name.impact is Impact.NEUTRAL and note in same_name.detail
    assert baseline.compare(older, [healthy()]).changes == ()  # the same leaf: nothing to say


def test_another_intermediate_of_the_same_organization_is_neutral() -> None:
    """ACM renews from whichever of its intermediates (Amazon RSA 2048 M01 … M04) it uses now."""
    old = cert("www.corp.example", NOW + 60 * DAY, fingerprint="aa" * 32)
    old = type(old)(**{**_fields(old), "issuer": "CN=Amazon RSA 2048 M02,O=Amazon,C=US"})
    new = type(old)(
        **{
            **_fields(old),
            "issuer": "CN=Amazon RSA 2048 M03,O=Amazon,C=US",
            "sha256_fingerprint": "bb" * 32,
            "not_after_timestamp": NOW + 395 * DAY,
        }
    )
    [change] = baseline.compare(
        saved(healthy(leaf=old)), [healthy(leaf=new, addresses=(A,), backends=(("web-1", "web-2"),))]
    ).changes[1:]
    assert change.impact is Impact.NEUTRAL
    assert (
        "by Amazon RSA 2048 M03, another CA of the same organization (Amazon; was Amazon RSA 2048 M02)"
        in change.detail
    )


def _fields(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__slots__}


def test_a_lower_tls_version_is_a_regression_a_higher_one_an_improvement_alpn_neutral() -> None:
    before = saved(healthy(version="TLSv1.2", alpn="h2"))
    assert found(before, healthy(version="TLSv1.3", alpn="h2")) == [
        (A, Aspect.TLS_VERSION, Impact.IMPROVEMENT),
        (B, Aspect.TLS_VERSION, Impact.IMPROVEMENT),
    ]
    assert found(before, healthy(version="TLSv1.1", alpn="h2")) == [
        (A, Aspect.TLS_VERSION, Impact.REGRESSION),
        (B, Aspect.TLS_VERSION, Impact.REGRESSION),
    ]
    changes = baseline.compare(before, [healthy(version="TLSv1.2", alpn=None)]).changes
    assert (changes[0].aspect, changes[0].impact, changes[0].detail) == (
        Aspect.ALPN,
        Impact.NEUTRAL,
        "ALPN h2 → (none)",
    )


def test_a_handshake_that_fails_now_is_not_compared_for_certificate_or_version() -> None:
    before = saved(healthy())
    now = target_result("www", [refused(A), refused(B)])
    aspects = {c.aspect for c in baseline.compare(before, [now]).changes}
    assert aspects == {Aspect.STATUS, Aspect.BACKEND}


def test_a_target_not_in_the_baseline_is_neutral_and_baseline_targets_not_checked_are_ignored() -> None:
    """The baseline holds www and admin; www and api are checked: accepted, api is the one change."""
    before = saved(healthy(name="www"), healthy(name="admin"))
    now = [healthy(name="www"), healthy(name="api")]
    baseline.match(before, [r.target for r in now], "b.json")  # accepted: www is in it
    assert baseline.compare(before, now).changes == (
        Change(
            "api",
            None,
            Aspect.TARGET,
            Impact.NEUTRAL,
            None,
            "https://api.corp.example/",
            "not in the baseline: nothing to compare",
        ),
    )


def test_comparison_counts_and_regressed() -> None:
    change = Change("www", None, Aspect.BACKEND, Impact.REGRESSION, "web-2", None, "gone")
    comparison = Comparison(
        "b.json", NOW, (change, Change("www", A, Aspect.ADDRESS, Impact.NEUTRAL, None, "x", "new"))
    )
    assert comparison.count(Impact.REGRESSION) == 1 and comparison.count(Impact.IMPROVEMENT) == 0
    assert comparison.regressed
    assert not Comparison("b.json", NOW, ()).regressed


# --------------------------------------------------------------------------- matching targets


def test_match_refuses_a_name_saved_with_another_url() -> None:
    elsewhere = facts("www", url="https://www.corp.example:8443/", port=8443)
    with pytest.raises(BaselineError) as caught:
        baseline.match(saved(healthy()), [elsewhere], "b.json")
    assert str(caught.value) == (
        "b.json: baseline of another URL: www was https://www.corp.example/, now https://www.corp.example:8443/"
    )


def test_match_refuses_a_baseline_of_other_urls() -> None:
    with pytest.raises(BaselineError) as caught:
        baseline.match(saved(healthy(name="admin")), [facts("www")], "b.json")
    assert str(caught.value) == (
        "b.json: baseline of another URL: it holds admin (https://admin.corp.example/), "
        "not www (https://www.corp.example/)"
    )


def test_targets_are_matched_by_url_and_server_name_not_by_name() -> None:
    """A baseline saved with --config (target www) compares with an ad hoc check (target www.corp.example)."""
    before = saved(healthy(name="www"))
    adhoc = facts("www.corp.example", url="https://WWW.corp.example:443", hostname="www.corp.example")
    baseline.match(before, [adhoc], "b.json")  # accepted: the same URL
    now = target_result("www.corp.example", healthy().addresses, url=adhoc.url, hostname=adhoc.hostname)
    assert baseline.compare(before, [now]).changes == ()
    assert baseline.saved_for(before, adhoc) is before.targets[0]
    # Another server name at the same IP-address URL is another target.
    pinned = facts("www", url="https://10.0.2.31/", hostname="www.corp.example")
    other = facts("www", url="https://10.0.2.31/", hostname="api.corp.example")
    by_ip = saved(target_result("www", healthy().addresses, url=pinned.url, hostname=pinned.hostname))
    assert baseline.saved_for(by_ip, pinned) is by_ip.targets[0] and baseline.saved_for(by_ip, other) is None
    with pytest.raises(BaselineError) as caught:
        baseline.match(by_ip, [other], "b.json")
    assert str(caught.value) == (
        "b.json: baseline of another URL: www was https://10.0.2.31/ as www.corp.example, "
        "now https://10.0.2.31/ as api.corp.example"
    )


def test_a_checked_target_whose_name_the_baseline_holds_at_another_url_is_not_compared() -> None:
    before = saved(healthy(name="www"), healthy(name="api"))
    moved = target_result("www", healthy().addresses, url="https://www.corp.example/v2/")
    now = [moved, healthy(name="api")]
    baseline.match(before, [r.target for r in now], "b.json")  # accepted: api is in it
    assert [(c.target, c.aspect, c.detail) for c in baseline.compare(before, now).changes] == [
        (
            "www",
            Aspect.TARGET,
            "not in the baseline (its www is https://www.corp.example/): nothing to compare",
        )
    ]


# --------------------------------------------------------------------------- reading and writing


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"\xff\xfe{", "not a probe baseline (not UTF-8 text)"),
        ("   \n", "empty file, not a probe baseline"),
        (
            '{"format_version": 1,',
            "not valid JSON (Expecting property name enclosed in double quotes at line 1 column 22)",
        ),
        ("[1, 2]", "not a probe baseline (no format_version)"),
        ('{"format_version": true}', "not a probe baseline (format_version True)"),
        ('{"format_version": 0}', "not a probe baseline (format_version 0)"),
        ('{"format_version": "1"}', "not a probe baseline (format_version '1')"),
        ('{"format_version": 7}', "written in baseline format_version 7 by a newer probe"),
        ('{"format_version": 1, "saved_timestamp": 1}', "corrupt baseline: targets: Field required"),
        ("[" * 100_000, "not a probe baseline (JSON nested too deeply)"),
        ('{"format_version": 1, "saved_timestamp": ' + "1" * 5000 + "}", "not a probe baseline (Exceeds"),
    ],
)
def test_parse_refuses_with_one_line(text: str | bytes, problem: str) -> None:
    with pytest.raises(BaselineError) as caught:
        baseline.parse(text, "b.json")
    assert str(caught.value).startswith(f"b.json: {problem}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (
            ("addresses", 0),
            "10.0.2.999",
            "corrupt baseline: targets[0].addresses[0]: value is not a valid IPv4 or IPv6 address",
        ),
        (
            ("status",),
            "fine",
            "corrupt baseline: targets[0].status: Input should be 'ok', 'warning' or 'critical'",
        ),
        (
            ("per_address", "10.0.2.31", "leaf", "not_after_timestamp"),
            "soon",
            "corrupt baseline: targets[0].per_address.10.0.2.31.leaf.not_after_timestamp",
        ),
    ],
)
def test_parse_names_the_broken_field(path: tuple[Any, ...], value: Any, problem: str) -> None:
    document = baseline.snapshot([healthy()], NOW)
    node = document["targets"][0]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(BaselineError) as caught:
        baseline.parse(json.dumps(document), "b.json")
    assert str(caught.value).startswith(f"b.json: {problem}")


def test_parse_ignores_fields_it_does_not_know() -> None:
    document = baseline.snapshot([healthy()], NOW)
    document["comment"] = "before the 443 listener"
    document["targets"][0]["zone"] = "eu-west-1a"
    assert baseline.parse(json.dumps(document), "b.json").targets[0].name == "www"


def test_save_replaces_the_file_atomically_and_load_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    path.write_text("old")
    document = baseline.snapshot([healthy()], NOW)

    baseline.save(path, document)

    assert json.loads(path.read_text()) == document
    assert os.listdir(tmp_path) == ["baseline.json"]  # no temporary file left behind
    assert baseline.load(path).targets[0].per_address["10.0.2.31"].leaf is not None


def test_save_into_a_missing_directory_fails_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(BaselineError) as caught:
        baseline.save(tmp_path / "gone" / "b.json", {"format_version": 1})
    assert (
        str(caught.value) == f"{tmp_path}/gone/b.json: cannot save the baseline (No such file or directory)"
    )


def test_load_and_check_writable_refuse_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match=r"no such file$"):
        baseline.load(tmp_path / "missing.json")
    with pytest.raises(BaselineError, match=r"is a directory, not a file$"):
        baseline.load(tmp_path)
    with pytest.raises(BaselineError, match=r"is a directory; give a file name"):
        baseline.check_writable(tmp_path)
    with pytest.raises(BaselineError, match=r"directory .*/nope does not exist$"):
        baseline.check_writable(tmp_path / "nope" / "b.json")
    baseline.check_writable(tmp_path / "b.json")


def test_a_baseline_never_replaces_a_device_a_fifo_or_a_file_the_check_reads(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match=r"^/dev/null: is a character device, not a regular file; give"):
        baseline.check_writable("/dev/null")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(BaselineError, match=r"is a FIFO \(named pipe\), not a regular file"):
        baseline.check_writable(fifo)
    with pytest.raises(BaselineError, match=r"is a FIFO \(named pipe\), not a regular file"):
        baseline.save(fifo, {"format_version": 1})  # never a device here: a bug would replace it
    assert fifo.is_fifo()
    config = tmp_path / "probe.yaml"
    config.write_text("targets: []\n")
    with pytest.raises(BaselineError) as caught:
        baseline.check_writable(f"{tmp_path}/./probe.yaml", [("the --config file", config)])
    assert (
        str(caught.value)
        == f"{tmp_path}/./probe.yaml: is the --config file; give another file to save the baseline in"
    )
    assert config.read_text() == "targets: []\n"
    baseline.check_writable(tmp_path / "b.json", [("the --config file", config)])


def test_save_through_a_symbolic_link_replaces_the_file_it_names(tmp_path: Path) -> None:
    real = tmp_path / "before.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real.name)
    document = baseline.snapshot([healthy()], NOW)

    baseline.save(link, document)

    assert link.is_symlink() and json.loads(real.read_text()) == document


# --------------------------------------------------------------------------- rendering


def test_the_text_section_lists_changes_with_their_impact() -> None:
    comparison = Comparison(
        "before.json",
        NOW,
        (
            Change(
                "www",
                B,
                Aspect.STATUS,
                Impact.REGRESSION,
                "ok",
                "critical",
                "status ok → critical (tcp_timeout)",
            ),
            Change(
                "www", None, Aspect.BACKEND, Impact.IMPROVEMENT, None, "web-3", "backend web-3 answers now"
            ),
            Change("www", C, Aspect.ADDRESS, Impact.NEUTRAL, None, "10.0.4.31", "new in the answer"),
        ),
    )
    out = io.StringIO()
    render_baseline(comparison, out)
    assert out.getvalue() == (
        "Baseline before.json (saved 2026-05-28 20:26 UTC): 1 regression, 1 improvement, 1 neutral\n"
        "  regression   www 10.0.3.31  status ok → critical (tcp_timeout)\n"
        "  improvement  www  backend web-3 answers now\n"
        "  neutral      www 10.0.4.31  new in the answer\n"
        "  a regression since the baseline makes the exit code at least 1\n"
    )
    coloured = io.StringIO()
    render_baseline(comparison, coloured, color=True)
    assert "\033[33mregression  \033[0m" in coloured.getvalue()


def test_the_text_section_says_no_changes() -> None:
    out = io.StringIO()
    render_baseline(Comparison("b.json", NOW, ()), out)
    assert out.getvalue() == "Baseline b.json (saved 2026-05-28 20:26 UTC): no changes\n"


def test_the_json_document_carries_the_diff() -> None:
    assert to_json([healthy()], NOW)["baseline"] is None
    change = Change("www", B, Aspect.STATUS, Impact.REGRESSION, "ok", "critical", "status ok → critical")
    document = to_json([healthy()], NOW, baseline=Comparison("b.json", NOW - DAY, (change,)))
    assert document["baseline"] == {
        "file": "b.json",
        "saved_timestamp": NOW - DAY,
        "regressions": 1,
        "improvements": 0,
        "neutral": 0,
        "changes": [
            {
                "target": "www",
                "address": "10.0.3.31",
                "aspect": "status",
                "impact": "regression",
                "before": "ok",
                "after": "critical",
                "detail": "status ok → critical",
            }
        ],
    }
    assert Status.OK.value == document["status"]


def test_backends_are_not_compared_when_none_can_be_identified_now() -> None:
    # The hand-built results carry no backend rule; with no backend seen now either, the
    # check could not identify backends: one neutral change, no regression.
    before = saved(healthy())
    now = healthy(backends=((), ()))

    comparison = baseline.compare(before, [now])

    assert found(before, now) == [(None, Aspect.BACKEND, Impact.NEUTRAL)]
    assert not comparison.regressed
    assert "backends not compared" in comparison.changes[0].detail
    assert "the baseline saw web-1, web-2" in comparison.changes[0].detail
