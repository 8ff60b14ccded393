"""Read an HTML page as a user's browser shows it: table rows and their cell texts, tags, links.

Built on the standard library's tolerant parser, so it reads both probe's own HTML and the
DOM that headless Chromium dumps (``--dump-dom``) after it parsed and rendered a page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Row:
    """One ``<tr>``: its attributes and the text of each cell (whitespace collapsed)."""

    attrs: dict[str, str]
    cells: list[str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


@dataclass
class Page:
    """What the parser saw: rows, every start tag's name, links, ``<pre>`` texts and all text."""

    rows: list[Row] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    pres: list[str] = field(default_factory=list)
    text: str = ""
    title: str = ""

    def rows_of(self, kind: str) -> list[Row]:
        """The rows with class ``kind`` (``target``, ``address``, ``change``)."""
        return [r for r in self.rows if kind in r.classes]


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._cell: list[str] | None = None
        self._pre: list[str] | None = None
        self._title: list[str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.page.tags.append(tag)
        if tag == "tr":
            self.page.rows.append(Row(values))
        elif tag in ("td", "th") and self.page.rows:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")
        elif tag == "a" and "href" in values:
            self.page.links.append(values["href"])
        elif tag == "pre":
            self._pre = []
        elif tag == "title":
            self._title = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.page.rows:
            self.page.rows[-1].cells.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "pre" and self._pre is not None:
            self.page.pres.append("".join(self._pre))
            self._pre = None
        elif tag == "title" and self._title is not None:
            self.page.title = "".join(self._title)
            self._title = None

    def handle_data(self, data: str) -> None:
        for sink in (self._cell, self._pre, self._title):
            if sink is not None:
                sink.append(data)
        self._text.append(data)

    def close(self) -> None:
        super().close()
        self.page.text = "".join(self._text)


def parse(html: str) -> Page:
    """Parse ``html`` into a :class:`Page`."""
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return parser.page
