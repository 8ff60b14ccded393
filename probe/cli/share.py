"""The files probe ships beside its code: example configs, alert rules, dashboard, systemd unit, schemas.

They live in the package under ``probe/share/`` (in a source checkout ``probe/share/config``
and ``probe/share/systemd`` are symlinks to the repository's ``config/`` and ``systemd/``;
the wheel holds copies), so :mod:`importlib.resources` finds them wherever probe is
installed: ``pip install``, ``pipx install``, an editable checkout. ``probe share`` lists
them, prints one, or prints where they are.

File access, and the command that prints what it finds (:func:`command`); no network,
nothing heavy imported.
"""

from __future__ import annotations

import argparse
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import IO

from probe._version import __version__
from probe.cli.errors import UsageError
from probe.cli.output import stdout_to_devnull
from probe.model.reasons import ExitCode

#: The directories under ``probe/share`` and what they hold, in listing order.
SECTIONS = {
    "config": "example configurations, Prometheus alert rules, Grafana dashboard",
    "systemd": "the systemd unit for `probe run`",
    "schema": "JSON Schemas of the --json document, the --watch --json lines and baseline files",
}

#: The suffixes packaged (pyproject.toml's package-data globs say the same).
_SUFFIXES = (".yml", ".yaml", ".json", ".service")


class ShareError(Exception):
    """A name that is not one of the shipped files; ``str()`` is the one-line message."""


def share_root() -> Traversable:
    """The ``share`` directory inside the installed package."""
    return files("probe") / "share"


def share_names() -> list[str]:
    """Every shipped file as ``SECTION/NAME`` (e.g. ``systemd/probe.service``), sorted per section."""
    root = share_root()
    names: list[str] = []
    for section in SECTIONS:
        folder = root / section
        if not folder.is_dir():
            continue
        names += sorted(
            f"{section}/{entry.name}"
            for entry in folder.iterdir()
            if entry.is_file() and entry.name.endswith(_SUFFIXES)
        )
    return names


def share_file(name: str) -> Traversable:
    """The shipped file ``name`` (``SECTION/NAME`` as listed by :func:`share_names`).

    Raises:
        ShareError: no such file, with the closest names or the list of sections.
    """
    known = share_names()
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "'probe share' lists them"
        raise ShareError(f"share: no file {name!r}; {hint}")
    return share_root() / name


def share_path(name: str | None = None) -> Path:
    """The file system path of the ``share`` directory, or of one shipped file.

    Raises:
        ShareError: ``name`` is not a shipped file, or the package is not installed as
            plain files (e.g. inside a zip archive), so there is no path to give.
    """
    where = share_root() if name is None else share_file(name)
    if not isinstance(where, Path):
        raise ShareError(f"share: probe is installed inside an archive; use 'probe share {name or 'NAME'}'")
    return where.resolve()


def command(args: argparse.Namespace, stdout: IO[str]) -> int:
    """``probe share [NAME] [--path]``: list the shipped files, print one, or say where they are."""
    try:
        if args.path:
            stdout.write(f"{share_path(args.name)}\n")
        elif args.name is not None:
            stdout.write(share_file(args.name).read_text(encoding="utf-8"))
        else:
            root = share_path()
            stdout.write(f"probe {__version__}: shipped files in {root}\n")
            for section, what in SECTIONS.items():
                names = [n for n in share_names() if n.startswith(f"{section}/")]
                stdout.write(f"\n{section}/  ({what})\n")
                stdout.writelines(f"  {name}\n" for name in names)
            stdout.write("\n'probe share NAME' prints one; 'probe share --path NAME' gives its path\n")
        stdout.flush()
    except ShareError as exc:
        raise UsageError(str(exc)) from None
    except BrokenPipeError:
        stdout_to_devnull()
    return ExitCode.OK
