"""Every file probe reads is capped: a device, a FIFO or a file over its cap is one line and exit 3, at once.

``--baseline /dev/zero`` once read 1.9 GB and died of MemoryError with exit 1 (which reads as
a warning). The files are the config, the web config, the baseline and every ``ca_file``;
no query leaves before the refusal (the resolver is the lab's, on loopback).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from probe.cli.main import main

URL = "https://www.corp.example/"


def sparse(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no room on disk."""
    with path.open("wb") as file:
        file.truncate(size)
    return path


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line ``probe ARGV`` printed on stderr; exit 3 within a second, nothing on stdout."""
    start = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    assert code == 3
    assert captured.out == ""
    assert captured.err.endswith("\n") and captured.err.count("\n") == 1, captured.err
    assert elapsed < 1.0
    return captured.err.rstrip("\n")


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "named.pipe"
    os.mkfifo(path)
    return path


def test_a_baseline_from_dev_zero_is_refused_before_a_byte_is_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = refused(["check", URL, "--resolver", "127.0.53.2", "--baseline", "/dev/zero"], capsys)
    assert line == "probe: /dev/zero: is a character device, not a regular file"


def test_a_baseline_over_16_mib_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = sparse(tmp_path / "before.json", 16 * 1024 * 1024 + 1)
    line = refused(["check", URL, "--resolver", "127.0.53.2", "--baseline", str(big)], capsys)
    assert line == f"probe: {big}: larger than 16 MiB; is it the right file?"


def test_a_config_that_is_a_fifo_is_refused_without_waiting_for_a_writer(
    fifo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refused(["check", "--config", str(fifo)], capsys) == (
        f"probe: {fifo}: is a FIFO (named pipe), not a regular file"
    )


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda folder: Path("/dev/zero"), "is a character device, not a regular file"),
        (
            lambda folder: sparse(folder / "ca.pem", 4 * 1024 * 1024 + 1),
            "larger than 4 MiB; is it the right file?",
        ),
    ],
    ids=["dev-zero", "over-4-MiB"],
)
def test_a_ca_file_is_capped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Path], why: str
) -> None:
    ca_file = make(tmp_path)
    line = refused(["check", URL, "--resolver", "127.0.53.2", "--ca-file", str(ca_file)], capsys)
    assert line == f"probe: --ca-file: {ca_file}: {why}"


def test_a_ca_file_in_a_config_that_is_a_fifo_is_refused(
    fifo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "probe.yaml"
    config.write_text(f"targets:\n  - url: {URL}\n    resolvers: ['127.0.53.2']\n    ca_file: {fifo.name}\n")
    assert refused(["check", "--config", str(config)], capsys) == (
        f"probe: {config}: targets[0].ca_file: {fifo}: is a FIFO (named pipe), not a regular file"
    )


def test_the_daemon_refuses_a_web_config_from_dev_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "probe.yaml"
    config.write_text(f"targets:\n  - url: {URL}\n    resolvers: ['127.0.53.2']\n")
    line = refused(["run", "--config", str(config), "--web.config.file", "/dev/zero"], capsys)
    assert line == "probe: /dev/zero: is a character device, not a regular file"


def test_the_daemon_refuses_a_config_over_1_mib(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = sparse(tmp_path / "probe.yaml", 1024 * 1024 + 1)
    line = refused(["run", "--config", str(config)], capsys)
    assert line == f"probe: {config}: larger than 1 MiB; is it the right file?"
