"""Calling into the xDS client's event loop from any thread.

All of the xDS client's state lives on one asyncio loop (the Mesh's
background thread). A call made on that loop runs at once; a call from any
other thread is handed over with ``call_soon_threadsafe``, and
:func:`run_on_loop` waits for its result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["call_on_loop", "in_loop", "run_on_loop"]

_T = TypeVar("_T")


def in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """True when called from a coroutine or callback running on ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def call_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(*args)`` on ``loop``: now if already there, else soon
    (nothing, once the loop is closed: its owner has shut down)."""
    if in_loop(loop):
        fn(*args)
    else:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            if not loop.is_closed():
                raise


def run_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], _T], timeout: float) -> _T:
    """Run ``fn()`` on ``loop`` and return its result (or raise its exception);
    from another thread, wait at most ``timeout`` seconds."""
    if in_loop(loop):
        return fn()
    fut: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def run() -> None:
        try:
            fut.set_result(fn())
        except BaseException as exc:
            fut.set_exception(exc)

    try:
        loop.call_soon_threadsafe(run)
    except RuntimeError:
        if loop.is_closed():
            raise RuntimeError(
                "the xDS client's event loop is closed (its Mesh was closed)"
            ) from None
        raise
    return fut.result(timeout)
