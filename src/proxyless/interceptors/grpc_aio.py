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
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any

import grpc
import grpc.aio

from proxyless.errors import ProxylessError
from proxyless.interceptors.grpc_channel import XdsChannel, _Plan
from proxyless.interceptors.grpc_pool import ChannelPool
from proxyless.mesh import Mesh

__all__ = ["AioXdsChannel", "channel"]

#: The process-wide per-endpoint channel pool for grpc.aio (keyed by loop too).
AIO_POOL = ChannelPool()


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
    """A call of any shape whose endpoint call starts once it is routed."""

    def __init__(
        self,
        ch: AioXdsChannel,
        kind: str,
        method: str,
        ser: Callable[[Any], bytes] | None,
        deser: Callable[[bytes], Any] | None,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> None:
        self._ch = ch
        self._inner: Any = None
        self._started: asyncio.Future[Any] = asyncio.ensure_future(
            self._start(
                kind,
                method,
                ser,
                deser,
                request,
                timeout,
                metadata,
                credentials,
                wait_for_ready,
                compression,
            )
        )

    async def _start(
        self,
        kind: str,
        method: str,
        ser: Callable[[Any], bytes] | None,
        deser: Callable[[bytes], Any] | None,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> Any:
        ch = self._ch
        sync = ch._sync
        rt = sync._runtime
        if rt._state is None:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, rt.state, timeout, bool(wait_for_ready))
            except ProxylessError as exc:
                raise _aio_error(exc, sync.target) from None
        try:
            plan: _Plan = sync._plan(method, metadata, timeout, wait_for_ready)
        except ProxylessError as exc:
            raise _aio_error(exc, sync.target) from None
        try:
            mc = plan.pooled.callable(kind, method, ser, deser)
            kwargs: dict[str, Any] = {
                "timeout": plan.timeout,
                "metadata": metadata,
                "credentials": credentials,
                "wait_for_ready": wait_for_ready,
                "compression": compression,
            }
            inner = mc(request, **kwargs) if request is not _NO_REQUEST else mc(**kwargs)
        except BaseException:
            sync._finish(plan)
            raise
        inner.add_done_callback(lambda _c: sync._finish(plan))
        self._inner = inner
        return inner

    # -- awaiting and iterating ---------------------------------------------------------
    def __await__(self) -> Generator[Any, None, Any]:
        inner = yield from self._started.__await__()
        return (yield from inner.__await__())

    async def _aiter(self) -> AsyncIterator[Any]:
        inner = await self._started
        async for item in inner:
            yield item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._aiter()

    async def read(self) -> Any:
        return await (await self._started).read()

    async def write(self, request: Any) -> None:
        await (await self._started).write(request)

    async def done_writing(self) -> None:
        await (await self._started).done_writing()

    async def wait_for_connection(self) -> None:
        await (await self._started).wait_for_connection()

    async def initial_metadata(self) -> Any:
        return await (await self._started).initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await (await self._started).trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        try:
            inner = await self._started
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        code: grpc.StatusCode = await inner.code()
        return code

    async def details(self) -> str:
        try:
            inner = await self._started
        except grpc.aio.AioRpcError as exc:
            return exc.details() or ""
        details: str = await inner.details()
        return details

    def cancel(self) -> bool:
        if self._inner is not None:
            return bool(self._inner.cancel())
        return self._started.cancel()

    def cancelled(self) -> bool:
        if self._inner is not None:
            return bool(self._inner.cancelled())
        return self._started.cancelled()

    def done(self) -> bool:
        if self._inner is not None:
            return bool(self._inner.done())
        return self._started.done()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        def chain(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                callback(self)
            else:
                fut.result().add_done_callback(lambda _c: callback(self))

        self._started.add_done_callback(chain)

    def time_remaining(self) -> float | None:
        return None if self._inner is None else self._inner.time_remaining()


_NO_REQUEST = object()


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
        request: Any = _NO_REQUEST,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> _AioCall:
        return _AioCall(
            self._ch,
            self._kind,
            self._method,
            self._ser,
            self._deser,
            request,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
        )


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

    def _plan(
        self,
        method: str,
        metadata: Any,
        timeout: float | None,
        wait_for_ready: bool | None,
        exclude: Any = frozenset(),
    ) -> _Plan:
        self._loop = asyncio.get_running_loop()
        return super()._plan(method, metadata, timeout, wait_for_ready, exclude)

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
