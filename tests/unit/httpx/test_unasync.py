"""tools/unasync.py: the sync transport is generated from the async one, and kept current."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync_tool", ROOT / "tools" / "unasync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


unasync = _load()


def test_generated_sync_transport_is_current() -> None:
    done = subprocess.run(
        [sys.executable, "tools/unasync.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("async def f() -> None:\n", "def f() -> None:\n", id="async-def"),
        pytest.param("    async for x in y:\n", "    for x in y:\n", id="async-for"),
        pytest.param("    async with lock:\n", "    with lock:\n", id="async-with"),
        pytest.param("    r = await t.aread()\n", "    r = t.read()\n", id="await-aread"),
        pytest.param(
            "await t.handle_async_request(u)\n", "t.handle_request(u)\n", id="handle-request"
        ),
        pytest.param(
            "import asyncio\nimport time\n\nawait asyncio.sleep(d)\n",
            "import time\n\ntime.sleep(d)\n",
            id="sleep",
        ),
        pytest.param(
            "class AsyncTransport(httpx.AsyncBaseTransport):\n",
            "class Transport(httpx.BaseTransport):\n",
            id="transport-class",
        ),
        pytest.param(
            "self.aclosed = preaclose(x_aclose)\n",
            "self.aclosed = preaclose(x_aclose)\n",
            id="whole-words-only",
        ),
        pytest.param(
            "from collections.abc import AsyncIterator, Iterable\n",
            "from collections.abc import Iterable, Iterator\n",
            id="import-resorted",
        ),
        pytest.param(
            "from m import (\n    X_LIMIT,\n    AsyncMirrors,\n    Core,\n    decide_async,\n)\n",
            "from m import (\n    X_LIMIT,\n    Core,\n    Mirrors,\n    decide,\n)\n",
            id="import-block-resorted",
        ),
    ],
)
def test_substitutions(source: str, expected: str) -> None:
    assert unasync.unasync(source) == expected


def test_asyncio_name_without_sync_counterpart_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "a.py"
    source.write_text("import asyncio\n\nasyncio.get_running_loop()\n")
    with pytest.raises(ValueError, match=r"asyncio\.get_running_loop"):
        unasync.generate(source, "a.py")


def test_check_reports_a_stale_file_with_a_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for source, target in unasync.FILES:
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / source).write_text((ROOT / source).read_text())
        (tmp_path / target).write_text((ROOT / target).read_text() + "x = 1\n")
    assert unasync.main(["--check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "-x = 1" in out and "out of date" in out
    assert unasync.main(["--root", str(tmp_path)]) == 0  # regenerates
    assert unasync.main(["--check", "--root", str(tmp_path)]) == 0
    for _, target in unasync.FILES:
        assert (tmp_path / target).read_text() == (ROOT / target).read_text()
