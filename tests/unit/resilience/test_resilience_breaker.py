"""Circuit breakers (gRFC A32, Envoy) and retry budgets (Envoy retry_budget)."""

from __future__ import annotations

import random

import pytest

from proxyless.errors import CircuitBreakerOpen
from proxyless.resilience import CircuitBreaker, ClusterCircuitBreakers
from proxyless.resources.model import CircuitBreakers, RetryBudget, Thresholds

CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"


def test_max_requests_10_of_50() -> None:
    breaker = CircuitBreaker(CLUSTER, Thresholds(max_requests=10))
    admitted = [breaker.try_acquire_request() for _ in range(50)]
    assert admitted.count(True) == 10
    assert admitted.count(False) == 40
    assert admitted[:10] == [True] * 10
    assert breaker.stats["upstream_rq_overflow"] == 40
    err = breaker.open_error("max_requests")
    assert isinstance(err, CircuitBreakerOpen)
    assert err.flag == "UO"
    assert str(err) == f"circuit breaker max_requests=10 reached for cluster '{CLUSTER}'"
    for _ in range(10):
        breaker.release_request()
    assert breaker.requests == 0
    assert breaker.try_acquire_request()


def test_default_max_requests_is_1024() -> None:
    breaker = CircuitBreaker(CLUSTER)
    assert sum(breaker.try_acquire_request() for _ in range(1100)) == 1024


@pytest.mark.parametrize(
    ("acquire", "release", "limit_field", "counter"),
    [
        pytest.param(
            "try_acquire_pending",
            "release_pending",
            "max_pending_requests",
            "upstream_rq_pending_overflow",
            id="pending",
        ),
        pytest.param(
            "try_acquire_connection",
            "release_connection",
            "max_connections",
            "upstream_cx_overflow",
            id="connections",
        ),
        pytest.param(
            "try_acquire_request",
            "release_request",
            "max_requests",
            "upstream_rq_overflow",
            id="requests",
        ),
    ],
)
def test_each_limit_counts_its_overflow(
    acquire: str, release: str, limit_field: str, counter: str
) -> None:
    breaker = CircuitBreaker(CLUSTER, Thresholds(**{limit_field: 2}))  # type: ignore[arg-type]
    results = [getattr(breaker, acquire)() for _ in range(5)]
    assert results == [True, True, False, False, False]
    assert breaker.stats[counter] == 3
    assert sum(breaker.stats.values()) == 3
    getattr(breaker, release)()
    assert getattr(breaker, acquire)()
    assert f"circuit breaker {limit_field}=2 reached" in str(breaker.open_error(limit_field))  # type: ignore[arg-type]


def test_release_never_goes_negative() -> None:
    breaker = CircuitBreaker(CLUSTER, Thresholds(max_requests=1))
    breaker.release_request()
    assert breaker.requests == 0
    assert breaker.try_acquire_request()
    assert not breaker.try_acquire_request()


def test_lowering_the_limit_keeps_counts_gRFC_A32() -> None:
    breaker = CircuitBreaker(CLUSTER, Thresholds(max_requests=200))
    for _ in range(105):
        assert breaker.try_acquire_request()
    breaker.update(Thresholds(max_requests=100))
    assert breaker.requests == 105
    assert not breaker.try_acquire_request()
    for _ in range(5):
        breaker.release_request()
    assert not breaker.try_acquire_request()  # 100 in flight, limit 100
    breaker.release_request()
    assert breaker.try_acquire_request()


def test_gauges() -> None:
    breaker = CircuitBreaker(CLUSTER, Thresholds(max_requests=2))
    breaker.try_acquire_request()
    assert breaker.gauges()["rq_open"] == 0
    assert breaker.gauges()["remaining_rq"] == 1
    breaker.try_acquire_request()
    assert breaker.gauges()["rq_open"] == 1


def test_cluster_breakers_per_priority() -> None:
    breakers = ClusterCircuitBreakers(
        CLUSTER,
        CircuitBreakers(default=Thresholds(max_requests=1), high=Thresholds(max_requests=2)),
    )
    assert breakers.for_priority().try_acquire_request()
    assert not breakers.for_priority("default").try_acquire_request()
    assert breakers.for_priority("high").try_acquire_request()
    assert "priority high" in str(breakers.high.open_error())
    breakers.update(CircuitBreakers(default=Thresholds(max_requests=5)))
    assert breakers.default.requests == 1 and breakers.default.max_requests == 5


# -- retry budget -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("thresholds", "active", "pending", "limit"),
    [
        pytest.param(Thresholds(), 0, 0, 3, id="default-budget-floor"),
        pytest.param(Thresholds(), 10, 0, 3, id="default-20pct-of-10-is-2-floor-3"),
        pytest.param(Thresholds(), 20, 0, 4, id="default-20pct-of-20"),
        pytest.param(Thresholds(), 19, 0, 3, id="default-truncates-3.8"),
        pytest.param(Thresholds(), 150, 50, 40, id="default-counts-pending"),
        pytest.param(
            Thresholds(retry_budget=RetryBudget(50.0, 1)), 7, 0, 3, id="custom-50pct-of-7"
        ),
        pytest.param(
            Thresholds(retry_budget=RetryBudget(0.0, 0)), 100, 0, 0, id="zero-budget-no-retries"
        ),
        pytest.param(
            Thresholds(max_retries=5, max_retries_explicit=True), 1000, 0, 5, id="explicit-max"
        ),
        pytest.param(
            Thresholds(max_retries=5, max_retries_explicit=True, retry_budget=RetryBudget()),
            1000,
            0,
            200,
            id="budget-overrides-max",
        ),
        pytest.param(Thresholds(max_retries=1), 0, 0, 3, id="implicit-max-ignored"),
    ],
)
def test_budget_arithmetic(thresholds: Thresholds, active: int, pending: int, limit: int) -> None:
    breaker = CircuitBreaker(
        CLUSTER,
        Thresholds(
            max_requests=10_000,
            max_pending_requests=10_000,
            max_retries=thresholds.max_retries,
            max_retries_explicit=thresholds.max_retries_explicit,
            retry_budget=thresholds.retry_budget,
        ),
    )
    for _ in range(active):
        assert breaker.try_acquire_request()
    for _ in range(pending):
        assert breaker.try_acquire_pending()
    budget = breaker.retry_budget
    assert budget.limit() == limit
    granted = sum(budget.try_acquire_retry() for _ in range(limit + 5))
    assert granted == limit
    assert breaker.stats["upstream_rq_retry_overflow"] == 5
    assert breaker.stats["budget_exhausted"] == (5 if budget.uses_budget else 0)
    budget.release_retry()
    assert budget.try_acquire_retry() is (limit > 0)


def test_budget_update_keeps_active_retries() -> None:
    breaker = CircuitBreaker(CLUSTER)
    budget = breaker.retry_budget
    for _ in range(3):
        assert budget.try_acquire_retry()
    breaker.update(Thresholds(max_retries=1, max_retries_explicit=True))
    assert budget.active == 3
    assert not budget.try_acquire_retry()
    assert breaker.gauges()["rq_retry_open"] == 1


def test_200_concurrent_callers_never_exceed_the_budget() -> None:
    """200 callers against a cluster where every attempt fails, simulated by
    counters: a caller holds a request slot while its attempt is in flight and
    a retry slot from the grant until the retried attempt ends (so retries
    waiting in backoff count). Every grant must leave the retries in flight
    within max(3, 20% of the active requests at that moment)."""
    rng = random.Random(2024)
    breaker = CircuitBreaker(CLUSTER)
    budget = breaker.retry_budget
    callers = 200
    # phase per caller: "idle" (between calls), "attempt" (request slot held),
    # "backoff" (retry slot held, no request), "retry" (both held); a caller
    # whose call ended starts a new one later.
    phase = ["idle"] * callers
    retries_left = [2] * callers
    holds_retry = [False] * callers
    peak_retries = 0
    grants = refusals = 0
    for _step in range(20_000):
        i = rng.randrange(callers)
        p = phase[i]
        if p == "idle":
            assert breaker.try_acquire_request()
            phase[i] = "attempt"
            retries_left[i] = 2
        elif p in ("attempt", "retry"):
            breaker.release_request()  # the attempt failed
            if holds_retry[i]:
                budget.release_retry()
                holds_retry[i] = False
            if retries_left[i] == 0:
                phase[i] = "idle"
                continue
            if budget.try_acquire_retry():
                grants += 1
                limit = max(3, int(0.2 * (breaker.requests + breaker.pending_requests)))
                assert budget.active <= limit
                holds_retry[i] = True
                retries_left[i] -= 1
                phase[i] = "backoff"
                peak_retries = max(peak_retries, budget.active)
            else:
                refusals += 1
                phase[i] = "idle"  # ends with the last error: retry budget exhausted
        elif p == "backoff":
            assert breaker.try_acquire_request()
            phase[i] = "retry"
    assert grants > 0 and refusals > 0
    assert peak_retries <= max(3, int(0.2 * callers))
    assert breaker.stats["budget_exhausted"] == refusals
    assert budget.active == sum(holds_retry)
