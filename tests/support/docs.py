"""The documentation as the tests read it: a page, a section of a page by its heading, its anchors.

A page is named by its path from the repository root (``"README.md"``,
``"docs/configuration.md"``). Headings are looked for outside fenced code blocks only, so a
``# comment`` line in a shell or YAML block is never taken for one. A section is the text
after its heading up to the next heading of the same or a higher level: its sub-sections are
part of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: The pages of documentation outside docs/ (paths from the repository root).
TOP_PAGES = ("README.md", "CONTRIBUTING.md", "bench/README.md")

_FENCE = re.compile(r"(```|~~~)")
_HEADING = re.compile(r"(#{1,6})\s+(.*?)\s*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


@dataclass(frozen=True)
class Heading:
    """One heading of a page: its level (1 for ``#``), its text as written, its line index."""

    level: int
    text: str
    line: int


def page_path(name: str) -> Path:
    """The file of a page, e.g. ``page_path("docs/daemon.md")``."""
    return REPO / name


def page(name: str) -> str:
    """The text of a page, e.g. ``page("docs/daemon.md")``."""
    return page_path(name).read_text(encoding="utf-8")


def pages() -> list[str]:
    """Every page of documentation: the top-level ones, then docs/*.md in name order."""
    return [*TOP_PAGES, *(f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md")))]


def _outside_fences(text: str) -> Iterator[tuple[int, str]]:
    """``(index, line)`` of the lines of a Markdown text outside fenced code blocks (fences too left out)."""
    fence: str | None = None
    for index, line in enumerate(text.splitlines()):
        stripped = line.lstrip()
        if fence is None and (opening := _FENCE.match(stripped)):
            fence = opening[1]
        elif fence is not None:
            if stripped.startswith(fence):
                fence = None
        else:
            yield index, line


def headings(text: str) -> list[Heading]:
    """The headings of a Markdown text, in order, those inside fenced code blocks left out."""
    return [
        Heading(len(match[1]), match[2], index)
        for index, line in _outside_fences(text)
        if (match := _HEADING.fullmatch(line))
    ]


def prose(text: str) -> str:
    """A Markdown text without its fenced code blocks and inline code spans (where brackets are no links)."""
    return "\n".join(re.sub(r"`[^`]*`", "", line) for _, line in _outside_fences(text))


def sections(text: str, heading: re.Pattern[str]) -> list[str]:
    """The bodies of the sections whose heading text matches ``heading`` (searched), in order.

    A matching section nested in another matching one is part of the outer body only.
    """
    lines = text.splitlines(keepends=True)
    marks = headings(text)
    bodies: list[str] = []
    inside_until = -1
    for index, mark in enumerate(marks):
        if mark.line < inside_until or not heading.search(mark.text):
            continue
        end = next((m.line for m in marks[index + 1 :] if m.level <= mark.level), len(lines))
        bodies.append("".join(lines[mark.line + 1 : end]))
        inside_until = end
    return bodies


def section(name: str, heading: str) -> str:
    """The body of the one section of page ``name`` whose heading reads exactly ``heading``.

    Raises:
        LookupError: the page has no such heading, or more than one.
    """
    found = sections(page(name), re.compile(rf"\A{re.escape(heading)}\Z"))
    if len(found) != 1:
        raise LookupError(f"{name}: {len(found)} headings read {heading!r}, expected one")
    return found[0]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: ``"Exit codes"`` → ``"exit-codes"``.

    Link syntax keeps its text; then lower case, every character but letters, digits, ``_``,
    ``-`` and spaces dropped, and each space a hyphen (so ``"A → B"`` gives ``"a--b"``).
    """
    text = _LINK.sub(r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a Markdown text's headings, a repeated one numbered as GitHub does (-1, -2)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for mark in headings(text):
        base = slug(mark.text)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found
