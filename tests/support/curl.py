"""curl as the reference client: does it complete a verified GET where probe was sent?

Tests compare probe's TLS verdict with curl's against the same loopback server. curl runs
with OpenSSL's defaults unless told otherwise, trusts only the given CA file, ignores proxy
settings and reaches the host at the given address (``--resolve``), so no name is looked up.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from probe._text import host_port

#: curl's exit code when the TLS handshake fails (CURLE_SSL_CONNECT_ERROR).
HANDSHAKE_FAILED = 35

#: curl's exit code when the server's certificate does not verify (CURLE_PEER_FAILED_VERIFICATION).
CERTIFICATE_REFUSED = 60


@dataclass(frozen=True)
class CurlVerdict:
    """How one curl GET ended.

    Attributes:
        returncode: curl's exit code: 0 verified and answered, :data:`HANDSHAKE_FAILED`,
            :data:`CERTIFICATE_REFUSED`, 28 timed out, 7 no connection ….
        stderr: curl's error line, for the assertion message.
        stdout: what curl wrote to stdout (``-D -`` headers, ``-w`` output); the body goes to /dev/null.
    """

    returncode: int
    stderr: str
    stdout: str = ""

    @property
    def ok(self) -> bool:
        """Whether curl completed the GET (the certificate verified, the server answered)."""
        return self.returncode == 0


def curl_get(ca_file: Path, host: str, address: object, port: int, *extra: str) -> CurlVerdict:
    """GET ``https://HOST:PORT/`` at ``address`` with curl, trusting only ``ca_file``.

    Args:
        ca_file: PEM file of the CAs curl trusts (``--cacert``).
        host: the name in the URL, for SNI and the certificate's name check; an IP address
            (IPv6 without brackets) makes an IP-address URL, which curl verifies against
            the address, without SNI.
        address: the loopback address curl connects to (an IP address or its text); for an
            IP-address ``host``, ``host`` itself (no ``--resolve``).
        port: the TCP port.
        extra: more curl options, before the URL (e.g. ``--tlsv1.1``).

    Returns:
        curl's verdict; a GET that takes over 5 s fails (exit code 28).

    Raises:
        pytest.skip.Exception: curl is not installed (``PROBE_REQUIRE_E2E=1`` turns it into a failure).
    """
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "--noproxy",
            "*",
            "--max-time",
            "5",
            "--cacert",
            str(ca_file),
            *([] if _is_address(host) else ["--resolve", f"{host}:{port}:{address}"]),
            *extra,
            f"https://{host_port(host, port)}/",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return CurlVerdict(done.returncode, done.stderr, done.stdout)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
