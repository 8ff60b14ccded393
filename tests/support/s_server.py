"""``openssl s_server -www`` on a 127.x address: a real OpenSSL listener for the tests.

Used where the issue asks for OpenSSL's own server (mutual TLS with ``-Verify``); the
process is started per test and killed by the test's fixture.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from probe.lab.pki import Issued

_N = itertools.count(1)

#: ``openssl s_server``'s options for each TLS version the tests pin.
VERSIONS = {"1.2": "-tls1_2", "1.3": "-tls1_3"}


class SServer:
    """``openssl s_server -www`` at ``address``:8443, sending ``leaf`` and its issuer.

    Args:
        workdir: where the certificate files and the log go.
        address: a loopback address no other test uses.
        leaf: the server certificate; its first parent is sent as the chain.
        options: more s_server options (``-Verify 1 -CAfile …``, ``-tls1_3`` …).

    Raises:
        pytest.skip.Exception: the openssl command is not installed.
        AssertionError: the server did not start within 10 s (its log in the message).
    """

    def __init__(self, workdir: Path, address: str, leaf: Issued, *options: str) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("the openssl command is not installed")
        n = next(_N)
        cert, key = leaf.write(workdir, f"s_server{n}", chain=leaf.cert_pem)
        chain = workdir / f"s_server{n}-chain.pem"
        chain.write_bytes(b"".join(parent.cert_pem for parent in leaf.parents[:1]))
        self.address, self.port = address, 8443
        argv = [
            openssl,
            "s_server",
            "-accept",
            f"{address}:{self.port}",
            "-cert",
            str(cert),
            "-key",
            str(key),
        ]
        argv += ["-cert_chain", str(chain), "-www", "-quiet", *options]
        self.log_path = workdir / f"s_server{n}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection((address, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise AssertionError(f"s_server did not start: {self.log_path.read_text()}")

    def stop(self) -> None:
        """Kill the process (its own id) and close its log."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.log.close()
