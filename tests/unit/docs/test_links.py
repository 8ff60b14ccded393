"""Every relative link of the documentation leads somewhere: the file exists, and so does the heading."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.support import docs

#: Inline links and images, ``[text](target)`` or ``[text](target "title")``; not inside code.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: A target with a scheme (``https:``, ``mailto:``) leaves the repository: not checked here.
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def relative_links(name: str) -> list[str]:
    return [t for t in LINK.findall(docs.prose(docs.page(name))) if not EXTERNAL.match(t)]


def test_the_pages_are_all_there() -> None:
    names = docs.pages()
    assert {"README.md", "CONTRIBUTING.md", "bench/README.md", "docs/README.md"} <= set(names)
    assert len(names) > 5
    for name in names:
        assert relative_links(name), f"{name} links nowhere"


def test_the_docs_index_links_every_page() -> None:
    linked = {target.split("#", 1)[0] for target in relative_links("docs/README.md")}
    pages = {name.removeprefix("docs/") for name in docs.pages() if name.startswith("docs/")}
    assert pages - {"README.md"} <= linked


@pytest.mark.parametrize("name", docs.pages())
def test_every_relative_link_resolves(name: str) -> None:
    source = docs.page_path(name)
    broken: list[str] = []
    for target in relative_links(name):
        path, _, fragment = target.partition("#")
        file = (source.parent / unquote(path)).resolve() if path else source
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif fragment and fragment not in anchors_of(file):
            broken.append(f"{target}: no heading with the anchor #{fragment} in {file.name}")
    assert broken == []


def anchors_of(file: Path) -> set[str]:
    """The anchors of a Markdown file's headings; none for any other file."""
    return docs.anchors(file.read_text(encoding="utf-8")) if file.suffix == ".md" else set()


def test_slugs_are_githubs() -> None:
    assert docs.slug("Exit codes") == "exit-codes"
    assert docs.slug("Pushing a check's result to a Pushgateway: `--push`") == (
        "pushing-a-checks-result-to-a-pushgateway---push"
    )
    assert docs.slug("Lever → what it bought") == "lever--what-it-bought"
    assert docs.slug("The daemon: `probe run`") == "the-daemon-probe-run"
    assert docs.slug("`--watch --json` lines") == "--watch---json-lines"
    assert docs.anchors("# A\n## A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1", "a-2"}
