"""tools/import_cycles.py on small packages written to a temporary directory."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_TOOL = Path(__file__).resolve().parents[3] / "tools" / "import_cycles.py"


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_cycles", _TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


import_cycles = _load_tool()


def _package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


@pytest.mark.parametrize(
    "files, members",
    [
        pytest.param(
            {"a.py": "from pkg import b\n", "b.py": "import pkg.a\n"},
            "pkg.a, pkg.b",
            id="top-level",
        ),
        pytest.param(
            {
                "a.py": "from pkg.b import g\n",
                "b.py": "def g():\n    from . import a\n    return a\n",
            },
            "pkg.a, pkg.b",
            id="function-level-relative",
        ),
        pytest.param(
            {
                "a.py": "from pkg.b import B\n",
                "b.py": (
                    "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n"
                    "    from pkg.a import A\n"
                    "class B: ...\n"
                ),
            },
            "pkg.a, pkg.b",
            id="type-checking",
        ),
        pytest.param(
            {
                "sub/__init__.py": "from pkg.sub.x import X\n",
                "sub/x.py": "from pkg.c import C\nclass X: ...\n",
                "c.py": "import pkg.sub.y\nclass C: ...\n",
                "sub/y.py": "",
            },
            "pkg.c, pkg.sub, pkg.sub.x",
            id="through-package-init",
        ),
    ],
)
def test_cycle_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str], members: str
) -> None:
    root = _package(tmp_path, files)
    assert import_cycles.main([str(root)]) == 1
    out = capsys.readouterr().out
    assert f"cycle 1 ({members.count(',') + 1} modules): {members}\n" in out
    assert "cycle 2" not in out


def test_cycle_report_names_the_import_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _package(tmp_path, {"a.py": "import os\nfrom pkg import b\n", "b.py": "import pkg.a\n"})
    import_cycles.main([str(root)])
    out = capsys.readouterr().out
    assert f"{root / 'a.py'}:2: pkg.a -> pkg.b: from pkg import b" in out
    assert f"{root / 'b.py'}:1: pkg.b -> pkg.a: import pkg.a" in out


def test_clean_package_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _package(
        tmp_path,
        {
            # The re-export pattern: the package imports its submodules and a
            # submodule imports a name through its own package. Not a cycle.
            "__init__.py": "from pkg.a import A\nfrom pkg.b import B\n",
            "a.py": "class A: ...\n",
            "b.py": "from pkg import A\nfrom . import a\nclass B(A): ...\n",
            "sub/__init__.py": "from .leaf import f\n",
            "sub/leaf.py": "from ..a import A\nfrom pkg.sub import leaf\ndef f(): ...\n",
        },
    )
    assert import_cycles.main([str(root)]) == 0
    assert capsys.readouterr().out == "no import cycles: 5 modules, 5 import edges\n"
