"""Logging to stderr, one line per event, in a journald-friendly ``key=value`` form."""

from __future__ import annotations

import logging
import re
import sys
from typing import IO

_NEEDS_QUOTES = re.compile(r'[\s"=]')

#: Attributes every LogRecord has; anything else passed with ``extra=`` becomes a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def quote(value: object) -> str:
    """A value as logfmt text: bare when simple, else in double quotes with escapes."""
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class KeyValueFormatter(logging.Formatter):
    """``level=info logger=probe.cycle msg="…" target=web`` and any ``extra`` fields.

    No timestamp: journald adds its own. A traceback, if any, goes in one ``exc=`` field
    with escaped newlines so that one event stays one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a single line."""
        fields = [
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={quote(record.getMessage())}",
        ]
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                fields.append(f"{key}={quote(value)}")
        if record.exc_info:
            fields.append(f"exc={quote(self.formatException(record.exc_info))}")
        return " ".join(fields)


def setup(level: str = "info", stream: IO[str] | None = None) -> None:
    """Send the ``probe`` loggers to ``stream`` (stderr) at ``level``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("probe")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
