"""The loopback lab of the benchmark: dnsmasq, the backends, HAProxy, blackbox_exporter, probe.

Everything listens on and connects to 127.0.90.0/23 only:

* dnsmasq on 127.0.90.53 answers ``www.bench.example`` with HAProxy's two addresses; it is
  authoritative for ``bench.example`` (``--local``), reads no /etc/resolv.conf and has no
  upstream, so it never forwards a query.
* Backends web-1 (127.0.91.1), web-2 (127.0.91.2) and slow (127.0.91.3, every answer
  300 ms late) run in their own process (:mod:`bench.backends`).
* HAProxy is the load balancer: TLS termination with a chain made per run
  (:mod:`probe.lab.pki`), ``bind`` on 127.0.90.1 and 127.0.90.2, ALPN h2 and http/1.1.
  Three frontends on three ports with identical settings, so its counters tell the tools
  apart: ``fe_probe`` (probe's targets), ``fe_bb`` (blackbox_exporter's probes), both
  round-robin over web-1 and web-2, and ``fe_slow`` (the slow backend, both tools). Its
  stats come from a Unix socket.
* blackbox_exporter listens on 127.0.90.100 and only ever probes ``https://127.0.90.1:P/``
  style URLs: an IP literal, with Host and SNI set by its module. Go's resolver returns an
  IP literal without a query, so it never asks the system resolver anything.
* probe listens on 127.0.90.101 and resolves only with the dnsmasq above.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from probe.lab.pki import Pki

HOSTNAME = "www.bench.example"
LB_ADDRESSES = ("127.0.90.1", "127.0.90.2")
LB_NETWORK = "127.0.90.0/24"
DNS_ADDRESS = "127.0.90.53"
LISTENER_ADDRESS = "127.0.90.54"  # the "first DNS query" listener
BLACKBOX_ADDRESS = "127.0.90.100"
PROBE_ADDRESS = "127.0.90.101"
BACKENDS = (("web-1", "127.0.91.1", 0.0), ("web-2", "127.0.91.2", 0.0), ("slow", "127.0.91.3", 0.3))
SLOW_DELAY = 0.3
BLACKBOX_MODULE = "bench_2xx"
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
START_TIMEOUT = 15.0


class BenchError(Exception):
    """The lab could not be set up or a tool misbehaved; the message says which and why."""


def find_program(name: str) -> str:
    """The path of ``name`` on PATH or in the sbin directories.

    Raises:
        BenchError: not installed.
    """
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *_SBIN]))
    if found is None:
        raise BenchError(f"{name} is not installed (./dev bench installs it with apt-get)")
    return found


def clean_environment() -> dict[str, str]:
    """This process's environment without proxy settings: every tool talks to loopback only."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


class Process:
    """A child process whose output goes to a log file in the work directory."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        *,
        stdout_pipe: bool = False,
        env: dict[str, str] | None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            env=env,
            cwd=workdir,
        )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    @property
    def running(self) -> bool:
        """The process has not exited."""
        return self.proc.poll() is None

    def describe(self) -> str:
        """Command, state and the end of the log, for error messages."""
        state = "running" if self.running else f"exited with {self.proc.returncode}"
        text = self.log_path.read_text(errors="replace")[-3000:]
        return f"{self.name} ({state}): {' '.join(self.argv)}\n--- log ---\n{text}"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s. Idempotent."""
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def free_port(
    addresses: tuple[str, ...], kinds: tuple[socket.SocketKind, ...] = (socket.SOCK_STREAM,)
) -> int:
    """A port free on every address for every socket kind.

    Raises:
        BenchError: none found in 50 tries.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, kinds[0]) as first:
            first.bind((addresses[0], 0))
            port: int = first.getsockname()[1]
            try:
                for address in addresses:
                    for kind in kinds:
                        if (address, kind) != (addresses[0], kinds[0]):
                            with socket.socket(socket.AF_INET, kind) as other:
                                other.bind((address, port))
            except OSError:
                continue
        return port
    raise BenchError(f"no port free on all of {', '.join(addresses)}")


def wait_until(
    what: str, check: Callable[[], bool], process: Process, timeout: float = START_TIMEOUT
) -> None:
    """Poll ``check`` until true.

    Raises:
        BenchError: the process exited or ``timeout`` seconds passed.
    """
    limit = time.monotonic() + timeout
    while not check():
        if not process.running:
            raise BenchError(f"{what}: the process exited\n{process.describe()}")
        if time.monotonic() > limit:
            raise BenchError(f"{what}: not ready within {timeout:g} s\n{process.describe()}")
        time.sleep(0.05)


def accepts(address: str, port: int) -> bool:
    """A TCP connection to ``address:port`` succeeds."""
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_get(address: str, port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """``GET path`` over a new HTTP/1.1 connection to a loopback address: ``(status, body)``."""
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _http_ok(address: str, port: int, path: str) -> bool:
    try:
        return http_get(address, port, path, timeout=2)[0] == 200
    except OSError:
        return False


class Scene:
    """The whole lab, started by :meth:`start` and stopped by :meth:`stop` (a context manager).

    Args:
        workdir: configs, certificates and logs go here.
        probe_tree: the tree ``probe`` runs from (``PYTHONPATH``); ``None`` for this one.
    """

    def __init__(self, workdir: Path, probe_tree: str | None = None) -> None:
        self.workdir = workdir
        self.env = clean_environment()
        #: The environment of probe's own processes (``probe run``, ``probe check``, ``--help``).
        self.probe_env = {**self.env, "PYTHONPATH": probe_tree} if probe_tree else self.env
        self.processes: list[Process] = []
        self.pki = Pki.create("probe bench")
        self.leaf = self.pki.leaf(HOSTNAME)
        self.ca_file = self.pki.write_ca(workdir / "ca.pem")
        self.haproxy_pem = workdir / "haproxy.pem"
        self.haproxy_pem.write_bytes(self.leaf.chain_pem() + self.leaf.key_pem)
        self.haproxy_pem.chmod(0o600)
        self.stats_socket = workdir / "haproxy.sock"
        self.dns_port = 0
        self.ports: dict[str, int] = {}  # frontend name -> port
        self.backends: dict[str, tuple[str, int]] = {}
        self.blackbox_port = 0
        self.haproxy: Process | None = None
        self.blackbox: Process | None = None

    def __enter__(self) -> Scene:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every process started, newest first."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def start(self) -> None:
        """Start dnsmasq, the backends, HAProxy and blackbox_exporter; wait until each answers.

        Raises:
            BenchError: a program is missing or did not come up.
        """
        self._start_dnsmasq()
        self._start_backends()
        self._start_haproxy()
        self._start_blackbox()

    def url(self, frontend: str, address: str | None = None, path: str = "/") -> str:
        """The URL of a frontend, by name or (for blackbox_exporter) at one address."""
        return f"https://{address or HOSTNAME}:{self.ports[frontend]}{path}"

    @property
    def resolver(self) -> str:
        """``IP:port`` of dnsmasq, as probe's ``--resolver`` takes it."""
        return f"{DNS_ADDRESS}:{self.dns_port}"

    # ----------------------------------------------------------------- dnsmasq

    def _start_dnsmasq(self) -> None:
        binary = find_program("dnsmasq")
        for attempt in range(5):
            port = free_port((DNS_ADDRESS,), (socket.SOCK_DGRAM, socket.SOCK_STREAM))
            argv = [
                binary,
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",  # no upstream from /etc/resolv.conf, and no --server: never forwards
                "--no-hosts",
                "--bind-interfaces",
                f"--listen-address={DNS_ADDRESS}",
                f"--port={port}",
                "--user=root",
                "--pid-file=",
                "--log-facility=-",
                "--local=/bench.example/",
                "--local-ttl=60",
                *(f"--host-record={HOSTNAME},{address}" for address in LB_ADDRESSES),
            ]
            process = Process(f"dnsmasq-{attempt}", argv, self.workdir, env=self.env)
            self.processes.append(process)
            try:
                wait_until("dnsmasq", functools.partial(_answers_lab, port), process)
            except BenchError:
                if process.running:
                    raise
                continue  # the port was taken meanwhile: try another
            self.dns_port = port
            return
        raise BenchError("dnsmasq did not start in 5 attempts")

    # ----------------------------------------------------------------- backends

    def _start_backends(self) -> None:
        specs = [f"{name}={address}" + (f":{delay}" if delay else "") for name, address, delay in BACKENDS]
        argv = [sys.executable, "-m", "bench.backends", *specs]
        env = {**self.env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        process = Process("backends", argv, self.workdir, stdout_pipe=True, env=env)
        self.processes.append(process)
        assert process.proc.stdout is not None
        line = process.proc.stdout.readline()
        if not line:
            raise BenchError(f"the backends did not start\n{process.describe()}")
        self.backends = {name: (address, port) for name, (address, port) in json.loads(line).items()}

    # ----------------------------------------------------------------- HAProxy

    def haproxy_config(self, ports: dict[str, int]) -> str:
        """HAProxy's configuration for the given frontend ports."""
        sections = []
        for frontend, backend, servers in (
            ("fe_probe", "be_probe", ("web-1", "web-2")),
            ("fe_bb", "be_bb", ("web-1", "web-2")),
            ("fe_slow", "be_slow", ("slow",)),
        ):
            binds = "\n".join(
                f"    bind {a}:{ports[frontend]} ssl crt {self.haproxy_pem} alpn h2,http/1.1"
                for a in LB_ADDRESSES
            )
            lines = "\n".join(f"    server {s} {self.backends[s][0]}:{self.backends[s][1]}" for s in servers)
            sections.append(
                f"frontend {frontend}\n{binds}\n    default_backend {backend}\n\n"
                f"backend {backend}\n    balance roundrobin\n{lines}\n"
            )
        return (
            "global\n"
            f"    stats socket {self.stats_socket} mode 600 level user\n"
            "\n"
            "defaults\n"
            "    mode http\n"
            "    retries 0\n"
            "    timeout connect 2s\n"
            "    timeout client 10s\n"
            "    timeout server 10s\n\n" + "\n".join(sections)
        )

    def _start_haproxy(self) -> None:
        binary = find_program("haproxy")
        for attempt in range(5):
            ports: dict[str, int] = {}
            for frontend in ("fe_probe", "fe_bb", "fe_slow"):
                port = free_port(LB_ADDRESSES)
                while port in ports.values():
                    port = free_port(LB_ADDRESSES)
                ports[frontend] = port
            config = self.workdir / f"haproxy-{attempt}.cfg"
            config.write_text(self.haproxy_config(ports))
            process = Process(
                f"haproxy-{attempt}", [binary, "-db", "-f", str(config)], self.workdir, env=self.env
            )
            self.processes.append(process)

            def ready(ports: dict[str, int] = ports) -> bool:
                return all(accepts(a, p) for a in LB_ADDRESSES for p in ports.values())

            try:
                wait_until("HAProxy", ready, process)
            except BenchError:
                if process.running:
                    raise
                continue
            self.ports = ports
            self.haproxy = process
            return
        raise BenchError("HAProxy did not start in 5 attempts")

    def haproxy_stats(self) -> str:
        """HAProxy's ``show stat`` CSV, from its stats socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    # ----------------------------------------------------------------- blackbox_exporter

    def blackbox_config(self) -> str:
        """blackbox_exporter's module: http_2xx over verified TLS with the lab's CA, as intended."""
        return f"""\
modules:
  {BLACKBOX_MODULE}:
    prober: http
    timeout: 5s
    http:
      method: GET
      valid_status_codes: []      # 2xx
      fail_if_not_ssl: true
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      # The target is an IP literal (no DNS query at all); Host and SNI name the service.
      headers:
        Host: {HOSTNAME}
      tls_config:
        ca_file: {self.ca_file}
        server_name: {HOSTNAME}
"""

    def _start_blackbox(self) -> None:
        binary = find_program("prometheus-blackbox-exporter")
        config = self.workdir / "blackbox.yml"
        config.write_text(self.blackbox_config())
        for attempt in range(5):
            port = free_port((BLACKBOX_ADDRESS,))
            argv = [
                binary,
                f"--config.file={config}",
                f"--web.listen-address={BLACKBOX_ADDRESS}:{port}",
                "--log.level=warn",
            ]
            process = Process(f"blackbox-{attempt}", argv, self.workdir, env=self.env)
            self.processes.append(process)
            try:
                wait_until(
                    "blackbox_exporter",
                    functools.partial(_http_ok, BLACKBOX_ADDRESS, port, "/metrics"),
                    process,
                )
            except BenchError:
                if process.running:
                    raise
                continue
            self.blackbox_port = port
            self.blackbox = process
            return
        raise BenchError("blackbox_exporter did not start in 5 attempts")

    def blackbox_probe_path(self, frontend: str, address: str, path: str = "/") -> str:
        """The ``/probe`` request path for a frontend at one HAProxy address."""
        target = self.url(frontend, address, path)
        return f"/probe?module={BLACKBOX_MODULE}&target={target}"

    # ----------------------------------------------------------------- probe

    def probe_config(self, targets: int, interval: float, *, slow_interval: float, requests: int = 1) -> str:
        """The config of ``probe run``: ``targets`` targets on fe_probe and one ``slow`` target on fe_slow.

        Default settings except ``requests_per_address`` (``requests``, 1 unless asked) and
        the lab's resolver, network and CA; the slow target has ``interval`` and deadline
        ``slow_interval``, and one request per address whatever ``requests`` is (its timings
        are compared with one ``/probe`` of blackbox_exporter).
        """
        lines = [
            "defaults:",
            f"  resolvers: ['{self.resolver}']",
            f"  expect_networks: ['{LB_NETWORK}']",
            f"  ca_file: {self.ca_file}",
            f"  requests_per_address: {requests}",
            f"  interval: {interval:g}",
            f"  timeouts: {{deadline: {min(25, interval):g}}}",
            "targets:",
            "  - name: slow",
            f"    url: {self.url('fe_slow')}",
            f"    interval: {slow_interval:g}",
            f"    timeouts: {{deadline: {slow_interval:g}}}",
            "    requests_per_address: 1",
        ]
        url = self.url("fe_probe")
        lines += [f"  - {{name: t{i:04d}, url: '{url}'}}" for i in range(targets)]
        return "\n".join(lines) + "\n"

    def start_probe(self, name: str, config_text: str) -> tuple[Process, int]:
        """``probe run`` with this config on 127.0.90.101, once its endpoint answers.

        Returns:
            The process and its endpoint's port.
        """
        config = self.workdir / f"{name}.yaml"
        config.write_text(config_text)
        for attempt in range(5):
            port = free_port((PROBE_ADDRESS,))
            argv = [
                probe_executable(),
                "run",
                "--config",
                str(config),
                "--listen",
                f"{PROBE_ADDRESS}:{port}",
                "--log-level",
                "warning",
            ]
            process = Process(f"{name}-{attempt}", argv, self.workdir, env=self.probe_env)
            self.processes.append(process)
            try:
                wait_until(
                    "probe run", functools.partial(_http_ok, PROBE_ADDRESS, port, "/-/healthy"), process
                )
            except BenchError:
                if process.running:
                    raise
                continue
            return process, port
        raise BenchError("probe run did not start in 5 attempts")


def probe_executable() -> str:
    """The ``probe`` console script next to this Python (the venv's)."""
    candidate = Path(sys.executable).with_name("probe")
    if not candidate.exists():
        raise BenchError(f"no probe script at {candidate}; run ./dev setup")
    return str(candidate)


def _answers_lab(port: int) -> bool:
    return _answers(port) == set(LB_ADDRESSES)


def _answers(port: int) -> set[str] | None:
    query = dns.message.make_query(HOSTNAME, "A")
    try:
        response = dns.query.udp(query, DNS_ADDRESS, port=port, timeout=0.2)
    except (dns.exception.Timeout, OSError):
        return None
    if response.rcode() != dns.rcode.NOERROR:
        return None
    return {item.to_text() for rrset in response.answer for item in rrset}


@contextlib.contextmanager
def first_query_listener() -> Iterator[tuple[socket.socket, int]]:
    """A UDP socket on 127.0.90.54 that receives (and never answers) DNS queries."""
    port = free_port((LISTENER_ADDRESS,), (socket.SOCK_DGRAM,))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LISTENER_ADDRESS, port))
        yield sock, port
