"""``probe check --push``: one check's metrics to a Prometheus Pushgateway.

Each target's series are the daemon's (:func:`probe.daemon.metrics.target_text`, rendered by
:func:`probe.daemon.metrics.render_target`), pushed to its own group ``job/<job>/target/<name>``
plus the ``--push-label`` pairs, as the Pushgateway's API defines it
(https://github.com/prometheus/pushgateway#url). Every group is written with ``PUT``,
which replaces the whole group: a series the new check no longer has (a finding that
cleared, an address that left the DNS answer, a backend gone) disappears with the push.
``POST`` replaces only the metric names present in the new push, so the last
``probe_failure_info`` of a failed check would stay in the group after a clean one.

Loaded only when ``--push`` is given: ``probe check`` alone stays light. The client uses
no proxy from the environment and bounds every request (:data:`REQUEST_TIMEOUT`) and the
whole push (:data:`PUSH_DEADLINE`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import socket
import ssl
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from probe._text import shorten
from probe.daemon.metric_specs import SPECS
from probe.daemon.metrics import target_text
from probe.daemon.store import accumulate
from probe.model.reasons import ExitCode
from probe.model.results import TargetResult

log = logging.getLogger(__name__)

#: Bound on each request's connect, write, read and pool wait (seconds).
REQUEST_TIMEOUT = 5.0
#: Bound on the whole push, all targets together (seconds).
PUSH_DEADLINE = 10.0
#: Groups pushed at the same time.
CONCURRENCY = 8
#: The job of the grouping key without ``--push-job``.
DEFAULT_JOB = "probe"
#: Media type of the body: the classic text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_.-]+$")
#: Label names probe's own series carry (and ``le``, ``job``, ``instance``'s neighbours):
#: a grouping label of the same name would clash with them at the Pushgateway.
RESERVED_LABELS = frozenset({label for spec in SPECS for label in spec.labels} | {"job", "le"})


class PushUsageError(ValueError):
    """A ``--push…`` option that cannot be used; ``str()`` is the one-line message."""


@dataclass(frozen=True, slots=True)
class Gateway:
    """Where and under which grouping key to push.

    Attributes:
        url: the Pushgateway's base URL (``http://pushgateway:9091``, a path prefix allowed).
        job: the grouping key's ``job``.
        labels: extra grouping labels ``(name, value)``, in the order given.
    """

    url: str
    job: str = DEFAULT_JOB
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def shown(self) -> str:
        """The URL as messages show it: without user and password."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def group_url(self, target: str) -> str:
        """The URL of a target's group: ``<url>/metrics/job/<job>/target/<target>[/<name>/<value>…]``."""
        pairs = [("job", self.job), ("target", target), *self.labels]
        return self.url.rstrip("/") + "/metrics" + "".join(_segment(name, value) for name, value in pairs)


def _segment(name: str, value: str) -> str:
    """One grouping-key pair as a path segment; values outside ``[A-Za-z0-9_.-]`` in base64url.

    The Pushgateway's ``<name>@base64/<value>`` form carries any value, ``/`` included
    (``=`` stands for the empty value).
    """
    if _PLAIN_VALUE.match(value):
        return f"/{name}/{value}"
    encoded = base64.urlsafe_b64encode(value.encode()).decode() or "="
    return f"/{name}@base64/{encoded}"


def parse_gateway(url: str, job: str | None, labels: Iterable[str]) -> Gateway:
    """Check the ``--push``, ``--push-job`` and ``--push-label`` values (pure).

    Args:
        url: ``--push``: an ``http://`` or ``https://`` URL with a host, no query or fragment.
        job: ``--push-job`` (``None``: :data:`DEFAULT_JOB`); any non-empty text.
        labels: ``--push-label`` values, ``NAME=VALUE``: a Prometheus label name not used by
            probe's own series (nor ``job``), each once, with a non-empty value.

    Raises:
        PushUsageError: with the option and what is wrong, e.g.
            ``--push-label: 'address' is a label of probe's own series; choose another name``.
    """
    _check_url(url)
    if job is not None and not job.strip():
        raise PushUsageError("--push-job: must not be empty")
    pairs: list[tuple[str, str]] = []
    for item in labels:
        pairs.append(_label(item, pairs))
    return Gateway(url=url, job=DEFAULT_JOB if job is None else job, labels=tuple(pairs))


def _check_url(url: str) -> None:
    """Refuse a ``--push`` value that is not the base URL of a Pushgateway.

    Raises:
        PushUsageError: not a URL, not ``http://`` or ``https://`` with a host, or with a
            query or fragment.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        raise PushUsageError(f"--push: {url!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PushUsageError(f"--push: {url!r} must be an http:// or https:// URL of a Pushgateway")
    if parts.query or parts.fragment:
        raise PushUsageError(f"--push: {url!r} must have no query or fragment (give the base URL)")


def _label(item: str, earlier: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """One ``--push-label NAME=VALUE`` as ``(name, value)``; ``earlier`` are the labels before it.

    Raises:
        PushUsageError: not ``NAME=VALUE`` with a Prometheus label name, a name reserved by
            Prometheus (``__…``) or used by probe's own series, no value, or a name given
            twice.
    """
    name, sep, value = item.partition("=")
    name = name.strip()
    if not sep or not _LABEL_NAME.match(name):
        raise PushUsageError(f"--push-label: {item!r} must be NAME=VALUE with a Prometheus label name")
    if name.startswith("__"):
        raise PushUsageError(f"--push-label: {name!r}: names starting with __ are reserved by Prometheus")
    if name in RESERVED_LABELS:
        raise PushUsageError(
            f"--push-label: {name!r} is a label of probe's own series (or the job); choose another name"
        )
    if not value:
        raise PushUsageError(f"--push-label: {item!r} needs a value")
    if any(name == seen for seen, _ in earlier):
        raise PushUsageError(f"--push-label: {name!r} is given twice")
    return name, value


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """The push of one target's group.

    Attributes:
        target: the target's name.
        error: ``None`` when the Pushgateway accepted the group, else why not (one line,
            e.g. ``connection refused`` or ``HTTP 400: pushed metrics are invalid …``).
    """

    target: str
    error: str | None = None


def push(results: Sequence[TargetResult], gateway: Gateway) -> list[PushOutcome]:
    """Push each result's series to its group with ``PUT``; never raises for the network.

    Bounded by :data:`REQUEST_TIMEOUT` per request and :data:`PUSH_DEADLINE` in all; a
    target not pushed within the deadline is an outcome with an error.

    Returns:
        One outcome per result, in the results' order.
    """
    return asyncio.run(_push_all(results, gateway))


async def _push_all(results: Sequence[TargetResult], gateway: Gateway) -> list[PushOutcome]:
    https = urlsplit(gateway.url).scheme == "https"
    # The system trust store for an https gateway (where an internal CA is installed);
    # no TLS context at all for http.
    verify: ssl.SSLContext | bool = ssl.create_default_context() if https else False
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(
        trust_env=False,
        verify=verify,
        timeout=httpx.Timeout(REQUEST_TIMEOUT),
        follow_redirects=False,
    ) as client:

        async def one(result: TargetResult) -> PushOutcome:
            async with limit:
                return await _push_one(client, gateway, result)

        tasks = [asyncio.create_task(one(result)) for result in results]
        done, pending = await asyncio.wait(tasks, timeout=PUSH_DEADLINE)
        for task in pending:
            task.cancel()
        outcomes = []
        for task, result in zip(tasks, results, strict=True):
            if task in done:
                outcomes.append(task.result())
            else:
                outcomes.append(PushOutcome(result.target.name, f"not pushed within {PUSH_DEADLINE:g} s"))
        await asyncio.gather(*pending, return_exceptions=True)
    return outcomes


async def _push_one(client: httpx.AsyncClient, gateway: Gateway, result: TargetResult) -> PushOutcome:
    body = target_text(accumulate(None, result))
    url = gateway.group_url(result.target.name)
    try:
        response = await client.put(url, content=body, headers={"Content-Type": CONTENT_TYPE})
    except httpx.HTTPError as exc:
        return PushOutcome(result.target.name, classify_push_error(exc))
    if not response.is_success:
        return PushOutcome(result.target.name, _status_text(response))
    log.info("pushed", extra={"target": result.target.name, "gateway": gateway.shown, "bytes": len(body)})
    return PushOutcome(result.target.name)


def _status_text(response: httpx.Response) -> str:
    """``HTTP 400: <the gateway's message>`` on one line, at most 200 characters of it (a cut one says so)."""
    text = " ".join(response.text.split())
    if response.is_redirect:
        text = f"redirect to {response.headers.get('location', '?')} not followed"
    text = shorten(text, 200)
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


def classify_push_error(exc: BaseException) -> str:
    """What went wrong with a push, in a few words, from the exception's type and fields.

    Timeouts by httpx's type; certificate errors by ``ssl``'s verify message; name
    lookups and socket errors by their ``strerror`` (``connection refused``); anything
    else by its type's name.
    """
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect timed out after {REQUEST_TIMEOUT:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {REQUEST_TIMEOUT:g} s"
    cause = _root_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate not verified: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS error: {cause.reason or type(cause).__name__}"
    if isinstance(cause, socket.gaierror):
        return f"name not resolved: {cause.strerror}"
    if isinstance(cause, OSError) and cause.errno is not None:
        return os.strerror(cause.errno).lower()  # asyncio's strerror names the peer, not the cause
    return type(exc).__name__


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost ``__cause__``/``__context__`` (httpx wraps httpcore, which wraps ``OSError``)."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def failure_line(gateway: Gateway, outcomes: Sequence[PushOutcome]) -> str | None:
    """The one stderr line for failed pushes, ``None`` when every group was accepted (pure).

    E.g. ``push to http://127.0.0.1:9091 failed for www: connection refused (the verdict
    above stands)``, or ``… failed for 2 of 3 targets: a: …; b: …``.
    """
    failed = [o for o in outcomes if o.error is not None]
    if not failed:
        return None
    if len(outcomes) == 1:
        what = f"{failed[0].target}: {failed[0].error}"
    else:
        what = f"{len(failed)} of {len(outcomes)} targets: " + "; ".join(
            f"{o.target}: {o.error}" for o in failed
        )
    return f"push to {gateway.shown} failed for {what} (the verdict above stands)"


def push_after_report(results: Sequence[TargetResult], gateway: Gateway, code: int) -> int:
    """Push the results after the report (``probe check --push``): the exit code that follows.

    A failed push is one line ``probe: …`` on stderr and turns exit 0 into 5
    (``ExitCode.PUSH_FAILED``); a warning or critical verdict (1, 2) keeps its code. Nothing
    is retried.

    Args:
        results: one result per checked target.
        gateway: where to push.
        code: the verdict's exit code.

    Returns:
        The exit code.
    """
    line = failure_line(gateway, push(results, gateway))
    if line is None:
        return code
    print(f"probe: {line}", file=sys.stderr)
    return ExitCode.PUSH_FAILED if code == ExitCode.OK else code
