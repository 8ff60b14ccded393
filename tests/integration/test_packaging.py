"""``pip install .`` gives a working ``probe``: the wheel is built, installed into a fresh
virtualenv, and the installed command is run, with its shipped files, against the demo lab.
And ``./dev dist``'s wheelhouse installs with no network and checks the demo lab.

Built from a copy of the source tree (what a fresh clone holds), offline: ``pip wheel
--no-build-isolation --no-index`` with this environment's setuptools. The fresh virtualenv
gets the wheel alone (``--no-deps``); its dependencies come from this test environment's
site-packages through a ``.pth`` line, so no package index is needed and the run stays
short. Resolving the dependencies is pip's part, exercised by every ``./dev setup``; what is
tested here is what the wheel itself carries and that the installed ``probe`` (not the
source tree) runs.

The wheelhouse is the exception: building it downloads the dependencies' wheels from the
package index (pip alone talks to it, as ``./dev test``'s own ``pip install`` does; the
loopback guard is left out of that one subprocess). Installing it is offline: in a network
namespace of its own (``unshare --net``) when one can be made, with ``--no-index`` and pip's
index settings pointing nowhere, and under the loopback guard.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
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
from tools.dist import default_platform

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


def _run(
    *command: str | Path, cwd: Path, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=environment_without_proxies() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _check_the_demo(probe: Path, demo: DemoLab, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``probe check`` of the demo lab with an installed ``probe``: its loopback resolver and CA."""
    return _run(
        probe,
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
        *extra,
        cwd=cwd,
    )


def _source_copy(work: Path) -> Path:
    """A copy of the source tree as a fresh clone holds it, so builds leave the repository alone."""
    source = work / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=_IGNORE)
    return source


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    start = time.monotonic()
    work = tmp_path_factory.mktemp("packaging")
    source = _source_copy(work)
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
    assert (
        "\nexit status:\n  0  ok\n" in helped.stdout
        and "\nexamples:\n  probe check https://" in helped.stdout
    )


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
    checked = _check_the_demo(installed.probe, demo, tmp_path, "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stderr == ""
    document = json.loads(checked.stdout)
    assert document["status"] == "ok" and document["schema_version"] == 1
    schema_path = _run(installed.probe, "share", "--path", "schema/check-v1.schema.json", cwd=tmp_path)
    schema = json.loads(Path(schema_path.stdout.strip()).read_text())
    jsonschema.Draft202012Validator(schema).validate(document)
    assert time.monotonic() - start < 30


# --------------------------------------------------------------------------- ./dev dist


@dataclass(frozen=True)
class Bastion:
    """A fresh virtualenv that got probe from the wheelhouse, offline."""

    wheels: tuple[str, ...]
    venv: Path

    @property
    def probe(self) -> Path:
        return self.venv / "bin" / "probe"


def _environment_for_the_index() -> dict[str, str]:
    """This environment without the loopback guard on ``PYTHONPATH``: pip reaches the index."""
    guard = str(REPO / "tests" / "support" / "netguard")
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != guard]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _offline_environment() -> dict[str, str]:
    """No index for pip: none configured (no pip.conf, no PIP_ variables) and none to reach."""
    env = {k: v for k, v in environment_without_proxies().items() if not k.startswith("PIP_")}
    return {
        **env,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple/",  # the discard port: nothing answers
    }


def _no_network() -> list[str]:
    """The command prefix that runs a command in a network namespace of its own, if one can be made."""
    for prefix in (["unshare", "--net"], ["unshare", "--map-root-user", "--net"]):
        if shutil.which("unshare") and _run(*prefix, "true", cwd=REPO).returncode == 0:
            return prefix
    return []


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bastion]:
    start = time.monotonic()
    work = tmp_path_factory.mktemp("dist")
    built = _run(
        sys.executable,
        "-m",
        "tools.dist",
        "--source",
        _source_copy(work),
        "--out",
        work / "dist",
        "--no-build-isolation",
        cwd=REPO,
        timeout=120,
        env=_environment_for_the_index(),
    )
    assert built.returncode == 0, built.stdout + built.stderr
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    name = f"probe-{__version__}-cp{python.replace('.', '')}-{default_platform()}"
    assert f"{work / 'dist' / name}.tar.gz" in built.stdout
    assert f"pip install --no-index --find-links {name} probe" in built.stdout

    # On the bastion: the archive alone, unpacked; a virtualenv; pip with no index.
    host = work / "bastion"
    host.mkdir()
    with tarfile.open(work / "dist" / f"{name}.tar.gz") as archive:
        archive.extractall(host, filter="data")
    wheels = tuple(sorted(p.name for p in (host / name).glob("*.whl")))
    offline = _no_network()
    venv = host / "venv"
    made = _run(*offline, sys.executable, "-m", "venv", venv, cwd=host, env=_offline_environment())
    assert made.returncode == 0, made.stderr
    done = _run(
        *offline,
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--no-index",
        "--find-links",
        name,
        "probe",
        cwd=host,
        timeout=120,
        env=_offline_environment(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - start < 60
    yield Bastion(wheels, venv)


def test_the_wheelhouse_holds_probe_and_compiled_wheels_for_this_platform(bastion: Bastion) -> None:
    assert f"probe-{__version__}-py3-none-any.whl" in bastion.wheels
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    compiled = {w.split("-")[0].lower() for w in bastion.wheels if not w.endswith("-none-any.whl")}
    assert compiled == {"cryptography", "pydantic_core", "bcrypt", "cffi", "pyyaml", "google_re2"}
    for wheel in bastion.wheels:
        if not wheel.endswith("-none-any.whl"):
            assert default_platform() in wheel and (python in wheel or "-abi3-" in wheel), wheel


def test_the_offline_install_has_every_wheel_and_checks_the_demo_lab(
    bastion: Bastion, demo: DemoLab, tmp_path: Path
) -> None:
    listed = _run(
        bastion.venv / "bin" / "python",
        "-m",
        "pip",
        "list",
        "--format=json",
        cwd=tmp_path,
        env=_offline_environment(),
    )
    installed = {d["name"].lower().replace("-", "_") for d in json.loads(listed.stdout)}
    assert {w.split("-")[0].lower() for w in bastion.wheels} <= installed
    consistent = _run(
        bastion.venv / "bin" / "python", "-m", "pip", "check", cwd=tmp_path, env=_offline_environment()
    )
    assert consistent.returncode == 0, consistent.stdout

    checked = _check_the_demo(bastion.probe, demo, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.rstrip().endswith("Status: OK (1 ok)"), checked.stdout
    where = _run(bastion.venv / "bin" / "python", "-c", "import probe; print(probe.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(bastion.venv)
