"""``proxyless.grpc.aio.server``: the xDS-enabled server for ``grpc.aio`` (gRFC A36, A41).

The same public ports, Listener watches and per-call checks as the sync
server (:mod:`._server_core`), in front of a ``grpc.aio.server``. The
server's own interceptor runs first and ends calls the Listener does not
allow before user interceptors and handlers run.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
import grpc.aio

from proxyless.grpc._server_core import ServerCore, ServerSurface, rewrap
from proxyless.grpc._serving import ServingStatusCallback
from proxyless.mesh import Mesh
from proxyless.observability.server import ServerCall, status_of

__all__ = ["AioXdsServer", "server"]


def _wrap(handler: Any, method: str, metadata: Any, core: ServerCore) -> Any:
    async def deny(context: grpc.aio.ServicerContext[Any, Any]) -> None:
        verdict = core.check(context, method, metadata)
        if verdict is not None:
            await context.abort(*verdict)

    def unary_result(behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await deny(context)
            sc = ServerCall(method, metadata)
            try:
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
            except BaseException as exc:
                sc.close(status_of(context, exc), exc)
                raise
            sc.close(status_of(context, None))
            return result

        return guarded

    def stream_result(behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        async def guarded(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            await deny(context)
            sc = ServerCall(method, metadata)
            try:
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                elif inspect.isawaitable(result):
                    await result  # writes with context.write()
                else:
                    for item in result:
                        yield item
            except BaseException as exc:
                sc.close(status_of(context, exc), exc)
                raise
            sc.close(status_of(context, None))

        return guarded

    return rewrap(handler, unary_result, stream_result)


class _Guard(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, core: ServerCore) -> None:
        self._core = core

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        details: Any = handler_call_details
        return _wrap(handler, details.method, details.invocation_metadata, self._core)


class AioXdsServer(ServerSurface):
    """A ``grpc.aio.Server`` whose ports are governed by xDS (see ``_server``)."""

    def __init__(
        self,
        migration_thread_pool: futures.Executor | None = None,
        *,
        mesh: Mesh | None = None,
        handlers: Sequence[grpc.GenericRpcHandler[Any, Any]] | None = None,
        interceptors: Sequence[Any] | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        maximum_concurrent_rpcs: int | None = None,
        compression: grpc.Compression | None = None,
        serving_status_callback: ServingStatusCallback | None = None,
    ) -> None:
        self._core = ServerCore(mesh, serving_status_callback)
        self._server = grpc.aio.server(
            migration_thread_pool,
            handlers=handlers,
            interceptors=[_Guard(self._core), *(interceptors or ())],
            options=options,
            maximum_concurrent_rpcs=maximum_concurrent_rpcs,
            compression=compression,
        )

    async def start(self) -> None:
        await self._server.start()
        self._core.start()

    async def stop(self, grace: float | None) -> None:
        """Stop accepting, let calls finish for ``grace`` seconds, then close."""
        self._core.stop_accepting()
        await self._server.stop(grace)
        self._core.stop()
        self._core.cleanup()

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(await self._server.wait_for_termination(timeout))


#: ``proxyless.grpc.aio.server(migration_thread_pool=None, *, ...)``: an
#: xDS-enabled ``grpc.aio.server`` (gRFC A36); see ``proxyless.grpc.server``.
server = AioXdsServer
