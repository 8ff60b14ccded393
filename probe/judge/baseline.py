"""Before and after a change: save what matters of a check, compare a later check with it.

Pure logic plus two small file functions (``load`` and ``save``). :func:`snapshot` turns
results into the baseline document, :func:`compare` classifies what changed since a
baseline as ``neutral``, ``improvement`` or ``regression``. The file format is public and
versioned (``format_version``); docs/json-document.md ("Baseline file") documents it and the
rules below.

Targets are matched by what they are, not by what they are called: the URL (scheme, host,
port, path and query; ``https://www.corp.example/`` and ``https://WWW.corp.example:443`` are
one) and the server name. A baseline saved with ``--config`` (target ``www``) compares with an
ad hoc check of the same URL (target ``www.corp.example``).

Rules (per target):

- status: worse is a regression, better an improvement (also per address);
- address set: an address gone from the answer is a regression, a new one is neutral
  (its own verdict says whether it works);
- backends, for the target as a whole (never per address: which backend answers at one
  address is the rotation's phase, not the change): a backend of the baseline not seen now
  is a regression only when the target's ``balancing`` rule would call it missing
  (``round_robin``: at once; ``weighted_random``, ``least_outstanding_requests``: after so
  many identified responses that a healthy one goes unseen that long less than one in a
  million times, neutral before; ``any``: never), a new one an improvement; without a
  backend rule now, or with no response that identified a backend, backends are not
  compared (one neutral change says so);
- leaf certificate (where both checks obtained one), when its SHA-256 fingerprint changed:
  an earlier notAfter is a regression; a new issuing CA (an issuer of another
  organization, ``O=``, or without one, a different issuer name) is a regression too,
  because clients that trust or pin only the old CA will refuse the new certificate; so is
  a name the old leaf covered (the target's name, or any of its SANs) that the new one does
  not cover, and another key algorithm or a smaller key; otherwise (same issuer, or another
  intermediate of the same organization as with ACM's rotating intermediates, the same
  names or more) it is neutral. A baseline of an older probe holds no names or key type:
  only the target's name is compared then, and the change says so;
- TLS version (where both handshakes completed): lower is a regression, higher an
  improvement; ALPN: any change is neutral.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, IPvAnyAddress, ValidationError

from probe._files import MAX_BASELINE_BYTES, FileRefused, read_capped, special_kind
from probe._text import printable, shorten
from probe._version import __version__
from probe.judge import balancing as rotation
from probe.model.reasons import Reason, Status
from probe.model.results import AddressResult, CertInfo, IPAddress, TargetResult, TlsResult
from probe.stages.certs import common_name_of, format_time, hostname_matches

#: The version of the baseline file format written by this probe; files with a higher one
#: are refused, files without one are not baselines.
FORMAT_VERSION = 1


class BaselineError(Exception):
    """A baseline file that cannot be read, written or used; ``str()`` is one line.

    Attributes:
        path: the file.
        problem: what is wrong with it.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(printable(f"{self.path}: {problem}"))


class Impact(StrEnum):
    """How a change since the baseline is classified."""

    NEUTRAL = "neutral"
    IMPROVEMENT = "improvement"
    REGRESSION = "regression"


class Aspect(StrEnum):
    """What changed."""

    TARGET = "target"
    STATUS = "status"
    ADDRESS = "address"
    BACKEND = "backend"
    CERTIFICATE = "certificate"
    TLS_VERSION = "tls_version"
    ALPN = "alpn"


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the baseline and the current check.

    Attributes:
        target: the target name.
        address: the address it concerns, ``None`` for the whole target.
        aspect: what changed.
        impact: neutral, improvement or regression.
        before: the baseline's value as text, ``None`` when it had none.
        after: the current value as text, ``None`` when there is none now.
        detail: one plain sentence for people.
    """

    target: str
    address: IPAddress | None
    aspect: Aspect
    impact: Impact
    before: str | None
    after: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class Comparison:
    """The result of comparing a check with a baseline file.

    Attributes:
        path: the baseline file as given.
        saved_timestamp: when the baseline was saved, Unix time.
        changes: the changes, target by target, in the order of the results.
    """

    path: str
    saved_timestamp: float
    changes: tuple[Change, ...]

    def count(self, impact: Impact) -> int:
        """How many changes have this impact."""
        return sum(change.impact is impact for change in self.changes)

    @property
    def regressed(self) -> bool:
        """At least one change is a regression (the exit code is then at least 1)."""
        return self.count(Impact.REGRESSION) > 0


# --------------------------------------------------------------------------- the file format


class _Model(BaseModel):
    # Fields may be added within a format version, so unknown keys are ignored.
    model_config = ConfigDict(frozen=True, extra="ignore")


class LeafFacts(_Model):
    """The server certificate of one address, as saved.

    ``dns_names``, ``ip_addresses`` and ``key`` are ``None`` in a file of an older probe.
    """

    sha256_fingerprint: str
    subject: str
    issuer: str
    not_after_timestamp: float
    dns_names: tuple[str, ...] | None = None
    ip_addresses: tuple[str, ...] | None = None
    key: str | None = None


class AddressFacts(_Model):
    """One probed address, as saved."""

    status: Status
    reasons: tuple[str, ...] = ()
    tls_version: str | None
    alpn: str | None
    leaf: LeafFacts | None
    backends: tuple[str, ...]


class TargetFacts(_Model):
    """One target, as saved."""

    name: str
    url: str
    hostname: str
    port: int
    status: Status
    reasons: tuple[str, ...] = ()
    addresses: tuple[IPvAnyAddress, ...]
    backends: tuple[str, ...]
    per_address: dict[str, AddressFacts]


class Baseline(_Model):
    """A baseline file, validated (see docs/json-document.md, "Baseline file")."""

    format_version: int
    generator: str = ""
    saved_timestamp: float
    targets: tuple[TargetFacts, ...]


def snapshot(results: Sequence[TargetResult], now: float) -> dict[str, Any]:
    """The baseline document of a check: a plain dict, ready for ``json.dumps``.

    Args:
        results: one result per target.
        now: Unix time of the snapshot (``saved_timestamp``).

    Returns:
        ``{"format_version", "generator", "saved_timestamp", "targets": [...]}``; per
        target its name, URL, status and reason codes, the address set (the DNS answers and
        any other address probed), the backends seen, and per probed address its status,
        reason codes, TLS version, ALPN, leaf (SHA-256 fingerprint, subject, issuer,
        notAfter, SAN DNS names and IP addresses, key type) and backends seen.
    """
    return {
        "format_version": FORMAT_VERSION,
        "generator": f"probe {__version__}",
        "saved_timestamp": round(now, 3),
        "targets": [_target_facts(result) for result in results],
    }


def _target_facts(result: TargetResult) -> dict[str, Any]:
    return {
        "name": result.target.name,
        "url": result.target.url,
        "hostname": result.target.hostname,
        "port": result.target.port,
        "status": result.status.value,
        "reasons": [reason.value for reason in result.reasons],
        "addresses": [str(a) for a in _address_set(result)],
        "backends": sorted(result.backend_counts),
        "per_address": {str(a.address): _address_facts(a) for a in result.addresses},
    }


def _address_facts(result: AddressResult) -> dict[str, Any]:
    leaf = result.tls.leaf
    return {
        "status": result.status.value,
        "reasons": list(dict.fromkeys(f.reason.value for f in result.failures)),
        "tls_version": result.tls.version,
        "alpn": result.tls.alpn,
        "leaf": None
        if leaf is None
        else {
            "sha256_fingerprint": leaf.sha256_fingerprint,
            "subject": leaf.subject,
            "issuer": leaf.issuer,
            "not_after_timestamp": leaf.not_after_timestamp,
            "dns_names": list(leaf.dns_names),
            "ip_addresses": list(leaf.ip_addresses),
            "key": leaf.key,
        },
        "backends": sorted(result.backend_counts),
    }


def _address_set(result: TargetResult) -> tuple[IPAddress, ...]:
    """The DNS answers, then any address probed that was not among them (pinned addresses)."""
    answers = [answer.address for answer in result.dns.answers]
    return tuple(dict.fromkeys([*answers, *(a.address for a in result.addresses)]))


def parse(text: str | bytes, path: str | Path) -> Baseline:
    """Read a baseline document.

    Args:
        text: the file's content.
        path: the file, for messages.

    Raises:
        BaselineError: not JSON (corrupt or truncated), not a probe baseline, a newer or
            unknown ``format_version``, or a field missing or of the wrong type.
    """
    try:
        data = json.loads(text)
    except UnicodeDecodeError:
        raise BaselineError(path, "not a probe baseline (not UTF-8 text)") from None
    except RecursionError:
        raise BaselineError(path, "not a probe baseline (JSON nested too deeply)") from None
    except json.JSONDecodeError as exc:
        if not text.strip():
            raise BaselineError(path, "empty file, not a probe baseline") from None
        raise BaselineError(
            path,
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): corrupt, truncated "
            "or not a baseline file",
        ) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise BaselineError(path, f"not a probe baseline ({shorten(str(exc), 80)})") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise BaselineError(path, "not a probe baseline (no format_version)")
    version = data["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BaselineError(path, f"not a probe baseline (format_version {shorten(repr(version), 40)})")
    if version > FORMAT_VERSION:
        raise BaselineError(
            path,
            f"written in baseline format_version {version} by a newer probe; this probe reads "
            f"format_version {FORMAT_VERSION} (save a new baseline, or upgrade probe)",
        )
    try:
        return Baseline.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
        raise BaselineError(path, f"corrupt baseline: {where}: {error['msg']}") from None


def load(path: str | Path) -> Baseline:
    """Read and validate a baseline file: a regular file of at most 16 MiB.

    Raises:
        BaselineError: it cannot be read, is not a regular file, is larger than
            :data:`probe._files.MAX_BASELINE_BYTES`, or :func:`parse` refuses it.
    """
    try:
        data = read_capped(path, MAX_BASELINE_BYTES)
    except FileRefused as exc:
        raise BaselineError(path, str(exc)) from None
    return parse(data, path)


def check_writable(path: str | Path, inputs: Iterable[tuple[str, str | Path]] = ()) -> None:
    """Refuse early a path a baseline cannot be saved at (before the check runs).

    Args:
        path: the ``--save-baseline`` file.
        inputs: the files the check reads (the ``--config`` file, CA and client certificate
            files), which a baseline must never replace, each with what it is
            (``("the --config file", "probe.yaml")``).

    Raises:
        BaselineError: the directory does not exist, the path is a directory or another
            file that is not a regular file (``/dev/null``, a FIFO), or one of ``inputs``.
    """
    target = Path(path)
    if target.is_dir():
        raise BaselineError(path, "is a directory; give a file name to save the baseline in")
    if not target.parent.is_dir():
        raise BaselineError(path, f"cannot save the baseline: directory {target.parent} does not exist")
    _refuse_special(path)
    for what, used in inputs:
        with contextlib.suppress(OSError):
            if os.path.samefile(target, used):
                raise BaselineError(path, f"is {what}; give another file to save the baseline in")


def _refuse_special(path: str | Path) -> None:
    """Refuse an existing file that is not a regular file: replacing a device or a FIFO is never meant."""
    try:
        info = os.stat(path)
    except OSError:
        return  # not there yet (or not reachable: the save says why)
    kind = special_kind(info)
    if kind is not None:
        raise BaselineError(path, f"is {kind}, not a regular file; give a file name to save the baseline in")


def save(path: str | Path, document: Mapping[str, Any]) -> None:
    """Write a baseline document atomically: a temporary file in the same directory, then rename.

    A reader sees the old file or the new one, never half of one; an existing file is replaced.

    Raises:
        BaselineError: the file cannot be written (``OSError``).
    """
    _refuse_special(path)
    target = Path(os.path.realpath(path))  # through a symbolic link: replace the file it names
    text = json.dumps(document, indent=2) + "\n"
    temporary: str | None = None
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
        temporary = None
    except OSError as exc:
        raise BaselineError(path, f"cannot save the baseline ({exc.strerror or exc})") from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


class Identified(Protocol):
    """What names a target: a target's configuration or facts, or a baseline's saved target."""

    @property
    def name(self) -> str:
        """The target's name (how it is shown; not part of its identity)."""

    @property
    def url(self) -> str:
        """The URL as configured."""

    @property
    def hostname(self) -> str:
        """The server name: the URL's host, or ``server_name`` for an IP-address URL."""

    @property
    def port(self) -> int:
        """The TCP port (the scheme's default when the URL has none)."""


def identity(target: Identified) -> tuple[str, ...]:
    """What makes two targets the same one across checks, whatever their names.

    The URL's scheme, host, port (the default one when the URL has none), path (``/`` when
    empty) and query, and the server name (``hostname``: the URL's host, or ``server_name``
    for an IP-address URL); host names in lower case, without a trailing dot.
    """
    parts = urlsplit(target.url)
    host = (parts.hostname or "").rstrip(".")
    return (
        parts.scheme.lower(),
        host,
        str(target.port),
        parts.path or "/",
        parts.query,
        target.hostname.lower().rstrip("."),
    )


def saved_for(baseline: Baseline, target: Identified) -> TargetFacts | None:
    """The baseline's target with the same identity (one of the same name first), ``None`` when none."""
    same = [saved for saved in baseline.targets if identity(saved) == identity(target)]
    return next((saved for saved in same if saved.name == target.name), same[0] if same else None)


def match(baseline: Baseline, targets: Iterable[Identified], path: str | Path) -> None:
    """Refuse a baseline that holds none of the targets checked now.

    Targets are matched by URL and server name (see :func:`identity`), not by name, so a
    baseline saved under another name for the same URL is used. A baseline that holds none
    of them is refused; when one of its targets has the name of a checked one, the message
    says which URL each had.

    Args:
        baseline: the loaded baseline.
        targets: the targets checked now (their name, URL, server name and port).
        path: the file, for messages.

    Raises:
        BaselineError: the baseline is of other URLs.
    """
    checked = list(targets)
    if any(saved_for(baseline, target) is not None for target in checked):
        return
    names = {saved.name: saved for saved in baseline.targets}
    for target in checked:
        if target.name in names:
            before = names[target.name]
            raise BaselineError(
                path, f"baseline of another URL: {target.name} was {_where(before)}, now {_where(target)}"
            )
    held = ", ".join(f"{saved.name} ({_where(saved)})" for saved in baseline.targets) or "no target"
    now = ", ".join(f"{target.name} ({_where(target)})" for target in checked)
    raise BaselineError(path, f"baseline of another URL: it holds {held}, not {now}")


def _where(target: Identified) -> str:
    """The URL, with the server name when the URL's host is not it.

    ``https://www.corp.example/``; ``https://10.0.1.17/ as www.corp.example``.
    """
    host = (urlsplit(target.url).hostname or "").rstrip(".")
    return target.url if host == target.hostname.lower().rstrip(".") else f"{target.url} as {target.hostname}"


# --------------------------------------------------------------------------- comparing


_TLS_ORDER = {"SSLv3": 0, "TLSv1": 1, "TLSv1.1": 2, "TLSv1.2": 3, "TLSv1.3": 4}


def compare(baseline: Baseline, results: Sequence[TargetResult], path: str | Path = "") -> Comparison:
    """Classify every change between a baseline and the current check.

    Targets are matched by URL and server name (see :func:`identity`; :func:`match` refuses
    a baseline of other URLs); a target not in the baseline gets one neutral ``target``
    change; baseline targets not checked now are ignored (``--target`` may select a few).
    Changes carry the name of the target as checked now.

    Args:
        baseline: the loaded baseline.
        results: one result per target, as checked now.
        path: the baseline file, carried into the comparison for the report.

    Returns:
        The comparison; its changes follow the results' order, target facts first.
    """
    changes: list[Change] = []
    for result in results:
        before = saved_for(baseline, result.target)
        if before is None:
            changes.append(_not_in_baseline(baseline, result))
            continue
        changes.extend(_target_changes(before, result))
    return Comparison(str(path), baseline.saved_timestamp, tuple(changes))


def _not_in_baseline(baseline: Baseline, result: TargetResult) -> Change:
    """The one change of a target the baseline does not hold (naming its namesake's URL, if any)."""
    namesake = next((saved for saved in baseline.targets if saved.name == result.target.name), None)
    also = "" if namesake is None else f" (its {namesake.name} is {_where(namesake)})"
    return Change(
        result.target.name,
        None,
        Aspect.TARGET,
        Impact.NEUTRAL,
        None,
        result.target.url,
        f"not in the baseline{also}: nothing to compare",
    )


def _target_changes(before: TargetFacts, result: TargetResult) -> list[Change]:
    """A target's changes: its status, its address set, its backends, then each address's."""
    name = result.target.name
    reasons = [r.value for r in result.reasons]
    status = _status_change(name, None, before.status, before.reasons, result.status, reasons)
    changes = [status] if status is not None else []
    changes.extend(_answer_changes(name, before.addresses, _address_set(result)))
    changes.extend(_backend_changes(before.backends, result))
    for address_result in result.addresses:
        facts = before.per_address.get(str(address_result.address))
        if facts is not None:
            changes.extend(_address_changes(result.target.hostname, name, facts, address_result))
    return changes


def _answer_changes(name: str, before: Sequence[IPAddress], now: Sequence[IPAddress]) -> list[Change]:
    """Addresses gone from the DNS answer (regressions), then the new ones (neutral)."""
    remaining = ", ".join(map(str, now)) or "none"
    gone = [
        Change(
            name,
            address,
            Aspect.ADDRESS,
            Impact.REGRESSION,
            str(address),
            None,
            f"gone from the answer (now: {remaining})",
        )
        for address in before
        if address not in now
    ]
    new = [
        Change(name, address, Aspect.ADDRESS, Impact.NEUTRAL, None, str(address), "new in the answer")
        for address in now
        if address not in before
    ]
    return gone + new


def _backend_changes(before: Sequence[str], result: TargetResult) -> list[Change]:
    """Backends of the baseline not seen now, judged by the rotation rule, then the new ones (improvements).

    Backends are compared for the target as a whole, never per address: which backend
    answers at one address is the rotation's phase, not the change. A backend not seen now
    is a regression only when the target's ``balancing`` rule would call it missing (see
    :func:`_unseen_backend`). Not compared without a backend rule now, or when no response
    identified a backend now (the status change says why).
    """
    name, now = result.target.name, result.backend_counts
    identified = sum(now.values())
    if before and not identified:
        return [_backends_not_compared(name, before, result.target.identifying_rule is None)]
    seen = printable(", ".join(sorted(now)) or "none")
    k = max(len({*before, *now}), result.target.expected_backend_count or 0)
    unseen = [
        _unseen_backend(name, backend, result, (identified, k), seen)
        for backend in before
        if backend not in now
    ]
    new = [
        Change(name, None, Aspect.BACKEND, Impact.IMPROVEMENT, None, b, f"backend {printable(b)} answers now")
        for b in sorted(set(now) - set(before))
    ]
    return unseen + new


def _backends_not_compared(name: str, before: Sequence[str], no_rule: bool) -> Change:
    """One neutral change: no backend identified now, which says nothing about whether they answer."""
    why = (
        "no backend rule now (backend.header or backend.body_regex)"
        if no_rule
        else "no response identified a backend now (the status says why)"
    )
    return Change(
        name,
        None,
        Aspect.BACKEND,
        Impact.NEUTRAL,
        ", ".join(before),
        None,
        f"backends not compared: {why}; the baseline saw {printable(', '.join(before))}",
    )


def _unseen_backend(
    name: str, backend: str, result: TargetResult, counts: tuple[int, int], seen: str
) -> Change:
    """A backend of the baseline that answered none of the responses identified now.

    ``counts`` are the identified responses now and ``k``, the backends expected (at least
    those of the baseline and of now). ``round_robin``: every backend answers within one
    check, so it no longer answers (a regression). ``weighted_random`` and
    ``least_outstanding_requests``: a regression only after so many identified responses
    that a healthy backend among ``k`` goes unseen that long less than one in a million
    times (:func:`probe.judge.balancing.needed`); before that neutral, with the chance and
    the ``--requests`` that would decide. ``any``: never judged.
    """
    rule, (identified, k) = result.target.balancing, counts
    lost = f"backend {printable(backend)} no longer answers (seen now: {seen}"
    if rule == "round_robin":
        impact, detail = Impact.REGRESSION, lost + ")"
    elif rule in rotation.COUNTED and identified >= rotation.needed(rule, k):
        how = f"with {rule} a healthy backend goes unseen that long less than {rotation.ALPHA_TEXT} times"
        impact, detail = Impact.REGRESSION, f"{lost}; none of {identified} identified responses: {how})"
    else:
        why = _not_judged(rule, identified, k, len(result.addresses))
        impact, detail = Impact.NEUTRAL, f"backend {printable(backend)} not seen now (seen: {seen}); {why}"
    return Change(name, None, Aspect.BACKEND, impact, backend, None, detail)


def _not_judged(rule: str, identified: int, k: int, addresses: int) -> str:
    """Why an unseen backend is not judged with ``rule`` yet, and the ``--requests`` that would decide."""
    if rule not in rotation.COUNTED:
        return f"balancing {rule} makes no claim about which backends answer: not judged"
    chance = rotation.percent(rotation.chance_unseen(rule, k, identified))
    needed = rotation.needed(rule, k)
    return (
        f"with {rule} a healthy backend goes unseen in {identified} identified responses up to "
        f"{chance} of the time: not judged before {needed} (e.g. --requests "
        f"{math.ceil(needed / max(1, addresses))})"
    )


def _address_changes(hostname: str, name: str, before: AddressFacts, result: AddressResult) -> list[Change]:
    """An address's changes: its status, its certificate, its TLS version and ALPN.

    ``hostname`` is the target's server name, which the certificate should still cover.
    """
    address = result.address
    reasons = list(dict.fromkeys(f.reason.value for f in result.failures))
    found = (
        _status_change(name, address, before.status, before.reasons, result.status, reasons),
        _certificate_change(name, address, before, result.tls.leaf, hostname),
        *_handshake_changes(name, address, before, result.tls),
    )
    return [change for change in found if change is not None]


def _handshake_changes(name: str, address: IPAddress, before: AddressFacts, tls: TlsResult) -> list[Change]:
    """The TLS version and the ALPN protocol, compared where both handshakes completed."""
    if before.tls_version is None or tls.version is None:
        return []
    changes = []
    if before.tls_version != tls.version:
        changes.append(
            Change(
                name,
                address,
                Aspect.TLS_VERSION,
                _version_impact(before.tls_version, tls.version),
                before.tls_version,
                tls.version,
                f"TLS version {before.tls_version} → {tls.version}",
            )
        )
    if before.alpn != tls.alpn:
        changes.append(
            Change(
                name,
                address,
                Aspect.ALPN,
                Impact.NEUTRAL,
                before.alpn,
                tls.alpn,
                f"ALPN {printable(before.alpn or '(none)')} → {printable(tls.alpn or '(none)')}",
            )
        )
    return changes


def _version_impact(before: str, after: str) -> Impact:
    """A lower TLS version is a regression, a higher one an improvement; an unknown one is neutral."""
    old, new = _TLS_ORDER.get(before), _TLS_ORDER.get(after)
    if old is None or new is None:
        return Impact.NEUTRAL
    return Impact.REGRESSION if new < old else Impact.IMPROVEMENT


def _status_change(
    name: str,
    address: IPAddress | None,
    before: Status,
    before_reasons: Sequence[str],
    after: Status,
    after_reasons: Sequence[str],
) -> Change | None:
    if before is after:
        return None
    if after.rank > before.rank:
        why = f" ({', '.join(after_reasons)})" if after_reasons else ""
        impact = Impact.REGRESSION
    else:
        cleared = [r for r in before_reasons if r not in after_reasons]
        why = f" ({', '.join(cleared)} cleared)" if cleared else ""
        impact = Impact.IMPROVEMENT
    return Change(
        name,
        address,
        Aspect.STATUS,
        impact,
        before.value,
        after.value,
        f"status {before.value} → {after.value}{why}",
    )


_Fact = tuple[Impact, str]

_OLDER_BASELINE = (
    "names and key type not compared: the baseline, saved by an older probe, holds neither "
    "(only the target's name was); save a new baseline"
)


def _certificate_change(
    name: str, address: IPAddress, before: AddressFacts, after: CertInfo | None, hostname: str
) -> Change | None:
    """The leaf changed (another fingerprint): classify by issuing CA, names, key type and expiry.

    Any fact that is a regression (a new issuing CA, a name the old leaf covered and the new
    one does not, ``hostname`` among them; another key algorithm or a smaller key; an
    earlier notAfter) makes the change one.
    """
    leaf = before.leaf
    if leaf is None or after is None or leaf.sha256_fingerprint == after.sha256_fingerprint:
        return None
    facts = [_issuer_fact(leaf, after), *_name_facts(before, after, hostname), *_key_facts(leaf, after)]
    facts.append(_expiry_fact(leaf.not_after_timestamp, after.not_after_timestamp))
    if leaf.dns_names is None or leaf.key is None:
        facts.append((Impact.NEUTRAL, _OLDER_BASELINE))
    regression = any(impact is Impact.REGRESSION for impact, _ in facts)
    old_issuer, new_issuer = printable(common_name_of(leaf.issuer)), printable(common_name_of(after.issuer))
    old_expiry, new_expiry = format_time(leaf.not_after_timestamp), format_time(after.not_after_timestamp)
    verb = "renewed" if after.not_after_timestamp > leaf.not_after_timestamp else "replaced"
    return Change(
        name,
        address,
        Aspect.CERTIFICATE,
        Impact.REGRESSION if regression else Impact.NEUTRAL,
        f"{leaf.sha256_fingerprint[:16]}… {old_issuer}, expires {old_expiry}",
        f"{after.sha256_fingerprint[:16]}… {new_issuer}, expires {new_expiry}",
        f"certificate {verb} {'; '.join(text for _, text in facts)}",
    )


def _issuer_fact(before: LeafFacts, after: CertInfo) -> _Fact:
    """The same issuer, another CA of the same organization (neutral), or a new issuing CA (a regression)."""
    old_issuer, new_issuer = printable(common_name_of(before.issuer)), printable(common_name_of(after.issuer))
    if before.issuer == after.issuer:
        return Impact.NEUTRAL, f"by the same issuer ({new_issuer})"
    old_org, new_org = _organization(before.issuer), _organization(after.issuer)
    if old_org is not None and old_org == new_org:
        return (
            Impact.NEUTRAL,
            f"by {new_issuer}, another CA of the same organization ({printable(new_org)}; was {old_issuer})",
        )
    return (
        Impact.REGRESSION,
        f"by a new issuer {new_issuer} (was {old_issuer}): clients that trust or pin only the old CA "
        "will refuse it",
    )


def _name_facts(before: AddressFacts, after: CertInfo, hostname: str) -> list[_Fact]:
    """The names the old leaf covered and the new one does not (a regression), or those it adds.

    A baseline saved by an older probe holds no names: then only ``hostname`` is compared,
    taken as covered before when the address had no ``cert_hostname_mismatch`` then.
    """
    assert before.leaf is not None
    now = (*after.dns_names, *after.ip_addresses)
    if before.leaf.dns_names is None:
        covered = Reason.CERT_HOSTNAME_MISMATCH.value not in before.reasons
        return _lost_names([hostname] if covered and not _covers(now, hostname) else [], now, hostname)
    old = (*before.leaf.dns_names, *(before.leaf.ip_addresses or ()))
    lost = [n for n in _names_to_keep(old, hostname) if not _covers(now, n)]
    if lost:
        return _lost_names(lost, now, hostname)
    gained = [n for n in now if not _covers(old, n)]
    return [(Impact.NEUTRAL, f"now also for {_listed(gained)}")] if gained else []


def _names_to_keep(old: Sequence[str], hostname: str) -> list[str]:
    """The names a new leaf must still cover: ``hostname`` when the old one covered it, then the old names."""
    target = [hostname] if _covers(old, hostname) else []
    return target + [n for n in old if n.lower() != hostname.lower()]


def _lost_names(lost: Sequence[str], now: Sequence[str], hostname: str) -> list[_Fact]:
    """``no longer covers www.corp.example (the target's name): now for other.corp.example``."""
    if not lost:
        return []
    names = [f"{n} (the target's name)" if n == hostname else n for n in lost]
    return [(Impact.REGRESSION, f"no longer covers {_listed(names)}: now for {_listed(now) or 'no name'}")]


def _covers(names: Sequence[str], name: str) -> bool:
    """Whether a certificate for ``names`` (SAN DNS names and IP addresses) covers ``name`` (RFC 6125)."""
    return any(n.lower() == name.lower() or hostname_matches(n, name) for n in names)


def _listed(names: Sequence[str], most: int = 4) -> str:
    """``"a, b, c"``; past ``most`` names, ``"a, b, c, d and 3 more"``."""
    shown = ", ".join(printable(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _key_facts(before: LeafFacts, after: CertInfo) -> list[_Fact]:
    """Another key algorithm, or a smaller key of the same one, is a regression; a larger one is neutral.

    Not compared when the baseline holds no key type (an older probe) or either is unknown.
    """
    if before.key is None or before.key == after.key:
        return []
    change = f"key {printable(before.key)} → {printable(after.key)}"
    old, new = _key_kind(before.key), _key_kind(after.key)
    if "unknown" in (before.key, after.key):
        return [(Impact.NEUTRAL, change)]
    if old[0] != new[0]:
        return [
            (
                Impact.REGRESSION,
                f"{change}: clients that support or pin only {printable(old[0])} keys refuse it",
            )
        ]
    if new[1] < old[1]:
        return [(Impact.REGRESSION, f"{change}: a smaller key")]
    return [(Impact.NEUTRAL, change)]


def _key_kind(key: str) -> tuple[str, int]:
    """A key type's algorithm and size: ``"RSA 2048"`` → ``("RSA", 2048)``, ``"EC P-384"`` → ``("EC", 384)``.

    A type without a size (``"Ed25519"``) has size 0.
    """
    kind, _, size = key.partition(" ")
    digits = "".join(c for c in size if c.isdigit())
    return kind, int(digits) if digits else 0


def _expiry_fact(before: float, after: float) -> _Fact:
    """An earlier notAfter is a regression; the same or a later one is neutral."""
    if after < before:
        return Impact.REGRESSION, f"expires earlier: {format_time(after)}, was {format_time(before)}"
    if after > before:
        return Impact.NEUTRAL, f"expires {format_time(after)}, was {format_time(before)}"
    return Impact.NEUTRAL, f"same expiry {format_time(after)}"


def _organization(rfc4514: str) -> str | None:
    """The ``O=`` of an RFC 4514 name, ``None`` when it has none or cannot be read."""
    try:
        names = x509.Name.from_rfc4514_string(rfc4514).get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    except ValueError:
        return None
    return str(names[0].value) if names else None
