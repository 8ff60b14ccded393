"""The files probe ships beside its code: example configs, alert rules, dashboard, systemd unit, schemas.

They live in the package under ``probe/share/`` (in a source checkout ``probe/share/config``
and ``probe/share/systemd`` are symlinks to the repository's ``config/`` and ``systemd/``;
the wheel holds copies), so :mod:`importlib.resources` finds them wherever probe is
installed: ``pip install``, ``pipx install``, an editable checkout. ``probe share`` lists
them, prints one, or prints where they are.

Pure file access; no network, nothing heavy imported.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

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
