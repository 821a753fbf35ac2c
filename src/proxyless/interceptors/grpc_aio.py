"""``proxyless.grpc.aio.channel``: the xDS channel for ``grpc.aio``.

The same request path as the sync channel (:mod:`proxyless.interceptors.grpc_channel`):
routing, breaker and picking are plain synchronous code; only waiting for the
first config and the call itself are awaited. Each call starts at once (as
``grpc.aio`` calls do) and runs on the ``grpc.aio`` channel of the chosen
endpoint for the running event loop. Calls that cannot be routed fail with
``grpc.aio.AioRpcError`` (UNAVAILABLE, details naming target, route and
cluster), with the typed error as ``.proxyless_error``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any

import grpc
import grpc.aio

from proxyless.errors import ProxylessError
from proxyless.interceptors import grpc_channel
from proxyless.interceptors.grpc_channel import (
    NO_REQUEST,
    Invocation,
    XdsChannel,
    classify_status,
    end_error,
    fault_steps,
    grpc_outcome,
    retry_delay,
)
from proxyless.interceptors.grpc_errors import XdsRpcError
from proxyless.interceptors.grpc_pool import ChannelPool, PooledChannel
from proxyless.lb.state import EndpointState
from proxyless.mesh import Mesh
from proxyless.resilience.outcome import RESET, SUCCESS, Outcome
from proxyless.resilience.retry import HedgePlan
from proxyless.runtime.call import Attempt, Call, FirstAttempt, Lane

__all__ = ["AioXdsChannel", "channel"]

#: The process-wide per-endpoint channel pool for grpc.aio (keyed by loop too).
AIO_POOL = ChannelPool()

#: Bookkeeping tasks still running (held so they are not garbage collected).
_PENDING: set[asyncio.Future[None]] = set()


def _aio_error(error: ProxylessError, target: str) -> grpc.aio.AioRpcError:
    details = f"{target}: {error}"
    flag = getattr(error, "flag", "")
    if flag:
        details = f"{details} [{flag}]"
    err = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None
    )
    err.proxyless_error = error  # type: ignore[attr-defined]
    err.__cause__ = error
    return err


class _AioCall:
    """A call of any shape. Unary-unary calls run the retry loop (gRFC A44);
    the other shapes make one attempt whose endpoint call starts once routed."""

    def __init__(self, ch: AioXdsChannel, inv: Invocation, timeout: float | None) -> None:
        self._ch = ch
        self._inner: Any = None
        # Unary responses (and client streams given as an iterator, replayed
        # from a buffer) run the retry loop; a server stream retries until
        # its first message; a stream written with write() makes one attempt.
        kind = inv.kind
        self._unary = kind == "unary_unary" or (
            kind == "stream_unary" and inv.request is not NO_REQUEST
        )
        self._server_stream = kind == "unary_stream"
        self._received = False
        self._failed: tuple[Attempt, Outcome] | None = None
        #: set when a stream's attempt ended (unary calls need none)
        self._failed_event: asyncio.Event | None = None if self._unary else asyncio.Event()
        self._stream_call: Call | None = None
        self._inv = inv
        self._reader: AsyncIterator[Any] | None = None
        #: a unary call started on its method's lane (see _start_fast), and
        #: whether an ``await`` of this object is driving it
        self._fast_started = False
        self._fast = self._start_fast(inv, timeout) if kind == "unary_unary" else None
        self._inline = False
        self._outcome: tuple[Any, BaseException | None] | None = None
        if self._fast is not None:
            # No task of our own unless needed: the caller's ``await`` drives
            # the call (__await__); if the call ends before anyone awaits it,
            # or a method needs it to run, a task takes over (_task).
            self._task_obj: asyncio.Future[Any] | None = None
            self._fast[3].add_done_callback(self._fast_inner_done)
            return
        coro = self._run_unary if self._unary else self._start
        self._task_obj = asyncio.ensure_future(coro(inv, timeout))

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
                task = asyncio.ensure_future(self._run_fast(*fast, self._inv))
                task.add_done_callback(self._fast_never_ran)
            self._task_obj = task
        return task

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
            self._ch._sync._pool.call_ended(pooled)
            lane.abandon(first)

    def _start_fast(
        self, inv: Invocation, timeout: float | None
    ) -> tuple[Lane, FirstAttempt, PooledChannel, Any] | None:
        """Start a unary call without metadata on its method's lane, now
        (see ``XdsChannel._run_fast``); None leaves it to :meth:`_run_unary`,
        which also reports every error."""
        sync = self._ch._sync
        lane = sync._lanes.get(inv.method)
        if inv.metadata or lane is None or lane.state is not sync._runtime._state or sync._closed:
            return None
        try:
            first = lane.begin(sync._rng, timeout)
        except ProxylessError:
            return None
        if first is None:
            return None
        try:
            sync._loop = asyncio.get_running_loop()
            pooled = sync._acquire(first.endpoint)
        except BaseException:
            lane.abandon(first)
            return None
        first.conn = pooled
        try:
            inner = self._inner = inv.start(pooled, first.timeout)
        except BaseException:
            sync._pool.call_ended(pooled)
            lane.abandon(first)
            return None
        return lane, first, pooled, inner

    async def _route(
        self, method: str, metadata: Any, timeout: float | None, wait_for_ready: bool | None
    ) -> Call:
        sync = self._ch._sync
        rt = sync._runtime
        try:
            if rt._state is None:
                loop = asyncio.get_running_loop()
                started = loop.time()
                await loop.run_in_executor(None, rt.state, timeout, bool(wait_for_ready))
                if timeout is not None:
                    # Waiting for the config spends the caller's deadline (gRFC A31).
                    timeout = max(0.0, timeout - (loop.time() - started))
            sync._loop = asyncio.get_running_loop()
            call = sync._call(method, metadata, timeout, wait_for_ready)
        except ProxylessError as exc:
            raise _aio_error(exc, sync.target) from None
        try:
            pause, err = fault_steps(call, sync.target)
            if pause:
                await asyncio.sleep(pause)
            if err is not None:
                raise _status_error(err.code(), err.details())
        except BaseException:
            call.end()
            raise
        return call

    def _attempt(self, call: Call) -> Attempt:
        try:
            return call.attempt()
        except ProxylessError as exc:
            raise _aio_error(exc, self._ch._sync.target) from None

    async def _run_unary(self, inv: Invocation, timeout: float | None) -> Any:
        sync = self._ch._sync
        method = inv.method
        plain = not inv.metadata and inv.kind == "unary_unary"
        state = sync._runtime._state
        call = await self._route(method, inv.metadata, timeout, inv.wait_for_ready)
        if plain:
            sync._learn(method, state, call)
        replay = _AsyncReplay(inv.request, inv.ser) if inv.kind == "stream_unary" else None
        try:
            hedge = call.hedge
            if hedge.enabled and replay is None:
                return await self._run_hedged(call, hedge, inv)
            return await self._attempts(call, inv, replay)
        finally:
            call.end()

    async def _run_fast(
        self, lane: Lane, first: FirstAttempt, pooled: PooledChannel, inner: Any, inv: Invocation
    ) -> Any:
        """The rest of a call started on ``lane`` (:meth:`_start_fast`): its
        outcome, and the general path's retries should it fail."""
        self._fast_started = True
        sync = self._ch._sync
        endpoint = first.endpoint
        try:
            result = await inner
        except grpc.RpcError as err:
            sync._pool.call_ended(pooled)
            call = lane.resume(sync._runtime, sync._bare_request(inv.method), first, sync._acquire)
            try:
                return await self._attempts(call, inv, None, (first, err))
            finally:
                call.end()
        except BaseException:
            sync._pool.call_ended(pooled)
            lane.abandon(first)
            raise
        sync._pool.call_ended(pooled)
        lane.succeeded(endpoint)
        lane.breaker.release_request()
        return result

    async def _attempts(
        self,
        call: Call,
        inv: Invocation,
        replay: _AsyncReplay | None,
        first: tuple[Attempt, grpc.RpcError] | None = None,
    ) -> Any:
        """Attempts until one succeeds or the retry policy stops; ``first`` is
        an attempt the fast path already made and its error."""
        sync = self._ch._sync
        while True:
            if first is not None:
                attempt, err = first
                first = None
            else:
                attempt = self._attempt(call)
                pooled = attempt.conn
                try:
                    request = inv.request if replay is None else replay.attempt()
                    inner = self._inner = inv.start(pooled, attempt.timeout, request=request)
                    result = await inner
                except grpc.RpcError as exc:
                    sync._pool.call_ended(pooled)
                    err = exc
                except BaseException:
                    sync._pool.call_ended(pooled)
                    attempt.endpoint.active_requests -= 1
                    raise
                else:
                    sync._pool.call_ended(pooled)
                    call.attempt_done(attempt, SUCCESS)
                    return result
            try:
                delay = retry_delay(call, attempt, err, replay is not None and replay.committed)
            except grpc.RpcError as final:
                raise _as_aio(final) from None
            if delay > 0:
                await asyncio.sleep(delay)

    async def _run_hedged(self, call: Call, hedge: HedgePlan, inv: Invocation) -> Any:
        """Hedged unary call (Envoy ``hedge_policy``): attempts race, the first
        response wins, the others are cancelled; extra attempts draw on the
        retry budget. Same rules as the sync channel's ``_run_hedged``."""
        sync = self._ch._sync
        budget = call.breaker.retry_budget
        per_try = call.retry_policy.per_try_timeout if hedge.hedge_on_per_try_timeout else None
        running: dict[asyncio.Future[Any], tuple[Attempt, Any]] = {}
        extra_held = 0

        def launch() -> None:
            attempt = self._attempt(call)
            if per_try is not None:
                attempt.timeout = call.remaining()
                attempt.per_try = False
            inner = self._inner = inv.start(attempt.conn, attempt.timeout)
            running[asyncio.ensure_future(_awaited(inner))] = (attempt, inner)

        def settle(task: asyncio.Future[Any], outcome: Outcome | None) -> float | None:
            attempt, _ = running.pop(task)
            sync._pool.call_ended(attempt.conn)
            if outcome is None:  # a cancelled loser
                attempt.endpoint.active_requests -= 1
                return None
            return call.attempt_done(attempt, outcome, may_retry=not running)

        try:
            launch()
            for _ in range(hedge.initial_attempts(sync._rng) - 1):
                if not budget.try_acquire_retry():
                    break
                extra_held += 1
                try:
                    launch()
                except grpc.aio.AioRpcError:
                    break
            while running:
                wait = per_try
                remaining = call.remaining()
                if remaining is not None:
                    wait = remaining if wait is None else min(wait, remaining)
                done, _ = await asyncio.wait(
                    list(running), timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    if per_try is not None and budget.try_acquire_retry():
                        extra_held += 1
                        try:
                            launch()
                        except grpc.aio.AioRpcError:
                            pass
                    continue
                for task in done:
                    if task not in running:
                        continue
                    attempt = running[task][0]
                    err = task.exception()
                    if err is None:
                        settle(task, SUCCESS)
                        for other in list(running):
                            running[other][1].cancel()
                            other.cancel()
                            settle(other, None)
                        return task.result()
                    assert isinstance(err, grpc.RpcError)
                    delay = settle(task, grpc_outcome(err, attempt, call))
                    if running:
                        continue
                    if delay is None:
                        raise _as_aio(end_error(call, err)) from None
                    if delay > 0:
                        await asyncio.sleep(delay)
                    launch()
            raise _status_error(
                grpc.StatusCode.UNAVAILABLE, f"{sync.target}: every hedged attempt ended"
            )
        finally:
            for task in list(running):
                running[task][1].cancel()
                task.cancel()
                settle(task, None)
            for _ in range(extra_held):
                budget.release_retry()

    async def _start(self, inv: Invocation, timeout: float | None) -> Any:
        call = await self._route(inv.method, inv.metadata, timeout, inv.wait_for_ready)
        self._stream_call = call
        if self._server_stream:
            # Ends the call if the caller drops it unread.
            weakref.finalize(self, call.end)
        return self._launch_stream()

    def _launch_stream(self) -> Any:
        """One attempt of a streaming call; its outcome is recorded when it ends."""
        sync = self._ch._sync
        call = self._stream_call
        assert call is not None
        try:
            attempt = self._attempt(call)
        except BaseException:
            call.end()
            raise
        pooled = attempt.conn
        try:
            inner = self._inv.start(pooled, attempt.timeout)
        except BaseException:
            sync._pool.call_ended(pooled)
            attempt.endpoint.active_requests -= 1
            call.end()
            raise

        async def finish(c: Any) -> None:
            outcome: Outcome = RESET
            try:
                if not c.cancelled():
                    code = await c.code()
                    details = await c.details() or ""
                    trailing = await c.trailing_metadata() or ()
                    outcome = classify_status(code, details, trailing, attempt, call)
            except Exception:
                outcome = RESET
            if (
                self._server_stream
                and outcome.kind != "success"
                and not self._received
                and not c.cancelled()
                and call.retry_policy.enabled
            ):
                # Not committed yet: the reader decides about a retry.
                self._failed = (attempt, outcome)
            else:
                call.attempt_done(attempt, outcome, may_retry=False)
                call.end()
            if self._failed_event is not None:
                self._failed_event.set()

        def done(c: Any) -> None:
            sync._pool.call_ended(pooled)
            task = asyncio.ensure_future(finish(c))
            _PENDING.add(task)
            task.add_done_callback(_PENDING.discard)

        inner.add_done_callback(done)
        self._inner = inner
        return inner

    async def _next_attempt(self, err: BaseException) -> Any:
        """After a server stream failed before its first message: the next
        attempt's call, or raise the final error (gRFC A6 commit rule)."""
        event = self._failed_event
        assert event is not None
        await event.wait()
        event.clear()
        failed, self._failed = self._failed, None
        call = self._stream_call
        if failed is None or call is None:
            raise err
        attempt, outcome = failed
        delay = call.attempt_done(attempt, outcome)
        if delay is None:
            final = end_error(call, err) if isinstance(err, grpc.RpcError) else err
            call.end()
            raise _as_aio(final) if isinstance(final, grpc.RpcError) else final
        if delay > 0:
            await asyncio.sleep(delay)
        return self._launch_stream()

    # -- awaiting and iterating ---------------------------------------------------------
    def __await__(self) -> Generator[Any, None, Any]:
        fast = self._fast
        if fast is not None and self._task_obj is None and not self._inline:
            # The fast path, driven right here: no task, no extra loop turns.
            self._inline = True
            try:
                result = yield from self._run_fast(*fast, self._inv).__await__()
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
                inner = await self._next_attempt(err)

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


class _AsyncReplay(grpc_channel._Replay):
    """:class:`~proxyless.interceptors.grpc_channel._Replay` for ``grpc.aio``:
    the request stream may be an iterator or an async iterator."""

    __slots__ = ("_async",)

    def __init__(self, source: Any, ser: Callable[[Any], bytes] | None) -> None:
        self._async = hasattr(source, "__aiter__")
        super().__init__(() if self._async else source, ser)
        if self._async:
            self._source = source.__aiter__()

    async def attempt(self) -> AsyncIterator[Any]:  # type: ignore[override]
        for message in list(self.buffer):
            yield message
        if self._async:
            async for message in self._source:
                self.keep(message)
                yield message
        else:
            for message in self._source:
                self.keep(message)
                yield message


async def _awaited(inner: Any) -> Any:
    return await inner


def _as_aio(err: grpc.RpcError) -> grpc.RpcError:
    """``err`` as grpc.aio code expects it: our own errors become AioRpcError."""
    if isinstance(err, XdsRpcError):
        return _status_error(err.code(), err.details())
    return err


def _status_error(code: grpc.StatusCode, details: str | None) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


class _AioMultiCallable:
    __slots__ = ("_ch", "_deser", "_kind", "_method", "_ser")

    def __init__(
        self,
        ch: AioXdsChannel,
        kind: str,
        method: str,
        ser: Callable[[Any], bytes] | None,
        deser: Callable[[bytes], Any] | None,
    ) -> None:
        self._ch = ch
        self._kind = kind
        self._method = method
        self._ser = ser
        self._deser = deser

    def __call__(
        self,
        request: Any = NO_REQUEST,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> _AioCall:
        inv = Invocation(
            self._kind,
            self._method,
            self._ser,
            self._deser,
            request,
            metadata,
            credentials,
            wait_for_ready,
            compression,
        )
        return _AioCall(self._ch, inv, timeout)


class AioXdsChannel:
    """A ``grpc.aio.Channel``-compatible channel to ``xds:///name``."""

    def __init__(
        self,
        target: str,
        *,
        mesh: Mesh | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._sync = _LoopBoundChannel(target, mesh=mesh, options=options, credentials=credentials)
        self.target = target

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _AioMultiCallable:
        return _AioMultiCallable(
            self, "unary_unary", method, request_serializer, response_deserializer
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _AioMultiCallable:
        return _AioMultiCallable(
            self, "unary_stream", method, request_serializer, response_deserializer
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _AioMultiCallable:
        return _AioMultiCallable(
            self, "stream_unary", method, request_serializer, response_deserializer
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _AioMultiCallable:
        return _AioMultiCallable(
            self, "stream_stream", method, request_serializer, response_deserializer
        )

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        if self._sync._runtime._state is not None:
            return grpc.ChannelConnectivity.READY
        return grpc.ChannelConnectivity.CONNECTING

    async def channel_ready(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._sync._runtime.state, None, True)

    async def close(self, grace: float | None = None) -> None:
        self._sync.close()

    async def __aenter__(self) -> AioXdsChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<proxyless AioXdsChannel {self.target!r}>"


class _LoopBoundChannel(XdsChannel):
    """The sync channel's request path with ``grpc.aio`` endpoint channels of
    the running loop."""

    def __init__(self, target: str, **kw: Any) -> None:
        super().__init__(target, pool=AIO_POOL, **kw)
        self._loop: asyncio.AbstractEventLoop | None = None

    def _acquire(self, endpoint: EndpointState) -> PooledChannel:
        # Connections belong to the running loop: look them up every time.
        pooled: PooledChannel = self._get_pooled(endpoint.address, self._runtime.authority)
        pooled.in_flight += 1
        return pooled

    def _get_pooled(self, address: str, authority: str) -> Any:
        return self._pool.get(
            address, self._credentials, self._security_key, loop=self._loop, authority=authority
        )


def channel(
    target: str,
    *,
    options: Sequence[tuple[str, Any]] | None = None,
    mesh: Mesh | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> AioXdsChannel:
    """A ``grpc.aio`` channel to ``xds:///name``; see :func:`proxyless.grpc.channel`."""
    return AioXdsChannel(target, mesh=mesh, options=options, credentials=credentials)
