"""``--push``: the options, the grouping key's URL, the body, the error line, the pushes.

The pushes here go to an HTTP peer played by pytest-httpx (``httpx_mock``: no network): what
is sent, every kind of failure as the user reads it, the exit code. Its defaults are strict:
every reply given must be asked for, any other request fails the test, each reply answers
once (so a retry would fail too). The pushes against a real Pushgateway, and a real refused
connection, are in tests/e2e/cli/test_pushgateway.py.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ssl
from collections.abc import Sequence

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpx import HTTPXMock

from probe.cli.main import main
from probe.cli.push import (
    CONTENT_TYPE,
    DEFAULT_JOB,
    Gateway,
    PushOutcome,
    PushUsageError,
    classify_push_error,
    failure_line,
    parse_gateway,
    push_after_report,
)
from probe.daemon.metric_specs import SPECS
from probe.daemon.metrics import exposition, target_text
from probe.daemon.store import accumulate
from probe.model.reasons import ExitCode
from probe.model.results import TargetResult
from tests.support import virtual_time
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


# --------------------------------------------------------------------------- pushing to an HTTP peer

GATEWAY = "http://127.0.0.1:9091"  # never connected to: httpx_mock answers
REFUSED = _wrapped(ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"))
STANDS = "(the verdict above stands)"


def pushed(
    results: Sequence[TargetResult], gateway: Gateway, verdict: int, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """Push as ``probe check --push`` does after its report: the exit code and stderr."""
    code = push_after_report(results, gateway, verdict)
    return code, capsys.readouterr().err


def test_each_target_is_put_to_its_own_group_with_the_daemons_series(
    httpx_mock: HTTPXMock, capsys: pytest.CaptureFixture[str]
) -> None:
    www, api = result("www"), result("api")
    gateway = parse_gateway(GATEWAY, "change-1", ["vpc=vpc-a"])
    for name in ("www", "api"):
        httpx_mock.add_response(method="PUT", url=f"{GATEWAY}/metrics/job/change-1/target/{name}/vpc/vpc-a")

    assert pushed([www, api], gateway, ExitCode.OK, capsys) == (ExitCode.OK, "")
    for name, checked in (("www", www), ("api", api)):
        request = httpx_mock.get_request(url=f"{GATEWAY}/metrics/job/change-1/target/{name}/vpc/vpc-a")
        assert request is not None
        assert request.headers["content-type"] == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
        assert request.content == target_text(accumulate(None, checked))
        # Every request bounded by REQUEST_TIMEOUT, each phase.
        assert request.extensions["timeout"] == {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (REFUSED, "connection refused"),
        (httpx.ConnectTimeout("timed out"), "connect timed out after 5 s"),
        (httpx.ReadTimeout("timed out"), "timed out after 5 s"),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), "RemoteProtocolError"),
        (
            {
                "status_code": 400,
                "text": "pushed metrics are invalid or inconsistent with existing metrics:\n"
                "collected metric probe_success gauge: was collected before\n",
            },
            "HTTP 400: pushed metrics are invalid or inconsistent with existing metrics: collected metric "
            "probe_success gauge: was collected before",
        ),
        ({"status_code": 500}, "HTTP 500"),
        ({"status_code": 404, "text": "x" * 300}, "HTTP 404: " + "x" * 182 + "… (300 characters)"),
        (
            {"status_code": 307, "headers": {"location": f"{GATEWAY}/elsewhere"}},
            f"HTTP 307: redirect to {GATEWAY}/elsewhere not followed",
        ),
    ],
    ids=["refused", "connect-timeout", "read-timeout", "no-answer", "400", "500", "long-404", "redirect"],
)
def test_a_failed_push_is_named_in_one_line_and_not_tried_again(
    httpx_mock: HTTPXMock,
    capsys: pytest.CaptureFixture[str],
    reply: Exception | dict[str, object],
    error: str,
) -> None:
    if isinstance(reply, Exception):
        httpx_mock.add_exception(reply)
    else:
        httpx_mock.add_response(**reply)  # type: ignore[arg-type]

    code, err = pushed([result("www")], Gateway(GATEWAY), ExitCode.OK, capsys)

    assert code == 5  # ExitCode.PUSH_FAILED: the verdict was ok, its metrics did not arrive
    assert err == f"probe: push to {GATEWAY} failed for www: {error} {STANDS}\n"
    assert [(r.method, str(r.url)) for r in httpx_mock.get_requests()] == [
        ("PUT", f"{GATEWAY}/metrics/job/probe/target/www")
    ]  # once: a redirect is not followed, a failure not retried


@pytest.mark.parametrize(
    ("verdict", "code"),
    [
        (ExitCode.OK, ExitCode.PUSH_FAILED),
        (ExitCode.WARNING, ExitCode.WARNING),
        (ExitCode.CRITICAL, ExitCode.CRITICAL),
    ],
)
def test_a_failed_push_turns_only_exit_0_into_5(
    httpx_mock: HTTPXMock, capsys: pytest.CaptureFixture[str], verdict: ExitCode, code: ExitCode
) -> None:
    httpx_mock.add_exception(REFUSED)
    assert pushed([result("www")], Gateway(GATEWAY), verdict, capsys) == (
        code,
        f"probe: push to {GATEWAY} failed for www: connection refused {STANDS}\n",
    )


def test_with_several_targets_the_line_names_each_failed_one_in_order(
    httpx_mock: HTTPXMock, capsys: pytest.CaptureFixture[str]
) -> None:
    group = f"{GATEWAY}/metrics/job/probe/target"
    httpx_mock.add_exception(REFUSED, url=f"{group}/a")
    httpx_mock.add_response(url=f"{group}/b")
    httpx_mock.add_response(status_code=400, text="bad metric", url=f"{group}/c")

    code, err = pushed([result("a"), result("b"), result("c")], Gateway(GATEWAY), ExitCode.OK, capsys)

    assert code == ExitCode.PUSH_FAILED
    assert err == (
        f"probe: push to {GATEWAY} failed for 2 of 3 targets: a: connection refused; c: HTTP 400: bad metric "
        f"{STANDS}\n"
    )


def test_credentials_in_the_url_are_sent_but_never_shown(
    httpx_mock: HTTPXMock, capsys: pytest.CaptureFixture[str]
) -> None:
    httpx_mock.add_response(status_code=401, text="Unauthorized")

    code, err = pushed([result("www")], Gateway("http://pusher:s3cret@127.0.0.1:9091"), ExitCode.OK, capsys)

    request = httpx_mock.get_request()
    assert request is not None
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"pusher:s3cret").decode()
    assert code == ExitCode.PUSH_FAILED
    assert err == f"probe: push to {GATEWAY} failed for www: HTTP 401: Unauthorized {STANDS}\n"


def test_a_group_not_pushed_within_the_deadline_is_named_and_the_others_are_kept(
    httpx_mock: HTTPXMock, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On virtual time (tests.support.virtual_time): the 10 s deadline passes at once.
    monkeypatch.setattr(asyncio, "run", virtual_time.run)
    group = f"{GATEWAY}/metrics/job/probe/target"

    async def silent(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(3600)  # a gateway that never answers (and a client that never times out)
        raise AssertionError("not reached")

    httpx_mock.add_response(url=f"{group}/a")
    httpx_mock.add_callback(silent, url=f"{group}/b")

    code, err = pushed([result("a"), result("b")], Gateway(GATEWAY), ExitCode.OK, capsys)

    assert code == ExitCode.PUSH_FAILED
    assert err == f"probe: push to {GATEWAY} failed for 1 of 2 targets: b: not pushed within 10 s {STANDS}\n"
