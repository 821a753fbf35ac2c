"""The request path without a network: :class:`Call` and :class:`Lane`
routed on a snapshot assembled by hand.

Each test builds Envoy protos with :mod:`proxyless.testing.resources`,
decodes them as the xDS client would (:mod:`proxyless.resources.types`),
puts them into an :class:`XdsConfig`, applies it to a real
:class:`ClusterRegistry` and hands it to a real :class:`TargetRuntime`
through a small fake :class:`MeshView`. Attempts are not sent anywhere: the
test plays the transport, calling ``attempt``/``attempt_done``/``end`` and
classifying each attempt's result itself. ``Call`` reads
``time.monotonic()`` for deadlines, so timeouts are checked relative to
what was asked for.
"""

from __future__ import annotations

import random
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, wrappers_pb2

from proxyless.config.snapshot import ClusterConfig, XdsConfig
from proxyless.errors import (
    CircuitBreakerOpen,
    ClusterNotAvailable,
    DroppedByOverload,
    NoMatchingRoute,
    NoMatchingVirtualHost,
    NonForwardingRoute,
    ResourceDoesNotExist,
    RetryBudgetExhausted,
    XdsConfigError,
)
from proxyless.lb.state import EndpointState
from proxyless.resilience.fault import NO_FAULT
from proxyless.resilience.outcome import PER_TRY_TIMEOUT, SUCCESS, Outcome
from proxyless.resources.types import (
    CLUSTER,
    CLUSTER_LOAD_ASSIGNMENT,
    LISTENER,
    ROUTE_CONFIGURATION,
)
from proxyless.routing import RequestInfo
from proxyless.runtime.call import Call, Lane
from proxyless.runtime.cluster import ClusterRegistry
from proxyless.runtime.target import TargetRuntime, deterministic
from proxyless.target import parse_target
from proxyless.testing import resources as r

AUTHORITY = "svc"
METHOD = "/pkg.Svc/Get"
ADDRESSES = ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
UNAVAILABLE = Outcome.grpc("UNAVAILABLE")


# -- a snapshot without a network ---------------------------------------------------------
def _decoded(rtype: Any, proto: Any) -> Any:
    result = rtype.decode(proto.SerializeToString())
    assert result.ok, result.errors
    return result.value


class _Watcher:
    """The part of a ConfigWatcher a TargetRuntime uses; ``publish`` pushes."""

    def __init__(self, snap: XdsConfig) -> None:
        self.snapshot = snap
        self._listeners: list[Callable[[XdsConfig], None]] = []

    def add_listener(self, fn: Callable[[XdsConfig], None]) -> None:
        self._listeners.append(fn)
        fn(self.snapshot)

    def wait(self, timeout: float | None) -> XdsConfig:
        return self.snapshot

    def publish(self, snap: XdsConfig) -> None:
        self.snapshot = snap
        for fn in self._listeners:
            fn(snap)


class _Bootstrap:
    node = types.SimpleNamespace(id="node-1")

    def listener_resource_name(self, authority: str | None, name: str) -> str:
        return name


class _Mesh:
    """A MeshView over one hand-made snapshot."""

    def __init__(self, snap: XdsConfig, seed: int) -> None:
        self.bootstrap = _Bootstrap()
        self.rng = random.Random(seed)
        self.clusters = ClusterRegistry(self.rng)
        self.clusters.apply(snap)
        self.xds_client = None
        self.watcher = _Watcher(snap)

    def config(self, listener_name: str, host: str | None = None) -> _Watcher:
        return self.watcher


def _snapshot(
    routes: Sequence[route_components_pb2.Route],
    *,
    clusters: Mapping[str, cluster_pb2.Cluster] | None = None,
    assignments: Mapping[str, endpoint_pb2.ClusterLoadAssignment] | None = None,
    http_filters: Sequence[hcm_pb2.HttpFilter] = (),
    listener_max_stream_duration: float | None = None,
    version: int = 1,
) -> XdsConfig:
    listener = _decoded(
        LISTENER,
        r.listener(
            AUTHORITY,
            "rc",
            http_filters=http_filters,
            max_stream_duration=listener_max_stream_duration,
        ),
    )
    rc = _decoded(ROUTE_CONFIGURATION, r.route_config("rc", AUTHORITY, routes))
    cluster_protos = clusters if clusters is not None else {"a": r.cluster("a")}
    configs: dict[str, ClusterConfig] = {}
    for name, proto in cluster_protos.items():
        cla = (assignments or {}).get(name) or r.endpoints(name, list(ADDRESSES))
        configs[name] = ClusterConfig(
            name, _decoded(CLUSTER, proto), _decoded(CLUSTER_LOAD_ASSIGNMENT, cla)
        )
    return XdsConfig(AUTHORITY, listener, rc, configs, None, version)


def _runtime(
    routes: Sequence[route_components_pb2.Route] | None = None, *, seed: int = 1, **kw: Any
) -> TargetRuntime:
    snap = _snapshot(routes if routes is not None else [r.route(cluster="a")], **kw)
    return TargetRuntime(_Mesh(snap, seed), parse_target(f"xds:///{AUTHORITY}"))  # type: ignore[arg-type]


def _request(path: str = METHOD, authority: str = AUTHORITY, **kw: Any) -> RequestInfo:
    return RequestInfo(authority, path, **kw)


def _call(rt: TargetRuntime, request: RequestInfo | None = None, **kw: Any) -> Call:
    kw.setdefault("timeout", None)
    return Call(
        rt,
        request or _request(),
        wait_for_ready=False,
        channel_id=0,
        pool_get=lambda endpoint, cluster: ("conn", endpoint.key),
        **kw,
    )


def _retry(
    retry_on: str = "unavailable",
    num_retries: int = 2,
    *,
    per_try: float | None = None,
    base: float | None = None,
    previous_hosts: bool = False,
) -> route_components_pb2.RetryPolicy:
    policy = route_components_pb2.RetryPolicy(
        retry_on=retry_on, num_retries=wrappers_pb2.UInt32Value(value=num_retries)
    )
    if per_try is not None:
        policy.per_try_timeout.CopyFrom(r.duration(per_try))
    if base is not None:
        policy.retry_back_off.base_interval.CopyFrom(r.duration(base))
    if previous_hosts:
        policy.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts")
    return policy


def _percent(value: int = 100) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(
        numerator=value, denominator=percent_pb2.FractionalPercent.HUNDRED
    )


def _fault_filter(fault: fault_pb2.HTTPFault) -> hcm_pb2.HttpFilter:
    packed = any_pb2.Any()
    packed.Pack(fault)
    return hcm_pb2.HttpFilter(name="envoy.filters.http.fault", typed_config=packed)


def _with_thresholds(cluster: cluster_pb2.Cluster, **limits: int) -> cluster_pb2.Cluster:
    cluster.circuit_breakers.thresholds.add(
        **{k: wrappers_pb2.UInt32Value(value=v) for k, v in limits.items()}
    )
    return cluster


def _dropping(name: str, percent: int) -> endpoint_pb2.ClusterLoadAssignment:
    cla = r.endpoints(name, list(ADDRESSES))
    cla.policy.drop_overloads.add(category="throttle", drop_percentage=_percent(percent))
    return cla


# -- one attempt -----------------------------------------------------------------------------
def test_first_attempt_succeeds_and_end_releases_the_slot() -> None:
    rt = _runtime()
    call = _call(rt)
    cluster = rt.mesh.clusters.get("a")
    assert cluster is not None and call.cluster is cluster
    breaker = cluster.breakers.default
    assert breaker.requests == 1

    attempt = call.attempt()
    assert attempt.conn == ("conn", attempt.endpoint.key)
    assert attempt.endpoint.key in {("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)}
    assert (attempt.endpoint.active_requests, attempt.endpoint.total_requests) == (1, 1)
    assert (attempt.timeout, attempt.deadline, attempt.per_try) == (None, None, False)
    assert call.attempts == 1
    assert (
        call.describe()
        == "virtual host 'svc', route #0 (prefix '/') -> cluster 'a' after 1 attempt"
    )

    assert call.attempt_done(attempt, SUCCESS) is None
    assert attempt.endpoint.active_requests == 0
    assert call.retry is None  # the success path makes no retry state
    assert breaker.requests == 1  # held until the call ends
    call.end()
    assert breaker.requests == 0


@pytest.mark.parametrize(
    ("route_kw", "caller", "want_timeout", "want_per_try"),
    [
        pytest.param({}, None, None, False, id="no-deadline"),
        pytest.param({}, 5.0, 5.0, False, id="caller-deadline"),
        pytest.param({"retry_policy": _retry(per_try=1.0)}, 5.0, 1.0, True, id="per-try-shorter"),
        pytest.param(
            {"retry_policy": _retry(per_try=1.0)},
            0.5,
            0.5,
            False,
            id="deadline-shorter-than-per-try",
        ),
        pytest.param(
            {"retry_policy": _retry(per_try=1.0)}, None, 1.0, True, id="per-try-without-deadline"
        ),
        pytest.param(
            {"retry_policy": _retry(per_try=0.0)}, 5.0, 5.0, False, id="per-try-0s-is-none"
        ),
        pytest.param({"max_stream_duration": 2.0}, 10.0, 2.0, False, id="route-caps-the-caller"),
        pytest.param({"max_stream_duration": 2.0}, None, 2.0, False, id="route-cap-alone"),
        pytest.param({"max_stream_duration": 2.0}, 1.0, 1.0, False, id="caller-under-the-cap"),
        pytest.param({"listener": 3.0}, None, 3.0, False, id="listener-cap"),
        pytest.param(
            {"listener": 3.0, "max_stream_duration": 2.0},
            None,
            2.0,
            False,
            id="route-over-listener",
        ),
    ],
)
def test_attempt_timeout(
    route_kw: dict[str, Any], caller: float | None, want_timeout: float | None, want_per_try: bool
) -> None:
    route_kw = dict(route_kw)
    listener = route_kw.pop("listener", None)
    rt = _runtime([r.route(cluster="a", **route_kw)], listener_max_stream_duration=listener)
    call = _call(rt, timeout=caller)
    attempt = call.attempt()
    assert attempt.per_try is want_per_try
    if want_timeout is None:
        assert attempt.timeout is None and attempt.deadline is None and call.remaining() is None
    else:
        assert attempt.timeout is not None and attempt.deadline is not None
        # Time passes between routing and the attempt: the timeout is what
        # was asked for, or a hair less.
        assert want_timeout - 0.5 < attempt.timeout <= want_timeout
        assert not attempt.timed_out()
    call.end()


@pytest.mark.parametrize(
    ("route_kw", "listener", "caller", "is_grpc", "source"),
    [
        pytest.param(
            {},
            None,
            None,
            True,
            "no deadline (caller set none; no max_stream_duration configured)",
            id="grpc-none",
        ),
        pytest.param(
            {"max_stream_duration": 2.0},
            None,
            1.0,
            True,
            "caller deadline 1s (within route max_stream_duration 2s)",
            id="grpc-caller-within-cap",
        ),
        pytest.param(
            {"max_stream_duration": 2.0},
            None,
            10.0,
            True,
            "route max_stream_duration 2s",
            id="grpc-route-cap",
        ),
        pytest.param(
            {}, 3.0, None, True, "listener max_stream_duration 3s", id="grpc-listener-cap"
        ),
        pytest.param({"timeout": 4.0}, None, None, False, "route timeout 4s", id="http-route"),
    ],
)
def test_timeout_source(
    route_kw: dict[str, Any],
    listener: float | None,
    caller: float | None,
    is_grpc: bool,
    source: str,
) -> None:
    rt = _runtime([r.route(cluster="a", **route_kw)], listener_max_stream_duration=listener)
    call = _call(rt, _request(is_grpc=is_grpc), timeout=caller)
    assert call.timeout_source == source
    call.end()


def test_no_usable_config_names_the_listener_and_the_node() -> None:
    rt = _runtime()
    missing = ResourceDoesNotExist("LDS resource 'svc' does not exist")
    rt.mesh.watcher.publish(XdsConfig(AUTHORITY, None, None, error=missing, version=2))  # type: ignore[attr-defined]
    assert rt.current is None
    with pytest.raises(XdsConfigError) as info:
        _call(rt, timeout=1.0)
    assert isinstance(info.value, ResourceDoesNotExist) and info.value.__cause__ is missing
    assert str(info.value) == (
        "no usable xDS config for xds:///svc (listener 'svc'): "
        "LDS resource 'svc' does not exist; node id 'node-1'"
    )


def test_a_spent_deadline_gives_a_zero_timeout_and_no_retry() -> None:
    rt = _runtime([r.route(cluster="a", retry_policy=_retry(base=0.01))])
    call = _call(rt, timeout=0.0)
    attempt = call.attempt()
    assert attempt.timeout == 0.0 and attempt.timed_out()
    # A retry would wait past the deadline: the call stops instead.
    assert call.attempt_done(attempt, UNAVAILABLE) is None
    assert call.last_error is None
    call.end()


# -- retries ----------------------------------------------------------------------------------
def _drive(call: Call, outcomes: Sequence[Outcome]) -> list[float | None]:
    """Make an attempt per outcome; return what ``attempt_done`` answered."""
    answers: list[float | None] = []
    for outcome in outcomes:
        attempt = call.attempt()
        answers.append(call.attempt_done(attempt, outcome))
        assert attempt.endpoint.active_requests == 0
    return answers


RETRY = "retry"


@pytest.mark.parametrize(
    ("policy", "outcomes", "want"),
    [
        pytest.param(None, [UNAVAILABLE], [None], id="no-policy"),
        pytest.param(_retry(), [UNAVAILABLE, SUCCESS], [RETRY, None], id="retried-then-ok"),
        pytest.param(
            _retry(num_retries=2),
            [UNAVAILABLE, UNAVAILABLE, UNAVAILABLE],
            [RETRY, RETRY, None],
            id="num-retries-exhausted",
        ),
        pytest.param(
            _retry(num_retries=10),
            [UNAVAILABLE] * 5,
            [RETRY, RETRY, RETRY, RETRY, None],
            id="grpc-caps-at-5-attempts",
        ),
        pytest.param(
            _retry("unavailable"), [Outcome.grpc("INTERNAL")], [None], id="status-not-retried"
        ),
        pytest.param(
            _retry("deadline-exceeded"),
            [PER_TRY_TIMEOUT, SUCCESS],
            [RETRY, None],
            id="per-try-timeout",
        ),
        pytest.param(
            _retry(), [Outcome.grpc("UNAVAILABLE", pushback="stop")], [None], id="pushback-stop"
        ),
        pytest.param(
            _retry(),
            [Outcome.grpc("UNAVAILABLE", pushback=0.25), SUCCESS],
            [0.25, None],
            id="pushback-delay",
        ),
    ],
)
def test_retry_decisions(
    policy: route_components_pb2.RetryPolicy | None,
    outcomes: list[Outcome],
    want: list[Any],
) -> None:
    rt = _runtime([r.route(cluster="a", retry_policy=policy)])
    call = _call(rt)
    got = _drive(call, outcomes)
    assert [
        RETRY if w == RETRY and g is not None else g for g, w in zip(got, want, strict=True)
    ] == want
    assert call.attempts == len(outcomes)
    assert call.last_error is None
    call.end()


def test_backoff_is_jittered_exponential_and_follows_the_seed() -> None:
    def delays(seed: int) -> list[float | None]:
        rt = _runtime(
            [r.route(cluster="a", retry_policy=_retry(num_retries=3, base=0.1))], seed=seed
        )
        call = _call(rt)
        out = _drive(call, [UNAVAILABLE] * 3)
        call.end()
        return out

    first = delays(7)
    assert first == delays(7)  # the RNG is the mesh's: same seed, same delays
    d1, d2, d3 = first
    assert d1 is not None and 0.0 <= d1 < 0.1
    assert d2 is not None and 0.0 <= d2 < 0.2
    assert d3 is not None and 0.0 <= d3 < 0.4
    assert delays(8) != first


@pytest.mark.parametrize("seed", range(12))
def test_previous_hosts_sends_each_retry_to_a_new_host(seed: int) -> None:
    clusters = {"a": r.cluster("a", lb="random")}
    policy = _retry(num_retries=2, previous_hosts=True)
    rt = _runtime([r.route(cluster="a", retry_policy=policy)], clusters=clusters, seed=seed)
    call = _call(rt)
    hosts = []
    for _ in range(3):
        attempt = call.attempt()
        hosts.append(attempt.endpoint.key)
        call.attempt_done(attempt, UNAVAILABLE)
    assert len(set(hosts)) == 3
    assert call.retry is not None and call.retry.tried_hosts == set(hosts)
    call.end()


def test_without_previous_hosts_a_random_picker_may_repeat_a_host() -> None:
    """The contrast to the test above: over the same seeds, a repeat happens."""
    repeats = 0
    for seed in range(12):
        clusters = {"a": r.cluster("a", lb="random")}
        rt = _runtime(
            [r.route(cluster="a", retry_policy=_retry(num_retries=2))], clusters=clusters, seed=seed
        )
        call = _call(rt)
        hosts = []
        for _ in range(3):
            attempt = call.attempt()
            hosts.append(attempt.endpoint.key)
            call.attempt_done(attempt, UNAVAILABLE)
        repeats += len(set(hosts)) < 3
        call.end()
    assert repeats > 0


def test_a_retry_attempt_gets_the_per_try_timeout_or_what_is_left() -> None:
    policy = _retry("unavailable,deadline-exceeded", per_try=0.2, base=0.001)
    rt = _runtime([r.route(cluster="a", retry_policy=policy)])
    call = _call(rt, timeout=0.3)
    first = call.attempt()
    assert first.per_try and first.timeout == pytest.approx(0.2)
    assert call.attempt_done(first, PER_TRY_TIMEOUT) is not None
    # Pretend 0.25 s went by: what is left of the call is shorter than per-try.
    assert call.deadline is not None
    call.deadline -= 0.25
    second = call.attempt()
    assert second.per_try is False
    assert second.timeout is not None and 0.0 < second.timeout <= 0.05
    call.end()


def test_budget_exhaustion_is_reported_in_last_error() -> None:
    clusters = {"a": _with_thresholds(r.cluster("a"), max_retries=0)}
    rt = _runtime([r.route(cluster="a", retry_policy=_retry())], clusters=clusters)
    call = _call(rt)
    attempt = call.attempt()
    assert call.attempt_done(attempt, UNAVAILABLE) is None
    assert isinstance(call.last_error, RetryBudgetExhausted)
    assert str(call.last_error) == (
        "UNAVAILABLE (retry budget exhausted for cluster 'a' after 1 attempt)"
    )
    breaker = rt.mesh.clusters.get("a").breakers.default  # type: ignore[union-attr]
    assert breaker.stats["upstream_rq_retry_overflow"] == 1
    assert breaker.retry_budget.active == 0
    call.end()


# -- failing before any attempt ---------------------------------------------------------------
def test_a_full_breaker_fails_the_call_without_an_attempt() -> None:
    clusters = {"a": r.cluster("a", max_requests=1)}
    rt = _runtime([r.route(cluster="a", retry_policy=_retry())], clusters=clusters)
    breaker = rt.mesh.clusters.get("a").breakers.default  # type: ignore[union-attr]
    holder = _call(rt)
    with pytest.raises(CircuitBreakerOpen) as info:
        _call(rt)
    assert str(info.value) == "circuit breaker max_requests=1 reached for cluster 'a'"
    assert breaker.stats["upstream_rq_overflow"] == 1
    assert breaker.retry_budget.active == 0  # refused outright, not retried
    assert sum(e.total_requests for e in rt.mesh.clusters.get("a").endpoints()) == 0  # type: ignore[union-attr]
    holder.end()
    _call(rt).end()  # the slot is free again
    assert breaker.requests == 0


@pytest.mark.parametrize(
    ("percent", "dropped"),
    [pytest.param(100, True, id="all-dropped"), pytest.param(0, False, id="none-dropped")],
)
def test_drop_overloads(percent: int, dropped: bool) -> None:
    rt = _runtime(assignments={"a": _dropping("a", percent)})
    breaker = rt.mesh.clusters.get("a").breakers.default  # type: ignore[union-attr]
    if dropped:
        with pytest.raises(DroppedByOverload) as info:
            _call(rt)
        assert str(info.value) == (
            "cluster 'a' dropped the request (drop_overloads category 'throttle', 100%)"
        )
        assert breaker.requests == 0  # dropped before taking a slot
    else:
        call = _call(rt)
        assert breaker.requests == 1
        call.end()


@pytest.mark.parametrize(
    ("request_kw", "error", "words"),
    [
        pytest.param(
            {"authority": "other:80"},
            NoMatchingVirtualHost,
            ["'rc'", "authority 'other:80'", "domains on offer: 'svc'"],
            id="no-virtual-host",
        ),
        pytest.param(
            {"path": "/pkg.Other/Get"},
            NoMatchingRoute,
            ["virtual host 'svc'", "'/pkg.Other/Get'", "authority 'svc'"],
            id="no-route",
        ),
        pytest.param(
            {"path": "/pkg.Svc/Gone"},
            ClusterNotAvailable,
            ["route #1 (path '/pkg.Svc/Gone') -> cluster 'gone'", "cluster 'gone' is not part"],
            id="cluster-not-in-the-snapshot",
        ),
        pytest.param(
            {"path": "/pkg.Svc/Local"},
            NonForwardingRoute,
            ["route #0 (path '/pkg.Svc/Local')", "non_forwarding_action", "gRFC A36"],
            id="non-forwarding-action",
        ),
        pytest.param(
            {"path": "/pkg.Svc/Answer"},
            NonForwardingRoute,
            ["a direct_response route cannot serve a gRPC call"],
            id="direct-response-on-grpc",
        ),
    ],
)
def test_routing_errors_name_where(
    request_kw: dict[str, Any], error: type[Exception], words: list[str]
) -> None:
    answer = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(path="/pkg.Svc/Answer"),
        direct_response=route_components_pb2.DirectResponseAction(status=200),
    )
    routes = [
        r.route(path="/pkg.Svc/Local", non_forwarding=True),
        r.route(path="/pkg.Svc/Gone", cluster="gone"),
        answer,
        r.route(prefix="/pkg.Svc/", cluster="a"),
    ]
    rt = _runtime(routes)
    with pytest.raises(error) as info:
        _call(rt, _request(**request_kw))
    for word in words:
        assert word in str(info.value)
    assert rt.mesh.clusters.get("a").breakers.default.requests == 0  # type: ignore[union-attr]


def test_http_may_take_a_local_action() -> None:
    answer = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        direct_response=route_components_pb2.DirectResponseAction(status=204),
    )
    rt = _runtime([answer])
    call = _call(rt, _request("/x", is_grpc=False, method="GET"), allow_local_actions=True)
    assert call.cluster is None and call.breaker is None and call.deadline is None
    call.end()


def test_a_cluster_with_an_error_is_not_available() -> None:
    snap = _snapshot([r.route(cluster="a")])
    broken = XdsConfig(
        snap.listener_name,
        snap.listener,
        snap.route_config,
        {"a": ClusterConfig("a", None, error=ClusterNotAvailable("cluster 'a' does not exist"))},
        None,
        2,
    )
    rt = _runtime()
    rt.mesh.watcher.publish(broken)  # type: ignore[attr-defined]
    with pytest.raises(ClusterNotAvailable) as info:
        _call(rt)
    assert str(info.value) == (
        "virtual host 'svc', route #0 (prefix '/') -> cluster 'a': cluster 'a' does not exist"
    )


# -- faults -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "want_delay", "want_abort"),
    [
        pytest.param(
            fault_pb2.HTTPFault(abort=fault_pb2.FaultAbort(grpc_status=14, percentage=_percent())),
            None,
            14,
            id="abort",
        ),
        pytest.param(
            fault_pb2.HTTPFault(
                delay=common_fault_pb2.FaultDelay(
                    fixed_delay=r.duration(2.0), percentage=_percent()
                )
            ),
            2.0,
            None,
            id="delay",
        ),
        pytest.param(
            fault_pb2.HTTPFault(abort=fault_pb2.FaultAbort(grpc_status=14, percentage=_percent(0))),
            None,
            None,
            id="never",
        ),
        pytest.param(
            fault_pb2.HTTPFault(
                abort=fault_pb2.FaultAbort(grpc_status=14, percentage=_percent()),
                upstream_cluster="b",
            ),
            None,
            None,
            id="other-cluster",
        ),
    ],
)
def test_fault_decision(
    fault: fault_pb2.HTTPFault, want_delay: float | None, want_abort: int | None
) -> None:
    rt = _runtime(http_filters=[_fault_filter(fault)])
    call = _call(rt)
    assert call.fault.delay == want_delay
    assert call.fault.abort_grpc == want_abort
    injector = call.fault_injector
    if want_delay is None and want_abort is None:
        assert call.fault is NO_FAULT and injector is None
    else:
        assert injector is not None and injector.active_faults == 1
    call.end()
    call.end()
    if injector is not None:
        assert injector.active_faults == 0


# -- end --------------------------------------------------------------------------------------
def test_end_is_idempotent_and_releases_the_slot_and_the_retry() -> None:
    rt = _runtime([r.route(cluster="a", retry_policy=_retry())])
    breaker = rt.mesh.clusters.get("a").breakers.default  # type: ignore[union-attr]
    other = _call(rt)
    call = _call(rt)
    assert breaker.requests == 2
    attempt = call.attempt()
    assert call.attempt_done(attempt, UNAVAILABLE) is not None
    assert breaker.retry_budget.active == 1  # the granted retry is outstanding
    call.end()
    assert (breaker.requests, breaker.retry_budget.active) == (1, 0)
    call.end()  # a second end gives back nothing more: ``other`` keeps its slot
    assert (breaker.requests, breaker.retry_budget.active) == (1, 0)
    other.end()
    assert breaker.requests == 0


# -- the fast path ----------------------------------------------------------------------------
def _hedged() -> route_components_pb2.Route:
    route = r.route(cluster="a")
    route.route.hedge_policy.initial_requests.value = 2
    return route


@pytest.mark.parametrize(
    ("routes", "kw", "request_kw", "eligible"),
    [
        pytest.param([r.route(cluster="a")], {}, {}, True, id="single-cluster"),
        pytest.param(
            [r.route(cluster="a", hash_headers=["x-user"])],
            {},
            {"headers": {"x-user": "u1"}},
            False,
            id="hash-policy",
        ),
        pytest.param([_hedged()], {}, {}, False, id="hedging"),
        pytest.param(
            [r.route(cluster="a")],
            {
                "http_filters": [
                    _fault_filter(
                        fault_pb2.HTTPFault(
                            abort=fault_pb2.FaultAbort(grpc_status=14, percentage=_percent(0))
                        )
                    )
                ]
            },
            {},
            False,
            id="fault-filter-on-the-listener",
        ),
        pytest.param(
            [r.route(cluster="a")],
            {
                "http_filters": [
                    _fault_filter(
                        fault_pb2.HTTPFault(
                            abort=fault_pb2.FaultAbort(grpc_status=14, percentage=_percent())
                        )
                    )
                ]
            },
            {},
            False,
            id="fault-injected",
        ),
    ],
)
def test_lane_eligibility(
    routes: list[route_components_pb2.Route],
    kw: dict[str, Any],
    request_kw: dict[str, Any],
    eligible: bool,
) -> None:
    rt = _runtime(routes, clusters={"a": r.cluster("a", lb="ring_hash")}, **kw)
    state = rt.current
    call = _call(rt, _request(**request_kw))
    lane = Lane.for_call(rt, state, call, is_grpc=True)
    assert (lane is not None) is eligible
    if lane is not None:
        assert lane.cluster is call.cluster and lane.breaker is call.breaker
    call.end()


def test_a_weighted_route_gets_a_lane_the_transport_must_not_use() -> None:
    """``Lane.for_call`` does not look at weights: the transports only offer
    it routes that are :func:`deterministic`, which a split is not."""
    clusters = {"a": r.cluster("a"), "b": r.cluster("b")}
    rt = _runtime([r.route(weighted={"a": 50, "b": 50})], clusters=clusters)
    state = rt.current
    call = _call(rt)
    assert not deterministic(call.route)
    lane = Lane.for_call(rt, state, call, is_grpc=True)
    assert lane is not None and lane.cluster is call.cluster
    call.end()


def test_no_lane_once_the_snapshot_moved_on() -> None:
    rt = _runtime()
    state = rt.current
    call = _call(rt)
    rt.mesh.watcher.publish(_snapshot([r.route(cluster="a")], version=2))  # type: ignore[attr-defined]
    assert rt.current is not state
    assert Lane.for_call(rt, state, call, is_grpc=True) is None
    call.end()


def _lane(rt: TargetRuntime) -> Lane:
    state = rt.current
    call = _call(rt)
    lane = Lane.for_call(rt, state, call, is_grpc=True)
    call.end()
    assert lane is not None
    return lane


def test_lane_begin_then_succeeded() -> None:
    rt = _runtime([r.route(cluster="a", retry_policy=_retry(per_try=1.0))])
    lane = _lane(rt)
    first = lane.begin(rt.rng, 5.0)
    assert first is not None
    assert lane.breaker.requests == 1
    assert (first.endpoint.active_requests, first.endpoint.total_requests) == (1, 1)
    assert first.per_try and first.timeout == 1.0
    assert first.call_timeout == 5.0 and first.caller_timeout == 5.0
    assert first.call_deadline is not None and first.deadline is not None
    assert first.call_deadline - first.deadline == pytest.approx(4.0)
    lane.succeeded(first.endpoint)
    assert first.endpoint.active_requests == 0
    assert lane.breaker.requests == 1  # the transport gives the slot back
    lane.breaker.release_request()


def test_lane_with_a_per_try_timeout_of_0s_has_none() -> None:
    rt = _runtime([r.route(cluster="a", retry_policy=_retry(per_try=0.0))])
    lane = _lane(rt)
    first = lane.begin(rt.rng, 5.0)
    assert first is not None
    assert first.per_try is False and first.timeout == 5.0
    lane.abandon(first)


def test_lane_abandon_releases_everything() -> None:
    rt = _runtime()
    lane = _lane(rt)
    first = lane.begin(rt.rng, None)
    assert first is not None
    assert (first.timeout, first.call_timeout, first.per_try) == (None, None, False)
    lane.abandon(first)
    assert first.endpoint.active_requests == 0
    assert lane.breaker.requests == 0


def test_lane_resume_carries_on_with_the_same_slot() -> None:
    rt = _runtime([r.route(cluster="a", retry_policy=_retry(base=0.01))])
    lane = _lane(rt)
    first = lane.begin(rt.rng, 5.0)
    assert first is not None
    picked: list[EndpointState] = []
    call = lane.resume(rt, _request(), first, lambda endpoint, cluster: picked.append(endpoint))
    assert call.breaker is lane.breaker and call.attempts == 1
    assert call.deadline == first.call_deadline
    assert lane.breaker.requests == 1  # resuming takes no second slot

    delay = call.attempt_done(first, UNAVAILABLE)
    assert delay is not None and 0.0 <= delay < 0.01
    assert first.endpoint.active_requests == 0
    second = call.attempt()
    assert call.attempts == 2 and picked == [second.endpoint]
    assert call.attempt_done(second, SUCCESS) is None
    assert lane.breaker.requests == 1
    call.end()
    assert lane.breaker.requests == 0
    assert lane.breaker.retry_budget.active == 0


def test_lane_begin_leaves_drops_to_the_general_path() -> None:
    rt = _runtime(assignments={"a": _dropping("a", 0)})
    lane = _lane(rt)
    assert lane.begin(rt.rng, None) is None
    assert lane.breaker.requests == 0


def test_lane_begin_on_a_full_breaker() -> None:
    rt = _runtime(clusters={"a": r.cluster("a", max_requests=1)})
    lane = _lane(rt)
    first = lane.begin(rt.rng, None)
    assert first is not None
    with pytest.raises(CircuitBreakerOpen, match="max_requests=1 reached for cluster 'a'"):
        lane.begin(rt.rng, None)
    lane.abandon(first)
    assert lane.breaker.requests == 0
