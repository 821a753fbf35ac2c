"""One ``grpc.aio`` call of any shape on a proxyless channel.

The request path is the sync channel's (:class:`~proxyless.grpc._core.ChannelCore`):
routing, breaker and picking are plain synchronous code; only waiting for
the first config, an injected delay, backoffs and the endpoint calls are
awaited. Retries and hedging are the attempt driver's (:mod:`._driver`),
carried out by the aio executor (:mod:`._aio_exec`).

- Unary calls, and client streams given as an iterator (replayed from a
  buffer, 16 MiB), run the retry loop. A unary call without metadata on its
  method's lane starts at once and needs no task of its own: the caller's
  ``await`` drives it; a task takes over only if the call ends before
  anyone awaits it, or a method of the call object needs it.
- A server stream is retried until its first message (gRFC A6 commit
  rule); the reader decides about a retry when the stream fails early.
- A stream written with ``write()`` and bidirectional streams make one
  attempt, recorded when it ends.

Calls that cannot be routed fail with ``grpc.aio.AioRpcError`` (UNAVAILABLE,
details naming target, route and cluster) with the typed error as
``.proxyless_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Generator
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from proxyless.errors import ProxylessError
from proxyless.grpc._aio_exec import arun
from proxyless.grpc._driver import (
    Sleep,
    Start,
    Steps,
    classify_status,
    fault_steps,
    hedge_steps,
    retry_steps,
    stream_steps,
)
from proxyless.grpc._errors import as_aio, rpc_error, status_error
from proxyless.grpc._invocation import NO_REQUEST, Invocation, Replay
from proxyless.grpc._orca_client import read_aio_report
from proxyless.grpc._pool import PooledChannel
from proxyless.grpc._telemetry import begin, bind, ended, ended_outcome
from proxyless.grpc._tls import explain_failure, pending
from proxyless.resilience.outcome import RESET, SUCCESS, Outcome
from proxyless.runtime.call import Attempt, Call, FirstAttempt, Lane

if TYPE_CHECKING:
    from proxyless.grpc._core import ChannelCore

__all__ = ["AioCall"]

#: Bookkeeping tasks still running (held so they are not garbage collected).
_PENDING: set[asyncio.Future[None]] = set()

_Fast = tuple[Lane, FirstAttempt, PooledChannel, Any]


class AioCall:
    """See the module docstring."""

    def __init__(self, core: ChannelCore, inv: Invocation, timeout: float | None) -> None:
        self._core = core
        self._inner: Any = None
        kind = inv.kind
        self._unary = kind == "unary_unary" or (
            kind == "stream_unary" and inv.request is not NO_REQUEST
        )
        self._server_stream = kind == "unary_stream"
        self._received = False
        #: the endpoint connection of the latest streaming attempt
        self._stream_conn: PooledChannel | None = None
        #: a server stream's attempt that failed before commit, for the reader
        self._failed: tuple[Outcome, bool] | None = None
        #: set when a stream's attempt ended (unary calls need none)
        self._failed_event: asyncio.Event | None = None if self._unary else asyncio.Event()
        self._steps: Steps | None = None
        self._stream_call: Call | None = None
        self._inv = inv
        #: cancel() was called: no further attempt may start
        self._cancelled = False
        #: set by cancel() to end a retry backoff at once (made when one starts)
        self._cancel_wait: asyncio.Event | None = None
        self._tel = begin(inv, core.target, core.runtime.authority)
        self._reader: AsyncIterator[Any] | None = None
        self._fast_started = False
        self._fast = self._start_fast(inv, timeout) if kind == "unary_unary" else None
        self._inline = False
        self._outcome: tuple[Any, BaseException | None] | None = None
        if self._fast is not None:
            self._task_obj: asyncio.Future[Any] | None = None
            self._fast[3].add_done_callback(self._fast_inner_done)
            return
        coro = self._run_unary if self._unary else self._start
        self._task_obj = asyncio.ensure_future(coro(inv, timeout))

    def _set_inner(self, inner: Any) -> None:
        self._inner = inner

    @property
    def _task(self) -> asyncio.Future[Any]:
        """What the call's result comes from: the task running it, or for a
        call on the fast path a task made now (nobody drives it yet) or a
        future the driving ``await`` resolves."""
        task = self._task_obj
        if task is None:
            fast = self._fast
            assert fast is not None
            if self._outcome is not None:
                task = asyncio.get_running_loop().create_future()
                result, exc = self._outcome
                if exc is not None:
                    task.set_exception(exc)
                else:
                    task.set_result(result)
            elif self._inline:
                task = asyncio.get_running_loop().create_future()
            else:
                self._inline = True  # the task drives it now
                task = asyncio.ensure_future(self._run_fast(*fast))
                task.add_done_callback(self._fast_never_ran)
            self._task_obj = task
        return task

    # -- the fast path ------------------------------------------------------------------
    def _start_fast(self, inv: Invocation, timeout: float | None) -> _Fast | None:
        """Start a unary call without metadata on its method's lane, now;
        None leaves it to :meth:`_run_unary`, which also reports every error."""
        core = self._core
        if inv.metadata:
            return None
        lane = core.lane(inv.method)
        if lane is None:
            return None
        try:
            first = lane.begin(core.rng, timeout)
        except ProxylessError:
            return None
        if first is None:
            return None
        try:
            core.loop = asyncio.get_running_loop()
            pooled = first.conn = core.acquire(first.endpoint, lane.cluster)
        except BaseException:
            lane.abandon(first)
            return None
        tel = self._tel
        if tel is not None:
            tel.routed(lane.plan.route.route.name or "", lane.cluster.name)
            tel.attempt_started(first)
        try:
            inner = self._inner = inv.start(pooled, first.timeout)
        except BaseException:
            core.pool.call_ended(pooled)
            lane.abandon(first)
            return None
        return lane, first, pooled, inner

    def _fast_inner_done(self, _inner: Any) -> None:
        """The fast path's endpoint call ended: if nobody is driving this
        call yet, a task must record the outcome (and retry)."""
        if not self._inline and self._task_obj is None:
            _ = self._task

    def _fast_never_ran(self, task: asyncio.Future[Any]) -> None:
        """A task driving a fast call was cancelled before it started: give
        back what the endpoint call holds."""
        fast, self._fast = self._fast, None
        if fast is not None and task.cancelled() and not self._fast_started:
            lane, first, pooled, _inner = fast
            self._core.pool.call_ended(pooled)
            lane.abandon(first)

    async def _run_fast(
        self, lane: Lane, first: FirstAttempt, pooled: PooledChannel, inner: Any
    ) -> Any:
        """The rest of a call started on ``lane``: its outcome, and the
        general path's retries should it fail."""
        tel = self._tel
        if tel is None:
            return await self._finish_fast(lane, first, pooled, inner)
        try:
            result = await self._finish_fast(lane, first, pooled, inner)
        except BaseException as exc:
            ended(tel, exc)
            raise
        ended(tel, None)
        return result

    async def _finish_fast(
        self, lane: Lane, first: FirstAttempt, pooled: PooledChannel, inner: Any
    ) -> Any:
        self._fast_started = True
        core = self._core
        inv = self._inv
        try:
            result = await inner
            if first.endpoint.orca is not None:  # weighted round robin (gRFC A58)
                await read_aio_report(first.endpoint, inner, pooled.channel)
        except grpc.RpcError as failed:
            core.pool.call_ended(pooled)
            err = explain_failure(pooled, failed)
            call = lane.resume(core.runtime, core.bare_request(inv.method), first, core.acquire)
            call.obs = self._tel
            try:
                steps = retry_steps(call, core.target, first=(first, err))
                return await arun(steps, inv, core.pool, started=self._set_inner)
            finally:
                call.end()
        except BaseException:
            core.pool.call_ended(pooled)
            lane.abandon(first)
            raise
        core.pool.call_ended(pooled)
        lane.succeeded(first.endpoint, first)
        lane.breaker.release_request()
        if self._tel is not None:
            self._tel.attempt_ended(first, SUCCESS)
        return result

    # -- the general path ---------------------------------------------------------------
    async def _route(self, inv: Invocation, timeout: float | None) -> Call:
        core = self._core
        rt = core.runtime
        try:
            if rt._state is None:
                loop = asyncio.get_running_loop()
                started = loop.time()
                await loop.run_in_executor(None, rt.state, timeout, bool(inv.wait_for_ready))
                if timeout is not None:
                    # Waiting for the config spends the caller's deadline (gRFC A31).
                    timeout = max(0.0, timeout - (loop.time() - started))
            core.loop = asyncio.get_running_loop()
            call = core.route(inv.method, inv.metadata, timeout, inv.wait_for_ready)
        except ProxylessError as exc:
            raise as_aio(rpc_error(exc, core.target)) from None
        creds = pending(call)
        if creds is not None:
            # A TLS cluster without credentials yet: wait within the deadline,
            # off the event loop.
            try:
                await asyncio.get_running_loop().run_in_executor(None, creds.wait, call.remaining())
            except ProxylessError as exc:
                call.end()
                raise as_aio(rpc_error(exc, core.target)) from None
            except BaseException:
                call.end()
                raise
        try:
            pause, err = fault_steps(call, core.target)
            if pause:
                await asyncio.sleep(pause)
            if err is not None:
                raise as_aio(err)
        except BaseException:
            call.end()
            raise
        return call

    async def _run_unary(self, inv: Invocation, timeout: float | None) -> Any:
        tel = self._tel
        if tel is None:
            return await self._unary_attempts(inv, timeout)
        try:
            result = await self._unary_attempts(inv, timeout)
        except BaseException as exc:
            ended(tel, exc)
            raise
        ended(tel, None)
        return result

    async def _unary_attempts(self, inv: Invocation, timeout: float | None) -> Any:
        core = self._core
        plain = not inv.metadata and inv.kind == "unary_unary"
        state = core.runtime._state
        call = await self._route(inv, timeout)
        bind(self._tel, call)
        if plain:
            core.learn(inv.method, state, call)
        try:
            if inv.kind == "stream_unary":
                replay = Replay(inv.request, inv.ser)
                steps = retry_steps(call, core.target, committed=lambda: replay.committed)
                return await arun(steps, inv, core.pool, replay, self._set_inner)
            if call.hedge.enabled:
                steps = hedge_steps(call, call.hedge, core.rng, core.target)
            else:
                steps = retry_steps(call, core.target)
            return await arun(steps, inv, core.pool, started=self._set_inner)
        finally:
            call.end()

    # -- streams ----------------------------------------------------------------------------
    async def _start(self, inv: Invocation, timeout: float | None) -> Any:
        try:
            call = await self._route(inv, timeout)
        except BaseException as exc:
            ended(self._tel, exc)
            raise
        bind(self._tel, call)
        self._stream_call = call
        self._steps = stream_steps(call, self._core.target)
        if self._server_stream:
            # Ends the call if the caller drops it unread.
            weakref.finalize(self, call.end)
        return self._launch_stream(None)

    def _launch_stream(self, send: Any) -> Any:
        """Send ``send`` to the stream driver and start the attempt it asks
        for; its outcome is recorded when it ends."""
        core = self._core
        call = self._stream_call
        steps = self._steps
        assert call is not None and steps is not None
        try:
            step = steps.send(send)
        except StopIteration:
            raise AssertionError("the stream driver asked for no attempt") from None
        except grpc.RpcError as err:
            call.end()
            ended(self._tel, err)
            raise as_aio(err) from None
        assert isinstance(step, Start)
        attempt = step.attempt
        pooled = self._stream_conn = attempt.conn
        try:
            inner = self._inv.start(pooled, attempt.timeout)
        except BaseException:
            core.pool.call_ended(pooled)
            attempt.endpoint.active_requests -= 1
            call.end()
            raise

        async def finish(c: Any) -> None:
            outcome = await _stream_outcome(c, attempt, call)
            if (
                self._server_stream
                and outcome.kind != "success"
                and not self._received
                and not c.cancelled()
                and call.retry_policy.enabled
            ):
                # Not committed yet: the reader decides about a retry.
                self._failed = (outcome, False)
            else:
                try:
                    steps.send((outcome, None, True))
                except StopIteration:
                    pass
                call.end()
                ended_outcome(self._tel, outcome, c.cancelled())
            if self._failed_event is not None:
                self._failed_event.set()

        def done(c: Any) -> None:
            core.pool.call_ended(pooled)
            task = asyncio.ensure_future(finish(c))
            _PENDING.add(task)
            task.add_done_callback(_PENDING.discard)

        inner.add_done_callback(done)
        self._inner = inner
        return inner

    async def _next_attempt(self, err: grpc.RpcError) -> Any:
        """After a server stream failed before its first message: the next
        attempt's call, or raise the final error (gRFC A6 commit rule)."""
        event = self._failed_event
        assert event is not None
        await event.wait()
        event.clear()
        failed, self._failed = self._failed, None
        call, steps = self._stream_call, self._steps
        if failed is None or call is None or steps is None:
            raise as_aio(err)
        outcome, committed = failed
        try:
            step = steps.send((outcome, err, committed))
        except StopIteration as stop:
            call.end()
            final = stop.value if stop.value is not None else err
            ended(self._tel, final)
            raise as_aio(final) from None
        if isinstance(step, Sleep):
            wake = self._cancel_wait = asyncio.Event()
            if not self._cancelled:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), step.seconds)
            if self._cancelled:  # cancelled during the backoff: no new attempt
                steps.close()
                call.end()
                cancelled = status_error(
                    grpc.StatusCode.CANCELLED, "Locally cancelled by application!"
                )
                ended(self._tel, cancelled)
                raise cancelled
            return self._launch_stream(None)
        raise AssertionError(f"unexpected stream step {step!r}")

    # -- awaiting and iterating ---------------------------------------------------------
    def __await__(self) -> Generator[Any, None, Any]:
        fast = self._fast
        if fast is not None and self._task_obj is None and not self._inline:
            # The fast path, driven right here: no task, no extra loop turns.
            self._inline = True
            try:
                result = yield from self._run_fast(*fast).__await__()
            except BaseException as exc:
                self._outcome = (None, exc)
                waiter = self._task_obj
                if waiter is not None and not waiter.done():
                    if isinstance(exc, asyncio.CancelledError):
                        waiter.cancel()
                    else:
                        waiter.set_exception(exc)
                        waiter.exception()  # retrieved: whoever waits sees it
                raise
            self._outcome = (result, None)
            waiter = self._task_obj
            if waiter is not None and not waiter.done():
                waiter.set_result(result)
            return result
        if self._unary:
            return (yield from self._task.__await__())
        inner = yield from self._task.__await__()
        return (yield from inner.__await__())

    async def _aiter(self) -> AsyncIterator[Any]:
        inner = await self._task
        while True:
            try:
                async for item in inner:
                    self._received = True
                    yield item
                return
            except grpc.aio.AioRpcError as err:
                if not self._server_stream or self._received:
                    raise
                # A TLS endpoint that refused the connection: say why (._tls).
                inner = await self._next_attempt(explain_failure(self._stream_conn, err))

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._aiter()

    async def _call_object(self) -> Any:
        if self._unary:
            try:
                await self._task
            except Exception:
                pass
            return self._inner
        return await self._task

    async def read(self) -> Any:
        if not self._server_stream:
            return await (await self._task).read()
        if self._reader is None:
            self._reader = self._aiter()
        try:
            return await self._reader.__anext__()
        except StopAsyncIteration:
            return grpc.aio.EOF  # type: ignore[attr-defined]

    async def write(self, request: Any) -> None:
        await (await self._task).write(request)

    async def done_writing(self) -> None:
        await (await self._task).done_writing()

    async def wait_for_connection(self) -> None:
        inner = await self._call_object()
        if inner is not None:
            await inner.wait_for_connection()

    async def initial_metadata(self) -> Any:
        inner = await self._call_object()
        return grpc.aio.Metadata() if inner is None else await inner.initial_metadata()

    async def trailing_metadata(self) -> Any:
        inner = await self._call_object()
        return grpc.aio.Metadata() if inner is None else await inner.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        try:
            inner = await self._task
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        if self._unary:
            return grpc.StatusCode.OK
        code: grpc.StatusCode = await inner.code()
        return code

    async def details(self) -> str:
        try:
            inner = await self._task
        except grpc.aio.AioRpcError as exc:
            return exc.details() or ""
        if self._unary:
            return ""
        details: str = await inner.details()
        return details

    def cancel(self) -> bool:
        self._cancelled = True
        if self._cancel_wait is not None:
            self._cancel_wait.set()
        if self._inner is not None:
            self._inner.cancel()
        return self._task.cancel() or self._inner is not None

    def cancelled(self) -> bool:
        return self._task.cancelled() or (self._inner is not None and bool(self._inner.cancelled()))

    def done(self) -> bool:
        if self._unary or self._inner is None:
            return self._task.done()
        return bool(self._inner.done())

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        def chain(fut: asyncio.Future[Any]) -> None:
            if self._unary or fut.cancelled() or fut.exception() is not None:
                callback(self)
            else:
                fut.result().add_done_callback(lambda _c: callback(self))

        self._task.add_done_callback(chain)

    def time_remaining(self) -> float | None:
        return None if self._inner is None else self._inner.time_remaining()

    def __repr__(self) -> str:
        return f"<proxyless AioCall {self._inv.kind} {self._inv.method}>"


async def _stream_outcome(c: Any, attempt: Attempt, call: Call) -> Outcome:
    """The outcome of a streaming attempt whose ``grpc.aio`` call has ended."""
    try:
        if c.cancelled():
            return RESET
        code = await c.code()
        details = await c.details() or ""
        trailing = await c.trailing_metadata() or ()
        return classify_status(code, details, trailing, attempt, call)
    except Exception:
        return RESET
