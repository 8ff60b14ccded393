"""``openssl s_client`` as the reference handshake: does OpenSSL verify what probe was sent?

Tests compare probe's TLS verdict with OpenSSL's own command against the same loopback
server. The client trusts only the given CA file, stops at a verification error
(``-verify_return_error``) and reads nothing from a terminal.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from probe._text import host_port


@dataclass(frozen=True)
class SClientVerdict:
    """How one ``openssl s_client`` handshake ended.

    Attributes:
        returncode: 0 when the handshake completed and verified.
        verify: OpenSSL's ``Verify return code`` line, e.g. ``"0 (ok)"`` or
            ``"64 (IP address mismatch)"``; ``""`` when it printed none.
        output: everything it printed, for assertion messages.
    """

    returncode: int
    verify: str
    output: str

    @property
    def ok(self) -> bool:
        """Whether the handshake completed and the certificate verified."""
        return self.returncode == 0 and self.verify.startswith("0 ")


def s_client(address: str, port: int, ca_file: Path, *extra: str, stdin: bytes = b"") -> SClientVerdict:
    """Connect with ``openssl s_client`` to ``address``:``port``, trusting only ``ca_file``.

    Args:
        address: the loopback address (IPv6 without brackets).
        port: the TCP port.
        ca_file: the CAs to trust (``-CAfile``).
        extra: more options (``-verify_ip 127.0.40.1``, ``-servername NAME``, ``-cert FILE`` …).
        stdin: what to send once connected (e.g. an HTTP request), then end of input.

    Raises:
        pytest.skip.Exception: the openssl command is not installed.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    done = subprocess.run(
        [
            openssl,
            "s_client",
            "-connect",
            host_port(address, port),
            "-CAfile",
            str(ca_file),
            "-verify_return_error",
            *extra,
        ],
        input=stdin,
        capture_output=True,
        timeout=10,
        check=False,
    )
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    found = re.findall(r"Verify return code: (.+)", output)
    return SClientVerdict(done.returncode, found[-1].strip() if found else "", output)
