"""``--push``: the options, the grouping key's URL, the body, the error line (pure parts).

The pushes themselves are tested against a real Pushgateway in tests/e2e/cli/test_pushgateway.py.
"""

from __future__ import annotations

import base64
import errno
import ssl

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from probe.cli.main import main
from probe.cli.push import (
    DEFAULT_JOB,
    Gateway,
    PushOutcome,
    PushUsageError,
    classify_push_error,
    failure_line,
    parse_gateway,
)
from probe.daemon.metrics import SPECS, exposition, target_text
from probe.daemon.store import accumulate
from tests.unit.daemon.test_metrics import result, scrape

# --------------------------------------------------------------------------- options


def test_defaults_and_labels_in_order() -> None:
    gateway = parse_gateway("http://pushgateway:9091", None, ["vpc=vpc-a", "az=eu-west-1a", "bastion=b-1"])
    assert gateway == Gateway(
        "http://pushgateway:9091", DEFAULT_JOB, (("vpc", "vpc-a"), ("az", "eu-west-1a"), ("bastion", "b-1"))
    )
    assert DEFAULT_JOB == "probe"


@pytest.mark.parametrize(
    ("url", "job", "labels", "message"),
    [
        ("pushgateway:9091", None, [], "--push: 'pushgateway:9091' must be an http:// or https:// URL"),
        ("ftp://gw", None, [], "must be an http:// or https:// URL of a Pushgateway"),
        ("http://gw:99999", None, [], "--push: 'http://gw:99999' is not a URL"),
        ("http://gw/?x=1", None, [], "must have no query or fragment"),
        ("http://gw", " ", [], "--push-job: must not be empty"),
        ("http://gw", None, ["vpc"], "--push-label: 'vpc' must be NAME=VALUE with a Prometheus label name"),
        ("http://gw", None, ["1vpc=a"], "must be NAME=VALUE"),
        ("http://gw", None, ["vpc-id=a"], "must be NAME=VALUE"),
        ("http://gw", None, ["__name__=a"], "names starting with __ are reserved by Prometheus"),
        ("http://gw", None, ["address=a"], "'address' is a label of probe's own series (or the job)"),
        ("http://gw", None, ["target=a"], "'target' is a label of probe's own series"),
        ("http://gw", None, ["job=a"], "'job' is a label of probe's own series (or the job)"),
        ("http://gw", None, ["vpc="], "--push-label: 'vpc=' needs a value"),
        ("http://gw", None, ["vpc=a", "vpc=b"], "--push-label: 'vpc' is given twice"),
    ],
)
def test_bad_push_options_are_one_line(url: str, job: str | None, labels: list[str], message: str) -> None:
    with pytest.raises(PushUsageError) as caught:
        parse_gateway(url, job, labels)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--push-job", "x"], "probe: --push-job needs --push"),
        (["--push-label", "vpc=a"], "probe: --push-label needs --push"),
        (["--push", "http://127.0.0.1:9091", "--watch"], "probe: --push cannot be combined with --watch"),
        (
            ["--push", "http://127.0.0.1:9091", "--push-label", "backend=x"],
            "probe: --push-label: 'backend' is a label of probe's",
        ),
    ],
)
def test_the_command_refuses_bad_push_options_before_probing(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The URL's name is never looked up: the options are refused first.
    code = main(["check", "https://www.corp.example/", "--resolver", "127.0.0.1:1", *argv])
    assert code == 3
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


# --------------------------------------------------------------------------- grouping key


def test_group_url_is_job_then_target_then_labels() -> None:
    gateway = Gateway("http://gw:9091/", "probe", (("vpc", "vpc-a"), ("az", "eu-west-1a")))
    assert gateway.group_url("www") == "http://gw:9091/metrics/job/probe/target/www/vpc/vpc-a/az/eu-west-1a"


def test_values_outside_the_plain_set_are_base64url() -> None:
    gateway = Gateway("http://gw:9091/prefix", "change/1234", (("note", "a b"),))
    url = gateway.group_url("www:blue")
    job = base64.urlsafe_b64encode(b"change/1234").decode()
    target = base64.urlsafe_b64encode(b"www:blue").decode()
    note = base64.urlsafe_b64encode(b"a b").decode()
    assert url == f"http://gw:9091/prefix/metrics/job@base64/{job}/target@base64/{target}/note@base64/{note}"


def test_messages_show_the_gateway_without_credentials() -> None:
    assert Gateway("https://user:secret@gw.example:9091/pg").shown == "https://gw.example:9091/pg"
    assert Gateway("http://[::1]:9091").shown == "http://[::1]:9091"


# --------------------------------------------------------------------------- the body


def test_the_body_is_the_targets_part_of_the_daemons_metrics() -> None:
    checked = result("www")
    body = target_text(accumulate(None, checked)).decode()

    daemon = exposition(scrape(checked, histograms=False).store.snapshot()).decode()
    daemon_samples = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(daemon)
        for s in family.samples
        if "target" in s.labels
    }
    pushed = list(text_string_to_metric_families(body))
    assert {
        (s.name, tuple(sorted(s.labels.items())), s.value) for f in pushed for s in f.samples
    } == daemon_samples
    # Only families with samples, each with its HELP and TYPE; nothing process-wide.
    assert all(family.samples for family in pushed)
    names = {family.name for family in pushed}
    assert "probe_success" in names and "probe_targets" not in names and "probe_build_info" not in names
    help_of = {spec.name: spec.help for spec in SPECS}
    assert f"# HELP probe_success {help_of['probe_success']}\n# TYPE probe_success gauge\n" in body


# --------------------------------------------------------------------------- errors


def _wrapped(inner: BaseException) -> httpx.ConnectError:
    """As httpx raises it: its error, from httpcore's, from the socket's."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise OSError("All connection attempts failed") from exc
    except OSError as exc:
        error = httpx.ConnectError("All connection attempts failed")
        error.__cause__ = exc
        return error


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (_wrapped(ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")), "connection refused"),
        (_wrapped(OSError(errno.ENETUNREACH, "x")), "network is unreachable"),
        (httpx.ConnectTimeout("t"), "connect timed out after 5 s"),
        (httpx.ReadTimeout("t"), "timed out after 5 s"),
        (httpx.RemoteProtocolError("garbage"), "RemoteProtocolError"),
    ],
)
def test_push_errors_in_a_few_words(exc: BaseException, text: str) -> None:
    assert classify_push_error(exc) == text


def test_certificate_errors_name_the_verify_message() -> None:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "unable to get local issuer certificate"
    assert (
        classify_push_error(_wrapped(error))
        == "certificate not verified: unable to get local issuer certificate"
    )


def test_the_failure_line() -> None:
    gateway = Gateway("http://u:p@127.0.0.1:9091")
    assert failure_line(gateway, [PushOutcome("www")]) is None
    assert failure_line(gateway, [PushOutcome("www", "connection refused")]) == (
        "push to http://127.0.0.1:9091 failed for www: connection refused (the verdict above stands)"
    )
    outcomes = [PushOutcome("a", "HTTP 400: bad"), PushOutcome("b"), PushOutcome("c", "timed out after 5 s")]
    assert failure_line(gateway, outcomes) == (
        "push to http://127.0.0.1:9091 failed for 2 of 3 targets: a: HTTP 400: bad; c: timed out after 5 s "
        "(the verdict above stands)"
    )
