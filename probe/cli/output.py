"""Writing to stdout: the report of ``probe check`` and ``probe demo``, colour, a reader gone.

:func:`report` prints the text report or the JSON document and gives the verdict's exit
code; :func:`use_color` reads ``--color``; :func:`stdout_to_devnull` quiets the
interpreter's last flush once the reader of stdout went away (``probe check … | head -1``).
The renderers are imported when used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

from probe.model.reasons import ExitCode

if TYPE_CHECKING:
    from probe.judge.baseline import Comparison
    from probe.model.results import TargetResult


def report(
    results: Sequence[TargetResult],
    args: argparse.Namespace,
    stdout: IO[str],
    comparison: Comparison | None = None,
) -> int:
    """Print the report; the exit code is the verdict's, also when the reader went away.

    ``probe check … | head -1`` closes the pipe early; the check still happened and its
    verdict stands, so the exit code stays 0, 1 or 2 (as ``grep -q`` users and
    ``set -o pipefail`` expect), and nothing is printed on stderr. A regression since the
    baseline (``comparison``) makes the exit code at least 1.
    """
    from probe.report.document import render_json
    from probe.report.text import overall_status, render_text

    code = ExitCode.from_status(overall_status(results))
    if comparison is not None and comparison.regressed:
        code = max(code, ExitCode.WARNING)
    now = time.time()
    try:
        if args.json:
            render_json(results, stdout, now, baseline=comparison)
        else:
            color = use_color(args.color, stdout)
            render_text(results, stdout, now, color=color)
            if comparison is not None:
                stdout.write("\n")
                from probe.report.text import render_baseline

                render_baseline(comparison, stdout, color=color)
        stdout.flush()
    except BrokenPipeError:
        stdout_to_devnull()
    return code


def use_color(choice: str, stream: IO[str]) -> bool:
    """Whether to colour what goes to ``stream``: ``--color`` always or never, or auto.

    Auto colours a terminal, unless ``NO_COLOR`` is set or ``TERM`` is ``dumb``.
    """
    if choice != "auto":
        return choice == "always"
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def stdout_to_devnull() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):  # io.UnsupportedOperation: no real fd
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
