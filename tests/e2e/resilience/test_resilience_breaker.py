"""Circuit breaking on the sync gRPC channel (gRFC A32; Envoy
``circuit_breakers.thresholds.max_requests``): an overflow fails fast with
UNAVAILABLE naming the cluster and the limit, is counted and never retried."""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc
from tests.e2e.resilience.conftest import (
    CLUSTER,
    Echo,
    Service,
    backend_of,
    breaker_cluster,
    reset_counts,
    retry_policy,
    runtime,
    wait_served,
    wait_until,
)

from proxyless import errors
from proxyless.mesh import Mesh
from proxyless.testing.backends import EchoServer

Backends = Callable[..., list[EchoServer]]


def test_max_requests_overflow_fails_fast_and_is_not_retried(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    (a,) = backends("a", max_workers=32)
    service.publish(
        [a],
        cluster_proto=breaker_cluster(max_requests=10),
        # UNAVAILABLE is retryable on this route: the overflow must still not be retried.
        retry_policy=retry_policy("unavailable", 3),
    )
    wait_served(echo, [a])
    breaker = runtime(mesh).breakers.default
    assert breaker.max_requests == 10
    reset_counts([a])
    # Slow enough that the ten admitted calls are still in flight when the
    # other forty arrive (they all start together at a barrier).
    a.delay = 1.5

    callers = 50
    barrier = threading.Barrier(callers)
    ok: list[str] = []
    failed: list[grpc.RpcError] = []
    lock = threading.Lock()

    def caller() -> None:
        barrier.wait(timeout=10)
        try:
            reply = echo(b"x", timeout=10)
        except grpc.RpcError as exc:
            with lock:
                failed.append(exc)
        else:
            with lock:
                ok.append(backend_of(reply))

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)

    assert len(ok) == 10, (len(ok), [f.details() for f in failed[:3]])  # type: ignore[attr-defined]
    assert len(failed) == 40
    for err in failed:
        assert err.code() is grpc.StatusCode.UNAVAILABLE, err  # type: ignore[attr-defined]
        details: str = err.details()  # type: ignore[attr-defined]
        assert "max_requests=10" in details, details
        assert f"cluster {CLUSTER!r}" in details, details
        assert isinstance(getattr(err, "proxyless_error", None), errors.CircuitBreakerOpen)
    # Not retried: only the admitted calls reached the backend, once each.
    assert a.calls == 10
    assert a.max_in_flight == 10
    assert breaker.stats["upstream_rq_overflow"] == 40
    assert breaker.stats["upstream_rq_retry_overflow"] == 0
    wait_until(lambda: breaker.requests == 0, what="every request slot to be released")
    assert breaker.retry_budget.active == 0
