"""The shipped JSON Schemas and the descriptions in docs/json-document.md agree, key for key."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from probe.cli.share import share_file
from tests.support import docs

PAGE = "docs/json-document.md"


def schema(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(share_file(f"schema/{kind}-v1.schema.json").read_text())
    return loaded


def walk(node: Any) -> tuple[set[str], set[str]]:
    """Every property name in a schema, and every string it allows by enum, const or example."""
    keys: set[str] = set()
    words: set[str] = set()
    if isinstance(node, dict):
        for name, value in node.get("properties", {}).items():
            keys.add(name)
            more_keys, more_words = walk(value)
            keys |= more_keys
            words |= more_words
        for key in ("enum", "examples"):
            for value in node.get(key, []):
                words |= strings(value)
        if isinstance(node.get("const"), str):
            words.add(node["const"])
        for key, value in node.items():
            if key != "properties":
                more_keys, more_words = walk(value)
                keys |= more_keys
                words |= more_words
    elif isinstance(node, list):
        for value in node:
            more_keys, more_words = walk(value)
            keys |= more_keys
            words |= more_words
    return keys, words


def strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set(value) | {s for v in value.values() for s in strings(v)}
    return set()


def block_after(heading: str, start: str) -> str:
    """The first fenced block of the page's section ``heading`` whose text starts with ``start``."""
    blocks = docs.section(PAGE, heading).split("```")[1::2]
    return next(b for b in blocks if b.lstrip("\n").startswith(start))


def quoted(block: str) -> set[str]:
    """The quoted words of a documented block, comments (``# …``) left out."""
    code = "\n".join(line.split("  #", 1)[0] for line in block.splitlines())
    return set(re.findall(r'"([^"\s]+)"', code))


DOCUMENTS = {
    "check": block_after("JSON document", "{"),
    "watch": block_after("`--watch --json` lines", '{"type"'),
    "baseline": block_after("Baseline file", "{"),
}
#: Example values the page shows that are no key and no allowed value (names, addresses, files).
EXAMPLES = {
    "check": {"10.0.1.5", "10.0.3.31", "before.json", "www"},
    "watch": {"10.0.2.31", "www"},
    "baseline": {
        "www", "https://www.corp.example/", "www.corp.example", "tcp_refused", "10.0.2.31", "10.0.3.31",
        "web-1", "web-2", "TLSv1.3", "h2", "http/1.1", "37bb92…", "CN=www.corp.example",
        "CN=Amazon RSA 2048 M02,O=Amazon,C=US", "probe 0.1.0",
    },
}  # fmt: skip


@pytest.mark.parametrize("kind", ["check", "watch", "baseline"])
def test_every_schema_key_is_in_the_docs(kind: str) -> None:
    keys, _ = walk(schema(kind))
    documented = quoted(DOCUMENTS[kind])
    assert keys - documented == set()


@pytest.mark.parametrize("kind", ["check", "watch", "baseline"])
def test_every_documented_key_and_value_is_in_the_schema(kind: str) -> None:
    keys, words = walk(schema(kind))
    documented = quoted(DOCUMENTS[kind])
    assert documented - keys - words - EXAMPLES[kind] == set()


def test_the_docs_say_where_the_schemas_are() -> None:
    page = docs.page(PAGE)
    for kind in ("check", "watch", "baseline"):
        assert f"schema/{kind}-v1.schema.json" in page
