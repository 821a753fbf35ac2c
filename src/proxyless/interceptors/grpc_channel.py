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
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from proxyless.errors import ProxylessError
from proxyless.interceptors.grpc_errors import FailedCall, XdsRpcError, rpc_error
from proxyless.interceptors.grpc_pool import ChannelPool, PooledChannel
from proxyless.interceptors.grpc_retrying import RetryingCall
from proxyless.lb.state import EndpointState
from proxyless.mesh import Mesh
from proxyless.resilience.fault import NO_FAULT
from proxyless.resilience.outcome import (
    CONNECT_FAILURE,
    OVERALL_TIMEOUT,
    PER_TRY_TIMEOUT,
    SUCCESS,
    Outcome,
    http_status_to_grpc,
    parse_grpc_pushback,
)
from proxyless.resilience.retry import HedgePlan
from proxyless.routing import RequestInfo
from proxyless.runtime.call import Attempt, Call, FirstAttempt, Lane
from proxyless.runtime.target import TargetRuntime, deterministic

__all__ = ["XdsChannel", "channel", "metadata_headers"]

log = logging.getLogger("proxyless.grpc")

_EMPTY: dict[str, str] = {}
#: Fast-path lanes kept per channel, at most (the table is emptied when full).
_LANE_LIMIT = 1024
_channel_ids = itertools.count(1)

#: The process-wide per-endpoint channel pool for sync gRPC.
POOL = ChannelPool()


def attach_pool(mesh: Mesh, pool: ChannelPool) -> None:
    """Let ``mesh``'s cluster registry drain ``pool``'s connections."""
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


def _status_of(err: grpc.RpcError) -> tuple[grpc.StatusCode, str, Any]:
    """Code, details and trailing metadata of a sync or aio RPC error."""
    code = getattr(err, "code", None)
    if not callable(code):
        return grpc.StatusCode.UNKNOWN, str(err), ()
    details = err.details() or ""
    trailing = err.trailing_metadata() or ()
    return code(), details, trailing


def grpc_outcome(err: grpc.RpcError, attempt: Attempt, call: Call) -> Outcome:
    """Classify a failed attempt once (gRFC A44 retry codes; outlier mapping in
    :mod:`proxyless.resilience.outlier`). Works for sync errors and
    ``grpc.aio.AioRpcError`` alike."""
    code, details, trailing = _status_of(err)
    return classify_status(code, details, trailing, attempt, call)


def classify_status(
    code: grpc.StatusCode, details: str, trailing: Any, attempt: Attempt, call: Call
) -> Outcome:
    if code is grpc.StatusCode.OK:
        return SUCCESS
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        if attempt.per_try and attempt.timed_out():
            return PER_TRY_TIMEOUT
        remaining = call.remaining()
        if remaining is not None and remaining <= 0.001:
            return OVERALL_TIMEOUT
    elif code is grpc.StatusCode.UNAVAILABLE and details.startswith("failed to connect"):
        return CONNECT_FAILURE
    pushback = None
    for key, value in trailing:
        if key == "grpc-retry-pushback-ms":
            pushback = parse_grpc_pushback(value)
    return Outcome.grpc(code.name, pushback=pushback)


def fault_steps(call: Call, target: str) -> tuple[float, XdsRpcError | None]:
    """What the fault filter does to a call (gRFC A33): seconds to wait, then
    the error to end it with, if any. A delay longer than the call's deadline
    waits out the deadline and ends the call with DEADLINE_EXCEEDED."""
    delay = call.fault.delay
    if delay is not None:
        remaining = call.remaining()
        if remaining is not None and remaining < delay:
            return max(0.0, remaining), XdsRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{target}: deadline exceeded during an injected delay of {delay:g}s",
                None,
            )
    return delay or 0.0, fault_error(call, target)


def fault_error(call: Call, target: str) -> XdsRpcError | None:
    """The error an injected abort ends the call with (gRFC A33), if any."""
    fault = call.fault
    if fault.abort_grpc is not None:
        code = _CODES.get(fault.abort_grpc, grpc.StatusCode.UNKNOWN)
    elif fault.abort_http is not None:
        code = _CODES.get(http_status_to_grpc(fault.abort_http), grpc.StatusCode.UNKNOWN)
    else:
        return None
    return XdsRpcError(
        code, f"{target}: fault injected by the HTTP fault filter ({call.route.describe()})", None
    )


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def end_error(call: Call, err: grpc.RpcError) -> grpc.RpcError:
    """What a call ends with when it stops after ``err``: the retry budget's
    refusal when that is what stopped it, else ``err`` itself."""
    return budget_error(call, err) if call.last_error is not None else err


def retry_delay(call: Call, attempt: Attempt, err: grpc.RpcError, committed: bool) -> float:
    """Record a failed attempt (``committed``: its request cannot be
    replayed); return the delay before the next attempt, or raise what the
    call ends with (:func:`end_error`)."""
    delay = call.attempt_done(attempt, grpc_outcome(err, attempt, call), may_retry=not committed)
    if delay is None:
        raise end_error(call, err) from None
    return delay


def budget_error(call: Call, err: grpc.RpcError) -> XdsRpcError:
    code, details, _ = _status_of(err)
    assert call.last_error is not None
    out = XdsRpcError(code, f"{details} ({call.last_error})", call.last_error)  # type: ignore[arg-type]
    out.__cause__ = err
    return out


_SAME = object()
#: The request of a streaming call the caller feeds with ``write()`` (aio).
NO_REQUEST = object()


class Invocation:
    """One call's arguments as the application gave them: the call shape
    (``kind``, grpc's multicallable name), method, (de)serializers, request
    and the keyword arguments passed on to every attempt. The sync and aio
    channels and :class:`~proxyless.interceptors.grpc_retrying.RetryingCall`
    hand this around instead of the nine values."""

    __slots__ = (
        "compression",
        "credentials",
        "deser",
        "kind",
        "metadata",
        "method",
        "request",
        "ser",
        "wait_for_ready",
    )

    def __init__(
        self,
        kind: str,
        method: str,
        ser: Any,
        deser: Any,
        request: Any,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> None:
        self.kind = kind
        self.method = method
        self.ser = ser
        self.deser = deser
        self.request = request
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression

    def start(
        self,
        pooled: PooledChannel,
        timeout: float | None,
        *,
        request: Any = _SAME,
        kind: str | None = None,
        attr: str | None = None,
    ) -> Any:
        """Make the call on an endpoint's channel: the multicallable for
        ``kind`` (default: the call's own), its ``attr`` (``future``,
        ``with_call``) if given, with ``request`` (default: the call's)."""
        mc = pooled.callable(kind or self.kind, self.method, self.ser, self.deser)
        fn = mc if attr is None else getattr(mc, attr)
        request = self.request if request is _SAME else request
        kwargs = {
            "timeout": timeout,
            "metadata": self.metadata,
            "credentials": self.credentials,
            "wait_for_ready": self.wait_for_ready,
            "compression": self.compression,
        }
        return fn(**kwargs) if request is NO_REQUEST else fn(request, **kwargs)


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
        self._bare: dict[str, RequestInfo] = {}
        #: per method, the lane of calls without metadata (the fast path), and
        #: the snapshot in which a method's route did not qualify for one
        self._lanes: dict[str, Lane] = {}
        self._no_lane: dict[str, object] = {}
        self._lanes_state: object = None
        #: the pooled connection of each endpoint this channel has used
        self._conns: dict[EndpointState, PooledChannel] = {}
        self._closed = False
        self._rng = self._mesh.rng

    # -- the request path -----------------------------------------------------------
    def _call(
        self,
        method: str,
        metadata: Sequence[tuple[str, Any]] | None,
        timeout: float | None,
        wait_for_ready: bool | None,
    ) -> Call:
        """Route a call; raises ProxylessError (not yet converted)."""
        if self._closed:
            raise ValueError("Cannot invoke RPC on closed channel!")
        rt = self._runtime
        shared = not metadata
        if metadata:
            request = RequestInfo(rt.authority, method, headers=metadata_headers(metadata))
        else:
            request = self._bare_request(method)
        return Call(
            rt,
            request,
            timeout=timeout,
            wait_for_ready=bool(wait_for_ready),
            channel_id=self._channel_id,
            pool_get=self._acquire,
            shared_request=shared,
        )

    def _bare_request(self, method: str) -> RequestInfo:
        """Calls without metadata share one immutable RequestInfo per method."""
        request = self._bare.get(method)
        if request is None:
            request = self._bare[method] = RequestInfo(self._runtime.authority, method)
        return request

    def _acquire(self, endpoint: EndpointState) -> PooledChannel:
        conns = self._conns
        pooled = conns.get(endpoint)
        if pooled is None or pooled.closing:
            pooled = self._get_pooled(endpoint.address, self._runtime.authority)
            if len(conns) > 4096:
                conns.clear()
            conns[endpoint] = pooled
        pooled.in_flight += 1
        return pooled

    def _get_pooled(self, address: str, authority: str) -> PooledChannel:
        return self._pool.get(address, self._credentials, self._security_key, authority=authority)

    def _fail(self, error: ProxylessError) -> grpc.RpcError:
        return rpc_error(error, self.target)

    def _apply_fault(self, call: Call) -> None:
        """Injected delay, then abort (gRFC A33)."""
        pause, err = fault_steps(call, self.target)
        if pause:
            time.sleep(pause)
        if err is not None:
            raise err

    def _run_unary(
        self, inv: Invocation, timeout: float | None, streaming_request: bool = False
    ) -> Any:
        """A unary-response call with retries (gRFC A44; Envoy retry policy)
        and, for unary requests, hedging (Envoy ``hedge_policy``).

        A client-streaming request is buffered for replay up to
        :data:`REPLAY_LIMIT` bytes; past that the call is committed to its
        attempt and not retried (gRFC A6). A unary request without metadata
        on a :class:`~proxyless.runtime.call.Lane` takes the fast path.
        """
        rt = self._runtime
        method = inv.method
        plain = not inv.metadata and not streaming_request
        if plain:
            lane = self._lanes.get(method)
            if lane is not None and lane.state is rt._state and not self._closed:
                try:
                    first = lane.begin(self._rng, timeout)
                except ProxylessError as exc:
                    raise self._fail(exc) from None
                if first is not None:
                    return self._run_fast(lane, first, inv)
        state = rt._state
        try:
            call = self._call(method, inv.metadata, timeout, inv.wait_for_ready)
        except ProxylessError as exc:
            raise self._fail(exc) from None
        if plain:
            self._learn(method, state, call)
        replay = _Replay(inv.request, inv.ser) if streaming_request else None
        try:
            if call.fault is not NO_FAULT:
                self._apply_fault(call)
            if replay is None:
                hedge = call.hedge
                if hedge.enabled:
                    return self._run_hedged(call, hedge, inv)
            return self._attempts(call, inv, replay)
        finally:
            call.end()

    def _learn(self, method: str, state: object, call: Call) -> None:
        """Remember ``call``'s route as ``method``'s lane when it qualifies:
        a call without metadata routes the same way every time, so a
        deterministic route (one cluster, no runtime fraction) is enough."""
        if self._no_lane.get(method) is state:
            return
        if self._lanes_state is not state:
            # A new snapshot: every lane is stale; drop them rather than keep
            # old snapshots alive through methods that are not called again.
            self._lanes.clear()
            self._no_lane.clear()
            self._lanes_state = state
        lane = Lane.for_call(self._runtime, state, call, is_grpc=True)
        if lane is None or not deterministic(call.route):
            if len(self._no_lane) >= _LANE_LIMIT:
                self._no_lane.clear()
            self._no_lane[method] = state
            return
        if len(self._lanes) >= _LANE_LIMIT:
            self._lanes.clear()
        self._lanes[method] = lane

    def _run_fast(self, lane: Lane, first: FirstAttempt, inv: Invocation) -> Any:
        """The first attempt of a call on ``lane``; a :class:`Call` is made
        only when it fails, to carry on as :meth:`_run_unary` would."""
        endpoint = first.endpoint
        try:
            pooled = self._acquire(endpoint)
        except BaseException:
            lane.abandon(first)
            raise
        first.conn = pooled
        try:
            result = inv.start(pooled, first.timeout)
        except grpc.RpcError as err:
            self._pool.call_ended(pooled)
            call = lane.resume(self._runtime, self._bare_request(inv.method), first, self._acquire)
            try:
                return self._attempts(call, inv, None, (first, err))
            finally:
                call.end()
        except BaseException:
            self._pool.call_ended(pooled)
            lane.abandon(first)
            raise
        self._pool.call_ended(pooled)
        lane.succeeded(endpoint)
        lane.breaker.release_request()
        return result

    def _attempts(
        self,
        call: Call,
        inv: Invocation,
        replay: _Replay | None,
        first: tuple[Attempt, grpc.RpcError] | None = None,
    ) -> Any:
        """Attempts until one succeeds or the retry policy stops; ``first`` is
        an attempt the fast path already made and its error."""
        while True:
            if first is not None:
                attempt, err = first
                first = None
            else:
                try:
                    attempt = call.attempt()
                except ProxylessError as exc:
                    raise self._fail(exc) from None
                pooled: PooledChannel = attempt.conn
                try:
                    result = inv.start(
                        pooled,
                        attempt.timeout,
                        request=_SAME if replay is None else replay.attempt(),
                    )
                except grpc.RpcError as exc:
                    self._pool.call_ended(pooled)
                    err = exc
                except BaseException:
                    self._pool.call_ended(pooled)
                    attempt.endpoint.active_requests -= 1
                    raise
                else:
                    self._pool.call_ended(pooled)
                    call.attempt_done(attempt, SUCCESS)
                    return result
            delay = retry_delay(call, attempt, err, replay is not None and replay.committed)
            if delay > 0:
                time.sleep(delay)

    def _run_hedged(self, call: Call, hedge: HedgePlan, inv: Invocation) -> Any:
        """Hedged unary call: several attempts race, the first response wins
        and the others are cancelled. Extra attempts draw on the retry budget
        like retries do (Envoy). With ``hedge_on_per_try_timeout`` a per-try
        timeout starts another attempt without cancelling the slow one."""
        want_call = inv.kind.endswith("_with_call")
        base = inv.kind[: -len("_with_call")] if want_call else inv.kind
        done = threading.Condition()
        finished: list[tuple[Attempt, Any]] = []
        running: list[tuple[Attempt, Any]] = []
        budget = call.breaker.retry_budget
        extra_held = 0
        per_try = call.retry_policy.per_try_timeout if hedge.hedge_on_per_try_timeout else None

        def launch() -> None:
            attempt = call.attempt()
            if per_try is not None:
                # The slow attempt keeps running; only the call's deadline ends it.
                attempt.timeout = call.remaining()
                attempt.per_try = False
            fut = inv.start(attempt.conn, attempt.timeout, kind=base, attr="future")
            entry = (attempt, fut)
            running.append(entry)

            def on_done(_f: Any) -> None:
                with done:
                    finished.append(entry)
                    done.notify_all()

            fut.add_done_callback(on_done)

        def settle(entry: tuple[Attempt, Any], outcome: Outcome | None) -> float | None:
            attempt, _ = entry
            running.remove(entry)
            self._pool.call_ended(attempt.conn)
            if outcome is None:  # cancelled loser
                attempt.endpoint.active_requests -= 1
                return None
            return call.attempt_done(attempt, outcome, may_retry=not running)

        try:
            try:
                launch()
                for _ in range(hedge.initial_attempts(self._rng) - 1):
                    if not budget.try_acquire_retry():
                        break
                    extra_held += 1
                    launch()
            except ProxylessError as exc:
                if not running:
                    raise self._fail(exc) from None
            last_err: grpc.RpcError | None = None
            while True:
                with done:
                    wait = per_try
                    remaining = call.remaining()
                    if remaining is not None:
                        wait = remaining if wait is None else min(wait, remaining)
                    if not finished:
                        done.wait(wait)
                    ready = list(finished)
                    finished.clear()
                if not ready:
                    if per_try is not None and (remaining is None or remaining > 0):
                        if budget.try_acquire_retry():
                            extra_held += 1
                            try:
                                launch()
                            except ProxylessError:
                                pass
                    continue
                for entry in ready:
                    attempt, fut = entry
                    err = fut.exception()
                    if err is None:
                        settle(entry, SUCCESS)
                        for other in list(running):
                            other[1].cancel()
                            settle(other, None)
                        result = fut.result()
                        return (result, fut) if want_call else result
                    last_err = err
                    delay = settle(entry, grpc_outcome(err, attempt, call))
                    if running:
                        continue
                    if delay is None:
                        raise end_error(call, err) from None
                    if delay > 0:
                        time.sleep(delay)
                    try:
                        launch()
                    except ProxylessError as exc:
                        raise self._fail(exc) from None
                if last_err is not None and not running and not finished:
                    raise last_err
        finally:
            for entry in list(running):
                entry[1].cancel()
                settle(entry, None)
            for _ in range(extra_held):
                budget.release_retry()

    def _start_retrying(self, inv: Invocation, timeout: float | None, *, streaming: bool) -> Any:
        """A unary ``future()`` or server-streaming call with retries
        (:mod:`proxyless.interceptors.grpc_retrying`)."""
        try:
            call = self._call(inv.method, inv.metadata, timeout, inv.wait_for_ready)
        except ProxylessError as exc:
            return FailedCall.of(self._fail(exc))
        try:
            if call.fault is not NO_FAULT:
                self._apply_fault(call)
        except XdsRpcError as err:
            call.end()
            return FailedCall.of(err)
        return RetryingCall(self, call, inv, streaming)

    def _start_streaming(
        self, inv: Invocation, timeout: float | None, attr: str | None = None
    ) -> Any:
        """A call returning the endpoint's call object: one attempt, released when done.

        When the call cannot be routed, the failure comes back the way grpc
        reports it for these shapes: a call object that is already done, whose
        ``result()``/iteration raises and whose ``exception()`` returns it.
        """
        try:
            call = self._call(inv.method, inv.metadata, timeout, inv.wait_for_ready)
        except ProxylessError as exc:
            return FailedCall.of(self._fail(exc))
        try:
            if call.fault is not NO_FAULT:
                self._apply_fault(call)
            attempt = call.attempt()
        except ProxylessError as exc:
            call.end()
            return FailedCall.of(self._fail(exc))
        except XdsRpcError as err:
            call.end()
            return FailedCall.of(err)
        except BaseException:
            call.end()
            raise
        pooled: PooledChannel = attempt.conn
        try:
            inner = inv.start(pooled, attempt.timeout, attr=attr)
        except BaseException:
            self._pool.call_ended(pooled)
            attempt.endpoint.active_requests -= 1
            call.end()
            raise

        def done(c: Any) -> None:
            self._pool.call_ended(pooled)
            code = c.code()
            if code is grpc.StatusCode.OK:
                call.attempt_done(attempt, SUCCESS)
            else:
                # Streams are not retried: record the outcome only.
                call.attempt_done(attempt, grpc_outcome(c, attempt, call), may_retry=False)
            call.end()

        inner.add_done_callback(done)
        return inner

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
        return _UnaryStream(self, method, request_serializer, response_deserializer)  # type: ignore[return-value]

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
        return _StreamStream(self, method, request_serializer, response_deserializer)  # type: ignore[return-value]

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


class _Method:
    """What the multicallables of one method share; each grpc call shape is a
    one-line method on top (the signatures are grpc's)."""

    __slots__ = ("_ch", "_deser", "_method", "_ser")

    def __init__(self, ch: XdsChannel, method: str, ser: Any, deser: Any) -> None:
        self._ch = ch
        self._method = method
        self._ser = ser
        self._deser = deser

    def _inv(
        self,
        kind: str,
        request: Any,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> Invocation:
        return Invocation(
            kind,
            self._method,
            self._ser,
            self._deser,
            request,
            metadata,
            credentials,
            wait_for_ready,
            compression,
        )

    def _unary(
        self,
        kind: str,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
        streaming_request: bool = False,
    ) -> Any:
        """A blocking unary-response call (retried; see ``XdsChannel._run_unary``)."""
        inv = self._inv(kind, request, metadata, credentials, wait_for_ready, compression)
        return self._ch._run_unary(inv, timeout, streaming_request)

    def _retrying(
        self,
        kind: str,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
        streaming: bool,
    ) -> Any:
        """A call object retried behind the scenes (unary future, server stream)."""
        inv = self._inv(kind, request, metadata, credentials, wait_for_ready, compression)
        return self._ch._start_retrying(inv, timeout, streaming=streaming)

    def _single(
        self,
        kind: str,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
        attr: str | None = None,
    ) -> Any:
        """A call object making one attempt (bidi streams, client-stream futures)."""
        inv = self._inv(kind, request, metadata, credentials, wait_for_ready, compression)
        return self._ch._start_streaming(inv, timeout, attr=attr)


class _UnaryUnary(_Method, grpc.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._unary(
            "unary_unary", request, timeout, metadata, credentials, wait_for_ready, compression
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
        return self._unary(
            "unary_unary_with_call",
            request,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
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
        return self._retrying(
            "unary_unary",
            request,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
            streaming=False,
        )


class _StreamUnary(_Method, grpc.StreamUnaryMultiCallable):  # type: ignore[type-arg]
    """Client streaming: the request stream is buffered for replay up to
    :data:`REPLAY_LIMIT` (blocking calls); ``future()`` makes one attempt."""

    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._unary(
            "stream_unary",
            request_iterator,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
            streaming_request=True,
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
        return self._unary(
            "stream_unary_with_call",
            request_iterator,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
            streaming_request=True,
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
        return self._single(
            "stream_unary",
            request_iterator,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
            attr="future",
        )


class _UnaryStream(_Method):
    """Server streaming: retried until the first response message (commit)."""

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._retrying(
            "unary_stream",
            request,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
            streaming=True,
        )


class _StreamStream(_Method):
    """Bidirectional streaming: one attempt, released when the call ends."""

    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._single(
            "stream_stream",
            request_iterator,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
        )


#: Client-streaming requests are buffered for retries up to this many bytes
#: (gRPC's per-call retry buffer, gRFC A6); past it the call is committed.
REPLAY_LIMIT = 16 * 1024 * 1024


class _Replay:
    """Buffers a request stream so a failed attempt can be replayed."""

    __slots__ = ("_ser", "_source", "buffer", "committed", "size")

    def __init__(self, source: Any, ser: Callable[[Any], bytes] | None) -> None:
        self._source: Any = iter(source)
        self._ser = ser
        self.buffer: list[Any] = []
        self.size = 0
        self.committed = False

    def keep(self, message: Any) -> None:
        """Remember a message sent, until the buffer overflows (then commit)."""
        if self.committed:
            return
        self.size += len(self._ser(message) if self._ser else message)
        if self.size > REPLAY_LIMIT:
            self.committed = True
            self.buffer = []
        else:
            self.buffer.append(message)

    def attempt(self) -> Iterator[Any]:
        """The request stream for one attempt: what was sent so far, then the rest."""
        yield from list(self.buffer)
        for message in self._source:
            self.keep(message)
            yield message


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
