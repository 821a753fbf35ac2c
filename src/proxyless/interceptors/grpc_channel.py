"""``proxyless.grpc.channel``: a ``grpc.Channel`` that routes by xDS.

Each call goes through the transport-agnostic request path (DESIGN.md):
the target's current snapshot, virtual host and route (gRFC A28), cluster
choice (weighted, header), the cluster's circuit breaker (gRFC A32), EDS
drops, and the endpoint picker (:mod:`proxyless.lb`); then it runs on the
process-wide grpcio channel of the chosen endpoint
(:mod:`proxyless.interceptors.grpc_pool`). The effective deadline is the
smaller of the caller's and the route's cap (gRFC A31). When the call cannot
be routed it fails with UNAVAILABLE and details naming the target, route and
cluster (:mod:`proxyless.interceptors.grpc_errors`).

Calls carry ``:authority`` = the target's name (e.g.
``reviews.default.svc.cluster.local:9080``), as gRPC's own xDS channels do.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from proxyless.errors import (
    DroppedByOverload,
    NonForwardingRoute,
    ProxylessError,
)
from proxyless.interceptors.grpc_errors import rpc_error
from proxyless.interceptors.grpc_pool import ChannelPool, PooledChannel
from proxyless.lb.state import EndpointState
from proxyless.mesh import Mesh
from proxyless.routing import RequestInfo, RouteResult, action_kind, grpc_deadline, request_hash
from proxyless.runtime.cluster import ClusterRuntime
from proxyless.runtime.target import TargetRuntime

__all__ = ["XdsChannel", "channel", "metadata_headers"]

log = logging.getLogger("proxyless.grpc")

_EMPTY: dict[str, str] = {}
_channel_ids = itertools.count(1)

#: The process-wide per-endpoint channel pool for sync gRPC.
POOL = ChannelPool()
_pool_meshes: set[int] = set()
_pool_lock = threading.Lock()


def attach_pool(mesh: Mesh, pool: ChannelPool) -> None:
    """Let ``mesh``'s cluster registry drain ``pool``'s connections."""
    key = id(mesh) ^ id(pool)
    with _pool_lock:
        if key not in _pool_meshes:
            _pool_meshes.add(key)
            mesh.clusters.add_pool(pool)


def metadata_headers(metadata: Sequence[tuple[str, Any]] | None) -> dict[str, str]:
    """Call metadata as routing headers: lower-case names, repeated values
    joined with ",", binary (``-bin``) entries left out (gRFC A28)."""
    if not metadata:
        return _EMPTY
    out: dict[str, str] = {}
    for key, value in metadata:
        if key.endswith("-bin") or not isinstance(value, str):
            continue
        k = key.lower()
        prev = out.get(k)
        out[k] = value if prev is None else f"{prev},{value}"
    return out


class _Plan:
    """One routed attempt: where it goes and what it holds."""

    __slots__ = ("breaker", "cluster", "endpoint", "pooled", "route", "timeout")

    def __init__(
        self,
        route: RouteResult,
        cluster: ClusterRuntime,
        endpoint: EndpointState,
        pooled: PooledChannel,
        timeout: float | None,
        breaker: Any,
    ) -> None:
        self.route = route
        self.cluster = cluster
        self.endpoint = endpoint
        self.pooled = pooled
        self.timeout = timeout
        self.breaker = breaker


class XdsChannel(grpc.Channel):
    """A channel to ``xds:///name`` (see the module docstring)."""

    def __init__(
        self,
        target: str,
        *,
        mesh: Mesh | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        pool: ChannelPool | None = None,
    ) -> None:
        self._mesh = mesh or Mesh.default()
        self._runtime: TargetRuntime = self._mesh.target(target)
        self.target = target
        self._pool = pool or POOL
        attach_pool(self._mesh, self._pool)
        self._options = tuple(options or ())
        self._credentials = credentials
        self._security_key = (id(credentials) if credentials else None, self._options)
        self._channel_id = next(_channel_ids)
        self._closed = False
        self._rng = self._mesh.rng

    # -- the request path -----------------------------------------------------------
    def _plan(
        self,
        method: str,
        metadata: Sequence[tuple[str, Any]] | None,
        timeout: float | None,
        wait_for_ready: bool | None,
        exclude: frozenset[tuple[str, int]] | set[tuple[str, int]] = frozenset(),
    ) -> _Plan:
        """Route one attempt; raises ProxylessError (not yet converted)."""
        if self._closed:
            raise ValueError("Cannot invoke RPC on closed channel!")
        rt = self._runtime
        state = rt._state or rt.state(timeout, bool(wait_for_ready))
        snap = state[0]
        request = RequestInfo(rt.authority, method, headers=metadata_headers(metadata))
        route = rt.route(request, state)
        if route.cluster is None:
            raise NonForwardingRoute(
                f"{route.describe()}: a {action_kind(route.action)} route cannot serve a gRPC call"
            )
        cluster = rt.cluster(snap, route.cluster)
        action = route.route_action
        assert action is not None
        listener = snap.listener
        eff, _ = grpc_deadline(action, listener.max_stream_duration if listener else None, timeout)
        lb = cluster.lb
        if lb.drop_overloads:
            drop = lb.check_drop(self._rng)
            if drop is not None:
                raise DroppedByOverload(
                    f"cluster {cluster.name!r} dropped the call (drop_overloads category "
                    f"{drop.category!r}, {drop.per_million / 10_000:g}%)"
                )
        breaker = cluster.breakers.default
        if not breaker.try_acquire_request():
            raise breaker.open_error()
        try:
            h = (
                request_hash(
                    route.hash_policies, request, channel_id=self._channel_id, rng=self._rng
                )
                if route.hash_policies
                else None
            )
            endpoint = lb.pick(h, self._rng, exclude)
            pooled = self._get_pooled(endpoint.address, rt.authority)
        except BaseException:
            breaker.release_request()
            raise
        endpoint.active_requests += 1
        endpoint.total_requests += 1
        pooled.in_flight += 1
        return _Plan(route, cluster, endpoint, pooled, eff, breaker)

    def _get_pooled(self, address: str, authority: str) -> PooledChannel:
        return self._pool.get(address, self._credentials, self._security_key, authority=authority)

    def _finish(self, plan: _Plan) -> None:
        plan.endpoint.active_requests -= 1
        self._pool.call_ended(plan.pooled)
        plan.breaker.release_request()

    def _fail(self, error: ProxylessError) -> grpc.RpcError:
        return rpc_error(error, self.target)

    # -- grpc.Channel -------------------------------------------------------------------
    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.UnaryUnaryMultiCallable[Any, Any]:
        return _UnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.UnaryStreamMultiCallable[Any, Any]:
        return _Streaming(self, "unary_stream", method, request_serializer, response_deserializer)  # type: ignore[return-value]

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.StreamUnaryMultiCallable[Any, Any]:
        return _StreamUnary(self, method, request_serializer, response_deserializer)

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.StreamStreamMultiCallable[Any, Any]:
        return _Streaming(self, "stream_stream", method, request_serializer, response_deserializer)  # type: ignore[return-value]

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        state = (
            grpc.ChannelConnectivity.READY
            if self._runtime._state is not None
            else grpc.ChannelConnectivity.CONNECTING
        )
        callback(state)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        return None

    def close(self) -> None:
        """Close this channel. Endpoint connections are shared and stay open
        while other channels use them."""
        self._closed = True

    def __enter__(self) -> XdsChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<proxyless XdsChannel {self.target!r}>"


class _UnaryUnary(grpc.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    __slots__ = ("_ch", "_deser", "_method", "_ser")

    def __init__(
        self,
        ch: XdsChannel,
        method: str,
        ser: Callable[[Any], bytes] | None,
        deser: Callable[[bytes], Any] | None,
    ) -> None:
        self._ch = ch
        self._method = method
        self._ser = ser
        self._deser = deser

    def _invoke(
        self,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
        kind: str,
    ) -> Any:
        ch = self._ch
        try:
            plan = ch._plan(self._method, metadata, timeout, wait_for_ready)
        except ProxylessError as exc:
            raise ch._fail(exc) from None
        try:
            mc = plan.pooled.callable("unary_unary", self._method, self._ser, self._deser)
            target = mc if kind == "call" else getattr(mc, kind)
            return target(
                request,
                timeout=plan.timeout,
                metadata=metadata,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
        finally:
            ch._finish(plan)

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._invoke(
            request, timeout, metadata, credentials, wait_for_ready, compression, "call"
        )

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._invoke(
            request, timeout, metadata, credentials, wait_for_ready, compression, "with_call"
        )

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        ch = self._ch
        try:
            plan = ch._plan(self._method, metadata, timeout, wait_for_ready)
        except ProxylessError as exc:
            raise ch._fail(exc) from None
        try:
            mc = plan.pooled.callable("unary_unary", self._method, self._ser, self._deser)
            fut = mc.future(
                request,
                timeout=plan.timeout,
                metadata=metadata,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
        except BaseException:
            ch._finish(plan)
            raise
        fut.add_done_callback(lambda _f: ch._finish(plan))
        return fut


class _StreamUnary(grpc.StreamUnaryMultiCallable):  # type: ignore[type-arg]
    __slots__ = ("_ch", "_deser", "_method", "_ser")

    def __init__(
        self,
        ch: XdsChannel,
        method: str,
        ser: Callable[[Any], bytes] | None,
        deser: Callable[[bytes], Any] | None,
    ) -> None:
        self._ch = ch
        self._method = method
        self._ser = ser
        self._deser = deser

    def _invoke(
        self,
        request_iterator: Iterator[Any],
        kind: str,
        timeout: float | None,
        metadata: Any,
        wait_for_ready: bool | None,
        **kw: Any,
    ) -> Any:
        ch = self._ch
        try:
            plan = ch._plan(self._method, metadata, timeout, wait_for_ready)
        except ProxylessError as exc:
            raise ch._fail(exc) from None
        mc = plan.pooled.callable("stream_unary", self._method, self._ser, self._deser)
        if kind == "future":
            try:
                fut = mc.future(
                    request_iterator,
                    timeout=plan.timeout,
                    metadata=metadata,
                    wait_for_ready=wait_for_ready,
                    **kw,
                )
            except BaseException:
                ch._finish(plan)
                raise
            fut.add_done_callback(lambda _f: ch._finish(plan))
            return fut
        try:
            target = mc if kind == "call" else mc.with_call
            return target(
                request_iterator,
                timeout=plan.timeout,
                metadata=metadata,
                wait_for_ready=wait_for_ready,
                **kw,
            )
        finally:
            ch._finish(plan)

    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._invoke(
            request_iterator,
            "call",
            timeout,
            metadata,
            wait_for_ready,
            credentials=credentials,
            compression=compression,
        )

    def with_call(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._invoke(
            request_iterator,
            "with_call",
            timeout,
            metadata,
            wait_for_ready,
            credentials=credentials,
            compression=compression,
        )

    def future(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._invoke(
            request_iterator,
            "future",
            timeout,
            metadata,
            wait_for_ready,
            credentials=credentials,
            compression=compression,
        )


class _Streaming:
    """unary-stream and stream-stream: the endpoint's call object, released when done."""

    __slots__ = ("_ch", "_deser", "_kind", "_method", "_ser")

    def __init__(
        self,
        ch: XdsChannel,
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
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        ch = self._ch
        try:
            plan = ch._plan(self._method, metadata, timeout, wait_for_ready)
        except ProxylessError as exc:
            raise ch._fail(exc) from None
        try:
            mc = plan.pooled.callable(self._kind, self._method, self._ser, self._deser)
            call = mc(
                request,
                timeout=plan.timeout,
                metadata=metadata,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
        except BaseException:
            ch._finish(plan)
            raise
        call.add_done_callback(lambda _c: ch._finish(plan))
        return call


def channel(
    target: str,
    *,
    options: Sequence[tuple[str, Any]] | None = None,
    mesh: Mesh | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> XdsChannel:
    """A channel to ``xds:///name`` (or ``xds://authority/name``) usable
    wherever a ``grpc.Channel`` is: generated stubs, ``grpc.intercept_channel``,
    ``with`` blocks. ``options`` apply to every endpoint connection;
    ``credentials`` (default: plaintext) secure them. ``mesh`` defaults to the
    process-wide Mesh built from ``GRPC_XDS_BOOTSTRAP``."""
    return XdsChannel(target, mesh=mesh, options=options, credentials=credentials)
