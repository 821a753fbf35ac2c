"""``proxyless.grpc.server``: an xDS-enabled gRPC server (gRFC A36) with RBAC (A41).

:class:`XdsServer` works like the object ``grpc.server(...)`` returns
(generic and registered handlers, generated ``add_*Servicer_to_server``,
``start``, ``stop``, ``wait_for_termination``); ``add_port("host:port")``
binds the public port and returns it, and the inbound Listener named by the
bootstrap's ``server_listener_resource_name_template`` decides security per
connection (``_relay``, ``_serving``). The first interceptor of every call
is the server's own :class:`_Guard`: it ends calls the Listener does not
allow (UNAVAILABLE when the port is not serving or no route applies,
PERMISSION_DENIED naming the RBAC policy) before user interceptors and
handlers run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc

from proxyless.grpc._server_core import ServerCore, ServerSurface, rewrap
from proxyless.grpc._serving import ServingStatusCallback
from proxyless.mesh import Mesh
from proxyless.observability.server import ServerCall, status_of

__all__ = ["XdsServer", "server"]

log = logging.getLogger("proxyless.server")

Check = Callable[[Any, str, Any], "tuple[grpc.StatusCode, str] | None"]


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], method: str, metadata: Any, check: Check
) -> Any:
    """``handler`` with ``check`` run first in each of its behaviours."""

    def guard(behavior: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            verdict = check(context, method, metadata)
            if verdict is not None:
                context.abort(*verdict)
            sc = ServerCall(method, metadata)
            try:
                result = behavior(request, context)
            except BaseException as exc:
                sc.close(status_of(context, exc), exc)
                raise
            sc.close(status_of(context, None))
            return result

        return guarded

    def guard_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            verdict = check(context, method, metadata)
            if verdict is not None:
                context.abort(*verdict)
            sc = ServerCall(method, metadata)
            try:
                yield from behavior(request, context)
            except BaseException as exc:
                sc.close(status_of(context, exc), exc)
                raise
            sc.close(status_of(context, None))

        return guarded

    return rewrap(handler, guard, guard_stream)


class _Guard(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, core: ServerCore) -> None:
        self._check = core.check

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        details: Any = handler_call_details
        wrapped: grpc.RpcMethodHandler[Any, Any] = wrap_handler(
            handler, details.method, details.invocation_metadata, self._check
        )
        return wrapped


class XdsServer(ServerSurface):
    """A ``grpc.Server`` whose ports are governed by xDS (module docstring)."""

    def __init__(
        self,
        thread_pool: futures.ThreadPoolExecutor,
        *,
        mesh: Mesh | None = None,
        handlers: Sequence[grpc.GenericRpcHandler[Any, Any]] | None = None,
        interceptors: Sequence[grpc.ServerInterceptor[Any, Any]] | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        maximum_concurrent_rpcs: int | None = None,
        compression: grpc.Compression | None = None,
        serving_status_callback: ServingStatusCallback | None = None,
    ) -> None:
        self._core = ServerCore(mesh, serving_status_callback)
        self._server = grpc.server(
            thread_pool,
            handlers=list(handlers) if handlers is not None else None,
            interceptors=[_Guard(self._core), *(interceptors or ())],
            options=options,
            maximum_concurrent_rpcs=maximum_concurrent_rpcs,
            compression=compression,
        )
        self._stopped = threading.Event()

    def start(self) -> None:
        self._server.start()
        self._core.start()

    def stop(self, grace: float | None) -> threading.Event:
        """Stop accepting, let calls finish for ``grace`` seconds, then close."""
        self._core.stop_accepting()
        event = self._server.stop(grace)

        def finish() -> None:
            event.wait()
            self._core.stop()
            self._core.cleanup()
            self._stopped.set()

        threading.Thread(target=finish, name="proxyless-server-stop", daemon=True).start()
        return self._stopped

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(self._server.wait_for_termination(timeout))


#: ``proxyless.grpc.server(thread_pool, *, mesh=None, handlers=None,
#: interceptors=None, options=None, maximum_concurrent_rpcs=None,
#: compression=None, serving_status_callback=None)``: an xDS-enabled
#: ``grpc.server`` (gRFC A36), like ``grpc.server(...)``, with ports bound by
#: :meth:`XdsServer.add_port` and governed by the inbound Listener of each
#: (mTLS, plaintext or both, RBAC).
server = XdsServer
