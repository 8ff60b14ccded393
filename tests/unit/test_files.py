"""probe._files: a regular file up to its cap is read; anything else is refused in one sentence, at once."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from probe._files import FileRefused, check_capped, read_capped, read_text_capped

CAP = 1024


def refusal(call: Callable[[], object]) -> str:
    """Why ``call`` was refused, checked to take well under a second (nothing may block)."""
    outcome: list[BaseException | object] = []
    worker = threading.Thread(target=lambda: outcome.append(_outcome(call)), daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "blocked"
    assert time.monotonic() - start < 1.0
    (result,) = outcome
    assert isinstance(result, FileRefused), result
    return str(result)


def _outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except FileRefused as exc:
        return exc


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A named pipe nobody writes to: opening it for reading would block."""
    path = tmp_path / "config.fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "probe.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    yield path
    sock.close()


def test_a_regular_file_up_to_the_cap_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "exact"
    path.write_bytes(b"x" * CAP)
    assert read_capped(path, CAP) == b"x" * CAP
    check_capped(path, CAP)


@pytest.mark.parametrize("check", [read_capped, check_capped])
def test_one_byte_over_the_cap_is_refused(tmp_path: Path, check: Callable[[Path, int], object]) -> None:
    path = tmp_path / "over"
    path.write_bytes(b"x" * (CAP + 1))
    assert refusal(lambda: check(path, CAP)) == "larger than 1 KiB; is it the right file?"


def test_a_file_larger_than_its_size_says_is_cut_at_the_cap_and_refused() -> None:
    # /proc files report size 0: only counting while reading bounds them.
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0
    assert refusal(lambda: read_capped(status, 100)) == "larger than 100 bytes; is it the right file?"


@pytest.mark.parametrize("check", [read_capped, check_capped])
def test_dev_zero_is_refused_before_a_byte_is_read(check: Callable[[str, int], object]) -> None:
    assert (
        refusal(lambda: check("/dev/zero", 16 * 1024 * 1024)) == "is a character device, not a regular file"
    )


@pytest.mark.parametrize("check", [read_capped, check_capped])
def test_a_fifo_without_a_writer_is_refused_without_blocking(
    fifo: Path, check: Callable[[Path, int], object]
) -> None:
    assert refusal(lambda: check(fifo, CAP)) == "is a FIFO (named pipe), not a regular file"


def test_a_socket_is_refused(unix_socket: Path) -> None:
    assert refusal(lambda: read_capped(unix_socket, CAP)) == "is a socket, not a regular file"


def test_a_symlink_to_a_device_is_refused_as_the_device(tmp_path: Path) -> None:
    link = tmp_path / "baseline.json"
    link.symlink_to("/dev/zero")
    assert refusal(lambda: read_capped(link, CAP)) == "is a character device, not a regular file"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("missing.pem", "no such file"),
        (".", "is a directory, not a file"),
        ("dir/", "is a directory, not a file"),
        ("a\0b", "not a valid path"),
    ],
)
def test_what_cannot_be_opened_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, why: str
) -> None:
    (tmp_path / "dir").mkdir()
    monkeypatch.chdir(tmp_path)
    assert refusal(lambda: read_capped(name, CAP)) == why
    assert refusal(lambda: check_capped(name, CAP)) == why


def test_text_must_be_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("targets: # café\n".encode("latin-1"))
    assert refusal(lambda: read_text_capped(path, CAP)) == "not UTF-8 text (byte 14)"
    path.write_text("targets: # café\n", encoding="utf-8")
    assert read_text_capped(path, CAP) == "targets: # café\n"
