"""Before and after a change: save what matters of a check, compare a later check with it.

Pure logic plus two small file functions (``load`` and ``save``). :func:`snapshot` turns
results into the baseline document, :func:`compare` classifies what changed since a
baseline as ``neutral``, ``improvement`` or ``regression``. The file format is public and
versioned (``format_version``); docs/json-document.md ("Baseline file") documents it and the
rules below.

Rules (per target, matched by name and URL):

- status: worse is a regression, better an improvement (also per address);
- address set: an address gone from the answer is a regression, a new one is neutral
  (its own verdict says whether it works);
- backends: a backend that no longer answers for the target is a regression, a new one an
  improvement; a backend that still answers, but no longer via one address, is a
  regression at that address (the symptom of cross-zone balancing turned off); without a
  backend rule now, backends are not compared (one neutral change says so);
- leaf certificate (where both checks obtained one), when its SHA-256 fingerprint changed:
  an earlier notAfter is a regression; a new issuing CA (an issuer of another
  organization, ``O=``, or without one, a different issuer name) is a regression too,
  because clients that trust or pin only the old CA will refuse the new certificate;
  otherwise (same issuer, or another intermediate of the same organization as with ACM's
  rotating intermediates) it is neutral;
- TLS version (where both handshakes completed): lower is a regression, higher an
  improvement; ALPN: any change is neutral.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, IPvAnyAddress, ValidationError

from probe._files import MAX_BASELINE_BYTES, FileRefused, read_capped
from probe._text import printable, shorten
from probe._version import __version__
from probe.model.reasons import Status
from probe.model.results import AddressResult, CertInfo, IPAddress, TargetResult, TlsResult
from probe.stages.certs import common_name_of, format_time

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
    """The server certificate of one address, as saved."""

    sha256_fingerprint: str
    subject: str
    issuer: str
    not_after_timestamp: float


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
        notAfter) and backends seen.
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
    except json.JSONDecodeError as exc:
        if not text.strip():
            raise BaselineError(path, "empty file, not a probe baseline") from None
        raise BaselineError(
            path,
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): corrupt, truncated "
            "or not a baseline file",
        ) from None
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


def check_writable(path: str | Path) -> None:
    """Refuse early a path a baseline cannot be saved at (before the check runs).

    Raises:
        BaselineError: the directory does not exist, or the path is a directory.
    """
    target = Path(path)
    if target.is_dir():
        raise BaselineError(path, "is a directory; give a file name to save the baseline in")
    if not target.parent.is_dir():
        raise BaselineError(path, f"cannot save the baseline: directory {target.parent} does not exist")


def save(path: str | Path, document: Mapping[str, Any]) -> None:
    """Write a baseline document atomically: a temporary file in the same directory, then rename.

    A reader sees the old file or the new one, never half of one; an existing file is replaced.

    Raises:
        BaselineError: the file cannot be written (``OSError``).
    """
    target = Path(path)
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


def match(baseline: Baseline, targets: Iterable[tuple[str, str]], path: str | Path) -> None:
    """Refuse a baseline that is about other targets than the ones checked now.

    Targets are keyed by name and URL. A name saved with another URL is refused; so is a
    baseline that holds none of the checked targets.

    Args:
        baseline: the loaded baseline.
        targets: ``(name, url)`` of each target checked now.
        path: the file, for messages.

    Raises:
        BaselineError: the baseline is from another target.
    """
    saved = {t.name: t.url for t in baseline.targets}
    checked = list(targets)
    for name, url in checked:
        if name in saved and saved[name] != url:
            raise BaselineError(path, f"baseline of another target: {name} was {saved[name]}, now {url}")
    if not any(name in saved for name, _ in checked):
        before = ", ".join(f"{t.name} ({t.url})" for t in baseline.targets) or "no target"
        now = ", ".join(f"{name} ({url})" for name, url in checked)
        raise BaselineError(path, f"baseline of another target: it holds {before}, not {now}")


# --------------------------------------------------------------------------- comparing


_TLS_ORDER = {"SSLv3": 0, "TLSv1": 1, "TLSv1.1": 2, "TLSv1.2": 3, "TLSv1.3": 4}


def compare(baseline: Baseline, results: Sequence[TargetResult], path: str | Path = "") -> Comparison:
    """Classify every change between a baseline and the current check.

    Targets are matched by name (see :func:`match` for refusing foreign baselines); a target
    not in the baseline gets one neutral ``target`` change; baseline targets not checked now
    are ignored (``--target`` may select a few).

    Args:
        baseline: the loaded baseline.
        results: one result per target, as checked now.
        path: the baseline file, carried into the comparison for the report.

    Returns:
        The comparison; its changes follow the results' order, target facts first.
    """
    saved = {t.name: t for t in baseline.targets}
    changes: list[Change] = []
    for result in results:
        before = saved.get(result.target.name)
        if before is None:
            changes.append(
                Change(
                    result.target.name,
                    None,
                    Aspect.TARGET,
                    Impact.NEUTRAL,
                    None,
                    result.target.url,
                    "not in the baseline: nothing to compare",
                )
            )
            continue
        changes.extend(_target_changes(before, result))
    return Comparison(str(path), baseline.saved_timestamp, tuple(changes))


def _target_changes(before: TargetFacts, result: TargetResult) -> list[Change]:
    """A target's changes: its status, its address set, its backends, then each address's."""
    name = result.target.name
    reasons = [r.value for r in result.reasons]
    status = _status_change(name, None, before.status, before.reasons, result.status, reasons)
    changes = [status] if status is not None else []
    changes.extend(_answer_changes(name, before.addresses, _address_set(result)))
    backends_now = set(result.backend_counts)
    changes.extend(_backend_changes(name, before.backends, backends_now, result.target.identifying_rule))
    for address_result in result.addresses:
        facts = before.per_address.get(str(address_result.address))
        if facts is not None:
            changes.extend(_address_changes(name, facts, address_result, backends_now))
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


def _backend_changes(
    name: str, before: Sequence[str], now: set[str], rule: tuple[str, str] | None
) -> list[Change]:
    """Backends that no longer answer for the target (regressions), then the new ones (improvements)."""
    if rule is None and not now and before:
        # No backend rule now (none configured, or --backend-header left out): the check
        # could not identify backends, which says nothing about whether they still answer.
        return [
            Change(
                name,
                None,
                Aspect.BACKEND,
                Impact.NEUTRAL,
                ", ".join(before),
                None,
                f"backends not compared: no backend rule now (backend.header or backend.body_regex); "
                f"the baseline saw {printable(', '.join(before))}",
            )
        ]
    seen = ", ".join(sorted(now)) or "none"
    lost = [
        Change(
            name,
            None,
            Aspect.BACKEND,
            Impact.REGRESSION,
            backend,
            None,
            f"backend {printable(backend)} no longer answers (seen now: {printable(seen)})",
        )
        for backend in before
        if backend not in now
    ]
    new = [
        Change(
            name,
            None,
            Aspect.BACKEND,
            Impact.IMPROVEMENT,
            None,
            backend,
            f"backend {printable(backend)} answers now",
        )
        for backend in sorted(now - set(before))
    ]
    return lost + new


def _address_changes(
    name: str, before: AddressFacts, result: AddressResult, backends_now: set[str]
) -> list[Change]:
    """An address's changes: its status, its certificate, its TLS version and ALPN, its backends."""
    address = result.address
    reasons = list(dict.fromkeys(f.reason.value for f in result.failures))
    found = (
        _status_change(name, address, before.status, before.reasons, result.status, reasons),
        _certificate_change(name, address, before.leaf, result.tls.leaf),
        *_handshake_changes(name, address, before, result.tls),
    )
    changes = [change for change in found if change is not None]
    changes.extend(_backends_gone_here(name, before.backends, result, backends_now))
    return changes


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


def _backends_gone_here(
    name: str, before: Sequence[str], result: AddressResult, backends_now: set[str]
) -> list[Change]:
    """Backends that still answer for the target but no longer via this address.

    Only when this address answered at all (an address that fails now shows as a status change).
    """
    if not any(a.status_code is not None for a in result.attempts):
        return []
    here = set(result.backend_counts)
    return [
        Change(
            name,
            result.address,
            Aspect.BACKEND,
            Impact.REGRESSION,
            backend,
            None,
            f"backend {printable(backend)} no longer answers via this address (it still answers via others)",
        )
        for backend in before
        if backend not in here and backend in backends_now
    ]


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


def _certificate_change(
    name: str, address: IPAddress, before: LeafFacts | None, after: CertInfo | None
) -> Change | None:
    """The leaf changed (another fingerprint): classify by expiry and issuing CA."""
    if before is None or after is None or before.sha256_fingerprint == after.sha256_fingerprint:
        return None
    old_issuer, new_issuer = printable(common_name_of(before.issuer)), printable(common_name_of(after.issuer))
    old_expiry, new_expiry = before.not_after_timestamp, after.not_after_timestamp
    facts = []
    impact = Impact.NEUTRAL
    if before.issuer == after.issuer:
        facts.append(f"by the same issuer ({new_issuer})")
    else:
        old_org, new_org = _organization(before.issuer), _organization(after.issuer)
        if old_org is not None and old_org == new_org:
            facts.append(
                f"by {new_issuer}, another CA of the same organization "
                f"({printable(new_org)}; was {old_issuer})"
            )
        else:
            impact = Impact.REGRESSION
            facts.append(
                f"by a new issuer {new_issuer} (was {old_issuer}): clients that trust or pin only "
                "the old CA will refuse it"
            )
    if new_expiry < old_expiry:
        impact = Impact.REGRESSION
        facts.append(f"expires earlier: {format_time(new_expiry)}, was {format_time(old_expiry)}")
    elif new_expiry > old_expiry:
        facts.append(f"expires {format_time(new_expiry)}, was {format_time(old_expiry)}")
    else:
        facts.append(f"same expiry {format_time(new_expiry)}")
    verb = "renewed" if new_expiry > old_expiry else "replaced"
    return Change(
        name,
        address,
        Aspect.CERTIFICATE,
        impact,
        f"{before.sha256_fingerprint[:16]}… {old_issuer}, expires {format_time(old_expiry)}",
        f"{after.sha256_fingerprint[:16]}… {new_issuer}, expires {format_time(new_expiry)}",
        f"certificate {verb} {'; '.join(facts)}",
    )


def _organization(rfc4514: str) -> str | None:
    """The ``O=`` of an RFC 4514 name, ``None`` when it has none or cannot be read."""
    try:
        names = x509.Name.from_rfc4514_string(rfc4514).get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    except ValueError:
        return None
    return str(names[0].value) if names else None
