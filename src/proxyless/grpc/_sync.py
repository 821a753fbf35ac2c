"""The blocking executor of the attempt driver (:mod:`._driver`).

:func:`run` carries out a driver's steps on the calling thread: ``Run``
makes a blocking call on the endpoint's channel, ``Sleep`` sleeps, and
``Launch``/``WaitAny`` (hedging) start ``future()`` calls and wait on a
condition their completion callbacks notify. When the driver stops, attempts
still running are cancelled and give back their connection and endpoint
counts.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc

from proxyless.grpc._driver import Launch, Run, Sleep, Steps
from proxyless.grpc._invocation import SAME, Invocation, Replay
from proxyless.grpc._orca_client import start_reporting
from proxyless.grpc._pool import ChannelPool, attempt_failed
from proxyless.runtime.call import Attempt

__all__ = ["run"]


def run(steps: Steps, inv: Invocation, pool: ChannelPool, replay: Replay | None = None) -> Any:
    """Carry out ``steps`` (see the module docstring); returns the call's
    result or raises what it ends with."""
    send: Any = None
    hedges: _Hedges | None = None
    try:
        while True:
            step = steps.send(send)
            kind = type(step)
            if kind is Run:
                send = attempt_once(step.attempt, inv, pool, replay)  # type: ignore[union-attr]
            elif kind is Sleep:
                time.sleep(step.seconds)  # type: ignore[union-attr]
                send = None
            elif kind is Launch:
                if hedges is None:
                    hedges = _Hedges(inv, pool)
                hedges.launch(step.attempt)  # type: ignore[union-attr]
                send = None
            else:
                assert hedges is not None
                send = hedges.wait(step.timeout)  # type: ignore[union-attr]
    except StopIteration as stop:
        return stop.value
    finally:
        if hedges is not None:
            hedges.cancel_all()


def attempt_once(
    attempt: Attempt, inv: Invocation, pool: ChannelPool, replay: Replay | None = None
) -> tuple[Any, grpc.RpcError | None]:
    """Make one blocking attempt: ``(result, None)`` or ``(None, error)``.
    Any other exception gives back the endpoint's count and propagates."""
    try:
        request = SAME if replay is None else replay.attempt()
        if attempt.endpoint.orca is None:
            result = inv.start(attempt.conn, attempt.timeout, request=request)
        else:  # a weighted round robin endpoint: read its load report (gRFC A58)
            result = start_reporting(inv, attempt, request)
    except BaseException as exc:
        return None, attempt_failed(pool, attempt, exc)
    pool.call_ended(attempt.conn)
    return result, None


class _Hedges:
    """The attempts of a hedged call running as ``future()`` calls."""

    __slots__ = ("_base", "_done", "_finished", "_inv", "_pool", "_running", "_want_call")

    def __init__(self, inv: Invocation, pool: ChannelPool) -> None:
        self._inv = inv
        self._pool = pool
        self._want_call = inv.kind.endswith("_with_call")
        self._base = inv.kind[: -len("_with_call")] if self._want_call else inv.kind
        self._done = threading.Condition()
        self._finished: list[Attempt] = []
        self._running: dict[Attempt, Any] = {}

    def launch(self, attempt: Attempt) -> None:
        try:
            fut = self._inv.start(attempt.conn, attempt.timeout, kind=self._base, attr="future")
        except BaseException:
            self._pool.call_ended(attempt.conn)
            attempt.endpoint.active_requests -= 1
            raise
        self._running[attempt] = fut

        def on_done(_f: Any) -> None:
            with self._done:
                self._finished.append(attempt)
                self._done.notify_all()

        fut.add_done_callback(on_done)

    def wait(self, timeout: float | None) -> tuple[Attempt, Any, grpc.RpcError | None] | None:
        """One ended attempt, or None after ``timeout``; the others that
        ended meanwhile stay queued (and are cancelled losers if the call
        ends first)."""
        with self._done:
            if not self._finished:
                self._done.wait(timeout)
            if not self._finished:
                return None
            attempt = self._finished.pop(0)
        fut = self._running.pop(attempt)
        self._pool.call_ended(attempt.conn)
        err = fut.exception()
        if err is not None:
            return attempt, None, err
        result = fut.result()
        return attempt, (result, fut) if self._want_call else result, None

    def cancel_all(self) -> None:
        """Cancel the losers: they give back their connection and count."""
        running, self._running = self._running, {}
        with self._done:
            self._finished.clear()
        for attempt, fut in running.items():
            fut.cancel()
            self._pool.call_ended(attempt.conn)
            attempt.endpoint.active_requests -= 1
