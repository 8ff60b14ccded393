"""The layering of the package holds: imports go down the layers, never up, and never in a circle.

Read from the source with ``ast`` (no import runs), so a new upward arrow fails here before
anyone notices it in a traceback. The layers, bottom to top (CONTRIBUTING.md, "Layout"):
``model``, ``config``, ``stages``, ``judge``, ``engine``, ``report``, ``daemon``, ``cli``.
A module may import its own package and the packages below it; the top-level helpers
(``probe._files``, ``probe._text``, ``probe._version``, ``probe.log``) from anywhere;
``probe.lab`` (the loopback lab) imports nothing of probe's but itself; nothing imports ``cli`` except ``cli``
and the launcher ``probe.__main__``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import REPO

PACKAGE = REPO / "probe"
LAYERS = ("model", "config", "stages", "judge", "engine", "report", "daemon", "cli")
SHARED = frozenset({"_files", "_text", "_version", "log"})


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, *, runtime_only: bool = False) -> Iterator[tuple[str, int]]:
    """Every ``probe`` module imported by ``path``: ``(module, line)``.

    ``runtime_only`` leaves out imports inside ``if TYPE_CHECKING:`` and inside functions
    (they do not run when the module loads, so they cannot close a circle at import time).
    """
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            typing_block = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            if typing_block or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                skipped |= {id(inner) for inner in ast.walk(node) if inner is not node}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from probe.stages import dns" imports probe.stages.dns.
            names = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
            names = names or [node.module]
        else:
            continue
        for name in names:
            if name == "probe" or name.startswith("probe."):
                yield name, node.lineno


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def allowed(importer: str, imported: str) -> bool:
    mine, theirs = layer(importer), layer(imported)
    if theirs in SHARED or mine == theirs:
        return True
    if mine == "lab" or theirs == "lab":
        return mine == "cli" and theirs == "lab"  # probe demo starts the lab
    if mine == "__main__":
        return imported == "probe.cli.main"
    if mine not in LAYERS or theirs not in LAYERS:
        return mine in SHARED and theirs in SHARED
    return LAYERS.index(theirs) <= LAYERS.index(mine)


def test_every_module_is_in_a_layer_or_shared() -> None:
    top = {layer(m) for m in MODULES} - {""}
    assert top <= {*LAYERS, *SHARED, "lab", "__main__"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module: str) -> None:
    upward = [
        f"{module} imports {name} (line {line})"
        for name, line in imports(MODULES[module])
        if not allowed(module, name)
    ]
    assert upward == []


def test_the_rule_refuses_an_upward_arrow() -> None:
    """The checker itself: each kind of arrow it must refuse, and ones it must allow."""
    assert not allowed("probe.model.results", "probe.judge.balancing")
    assert not allowed("probe.judge.watch", "probe.report.hints")
    assert not allowed("probe.daemon.metrics", "probe.cli.push")
    assert not allowed("probe.model.results", "probe.config.models")
    assert not allowed("probe.lab.servers", "probe.stages.tls")
    assert allowed("probe.cli.push", "probe.daemon.metrics")
    assert allowed("probe.stages.tls", "probe.config.models")
    assert allowed("probe.report.text", "probe._text")


def test_no_import_circle_when_modules_load() -> None:
    graph = {
        m: {n for n, _ in imports(p, runtime_only=True) if n in MODULES and n != m}
        for m, p in MODULES.items()
    }
    circles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert circles == []


#: The packages whose ``__init__.py`` is empty: every one but the lab, whose ``__init__`` is
#: its public face (``DemoLab``, ``Pki`` ...) for the demo and the tests.
INITS = sorted(p for p in PACKAGE.rglob("__init__.py") if p.parent.name != "lab")


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert sorted(sorted(c) for c in _strongly_connected(graph) if len(c) > 1) == [["a", "b", "c"]]


@pytest.mark.parametrize("path", INITS, ids=lambda p: str(p.relative_to(REPO)))
def test_package_init_files_hold_only_a_docstring(path: Path) -> None:
    """Importing a package loads nothing, so ``probe --help`` and ``probe check`` load only what they use."""
    body = ast.parse(path.read_text()).body
    assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative: the strongly connected components of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found
