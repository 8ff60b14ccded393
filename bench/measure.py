"""Pure helpers of the benchmark: read /proc, parse expositions and HAProxy stats, summarise.

Nothing here opens a socket or reads a clock; the harness in :mod:`bench.run` passes text in.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: A label pair of the Prometheus text format, value with backslash escapes.
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def cpu_seconds(stat: str, ticks_per_second: int, *, children: bool = False) -> float:
    """User plus system CPU time of a process, from the text of ``/proc/PID/stat``.

    Args:
        stat: the file's content (see proc(5); the command name may contain spaces and
            parentheses, so fields are counted after the last ``)``).
        ticks_per_second: ``os.sysconf("SC_CLK_TCK")``, usually 100 (10 ms resolution).
        children: add ``cutime`` + ``cstime`` (waited-for children) too.

    Returns:
        Seconds of CPU, all threads of the process included (exited ones too).

    Raises:
        ValueError: the text is not a stat line.
    """
    rest = stat[stat.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17.
    ticks = int(rest[11]) + int(rest[12])
    if children:
        ticks += int(rest[13]) + int(rest[14])
    return ticks / ticks_per_second


def status_bytes(status: str, key: str) -> int:
    """A ``kB`` value of ``/proc/PID/status`` (``VmHWM``, ``VmRSS`` …) in bytes.

    Raises:
        KeyError: the key is absent.
    """
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            number, _, unit = value.strip().partition(" ")
            return int(number) * (1024 if unit.strip() == "kB" else 1)
    raise KeyError(key)


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample line of the Prometheus text format."""

    name: str
    labels: dict[str, str]
    value: float


def parse_samples(text: str) -> list[Sample]:
    """The samples of a Prometheus text-format exposition (comments and blank lines skipped).

    Timestamps after the value are ignored. ``+Inf``, ``-Inf`` and ``NaN`` are read as floats.

    Raises:
        ValueError: a line is not ``name[{labels}] value [timestamp]``.
    """
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        if brace >= 0:
            end = line.rindex("}")
            name = line[:brace]
            labels = {k: _unescape(v) for k, v in _LABEL.findall(line[brace + 1 : end])}
            rest = line[end + 1 :].split()
        else:
            name, *rest = line.split()
            labels = {}
        if not rest:
            raise ValueError(f"no value in sample line {line!r}")
        samples.append(Sample(name, labels, float(rest[0])))
    return samples


def _unescape(value: str) -> str:
    return re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], value) if "\\" in value else value


def values(samples: Iterable[Sample], name: str, **labels: str) -> list[float]:
    """The values of the samples called ``name`` whose labels include ``labels``."""
    return [
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def haproxy_stats(csv: str) -> dict[tuple[str, str], dict[str, str]]:
    """HAProxy's ``show stat`` CSV as ``{(pxname, svname): {field: value}}``.

    The first line is the header, ``# pxname,svname,…``.

    Raises:
        ValueError: no header line.
    """
    lines = [line for line in csv.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise ValueError("not HAProxy stat CSV: no '# pxname,svname,…' header")
    header = lines[0][2:].split(",")
    rows = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        rows[row["pxname"], row["svname"]] = row
    return rows


def counter(stats: dict[tuple[str, str], dict[str, str]], proxy: str, field: str) -> int:
    """A counter of a frontend (``svname`` FRONTEND) or backend (BACKEND); 0 when empty."""
    row = stats.get((proxy, "FRONTEND")) or stats.get((proxy, "BACKEND")) or {}
    return int(row.get(field) or 0)


def percentile(data: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks (numpy's default).

    Raises:
        ValueError: ``data`` is empty or ``q`` outside 0-100.
    """
    if not data or not 0 <= q <= 100:
        raise ValueError("percentile of no data, or q outside 0-100")
    ordered = sorted(data)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(data: Sequence[float]) -> float:
    """The 50th percentile."""
    return percentile(data, 50)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, ``None`` when either is unknown or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclass(frozen=True, slots=True)
class Goal:
    """One goal of issue 9 and whether this run met it.

    Attributes:
        name: what is compared.
        value: the measured figure (a ratio, seconds, bytes …), ``None`` when missing.
        limit: the goal's bound; the goal is met when ``value <= limit``.
        unit: how to print value and limit (``"x"``, ``"%"``, ``"ms"``, ``"MiB"``, ``""``).
    """

    name: str
    value: float | None
    limit: float
    unit: str

    @property
    def met(self) -> bool | None:
        """``value <= limit``; ``None`` when the value is missing."""
        return None if self.value is None else self.value <= self.limit


def format_value(value: float | None, unit: str) -> str:
    """A figure for the table: ``-`` when missing, else scaled for its unit."""
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value * 1000:.1f} ms"
    if unit == "MiB":
        return f"{value / 2**20:.1f} MiB"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "MB":
        return f"{value / 1e6:.2f} MB"
    if unit == "":
        return f"{value:g}"
    return f"{value:.3g} {unit}"


def socket_peers(table: str) -> dict[int, tuple[str, int]]:
    """Remote ends by socket inode, from ``/proc/net/{tcp,udp,tcp6,udp6}`` (see proc(5)).

    Addresses there are hexadecimal in host byte order per 32-bit word (little-endian on
    x86 and arm64): ``0100007F:0035`` is 127.0.0.1 port 53. An unconnected socket has the
    peer ``0.0.0.0`` / ``::`` port 0.

    Returns:
        ``{inode: (remote_ip, remote_port)}``; IPv4-mapped IPv6 peers as IPv4.
    """
    peers = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        address, _, port = fields[2].partition(":")
        raw = bytes.fromhex(address)
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
        ip = ipaddress.ip_address(words)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # an IPv4 peer of a dual-stack socket
        peers[int(fields[9])] = (str(ip), int(port, 16))
    return peers


def non_loopback(peers: Iterable[tuple[str, int]]) -> set[str]:
    """The remote addresses that are neither loopback nor unset (``0.0.0.0``, ``::``)."""
    found = set()
    for address, _ in peers:
        ip = ipaddress.ip_address(address)
        if not (ip.is_loopback or ip.is_unspecified):
            found.add(address)
    return found
