"""The ``grpc.aio`` executor of the attempt driver (:mod:`._driver`).

:func:`arun` carries out a driver's steps on the running event loop: ``Run``
awaits the endpoint's ``grpc.aio`` call, ``Sleep`` awaits
``asyncio.sleep``, and ``Launch``/``WaitAny`` (hedging) run each attempt as
a task and wait for the first to end. Errors the driver raises reach the
caller as ``grpc.aio.AioRpcError`` (:func:`~proxyless.grpc._errors.as_aio`).
When the driver stops, attempts still running are cancelled and give back
their connection and endpoint counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from proxyless.grpc._driver import Launch, Run, Sleep, Steps
from proxyless.grpc._errors import as_aio
from proxyless.grpc._invocation import SAME, Invocation, Replay
from proxyless.grpc._orca_client import read_aio_report
from proxyless.grpc._pool import ChannelPool, attempt_failed
from proxyless.runtime.call import Attempt

__all__ = ["arun"]

#: Called with each attempt's ``grpc.aio`` call object as it starts.
Started = Callable[[Any], None]


def _ignore(_inner: Any) -> None:
    return None


async def arun(
    steps: Steps,
    inv: Invocation,
    pool: ChannelPool,
    replay: Replay | None = None,
    started: Started = _ignore,
) -> Any:
    """Carry out ``steps`` (see the module docstring)."""
    send: Any = None
    hedges: _Hedges | None = None
    try:
        while True:
            try:
                step = steps.send(send)
            except StopIteration as stop:
                return stop.value
            except grpc.RpcError as err:
                raise as_aio(err) from None
            kind = type(step)
            if kind is Run:
                send = await _attempt_once(step.attempt, inv, pool, replay, started)  # type: ignore[union-attr]
            elif kind is Sleep:
                await asyncio.sleep(step.seconds)  # type: ignore[union-attr]
                send = None
            elif kind is Launch:
                if hedges is None:
                    hedges = _Hedges(inv, pool, started)
                hedges.launch(step.attempt)  # type: ignore[union-attr]
                send = None
            else:
                assert hedges is not None
                send = await hedges.wait(step.timeout)  # type: ignore[union-attr]
    finally:
        if hedges is not None:
            hedges.cancel_all()


async def _attempt_once(
    attempt: Attempt, inv: Invocation, pool: ChannelPool, replay: Replay | None, started: Started
) -> tuple[Any, grpc.RpcError | None]:
    try:
        request = SAME if replay is None else replay.aattempt()
        inner = inv.start(attempt.conn, attempt.timeout, request=request)
        started(inner)
        result = await inner
        if attempt.endpoint.orca is not None:  # weighted round robin (gRFC A58)
            await read_aio_report(attempt.endpoint, inner, attempt.conn.channel)
    except BaseException as exc:
        return None, attempt_failed(pool, attempt, exc)
    pool.call_ended(attempt.conn)
    return result, None


async def _awaited(inner: Any) -> Any:
    return await inner


class _Hedges:
    """The attempts of a hedged call, each awaited by a task of its own."""

    __slots__ = ("_inv", "_pool", "_running", "_started")

    def __init__(self, inv: Invocation, pool: ChannelPool, started: Started) -> None:
        self._inv = inv
        self._pool = pool
        self._started = started
        self._running: dict[asyncio.Future[Any], tuple[Attempt, Any]] = {}

    def launch(self, attempt: Attempt) -> None:
        try:
            inner = self._inv.start(attempt.conn, attempt.timeout)
        except BaseException:
            self._pool.call_ended(attempt.conn)
            attempt.endpoint.active_requests -= 1
            raise
        self._started(inner)
        self._running[asyncio.ensure_future(_awaited(inner))] = (attempt, inner)

    async def wait(self, timeout: float | None) -> tuple[Attempt, Any, Any] | None:
        """One ended attempt, or None after ``timeout``; others that ended
        meanwhile stay in the table (and are cancelled losers if the call
        ends first)."""
        done, _ = await asyncio.wait(
            list(self._running), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            return None
        task = next(t for t in self._running if t in done)  # launch order
        attempt, _inner = self._running.pop(task)
        self._pool.call_ended(attempt.conn)
        err = task.exception()
        if err is None:
            return attempt, task.result(), None
        if isinstance(err, grpc.RpcError):
            return attempt, None, err
        attempt.endpoint.active_requests -= 1
        raise err

    def cancel_all(self) -> None:
        """Cancel the losers: they give back their connection and count."""
        running, self._running = self._running, {}
        for task, (attempt, inner) in running.items():
            inner.cancel()
            task.cancel()
            self._pool.call_ended(attempt.conn)
            attempt.endpoint.active_requests -= 1
