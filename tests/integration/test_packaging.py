"""``pip install .`` gives a working ``probe``: the wheel is built, installed into a fresh
virtualenv, and the installed command is run, with its shipped files, against the demo lab.

Built from a copy of the source tree (what a fresh clone holds), offline: ``pip wheel
--no-build-isolation --no-index`` with this environment's setuptools. The fresh virtualenv
gets the wheel alone (``--no-deps``); its dependencies come from this test environment's
site-packages through a ``.pth`` line, so no package index is needed and the run stays
short. Resolving the dependencies is pip's part, exercised by every ``./dev setup``; what is
tested here is what the wheel itself carries and that the installed ``probe`` (not the
source tree) runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from probe._version import __version__
from probe.lab import DemoLab
from tests.support.helpers import REPO, environment_without_proxies

pytestmark = pytest.mark.slow

#: Not part of what a clone ships to the build, or build by-products.
_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests", "bench"
)
#: Every file the wheel must carry beside the code, by the globs of pyproject.toml.
_SHIPPED_GLOBS = {"config": ("*.yml", "*.yaml", "*.json"), "systemd": ("*.service",)}


@dataclass(frozen=True)
class Installed:
    """A fresh virtualenv with the built wheel installed."""

    wheel: Path
    venv: Path
    site: Path

    @property
    def probe(self) -> Path:
        return self.venv / "bin" / "probe"


def _run(*command: str | Path, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=environment_without_proxies(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    start = time.monotonic()
    work = tmp_path_factory.mktemp("packaging")
    source = work / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=_IGNORE)
    built = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        source,
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        work / "dist",
        "-q",
        cwd=work,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (work / "dist").glob("probe-*.whl")

    venv = work / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    done = _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        wheel,
        cwd=work,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    site = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work
        ).stdout.strip()
    )
    (site / "_probe_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    assert time.monotonic() - start < 60
    yield Installed(wheel, venv, site)


def test_the_wheel_carries_the_shipped_files_and_the_command(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        entry_points = next(
            wheel.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
        metadata = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    expected = {
        f"probe/share/{folder}/{path.name}"
        for folder, globs in _SHIPPED_GLOBS.items()
        for glob in globs
        for path in (REPO / folder).glob(glob)
    }
    assert "probe/share/config/probe.example.yaml" in expected
    assert "probe/share/systemd/probe.service" in expected
    assert expected <= names
    schemas = {f"probe/share/schema/{k}-v1.schema.json" for k in ("check", "watch", "baseline")}
    assert schemas <= names
    assert "probe/cli/main.py" in names and "probe/lab/pki.py" in names
    assert not any(n.startswith("tests/") for n in names)
    assert "probe = probe.__main__:main" in entry_points
    assert f"Version: {__version__}" in metadata and "Requires-Dist: httpx" in metadata


def test_installed_probe_runs_from_the_fresh_virtualenv(installed: Installed, tmp_path: Path) -> None:
    version = _run(installed.probe, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout == f"probe {__version__}\n" and version.stderr == ""

    where = _run(installed.venv / "bin" / "python", "-c", "import probe; print(probe.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(installed.site)  # the wheel's code, not the tree's

    helped = _run(installed.probe, "check", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and helped.stderr == ""
    assert "--resolver" in helped.stdout and "--json" in helped.stdout


def test_installed_probe_finds_its_shipped_files(installed: Installed, tmp_path: Path) -> None:
    listing = _run(installed.probe, "share", cwd=tmp_path)
    assert listing.returncode == 0 and listing.stderr == ""
    share = installed.site / "probe" / "share"
    assert listing.stdout.splitlines()[0] == f"probe {__version__}: shipped files in {share}"
    for folder, globs in _SHIPPED_GLOBS.items():
        for glob in globs:
            for path in (REPO / folder).glob(glob):
                assert f"  {folder}/{path.name}\n" in listing.stdout

    unit = _run(installed.probe, "share", "--path", "systemd/probe.service", cwd=tmp_path)
    assert unit.returncode == 0
    assert Path(unit.stdout.strip()) == share / "systemd" / "probe.service"
    assert Path(unit.stdout.strip()).read_text() == (REPO / "systemd" / "probe.service").read_text()

    example = _run(installed.probe, "share", "config/probe.example.yaml", cwd=tmp_path)
    assert example.stdout == (REPO / "config" / "probe.example.yaml").read_text()

    missing = _run(installed.probe, "share", "systemd/probe.servce", cwd=tmp_path)
    assert missing.returncode == 3 and missing.stdout == ""
    assert (
        missing.stderr
        == "probe: share: no file 'systemd/probe.servce'; did you mean systemd/probe.service?\n"
    )

    completion = _run(installed.probe, "completion", "bash", cwd=tmp_path)
    assert completion.returncode == 0 and "complete -F _probe probe" in completion.stdout


def test_installed_probe_checks_the_demo_lab_and_its_json_fits_the_shipped_schema(
    installed: Installed, demo: DemoLab, tmp_path: Path
) -> None:
    start = time.monotonic()
    checked = _run(
        installed.probe,
        "check",
        demo.url,
        "--resolver",
        demo.dns_server.where,
        "--ca-file",
        demo.ca_file,
        "--expect-network",
        "127.0.10.0/24",
        "--timeout",
        "10",
        "--json",
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stderr == ""
    document = json.loads(checked.stdout)
    assert document["status"] == "ok" and document["schema_version"] == 1
    schema_path = _run(installed.probe, "share", "--path", "schema/check-v1.schema.json", cwd=tmp_path)
    schema = json.loads(Path(schema_path.stdout.strip()).read_text())
    jsonschema.Draft202012Validator(schema).validate(document)
    assert time.monotonic() - start < 30
