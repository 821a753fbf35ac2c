"""``proxyless.grpc.channel``: a ``grpc.Channel`` that routes by xDS.

Each call goes through the transport-agnostic request path
(docs/architecture.md): the target's current snapshot, virtual host and
route (gRFC A28), cluster choice (weighted, header), the cluster's circuit
breaker (gRFC A32), EDS drops, and the endpoint picker (:mod:`proxyless.lb`);
then it runs on the process-wide grpcio channel of the chosen endpoint
(:mod:`._pool`). The effective deadline is the smaller of the caller's and
the route's cap (gRFC A31). Retries, hedging and per-try timeouts are the
attempt driver's (:mod:`._driver`), carried out here by the blocking
executor (:mod:`._sync`). When a call cannot be routed it fails with
UNAVAILABLE and details naming the target, route and cluster
(:mod:`._errors`).

Call shapes:

- unary calls (``__call__``, ``with_call``) and blocking client-streaming
  calls run the retry loop; client streams are buffered for replay up to
  16 MiB (gRFC A6), past which the call is committed to its attempt; a
  unary call without metadata on a :class:`~proxyless.runtime.call.Lane`
  takes the fast path (no routing, no :class:`~proxyless.runtime.call.Call`
  unless its first attempt fails);
- unary ``future()`` and server-streaming calls return a
  :class:`~proxyless.grpc._retrying.RetryingCall`;
- bidirectional streams and client-stream ``future()`` make one attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, overload

import grpc

from proxyless.errors import ProxylessError
from proxyless.grpc._core import ChannelCore
from proxyless.grpc._driver import fault_steps, hedge_steps, retry_steps, stream_steps
from proxyless.grpc._errors import FailedCall, XdsRpcError, rpc_error
from proxyless.grpc._invocation import Invocation, Replay
from proxyless.grpc._multicallables import StreamStream, StreamUnary, UnaryStream, UnaryUnary
from proxyless.grpc._pool import POOL, ChannelPool
from proxyless.grpc._retrying import RetryingCall, start_single
from proxyless.grpc._sync import attempt_once, run
from proxyless.grpc._telemetry import begin, bind, ended
from proxyless.grpc._tls import pending
from proxyless.mesh import Mesh
from proxyless.resilience.fault import NO_FAULT
from proxyless.resilience.outcome import SUCCESS
from proxyless.runtime.call import Call, FirstAttempt, Lane

__all__ = ["XdsChannel", "channel"]


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
        self._core = ChannelCore(target, mesh, options, credentials, pool or POOL)
        self.target = target

    # -- the request path -------------------------------------------------------------
    def _route(self, inv: Invocation, timeout: float | None) -> Call:
        try:
            call = self._core.route(inv.method, inv.metadata, timeout, inv.wait_for_ready)
        except ProxylessError as exc:
            raise rpc_error(exc, self.target) from None
        creds = pending(call)
        if creds is not None:
            # A TLS cluster without credentials yet: wait within the deadline.
            try:
                creds.wait(call.remaining())
            except ProxylessError as exc:
                call.end()
                raise rpc_error(exc, self.target) from None
        return call

    def _apply_fault(self, call: Call) -> None:
        """Injected delay, then abort (gRFC A33)."""
        pause, err = fault_steps(call, self.target)
        if pause:
            time.sleep(pause)
        if err is not None:
            raise err

    def run_unary(self, inv: Invocation, timeout: float | None, streaming_request: bool) -> Any:
        """A blocking unary-response call (see the module docstring)."""
        tel = begin(inv, self.target, self._core.runtime.authority)
        if tel is None:
            return self._run_unary(inv, timeout, streaming_request)
        try:
            result = self._run_unary(inv, timeout, streaming_request)
        except BaseException as exc:
            ended(tel, exc)
            raise
        ended(tel, None)
        return result

    def _run_unary(self, inv: Invocation, timeout: float | None, streaming_request: bool) -> Any:
        core = self._core
        plain = not inv.metadata and not streaming_request
        if plain:
            lane = core.lane(inv.method)
            if lane is not None:
                try:
                    first = lane.begin(core.rng, timeout)
                except ProxylessError as exc:
                    raise rpc_error(exc, self.target) from None
                if first is not None:
                    return self._run_fast(lane, first, inv)
        state = core.runtime._state
        call = self._route(inv, timeout)
        bind(inv.tel, call)
        if plain:
            core.learn(inv.method, state, call)
        try:
            if call.fault is not NO_FAULT:
                self._apply_fault(call)
            if streaming_request:
                replay = Replay(inv.request, inv.ser)
                steps = retry_steps(call, self.target, committed=lambda: replay.committed)
                return run(steps, inv, core.pool, replay)
            if call.hedge.enabled:
                return run(hedge_steps(call, call.hedge, core.rng, self.target), inv, core.pool)
            return run(retry_steps(call, self.target), inv, core.pool)
        finally:
            call.end()

    def _run_fast(self, lane: Lane, first: FirstAttempt, inv: Invocation) -> Any:
        """The first attempt of a call on ``lane``; a :class:`Call` is made
        only when it fails, to carry on as :meth:`run_unary` would."""
        core = self._core
        tel = inv.tel
        if tel is not None:
            tel.routed(lane.plan.route.route.name or "", lane.cluster.name)
        try:
            first.conn = core.acquire(first.endpoint, lane.cluster)
        except ProxylessError as exc:
            lane.abandon(first)
            raise rpc_error(exc, self.target) from None
        except BaseException:
            lane.abandon(first)
            raise
        if tel is not None:
            tel.attempt_started(first)
        try:
            result, err = attempt_once(first, inv, core.pool)
        except BaseException:
            lane.breaker.release_request()
            raise
        if err is None:
            lane.succeeded(first.endpoint, first)
            lane.breaker.release_request()
            if tel is not None:
                tel.attempt_ended(first, SUCCESS)
            return result
        call = lane.resume(core.runtime, core.bare_request(inv.method), first, core.acquire)
        call.obs = tel
        try:
            return run(retry_steps(call, self.target, first=(first, err)), inv, core.pool)
        finally:
            call.end()

    def start_retrying(self, inv: Invocation, timeout: float | None, *, streaming: bool) -> Any:
        """A unary ``future()`` or server-streaming call (:class:`RetryingCall`)."""
        tel = begin(inv, self.target, self._core.runtime.authority)
        try:
            call = self._route(inv, timeout)
        except XdsRpcError as err:
            ended(tel, err)
            return FailedCall.of(err)
        bind(tel, call)
        try:
            if call.fault is not NO_FAULT:
                self._apply_fault(call)
        except XdsRpcError as err:
            call.end()
            ended(tel, err)
            return FailedCall.of(err)
        return RetryingCall(
            stream_steps(call, self.target), call, inv, self._core.pool, streaming=streaming
        )

    def start_single(self, inv: Invocation, timeout: float | None, attr: str | None) -> Any:
        """A call returning the endpoint's call object: one attempt, recorded
        and released when it ends (bidi streams, client-stream ``future()``).

        When the call cannot be routed, the failure comes back the way grpc
        reports it for these shapes: a call object that is already done, whose
        ``result()``/iteration raises and whose ``exception()`` returns it.
        """
        tel = begin(inv, self.target, self._core.runtime.authority)
        try:
            call = self._route(inv, timeout)
        except XdsRpcError as err:
            ended(tel, err)
            return FailedCall.of(err)
        bind(tel, call)
        try:
            if call.fault is not NO_FAULT:
                self._apply_fault(call)
            return start_single(stream_steps(call, self.target), call, inv, self._core.pool, attr)
        except XdsRpcError as err:
            call.end()
            ended(tel, err)
            return FailedCall.of(err)
        except BaseException as exc:
            call.end()
            ended(tel, exc)
            raise

    # -- grpc.Channel -------------------------------------------------------------------
    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.UnaryUnaryMultiCallable[Any, Any]:
        return UnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.UnaryStreamMultiCallable[Any, Any]:
        return UnaryStream(self, method, request_serializer, response_deserializer)  # type: ignore[return-value]

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.StreamUnaryMultiCallable[Any, Any]:
        return StreamUnary(self, method, request_serializer, response_deserializer)

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.StreamStreamMultiCallable[Any, Any]:
        return StreamStream(self, method, request_serializer, response_deserializer)  # type: ignore[return-value]

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        callback(self._core.connectivity())

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        return None

    def close(self) -> None:
        """Close this channel. Endpoint connections are shared and stay open
        while other channels use them."""
        self._core.closed = True

    def __enter__(self) -> XdsChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<proxyless XdsChannel {self.target!r}>"


@overload
def channel(
    target: str,
    *,
    options: Sequence[tuple[str, Any]] | None = None,
    mesh: Mesh | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    interceptors: None = None,
) -> XdsChannel: ...


@overload
def channel(
    target: str,
    *,
    options: Sequence[tuple[str, Any]] | None = None,
    mesh: Mesh | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    interceptors: Sequence[Any],
) -> grpc.Channel: ...


def channel(
    target: str,
    *,
    options: Sequence[tuple[str, Any]] | None = None,
    mesh: Mesh | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    interceptors: Sequence[Any] | None = None,
) -> grpc.Channel:
    """A channel to ``xds:///name`` (or ``xds://authority/name``) usable
    wherever a ``grpc.Channel`` is: generated stubs, ``grpc.intercept_channel``,
    ``with`` blocks. ``options`` apply to every endpoint connection;
    ``credentials`` (default: plaintext) secure them. ``mesh`` defaults to the
    process-wide Mesh built from ``GRPC_XDS_BOOTSTRAP``. ``interceptors``
    (grpc's ``*ClientInterceptor`` objects) wrap the channel as
    ``grpc.intercept_channel`` would: each sees a whole call, before routing,
    so metadata it adds is matched by routes."""
    ch = XdsChannel(target, mesh=mesh, options=options, credentials=credentials)
    return grpc.intercept_channel(ch, *interceptors) if interceptors else ch
