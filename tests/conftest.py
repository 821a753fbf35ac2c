"""Checks every test gets: no thread left running after teardown, and, for
tests marked ``leak_strict``, no extra thread or file descriptor at all.

The rule, measured on this suite (grpcio 1.x, Python 3.11):

- Every test: a *non-daemon* thread the test started and that is still
  alive after its teardown fails it (such a thread keeps the interpreter
  from exiting). None does today.
- ``leak_strict`` tests (the fault folders, which start and stop many
  servers, proxies and Meshes): every thread they started must be gone,
  daemon or not, and the process' open file descriptors must be back to
  at most ``FD_TOLERANCE`` above where they were. Allowed: threads grpcio
  starts once per process and keeps (``_poll_wrapper``, grpc.aio's
  completion-queue poller, with its eventfds; hence the tolerance).

Threads and descriptors are often released a moment after teardown (a
server's handler thread noticing its client is gone, an executor freed by
the garbage collector), so a check that fails is retried after a
``gc.collect()`` for up to ``GRACE`` seconds before the test fails; a clean
test pays two ``threading.enumerate()`` calls and, when strict, two
directory listings.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator

import pytest

GRACE = 2.0
FD_TOLERANCE = 4
#: threads a test may leave behind by name (none today)
ALLOWED_PREFIXES: tuple[str, ...] = ()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "leak_strict: fail the test if any thread or more than a few file descriptors "
        "it added outlive its teardown (tests/conftest.py)",
    )


def _fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: descriptors are not checked
        return 0


def _allowed(t: threading.Thread) -> bool:
    """grpc.aio's poller ("Thread-N (_poll_wrapper)"), or an allowed prefix."""
    return "(_poll_wrapper)" in t.name or t.name.startswith(ALLOWED_PREFIXES)


def _leftovers(
    before: set[int | None], fds: int, strict: bool
) -> tuple[list[threading.Thread], int]:
    new = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    if strict:
        new = [t for t in new if not _allowed(t)]
        extra = _fd_count() - fds - FD_TOLERANCE
    else:
        new = [t for t in new if not t.daemon]
        extra = 0
    return new, extra


def _describe(thread: threading.Thread) -> str:
    """A thread's name and where it is now (its innermost frames)."""
    kind = "daemon" if thread.daemon else "non-daemon"
    frame = sys._current_frames().get(thread.ident or 0)
    where = "".join(traceback.format_stack(frame)[-4:]) if frame is not None else ""
    return f"{thread.name} ({kind}), now at:\n{where}"


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    strict = request.node.get_closest_marker("leak_strict") is not None
    before = {t.ident for t in threading.enumerate()}
    fds = _fd_count() if strict else 0
    yield
    new, extra = _leftovers(before, fds, strict)
    if new or extra > 0:
        gc.collect()
        deadline = time.monotonic() + GRACE
        while (new or extra > 0) and time.monotonic() < deadline:
            time.sleep(0.02)
            new, extra = _leftovers(before, fds, strict)
    if new:
        pytest.fail(
            f"the test left {len(new)} thread(s) running:\n" + "\n".join(_describe(t) for t in new),
            pytrace=False,
        )
    if extra > 0:
        pytest.fail(
            f"the test left {extra + FD_TOLERANCE} more file descriptors open than it "
            f"found (tolerance {FD_TOLERANCE})",
            pytrace=False,
        )
