"""Time and timers, injectable.

This is the only module of proxyless that reads the system clock. Everything
that needs "now" or a timer (does-not-exist timers, stream backoff, outlier
detection intervals, ejection times) takes a :class:`Clock`. Tests pass a
:class:`proxyless.testing.FakeClock` and advance it instead of sleeping.

Timers created with :meth:`Clock.call_later` from inside a running asyncio
loop fire on that loop; the real clock uses ``loop.call_later``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "SystemClock", "TimerHandle"]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a monotonic clock (for intervals and deadlines)."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (for timestamps shown to people)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` after ``delay`` seconds on the calling thread's running loop."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` / ``time.time`` and the loop's timers."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)

    def __repr__(self) -> str:
        return "SystemClock()"
