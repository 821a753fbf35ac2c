"""One request on the request path, transport-agnostic.

A :class:`Call` is routed once and attempted one or more times
(``docs/architecture.md``, "The request path"):

1. the target's snapshot, virtual host and route (:mod:`proxyless.routing`);
2. the cluster's circuit breaker (one ``max_requests`` slot for the whole
   call, gRFC A32 / Envoy), EDS drops, and the fault filter (gRFC A33,
   Envoy HTTP fault filter; per-route ``typed_per_filter_config`` overrides);
3. per attempt (:meth:`Call.attempt`): an endpoint from the cluster's
   picker, avoiding hosts already tried when the retry policy has
   ``previous_hosts``; the attempt's timeout is the smaller of what is left
   of the call's and the retry policy's ``per_try_timeout``;
4. after each attempt (:meth:`Call.attempt_done`): the outcome feeds
   outlier detection, and the retry policy and the cluster's retry budget
   decide whether to try again and after what delay
   (:mod:`proxyless.resilience`).

Transports (the gRPC channels, the httpx transports) run the attempts and
classify their results into :class:`~proxyless.resilience.outcome.Outcome`;
they share everything else here. Sleeping between attempts is theirs too
(``time.sleep`` or ``await asyncio.sleep``).

The fast path: a :class:`Lane` is a route that requests can take again
without routing while the snapshot is current. A request on a lane does
steps 2 and 3 with :meth:`Lane.begin` (no fault filter, no drops, no hash:
the lane rules them out) and makes its first attempt without a
:class:`Call`; only when that attempt does not plainly succeed does the
transport make one (:meth:`Lane.resume`) and continue at step 4, so every
policy behaves as on the general path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from proxyless.errors import (
    DroppedByOverload,
    NoHealthyEndpoints,
    NonForwardingRoute,
    ProxylessError,
)
from proxyless.lb.state import EndpointState
from proxyless.resilience.fault import NO_FAULT, FaultDecision, FaultInjector
from proxyless.resilience.outcome import Outcome
from proxyless.resilience.retry import (
    NO_HEDGING,
    CompiledRetryPolicy,
    RetryState,
    retry_budget_exhausted,
)
from proxyless.resources.model import FaultFilterConfig
from proxyless.routing import (
    RequestInfo,
    RouteResult,
    action_kind,
    grpc_deadline,
    http_timeout,
    request_hash,
)
from proxyless.runtime.cluster import ClusterRuntime
from proxyless.runtime.target import RoutePlan, TargetRuntime

__all__ = ["Attempt", "Call", "FirstAttempt", "Lane", "PoolGet"]

#: A transport's connection lookup for an attempt: the endpoint picked, and
#: the cluster it was picked from (whose ``transport_socket`` says how to
#: reach it).
PoolGet = Callable[[EndpointState, ClusterRuntime], Any]


class Attempt:
    """One try of a call on one endpoint."""

    __slots__ = (
        "conn",
        "deadline",
        "endpoint",
        "pending",
        "per_try",
        "sent",
        "started",
        "timeout",
    )

    def __init__(
        self,
        endpoint: EndpointState,
        conn: Any,
        timeout: float | None,
        deadline: float | None,
        per_try: bool,
    ) -> None:
        self.endpoint = endpoint
        self.conn = conn
        self.timeout = timeout
        self.deadline = deadline
        self.per_try = per_try  # the timeout is the per-try timeout, not the call's
        #: while it waits for a connection (HTTP/1.1 pools): the breaker whose
        #: ``max_pending_requests`` slot it holds and the pool entry it waits in
        self.pending: Any = None

    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline - 0.001


class FirstAttempt(Attempt):
    """The first attempt of a request on a :class:`Lane`, with what its
    :class:`Call` needs should one be made (:meth:`Lane.resume`)."""

    __slots__ = ("call_deadline", "call_timeout", "caller_timeout")

    call_timeout: float | None
    call_deadline: float | None
    caller_timeout: float | None


class Lane:
    """A forwarding route that requests can take again, without being
    routed, while the target's snapshot ``state`` is current: the
    transports' fast path.

    A lane is made from a routed call (:meth:`for_call`) whose route gives
    the same answer for every request the transport maps to the lane (the
    transport's business: same method and no metadata for gRPC,
    :func:`~proxyless.runtime.target.path_determined` and same path for
    HTTP) and asks nothing of it beyond an endpoint: a single cluster, no
    hash policy, no fault filter on the listener, no hedging. A request on
    the lane takes the breaker slot and an endpoint (:meth:`begin`) and
    makes its first attempt without a :class:`Call`; only when that attempt
    does not plainly succeed does the transport make one (:meth:`resume`)
    and carry on exactly as the general path would (retries, outlier
    detection, budgets, errors).
    """

    __slots__ = ("breaker", "cap", "cluster", "per_try", "plan", "state")

    def __init__(self, state: object, plan: RoutePlan) -> None:
        self.state = state
        self.plan = plan
        self.cluster = plan.cluster
        self.breaker = plan.breaker
        self.cap = plan.cap
        self.per_try = plan.retry_policy.per_try_timeout

    @classmethod
    def for_call(
        cls, rt: TargetRuntime, state: object, call: Call, *, is_grpc: bool
    ) -> Lane | None:
        """The lane of ``call``'s route, routed on ``state``; None when the
        route does not qualify or the snapshot moved on meanwhile."""
        if (
            call.cluster is None
            or call.hash is not None
            or call.fault is not NO_FAULT
            or call.hedge.enabled
        ):
            return None
        snap = rt.current
        if snap is None or snap is not state:
            return None
        plan = rt.plan(snap[0], call.route, is_grpc)
        if plan.faults or plan.cluster is not call.cluster:
            return None
        return cls(state, plan)

    def begin(self, rng: Any, caller_timeout: float | None) -> FirstAttempt | None:
        """Take the breaker slot and an endpoint for the first attempt; None
        when the cluster may drop requests (the general path decides).
        Raises :class:`~proxyless.errors.ProxylessError` like :class:`Call`."""
        lb = self.cluster.lb
        if lb.drop_overloads:
            return None
        breaker = self.breaker
        if not breaker.try_acquire_request():
            raise breaker.open_error()
        try:
            endpoint = lb.pick(None, rng, ())
        except NoHealthyEndpoints as exc:
            breaker.release_request()
            raise NoHealthyEndpoints(f"{self.plan.route.describe()}: {exc}") from None
        endpoint.active_requests += 1
        endpoint.total_requests += 1
        cap = self.cap
        timeout = caller_timeout
        if cap is not None and (timeout is None or timeout > cap):
            timeout = cap
        now = time.monotonic()
        per_try = self.per_try
        if per_try is not None and (timeout is None or per_try < timeout):
            first: float | None = per_try if per_try > 0 else 0.0
            is_per_try = True
        else:
            first, is_per_try = timeout, False
        attempt = FirstAttempt(
            endpoint, None, first, None if first is None else now + first, is_per_try
        )
        attempt.call_timeout = timeout
        attempt.call_deadline = None if timeout is None else now + timeout
        attempt.caller_timeout = caller_timeout
        if lb.latency is not None:
            lb.latency.sent(attempt)  # peak EWMA (proxyless.lb.peak_ewma)
        return attempt

    def succeeded(self, endpoint: EndpointState, attempt: Attempt | None = None) -> None:
        """The first attempt (``attempt``, on ``endpoint``) succeeded (the
        breaker slot is still held)."""
        endpoint.active_requests -= 1
        endpoint.total_successes += 1
        if attempt is not None and self.cluster.lb.latency is not None:
            self.cluster.lb.latency.done(attempt)  # peak EWMA
        outlier = self.cluster.outlier
        if outlier is not None:
            outlier.record_success(endpoint)

    def abandon(self, attempt: Attempt) -> None:
        """The first attempt ended without an outcome (the caller's exception)."""
        attempt.endpoint.active_requests -= 1
        attempt.endpoint.total_errors += 1
        self.breaker.release_request()

    def resume(
        self,
        rt: TargetRuntime,
        request: RequestInfo,
        attempt: FirstAttempt,
        pool_get: PoolGet,
    ) -> Call:
        """The :class:`Call` carrying on after ``attempt`` (it holds the slot)."""
        return Call.resumed(
            rt,
            request,
            self.plan,
            timeout=attempt.call_timeout,
            deadline=attempt.call_deadline,
            pool_get=pool_get,
            caller_timeout=attempt.caller_timeout,
        )


class Call:
    """A routed request (see the module docstring)."""

    __slots__ = (
        "_caller_timeout",
        "_rng",
        "_rt",
        "attempts",
        "breaker",
        "cluster",
        "deadline",
        "exhausted",
        "fault",
        "fault_injector",
        "hash",
        "hedge",
        "last_error",
        "obs",
        "pool_get",
        "request",
        "retry",
        "retry_policy",
        "route",
        "timeout",
    )

    def __init__(
        self,
        rt: TargetRuntime,
        request: RequestInfo,
        *,
        timeout: float | None,
        wait_for_ready: bool,
        channel_id: int,
        pool_get: PoolGet,
        allow_local_actions: bool = False,
        shared_request: bool = False,
    ) -> None:
        """Route ``request``; raises ProxylessError when it cannot be routed.

        With ``allow_local_actions`` (HTTP), a redirect or direct-response
        route is returned with ``cluster`` None for the transport to answer.
        """
        self._rt = rt
        self._rng = rt.rng
        self.request = request
        self.pool_get = pool_get
        self.attempts = 0
        self.retry: RetryState | None = None
        self.last_error: Exception | None = None
        self.fault: FaultDecision = NO_FAULT
        self.fault_injector: FaultInjector | None = None
        self.breaker: Any = None
        #: the call's telemetry (:class:`~proxyless.observability.telemetry.CallTelemetry`), if any
        self.obs: Any = None
        #: retries ran out (attempts or budget) on a retriable failure (Envoy's URX)
        self.exhausted = False
        state = rt._state
        if state is None:
            started = time.monotonic()
            state = rt.state(timeout, wait_for_ready)
            if timeout is not None:
                # Waiting for the config spends the caller's deadline (gRFC A31).
                timeout = max(0.0, timeout - (time.monotonic() - started))
        snap = state[0]
        route = rt.route(request, state, shared=shared_request)
        self.route = route
        if route.cluster_name is None:
            if not allow_local_actions:
                raise NonForwardingRoute(
                    f"{route.describe()}: a {action_kind(route.action)} route cannot serve a gRPC call"
                )
            self.cluster: ClusterRuntime | None = None
            self._caller_timeout = timeout
            self.timeout = timeout
            self.hedge = NO_HEDGING
            self.deadline = None
            self.retry_policy = CompiledRetryPolicy.from_policy(None, request.is_grpc)
            self.hash = None
            return
        try:
            plan = rt.plan(snap, route, request.is_grpc)
        except ProxylessError as exc:
            raise type(exc)(f"{route.describe()}: {exc}") from exc.__cause__
        self._caller_timeout = timeout
        cap = plan.cap
        if cap is not None and (timeout is None or timeout > cap):
            timeout = cap
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        cluster = plan.cluster
        self.cluster = cluster
        lb = cluster.lb
        if lb.drop_overloads:
            drop = lb.check_drop(self._rng)
            if drop is not None:
                cluster.drops[drop.category] = cluster.drops.get(drop.category, 0) + 1
                raise DroppedByOverload(
                    f"cluster {cluster.name!r} dropped the request (drop_overloads category "
                    f"{drop.category!r}, {drop.per_million / 10_000:g}%)"
                )
        self.retry_policy = plan.retry_policy
        self.hedge = plan.hedge
        self.hash = (
            request_hash(route.hash_policies, request, channel_id=channel_id, rng=self._rng)
            if route.hash_policies
            else None
        )
        if plan.faults:
            self._decide_faults(plan.faults, route, cluster.name)
        breaker = plan.breaker
        if not breaker.try_acquire_request():
            self.end()
            raise breaker.open_error()
        self.breaker = breaker

    @classmethod
    def resumed(
        cls,
        rt: TargetRuntime,
        request: RequestInfo,
        plan: RoutePlan,
        *,
        timeout: float | None,
        deadline: float | None,
        pool_get: PoolGet,
        caller_timeout: float | None = None,
    ) -> Call:
        """The call of a request that made its first attempt on a
        :class:`Lane` of ``plan``'s route, holding its breaker slot: made when
        that attempt did not plainly succeed, to carry on with retries and
        error reporting from there (see :meth:`Lane.resume`)."""
        self = cls.__new__(cls)
        self._rt = rt
        self._rng = rt.rng
        self.request = request
        self.pool_get = pool_get
        self.attempts = 1
        self.retry = None
        self.last_error = None
        self.fault = NO_FAULT
        self.fault_injector = None
        self.route = plan.route
        self._caller_timeout = caller_timeout
        self.timeout = timeout
        self.deadline = deadline
        self.cluster = plan.cluster
        self.retry_policy = plan.retry_policy
        self.hedge = plan.hedge
        self.hash = None
        self.breaker = plan.breaker
        self.obs = None
        self.exhausted = False
        return self

    def _decide_faults(
        self, filters: tuple[tuple[str, FaultFilterConfig], ...], route: RouteResult, cluster: str
    ) -> None:
        for name, config in filters:
            override = (
                (
                    route.cluster_weight.typed_per_filter_config.get(name)
                    if route.cluster_weight
                    else None
                )
                or route.route.typed_per_filter_config.get(name)
                or route.virtual_host.typed_per_filter_config.get(name)
            )
            if override is not None:
                if not isinstance(override, FaultFilterConfig):
                    continue  # disabled for this route
                config = override
            injector = FaultInjector.for_config(config)
            decision = injector.decide(self.request.headers, self._rng, cluster)
            if decision.active:
                self.fault, self.fault_injector = decision, injector
                return

    @property
    def timeout_source(self) -> str:
        """Where :attr:`timeout` came from, in words (computed on demand)."""
        action = self.route.route_action
        if action is None:
            return ""
        if self.request.is_grpc:
            snap = self._rt._last
            listener = snap.listener if snap is not None else None
            msd = listener.max_stream_duration if listener else None
            return grpc_deadline(action, msd, self._caller_timeout)[1]
        return http_timeout(action, self._caller_timeout)[1]

    # -- attempts -------------------------------------------------------------------
    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def attempt(self, hedge: bool = False) -> Attempt:
        """Pick an endpoint for the next attempt; raises NoHealthyEndpoints.
        ``hedge``: the attempt races others still running (hedging)."""
        cluster = self.cluster
        assert cluster is not None
        retry = self.retry
        exclude = retry.excluded_hosts if retry is not None else ()
        try:
            endpoint = cluster.lb.pick(self.hash, self._rng, exclude)
        except NoHealthyEndpoints as exc:
            raise NoHealthyEndpoints(f"{self.route.describe()}: {exc}") from None
        if retry is not None and exclude:
            selection = 1
            while not retry.accept_host(endpoint.key, selection):
                selection += 1
                endpoint = cluster.lb.pick(self.hash, self._rng, ())
        conn = self.pool_get(endpoint, cluster)
        self.attempts += 1
        if retry is not None:
            retry.add_host(endpoint.key)
        endpoint.active_requests += 1
        endpoint.total_requests += 1
        timeout = self.remaining()
        per_try = self.retry_policy.per_try_timeout
        is_per_try = per_try is not None and (timeout is None or per_try < timeout)
        if is_per_try:
            timeout = per_try
        if timeout is not None and timeout <= 0:
            timeout = 0.0
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = Attempt(endpoint, conn, timeout, deadline, is_per_try)
        if cluster.lb.latency is not None:
            cluster.lb.latency.sent(attempt)  # peak EWMA (proxyless.lb.peak_ewma)
        obs = self.obs
        if obs is not None:
            obs.attempt_started(attempt, hedge)
        return attempt

    def attempt_done(
        self, attempt: Attempt, outcome: Outcome, *, may_retry: bool = True
    ) -> float | None:
        """Record ``outcome``; return the delay before a retry, or None to stop.

        ``may_retry`` False (a committed stream, a request that cannot be
        replayed) records the outcome without asking the retry policy.
        """
        endpoint = attempt.endpoint
        endpoint.active_requests -= 1
        cluster = self.cluster
        assert cluster is not None
        if cluster.lb.latency is not None:
            cluster.lb.latency.done(attempt)  # peak EWMA
        obs = self.obs
        if obs is not None:
            obs.attempt_ended(attempt, outcome)
        outlier = cluster.outlier
        if outcome.kind == "success":
            endpoint.total_successes += 1
            if outlier is not None:
                outlier.record_success(endpoint)
            return None
        endpoint.total_errors += 1
        if outlier is not None:
            outlier.record(endpoint, outcome)
        policy = self.retry_policy
        if not policy.enabled or not may_retry:
            return None
        retry = self.retry
        if retry is None:
            retry = self.retry = RetryState(policy, endpoint.key, attempts=self.attempts)
        decision = retry.decide(outcome, self.breaker.retry_budget, self._rng, time.time())
        if not decision.retry:
            reason = decision.reason
            if reason == "budget_exhausted":
                self.last_error = retry_budget_exhausted(cluster.name, outcome, self.attempts)
            if reason == "budget_exhausted" or reason == "attempts_exhausted":
                self.exhausted = True  # Envoy: retries ran out on a retriable failure
                if obs is not None:
                    obs.flags.add("URX")
            return None
        remaining = self.remaining()
        if remaining is not None and remaining <= decision.delay:
            return None
        return decision.delay

    def end(self) -> None:
        """Release what the call holds (idempotent)."""
        if self.retry is not None:
            self.retry.release()
        if self.breaker is not None:
            self.breaker.release_request()
            self.breaker = None
        if self.fault_injector is not None:
            self.fault_injector.end()
            self.fault_injector = None

    def describe(self) -> str:
        where = self.route.describe()
        return f"{where} after {self.attempts} attempt{'s' if self.attempts != 1 else ''}"
