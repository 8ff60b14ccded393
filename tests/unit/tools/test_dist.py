"""``./dev dist``'s choices: the target's platform tag and Python version, and what pip is told."""

from __future__ import annotations

import argparse

import pytest

from tools.dist import Target, default_platform, install_steps, main, python_version


@pytest.mark.parametrize(
    ("machine", "tag"),
    [
        ("x86_64", "manylinux2014_x86_64"),
        ("AMD64", "manylinux2014_x86_64"),
        ("aarch64", "manylinux2014_aarch64"),
        ("arm64", "manylinux2014_aarch64"),  # a Mac building for a Graviton bastion
    ],
)
def test_the_default_platform_is_manylinux2014_for_this_cpu(machine: str, tag: str) -> None:
    assert default_platform(machine) == tag


def test_python_versions_below_3_11_or_malformed_are_refused() -> None:
    assert python_version("3.11") == "3.11" and python_version("3.13") == "3.13"
    for bad in ("3.10", "3.9", "3", "311", "3.11.4", "python3.11"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"3\.11 or newer"):
            python_version(bad)


def test_pip_is_told_the_target_and_wheels_only() -> None:
    target = Target("manylinux2014_aarch64", "3.12")
    assert target.python_tag == "cp312"
    assert target.pip_options() == [
        "--only-binary=:all:",
        "--platform",
        "manylinux2014_aarch64",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
    ]


def test_the_install_steps_name_the_wheelhouse_and_need_no_index() -> None:
    steps = install_steps("probe-0.1.0-cp311-manylinux2014_x86_64", Target("manylinux2014_x86_64", "3.11"))
    assert steps.splitlines() == [
        "  tar xzf probe-0.1.0-cp311-manylinux2014_x86_64.tar.gz",
        "  python3.11 -m venv /opt/probe",
        "  /opt/probe/bin/pip install --no-index --find-links probe-0.1.0-cp311-manylinux2014_x86_64 probe",
    ]


def test_help_names_the_target_options_and_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--platform" in out and "--python-version" in out
    assert "./dev dist --platform manylinux2014_aarch64 --python-version 3.11" in out
