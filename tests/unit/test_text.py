"""The small text helpers: OpenSSL reasons in words, and which timeout fired."""

from __future__ import annotations

import errno
import ssl
import time

import pytest
from OpenSSL import SSL

from probe._text import openssl_words
from probe.model.deadline import Deadline
from probe.model.reasons import Reason


def ssl_error(reason: str | None) -> ssl.SSLError:
    exc = ssl.SSLError(1, "[SSL] something")
    exc.reason = reason  # type: ignore[misc]
    return exc


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (ssl_error("SSLV3_ALERT_HANDSHAKE_FAILURE"), "sslv3 alert handshake failure"),
        (ssl_error("WRONG_VERSION_NUMBER"), "wrong version number"),
        (SSL.Error([("SSL routines", "", "tlsv1 alert unknown ca")]), "tlsv1 alert unknown ca"),
        (SSL.SysCallError(-1, "Unexpected EOF"), "Unexpected EOF"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "Connection reset by peer"),
        (ssl_error(None), "[SSL] something"),
        (EOFError(), "EOFError"),
        (ValueError("x" * 300), "x" * 102 + "… (300 characters)"),
    ],
    ids=["ssl", "ssl-record", "pyopenssl", "pyopenssl-syscall", "oserror", "ssl-no-reason", "bare", "long"],
)
def test_openssl_words(exc: BaseException, words: str) -> None:
    assert openssl_words(exc) == words


def test_the_stage_timeout_is_blamed_while_the_deadline_runs() -> None:
    assert Deadline.after(60).timeout_reason(Reason.TLS_HANDSHAKE_TIMEOUT) is Reason.TLS_HANDSHAKE_TIMEOUT


def test_the_deadline_is_blamed_once_it_has_passed() -> None:
    passed = Deadline(time.monotonic() - 1, 5)
    assert passed.timeout_reason(Reason.TCP_TIMEOUT) is Reason.CYCLE_DEADLINE_EXCEEDED
