"""Find import cycles in a Python package from its source, without importing it.

Usage: ``python tools/import_cycles.py [SOURCE_ROOT]`` (default ``src/proxyless``).

The import graph is read from the AST of every module under the root. Every
``import`` and ``from ... import`` counts wherever it is written: at the top
level, inside a function, or under ``if TYPE_CHECKING:`` — a cycle that only
a type checker or a late call sees is still a cycle in the design. Edges:

- ``import a.b.c`` and ``from a.b.c import x`` import module ``a.b.c`` and,
  as Python does, the packages ``a.b`` and ``a`` (their ``__init__``);
- ``from a.b import name`` also imports ``a.b.name`` when that is a submodule;
- relative imports are resolved against the importing module's package;
- an edge to a package's ``__init__`` counts only when the importer lives
  outside that package. A submodule reaching its own package (``from
  proxyless.pkg import x`` inside ``proxyless/pkg/``) meets the re-export
  pattern — the ``__init__`` importing its submodules — and Python resolves
  that without trouble, so it is not reported. An edge to a plain module
  always counts.

Strongly connected components (Tarjan) of more than one module are cycles;
each is printed with its modules and the import lines joining them. Exit
status: 1 when there is a cycle, 0 otherwise with a one-line summary.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Edge:
    """One import statement making ``importer`` import ``imported``."""

    importer: str
    imported: str
    path: Path
    line: int
    source: str


def module_names(root: Path) -> dict[str, Path]:
    """Map every module under ``root`` (a package directory) to its file.

    Names are dotted from the root's own name: ``root/a/b.py`` is
    ``<root>.a.b`` and ``root/a/__init__.py`` is the package ``<root>.a``.
    """
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """The absolute module name ``from ... import`` reads from (None if it escapes the root)."""
    if node.level == 0:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    up = node.level - 1
    if up > len(base) - 1:
        return None
    base = base[: len(base) - up]
    return ".".join([*base, node.module] if node.module else base)


def _with_parents(name: str) -> Iterator[str]:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        yield ".".join(parts[:i])


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> set[str]:
    """Every module name (known or not) the statement imports."""
    names: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            names.update(_with_parents(alias.name))
        return names
    base = _resolve_from(module, is_package, node)
    if base is None:
        return names
    names.update(_with_parents(base))
    for alias in node.names:
        if alias.name != "*":
            names.add(f"{base}.{alias.name}")
    return names


def _counts(importer: str, imported: str, modules: dict[str, Path]) -> bool:
    if imported == importer or imported not in modules:
        return False
    if _is_package(modules[imported]):
        return not importer.startswith(imported + ".")
    return True


def import_edges(root: Path) -> list[Edge]:
    """Every import edge between modules under ``root``, in file and line order."""
    modules = module_names(root)
    edges: list[Edge] = []
    for module, path in modules.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text, filename=str(path))
        nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
        for node in sorted(nodes, key=lambda n: n.lineno):
            source = lines[node.lineno - 1].strip()
            for imported in sorted(_targets(module, _is_package(path), node)):
                if _counts(module, imported, modules):
                    edges.append(Edge(module, imported, path, node.lineno, source))
    return edges


def strongly_connected(nodes: Sequence[str], edges: Sequence[Edge]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of two or more nodes, each sorted."""
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    for edge in edges:
        successors[edge.importer].append(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(successors[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(successors[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def report(root: Path) -> tuple[list[str], bool]:
    """The lines to print for ``root`` and whether a cycle was found."""
    modules = module_names(root)
    edges = import_edges(root)
    cycles = strongly_connected(list(modules), edges)
    if not cycles:
        return [f"no import cycles: {len(modules)} modules, {len(edges)} import edges"], False
    out = [f"{len(cycles)} import cycle(s) in {root}:"]
    for number, members in enumerate(cycles, 1):
        inside = set(members)
        out.append(f"cycle {number} ({len(members)} modules): {', '.join(members)}")
        for edge in edges:
            if edge.importer in inside and edge.imported in inside:
                out.append(
                    f"  {edge.path}:{edge.line}: {edge.importer} -> {edge.imported}: {edge.source}"
                )
    return out, True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Report import cycles in a package.")
    parser.add_argument("root", nargs="?", default="src/proxyless", type=Path)
    args = parser.parse_args(argv)
    root: Path = args.root
    if not (root / "__init__.py").is_file():
        parser.error(f"{root} is not a package directory")
    lines, found = report(root)
    print("\n".join(lines))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
