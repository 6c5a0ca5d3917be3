"""The package's layer map and a checker for it: every `rd3_harness` import (function-local ones
included, `if TYPE_CHECKING:` blocks excepted) must point to the importer's layer or below, and
the import graph must have no cycle. Used by `tests/test_layers.py`; CONTRIBUTING.md has the map."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

FACADE = ("rd3_harness", "rd3_harness.api")
"""The public surface: nothing inside the package imports it."""

LAYERS: dict[int, tuple[str, ...]] = {
    0: (
        "rd3_harness.version",
        "rd3_harness.errors",
        "rd3_harness.files",
        "rd3_harness.hashing",
        "rd3_harness.seeding",
        "rd3_harness.settings",
        "rd3_harness.progress",
        "rd3_harness.cost",
        "rd3_harness.hookspecs",
        "rd3_harness.observers",
        "rd3_harness.contract",
        "rd3_harness.registry",
        "rd3_harness.protocol.schema",
    ),
    1: (
        "rd3_harness.protocol",
        "rd3_harness.data",
        "rd3_harness.models",
        "rd3_harness.teachers",
        "rd3_harness.training",
        "rd3_harness.results",
        "rd3_harness.synthesis",
        "rd3_harness.distributed",
    ),
    2: (
        "rd3_harness.plugins",
        "rd3_harness.default_plugins",
        "rd3_harness.workspace",
        "rd3_harness.runner",
        "rd3_harness.sweep",
        "rd3_harness.kit",
        "rd3_harness.testing",
        "rd3_harness.trackers",
    ),
    3: ("rd3_harness.cli", "rd3_harness.analysis", "rd3_harness.__main__"),
}
"""Layer of each module or package (the longest matching prefix wins)."""


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), layer)
    return None if best is None else best[1]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(source: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) of every `rd3_harness` import outside `if TYPE_CHECKING:` blocks."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "rd3_harness")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rd3_harness":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((node.lineno, sub if sub in known else node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


@dataclass
class LayerReport:
    upward: list[str]
    unmapped: list[str]
    cycles: list[list[str]]

    @property
    def ok(self) -> bool:
        return not (self.upward or self.unmapped or self.cycles)


def check(package_dir: Path) -> LayerReport:
    """Check the package at `package_dir` (the folder of `rd3_harness/__init__.py`) against the map."""
    files = {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    known = set(files)
    graph: dict[str, set[str]] = {m: set() for m in files}
    upward, unmapped = [], []
    for module, path in files.items():
        if module in FACADE:
            continue
        mine = layer_of(module)
        if mine is None:
            unmapped.append(f"{module}: not in the layer map (rd3_harness/kit/layers.py)")
            continue
        for line, target in imports_of(path.read_text(), known):
            if target == module:
                continue
            graph[module].add(target)
            where = f"{path.relative_to(package_dir.parent)}:{line}"
            if target in FACADE:
                upward.append(f"{where}: {module} imports the public facade {target}; import the defining module")
                continue
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                upward.append(f"{where}: {module} (layer {mine}) imports {target} (layer {theirs})")
    return LayerReport(upward, unmapped, _cycles(graph))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out
