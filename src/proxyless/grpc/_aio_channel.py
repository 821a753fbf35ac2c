"""``proxyless.grpc.aio.channel``: the xDS channel for ``grpc.aio``.

The same request path as the sync channel (a
:class:`~proxyless.grpc._core.ChannelCore` of its own, with ``grpc.aio``
endpoint channels of the running loop); each call is an
:class:`~proxyless.grpc._aio_call.AioCall`, which starts at once as
``grpc.aio`` calls do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from proxyless.grpc._aio_call import AioCall
from proxyless.grpc._core import ChannelCore
from proxyless.grpc._invocation import NO_REQUEST, Invocation
from proxyless.grpc._pool import AIO_POOL
from proxyless.mesh import Mesh

__all__ = ["AioXdsChannel", "channel"]


class _AioMultiCallable:
    __slots__ = ("_core", "_deser", "_kind", "_method", "_ser")

    def __init__(
        self,
        core: ChannelCore,
        kind: str,
        method: str,
        ser: Callable[[Any], bytes] | None,
        deser: Callable[[bytes], Any] | None,
    ) -> None:
        self._core = core
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
    ) -> AioCall:
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
        return AioCall(self._core, inv, timeout)


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
        self._core = ChannelCore(target, mesh, options, credentials, AIO_POOL, True)
        self.target = target

    def _multicallable(self, kind: str, method: str, ser: Any, deser: Any) -> _AioMultiCallable:
        return _AioMultiCallable(self._core, kind, method, ser, deser)

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _AioMultiCallable:
        return self._multicallable("unary_unary", method, request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _AioMultiCallable:
        return self._multicallable(
            "unary_stream", method, request_serializer, response_deserializer
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _AioMultiCallable:
        return self._multicallable(
            "stream_unary", method, request_serializer, response_deserializer
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _AioMultiCallable:
        return self._multicallable(
            "stream_stream", method, request_serializer, response_deserializer
        )

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._core.connectivity()

    async def channel_ready(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._core.runtime.state, None, True)

    async def close(self, grace: float | None = None) -> None:
        self._core.closed = True

    async def __aenter__(self) -> AioXdsChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<proxyless AioXdsChannel {self.target!r}>"


#: ``proxyless.grpc.aio.channel(target, *, options=None, mesh=None,
#: credentials=None)``: a ``grpc.aio`` channel to ``xds:///name``; see
#: :func:`proxyless.grpc.channel`.
channel = AioXdsChannel
