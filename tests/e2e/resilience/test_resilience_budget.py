"""The retry budget under load (Envoy ``circuit_breakers.thresholds.retry_budget``):
with every call failing, retries outstanding never exceed
``max(min_retry_concurrency, budget_percent% of active requests)``, refused
retries are counted, and a refused call ends with its last attempt's status
and a reason saying "retry budget exhausted".

The load is bounded in calls (200 callers x 3 calls) and in time; the
assertions are on counters, never on durations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
from tests.e2e.resilience.conftest import (
    CLUSTER,
    Echo,
    Service,
    breaker_cluster,
    reset_counts,
    retry_policy,
    runtime,
    wait_served,
    wait_until,
)

from proxyless.mesh import Mesh
from proxyless.testing.backends import EchoServer

Backends = Callable[..., list[EchoServer]]

CALLERS = 200
CALLS_EACH = 3
NUM_RETRIES = 4
TIME_CAP = 30.0


def test_retries_in_flight_never_exceed_the_budget(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    (a,) = backends("a", max_workers=64)
    service.publish(
        [a],
        cluster_proto=breaker_cluster(budget_percent=20.0, min_retry_concurrency=3),
        # Backoff windows of 20..200 ms keep granted retries outstanding for a while.
        retry_policy=retry_policy("unavailable", NUM_RETRIES, base_interval=0.02, max_interval=0.2),
    )
    wait_served(echo, [a])
    breaker = runtime(mesh).breakers.default
    budget = breaker.retry_budget
    assert budget.uses_budget and budget.budget_percent == 20.0
    reset_counts([a])
    a.fail_always(grpc.StatusCode.UNAVAILABLE)

    # -- a sampler watching the budget's counters while the load runs ------------
    peak = {"retries": 0, "requests": 0, "samples": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            retries, requests = budget.active, breaker.requests
            peak["retries"] = max(peak["retries"], retries)
            peak["requests"] = max(peak["requests"], requests)
            peak["samples"] += 1
            time.sleep(0.0005)

    # -- the load ------------------------------------------------------------------
    deadline = time.monotonic() + TIME_CAP
    barrier = threading.Barrier(CALLERS)
    results: list[grpc.RpcError | None] = []
    lock = threading.Lock()

    def caller() -> None:
        barrier.wait(timeout=20)
        for _ in range(CALLS_EACH):
            if time.monotonic() > deadline:
                return
            outcome: grpc.RpcError | None = None
            try:
                echo(b"x", timeout=10)
            except grpc.RpcError as exc:
                outcome = exc
            with lock:
                results.append(outcome)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIME_CAP + 20)
    stop.set()
    sampler.join(5)
    assert not any(t.is_alive() for t in threads)

    # -- every call failed; the refused ones say why ---------------------------------
    assert len(results) == CALLERS * CALLS_EACH, "the time cap cut the load short"
    assert all(r is not None for r in results), "a call succeeded against a failing backend"
    errors = [r for r in results if r is not None]
    refused = [e for e in errors if "retry budget exhausted" in (e.details() or "")]  # type: ignore[attr-defined]
    exhausted = [e for e in errors if e not in refused]
    for err in errors:
        assert err.code() is grpc.StatusCode.UNAVAILABLE, err  # type: ignore[attr-defined]
    for err in refused:
        details: str = err.details()  # type: ignore[attr-defined]
        assert "a: injected failure" in details, details  # the last attempt's error
        assert f"retry budget exhausted for cluster {CLUSTER!r}" in details, details
    for err in exhausted:
        assert (err.details() or "") == "a: injected failure", err.details()  # type: ignore[attr-defined]

    # -- counters -------------------------------------------------------------------
    stats = breaker.stats
    assert stats["budget_exhausted"] > 0, stats
    assert stats["budget_exhausted"] == len(refused), (stats, len(refused))
    assert stats["upstream_rq_retry_overflow"] == stats["budget_exhausted"]
    assert peak["samples"] > 100, peak
    # At most CALLERS calls are ever active, so the budget allows at most
    # max(3, 20% of 200) = 40 retries outstanding at any time.
    limit = max(3, int(0.20 * CALLERS))
    assert peak["requests"] <= CALLERS, peak
    assert 0 < peak["retries"] <= limit, peak
    # Retries were cut: fewer attempts reached the backend than the policy alone allows.
    calls = len(results)
    assert calls < a.calls < calls * (NUM_RETRIES + 1), (a.calls, calls)
    assert len(exhausted) * (NUM_RETRIES + 1) + len(refused) <= a.calls
    # Everything given back once the load is over.
    wait_until(lambda: breaker.requests == 0, what="request slots to be released")
    assert budget.active == 0, budget
