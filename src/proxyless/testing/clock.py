"""A fake clock for tests: time moves only when the test says so.

Timers created from inside a running asyncio loop are fired on that loop
(through ``call_soon_threadsafe``), so code that runs on the Mesh's
background thread sees its callbacks on the thread it expects. Timers created
outside any loop fire synchronously inside :meth:`FakeClock.advance`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Callable

__all__ = ["FakeClock"]


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "deadline", "loop")

    def __init__(
        self,
        deadline: float,
        callback: Callable[[], None],
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.deadline = deadline
        self.callback = callback
        self.loop = loop
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A :class:`proxyless.clock.Clock` whose time is advanced by hand."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._timers: list[tuple[float, int, _FakeTimer]] = []

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._wall_offset + self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _FakeTimer:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            timer = _FakeTimer(self._now + max(0.0, delay), callback, loop)
            heapq.heappush(self._timers, (timer.deadline, next(self._seq), timer))
        return timer

    def pending(self) -> int:
        """How many timers are scheduled and not cancelled."""
        with self._lock:
            return sum(1 for _, _, t in self._timers if not t.cancelled)

    def advance(self, seconds: float) -> None:
        """Move time forward and fire every timer that falls due, in order."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        target = self._now + seconds
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > target:
                    self._now = target
                    return
                deadline, _, timer = heapq.heappop(self._timers)
                self._now = max(self._now, deadline)
            if timer.cancelled:
                continue
            if timer.loop is not None and not timer.loop.is_closed():
                timer.loop.call_soon_threadsafe(_fire_if_live, timer)
            elif timer.loop is None:
                timer.callback()

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:.3f}, pending={self.pending()})"


def _fire_if_live(timer: _FakeTimer) -> None:
    if not timer.cancelled:
        timer.callback()
