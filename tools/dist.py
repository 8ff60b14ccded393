"""A wheelhouse that installs probe on a bastion with no package index: ``./dev dist``.

Builds probe's wheel, downloads the wheel of every runtime dependency for one target
(``pip download --only-binary=:all: --platform P --python-version V``), checks that pip
resolves probe from that folder alone for the same target (``pip install --dry-run
--no-index``), and packs the folder into one file to copy::

    dist/probe-0.1.0-cp311-manylinux2014_x86_64.tar.gz

On the bastion, in a virtualenv of that Python version::

    tar xzf probe-0.1.0-cp311-manylinux2014_x86_64.tar.gz
    /opt/probe/bin/pip install --no-index --find-links probe-0.1.0-cp311-manylinux2014_x86_64 probe

cryptography, pydantic-core, bcrypt, cffi and PyYAML are compiled, so a wheelhouse serves
one platform (CPU and C library) and one Python version: by default this machine's CPU
(``x86_64`` or ``aarch64``) with ``manylinux2014`` wheels (glibc 2.17 or newer: Amazon
Linux 2023, Debian 12, Ubuntu 22.04 and 24.04 all qualify) and this Python's version.
Building needs the package index; installing does not.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: The repository root: probe's source when ``--source`` is not given.
REPO = Path(__file__).resolve().parents[1]

#: ``platform.machine()`` names of the CPUs that wheel tags spell otherwise.
_MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}

#: The oldest Python probe runs on (``requires-python`` in pyproject.toml).
_OLDEST_PYTHON = (3, 11)


class DistError(Exception):
    """A step of the build failed; the message says which, with pip's own words."""


@dataclass(frozen=True)
class Target:
    """Where the wheelhouse is to be installed.

    Attributes:
        platform: a wheel platform tag, e.g. ``manylinux2014_x86_64``.
        python_version: ``"3.11"``: the CPython version of the bastion's virtualenv.
    """

    platform: str
    python_version: str

    @property
    def python_tag(self) -> str:
        """The CPython tag of the version, ``"cp311"``."""
        return "cp" + self.python_version.replace(".", "")

    def pip_options(self) -> list[str]:
        """The options that make pip choose wheels for this target rather than for this machine."""
        return [
            "--only-binary=:all:",
            "--platform",
            self.platform,
            "--python-version",
            self.python_version,
            "--implementation",
            "cp",
        ]


@dataclass(frozen=True)
class Wheelhouse:
    """A built wheelhouse.

    Attributes:
        folder: the folder of wheels (``dist/probe-0.1.0-cp311-manylinux2014_x86_64``).
        archive: the same folder as one ``.tar.gz`` file, to copy to a bastion.
        wheels: the file names of the wheels in it, probe's among them.
    """

    folder: Path
    archive: Path
    wheels: tuple[str, ...]


def default_platform(machine: str | None = None) -> str:
    """``manylinux2014_<cpu>`` for this machine's CPU (or ``machine``), e.g. ``manylinux2014_aarch64``."""
    name = (machine or platform.machine()).lower()
    return f"manylinux2014_{_MACHINES.get(name, name)}"


def python_version(text: str) -> str:
    """An argparse type: ``"3.11"`` and newer; ``argparse.ArgumentTypeError`` otherwise."""
    match = re.fullmatch(r"3\.(\d{1,2})", text)
    if match is None or (3, int(match[1])) < _OLDEST_PYTHON:
        oldest = ".".join(map(str, _OLDEST_PYTHON))
        raise argparse.ArgumentTypeError(f"{text!r}: give a Python version {oldest} or newer, e.g. 3.12")
    return text


def _pip(*args: str | Path, env: dict[str, str] | None = None) -> None:
    """Run this Python's pip; :class:`DistError` with pip's output when it fails."""
    command = [sys.executable, "-m", "pip", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise DistError(f"pip {args[0]} failed:\n{done.stdout}{done.stderr}".rstrip())


def _offline_environment() -> dict[str, str]:
    """This environment with pip's configuration files and index settings left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf may add an index or find-links
    return env


def build_probe_wheel(source: Path, into: Path, *, build_isolation: bool = True) -> Path:
    """Build probe's wheel from ``source`` into the folder ``into``; its path.

    Raises:
        DistError: the build failed.
    """
    isolation = [] if build_isolation else ["--no-build-isolation"]
    _pip("wheel", "--no-deps", *isolation, "-q", "-w", into, source)
    (wheel,) = into.glob("probe-*.whl")
    return wheel


def download_dependencies(wheel: Path, target: Target) -> None:
    """Download, beside ``wheel``, the wheel of each of its dependencies for ``target``.

    Raises:
        DistError: a dependency has no wheel for the target (or the index cannot be reached).
    """
    _pip("download", "-q", *target.pip_options(), "-d", wheel.parent, wheel)


def check_offline_install(folder: Path, target: Target) -> None:
    """Check that pip installs probe for ``target`` from ``folder`` alone, with no index.

    A dry run (``pip install --dry-run --no-index``), with no pip configuration file.

    Raises:
        DistError: something is missing from the folder.
    """
    with tempfile.TemporaryDirectory() as scratch:
        _pip(
            "install",
            "--dry-run",
            "--ignore-installed",
            "--no-index",
            "--find-links",
            folder,
            *target.pip_options(),
            "--target",
            scratch,
            "probe",
            env=_offline_environment(),
        )


def install_steps(name: str, target: Target) -> str:
    """The commands on the bastion for the wheelhouse ``name``, one a line (indented)."""
    return (
        f"  tar xzf {name}.tar.gz\n"
        f"  python{target.python_version} -m venv /opt/probe\n"
        f"  /opt/probe/bin/pip install --no-index --find-links {name} probe\n"
    )


def build(source: Path, out: Path, target: Target, *, build_isolation: bool = True) -> Wheelhouse:
    """Build the wheelhouse of ``source`` for ``target`` in ``out``.

    Args:
        source: probe's source tree (the repository root).
        out: the folder to write to (``dist``); an earlier build of the same name is replaced.
        target: the platform and Python version to download the dependencies for.
        build_isolation: build probe's wheel in pip's isolated environment (setuptools from
            the index); ``False`` uses this environment's setuptools.

    Returns:
        The wheelhouse folder and its ``.tar.gz``.

    Raises:
        DistError: a step failed (pip's output in the message).
    """
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as scratch:
        wheel = build_probe_wheel(source, Path(scratch), build_isolation=build_isolation)
        version = wheel.name.split("-")[1]
        name = f"probe-{version}-{target.python_tag}-{target.platform}"
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        wheel = Path(shutil.move(wheel, folder))
    try:
        download_dependencies(wheel, target)
        check_offline_install(folder, target)
    except DistError:
        shutil.rmtree(folder)  # no half wheelhouse left to copy by mistake
        raise
    (folder / "INSTALL").write_text(
        f"probe {version}: wheels for CPython {target.python_version} on {target.platform}\n\n"
        + install_steps(name, target)
    )
    archive = out / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=name)
    return Wheelhouse(folder, archive, tuple(sorted(p.name for p in folder.glob("*.whl"))))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./dev dist",
        description="Build a wheelhouse (probe and every runtime dependency as wheels, one .tar.gz) "
        "that installs on a bastion with no package index.",
        epilog="The compiled dependencies (cryptography, pydantic-core, bcrypt, cffi, PyYAML) make it "
        "one wheelhouse per platform and Python version. Examples: ./dev dist; "
        "./dev dist --platform manylinux2014_aarch64 --python-version 3.11",
    )
    parser.add_argument(
        "--platform",
        default=default_platform(),
        help="wheel platform tag of the bastion (default: %(default)s; e.g. manylinux2014_aarch64)",
    )
    parser.add_argument(
        "--python-version",
        type=python_version,
        default=f"{sys.version_info.major}.{sys.version_info.minor}",
        help="Python version of the bastion's virtualenv (default: %(default)s, this Python's)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    parser.add_argument("--source", type=Path, default=REPO, help="probe's source tree (default: this one)")
    parser.add_argument(
        "--no-build-isolation",
        dest="build_isolation",
        action="store_false",
        help="build probe's wheel with this environment's setuptools (none downloaded)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``./dev dist [--platform TAG] [--python-version X.Y] [--out DIR]``; exit 0, or 1 after a failure."""
    args = _parser().parse_args(argv)
    target = Target(args.platform, args.python_version)
    try:
        house = build(args.source, args.out, target, build_isolation=args.build_isolation)
    except DistError as exc:
        print(f"dist: {exc}", file=sys.stderr)
        return 1
    size = house.archive.stat().st_size / 1e6
    print(
        f"dist: {house.archive} ({size:.1f} MB): {len(house.wheels)} wheels, probe and its dependencies "
        f"for CPython {target.python_version} on {target.platform}\n"
        "on the bastion (no index needed):\n" + install_steps(house.folder.name, target),
        end="",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
