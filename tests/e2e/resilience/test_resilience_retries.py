"""Retries on the sync gRPC channel (gRFC A44; Envoy ``RetryPolicy``):
attempts seen at real backends, ``previous_hosts`` moving the retry to
another endpoint, and a per-try timeout cutting a slow attempt."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from tests.e2e.resilience.conftest import (
    CLUSTER,
    Echo,
    Service,
    backend_of,
    reset_counts,
    retry_policy,
    runtime,
    wait_served,
)

from proxyless.mesh import Mesh
from proxyless.testing.backends import EchoServer
from proxyless.testing.resources import cluster, route

Backends = Callable[..., list[EchoServer]]


def test_two_failures_then_success_takes_three_attempts(
    service: Service, backends: Backends, echo: Echo
) -> None:
    (a,) = backends("a")
    service.publish([a], retry_policy=retry_policy("unavailable", 2))
    wait_served(echo, [a])
    reset_counts([a])

    a.fail_next(2, grpc.StatusCode.UNAVAILABLE)
    reply = echo(b"x", timeout=5)

    assert backend_of(reply) == "a"
    assert a.calls == 3


def test_attempts_are_capped_by_num_retries(
    service: Service, backends: Backends, echo: Echo
) -> None:
    (a,) = backends("a")
    service.publish([a], retry_policy=retry_policy("unavailable", 2))
    wait_served(echo, [a])
    reset_counts([a])

    a.fail_next(3, grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.RpcError) as info:
        echo(b"x", timeout=5)

    assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert "a: injected failure" in info.value.details()  # type: ignore[attr-defined]
    assert a.calls == 3


def test_status_not_in_retry_on_is_not_retried(
    service: Service, backends: Backends, echo: Echo
) -> None:
    (a,) = backends("a")
    service.publish([a], retry_policy=retry_policy("unavailable", 2))
    wait_served(echo, [a])
    reset_counts([a])

    a.fail_next(1, grpc.StatusCode.INTERNAL)
    with pytest.raises(grpc.RpcError) as info:
        echo(b"x", timeout=5)

    assert info.value.code() is grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert a.calls == 1


@pytest.mark.parametrize(
    ("previous_hosts", "retry_goes_elsewhere"),
    [
        pytest.param(True, True, id="previous-hosts-picks-the-other-endpoint"),
        pytest.param(False, False, id="without-predicate-ring-hash-repicks-the-same"),
    ],
)
def test_previous_hosts_sends_the_retry_to_another_endpoint(
    service: Service,
    backends: Backends,
    echo: Echo,
    previous_hosts: bool,
    retry_goes_elsewhere: bool,
) -> None:
    # Ring hash on a fixed header pins every attempt of a call to one
    # endpoint, so only the host predicate can move the retry.
    a, b = backends("a", "b")
    service.publish(
        [a, b],
        cluster_proto=cluster(CLUSTER, lb="ring_hash"),
        routes=[
            route(
                prefix="/",
                cluster=CLUSTER,
                hash_headers=["x-key"],
                retry_policy=retry_policy("unavailable", 2, previous_hosts=previous_hosts),
            )
        ],
    )
    md = (("x-key", "user-42"),)
    wait_served(echo, [a, b])
    owner_name = backend_of(echo(b"x", timeout=5, metadata=md))
    assert {backend_of(echo(b"x", timeout=5, metadata=md)) for _ in range(5)} == {owner_name}
    owner, other = (a, b) if owner_name == "a" else (b, a)
    reset_counts([a, b])

    owner.fail_next(1, grpc.StatusCode.UNAVAILABLE)
    reply = echo(b"x", timeout=5, metadata=md)

    assert owner.calls == 1 + (0 if retry_goes_elsewhere else 1)
    assert other.calls == (1 if retry_goes_elsewhere else 0)
    assert backend_of(reply) == (other.name if retry_goes_elsewhere else owner.name)


@pytest.mark.parametrize(
    "retry_on",
    [
        pytest.param("unavailable,deadline-exceeded", id="deadline-exceeded"),
        # Envoy's HTTP conditions that cover a per-try timeout (docs/resilience.md)
        pytest.param("connect-failure,reset,unavailable", id="reset"),
        pytest.param("gateway-error", id="gateway-error"),
    ],
)
def test_per_try_timeout_cuts_a_slow_attempt_and_retries(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh, retry_on: str
) -> None:
    # One slow endpoint (answers after 2.5 s) and one fast. Every call has a
    # 2 s deadline, so a call whose first attempt lands on the slow endpoint
    # succeeds only if the 0.5 s per-try timeout cut that attempt and the
    # retry went to the fast endpoint (previous_hosts). The margins are wide
    # so a loaded machine cannot make a fast attempt look slow.
    slow, fast = backends("slow", "fast")
    service.publish(
        [slow, fast],
        retry_policy=retry_policy(retry_on, 2, per_try_timeout=0.5, previous_hosts=True),
    )
    wait_served(echo, [slow, fast])
    reset_counts([slow, fast])
    slow.delay = 2.5

    calls = 4
    served = [backend_of(echo(b"x", timeout=2.0)) for _ in range(calls)]

    assert served == ["fast"] * calls
    assert slow.calls >= 1, "round robin never started a call on the slow endpoint"
    assert fast.calls == calls
    breaker = runtime(mesh).breakers.default
    assert breaker.retry_budget.active == 0
    assert breaker.requests == 0


def test_per_try_timeout_without_deadline_exceeded_in_retry_on_is_final(
    service: Service, backends: Backends, echo: Echo
) -> None:
    (slow,) = backends("slow")
    service.publish([slow], retry_policy=retry_policy("unavailable", 2, per_try_timeout=0.2))
    wait_served(echo, [slow])
    reset_counts([slow])
    slow.delay = 1.0

    with pytest.raises(grpc.RpcError) as info:
        echo(b"x", timeout=5)

    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    assert slow.calls == 1


def _hedged_route(hedge_on_per_try_timeout: bool = False, **policy: Any) -> Any:
    r = route(prefix="/", cluster=CLUSTER, retry_policy=retry_policy("unavailable", 2, **policy))
    hedge = r.route.hedge_policy
    if hedge_on_per_try_timeout:
        hedge.hedge_on_per_try_timeout = True
    else:
        hedge.initial_requests.value = 2
    return r


def test_hedged_call_takes_the_first_response(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    # initial_requests 2: every call starts on both endpoints at once; the
    # slow one (1.5 s, longer than the 1 s deadline) never wins.
    slow, fast = backends("slow", "fast")
    service.publish([slow, fast], routes=[_hedged_route()])
    wait_served(echo, [slow, fast])
    reset_counts([slow, fast])
    slow.delay = 1.5
    states = {es.address: es for es in runtime(mesh).endpoints()}
    before = {addr: es.total_requests for addr, es in states.items()}

    served = [backend_of(echo(b"x", timeout=1.0)) for _ in range(3)]

    assert served == ["fast"] * 3
    # At least the 3 winners: the warm-up's hedged call also sent an attempt
    # to each endpoint, and its cancelled loser can reach a server after
    # reset_counts, so exact server counts are racy.
    assert fast.calls >= 3
    # Both endpoints got an attempt of every call (the slow one may be
    # cancelled before its server saw it, so count attempts on our side).
    started = {addr: es.total_requests - before[addr] for addr, es in states.items()}
    assert started == {slow.address: 3, fast.address: 3}, started
    assert all(es.active_requests == 0 for es in states.values()), {
        a: (es.active_requests, es.total_requests) for a, es in states.items()
    }
    breaker = runtime(mesh).breakers.default
    assert breaker.retry_budget.active == 0
    assert breaker.requests == 0


def test_hedge_on_per_try_timeout_keeps_the_slow_attempt_running(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    # The per-try timeout starts a second attempt; the first keeps running
    # and the call takes whichever answers first.
    slow, fast = backends("slow", "fast")
    service.publish(
        [slow, fast],
        routes=[
            _hedged_route(hedge_on_per_try_timeout=True, per_try_timeout=0.2, previous_hosts=True)
        ],
    )
    wait_served(echo, [slow, fast])
    reset_counts([slow, fast])
    slow.delay = 1.5

    served = [backend_of(echo(b"x", timeout=1.0)) for _ in range(4)]

    assert served == ["fast"] * 4
    assert fast.calls == 4
    assert slow.calls >= 1
    assert runtime(mesh).breakers.default.retry_budget.active == 0
