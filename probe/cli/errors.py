"""The error of bad command-line input, which :func:`probe.cli.main.main` turns into exit 3.

Every module of :mod:`probe.cli` raises :class:`UsageError` for input it refuses;
``probe.cli.main`` prints its message as one line ``probe: <message>`` on stderr and exits
3 (UNKNOWN), as it does for a ``ConfigError`` or a ``BaselineError``.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad command-line arguments; ``str()`` is the message."""
