"""Retry conditions, attempts, backoff, pushback, previous_hosts and hedging."""

from __future__ import annotations

import random

import pytest

from proxyless.errors import RetryBudgetExhausted
from proxyless.resilience import (
    CONNECT_FAILURE,
    LOCAL_CIRCUIT_OPEN,
    NO_HEDGING,
    OVERALL_TIMEOUT,
    PER_TRY_TIMEOUT,
    REFUSED_STREAM,
    RESET,
    SUCCESS,
    CircuitBreaker,
    CompiledRetryPolicy,
    HedgePlan,
    Outcome,
    RetryState,
    retry_budget_exhausted,
)
from proxyless.resources.model import (
    HeaderMatcher,
    HedgePolicy,
    RateLimitedRetryBackOff,
    ResetHeader,
    RetryPolicy,
    StringMatcher,
    Thresholds,
)

GRPC_ALL = frozenset(
    {"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
)


def grpc_policy(*conditions: str, num_retries: int = 3) -> CompiledRetryPolicy:
    return CompiledRetryPolicy(
        RetryPolicy(retry_on=frozenset(conditions), num_retries=num_retries), True
    )


def http_policy(*conditions: str, **kw: object) -> CompiledRetryPolicy:
    return CompiledRetryPolicy(RetryPolicy(retry_on=frozenset(conditions), **kw), False)  # type: ignore[arg-type]


# -- gRPC conditions (gRFC A44) ----------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "outcome", "expected"),
    [
        pytest.param(("unavailable",), Outcome.grpc("UNAVAILABLE"), True, id="unavailable"),
        pytest.param(("cancelled",), Outcome.grpc("CANCELLED"), True, id="cancelled"),
        pytest.param(("internal",), Outcome.grpc("INTERNAL"), True, id="internal"),
        pytest.param(
            ("resource-exhausted",), Outcome.grpc("RESOURCE_EXHAUSTED"), True, id="exhausted"
        ),
        pytest.param(
            ("deadline-exceeded",), Outcome.grpc("DEADLINE_EXCEEDED"), True, id="deadline"
        ),
        pytest.param(("unavailable",), Outcome.grpc("INTERNAL"), False, id="other-status"),
        pytest.param(tuple(GRPC_ALL), Outcome.grpc("UNKNOWN"), False, id="unknown-never"),
        pytest.param(tuple(GRPC_ALL), Outcome.grpc("NOT_FOUND"), False, id="not-found-never"),
        pytest.param(tuple(GRPC_ALL), SUCCESS, False, id="success"),
        pytest.param(("unavailable",), RESET, True, id="transport-reset-is-unavailable"),
        pytest.param(("unavailable",), CONNECT_FAILURE, True, id="connect-is-unavailable"),
        pytest.param(("unavailable",), REFUSED_STREAM, True, id="refused-is-unavailable"),
        pytest.param(("internal",), RESET, False, id="reset-needs-unavailable"),
        pytest.param(("deadline-exceeded",), PER_TRY_TIMEOUT, True, id="per-try-timeout"),
        pytest.param(("unavailable",), PER_TRY_TIMEOUT, False, id="per-try-needs-deadline"),
        pytest.param(tuple(GRPC_ALL), OVERALL_TIMEOUT, False, id="overall-deadline-never"),
        pytest.param(tuple(GRPC_ALL), LOCAL_CIRCUIT_OPEN, False, id="breaker-never-retried"),
        pytest.param(("5xx", "unavailable"), Outcome.grpc("INTERNAL"), False, id="http-ignored"),
        pytest.param(("reset",), PER_TRY_TIMEOUT, True, id="reset-retries-per-try-timeout"),
        pytest.param(("5xx",), PER_TRY_TIMEOUT, True, id="5xx-retries-per-try-timeout"),
        pytest.param(
            ("gateway-error",), PER_TRY_TIMEOUT, True, id="gateway-error-retries-per-try-timeout"
        ),
        pytest.param(("reset",), OVERALL_TIMEOUT, False, id="reset-not-overall-deadline"),
        pytest.param(("reset",), RESET, False, id="reset-not-transport-reset"),
        pytest.param(("5xx",), Outcome.grpc("UNAVAILABLE"), False, id="5xx-not-status"),
        pytest.param(("connect-failure",), PER_TRY_TIMEOUT, False, id="connect-failure-no"),
        pytest.param(
            ("connect-failure", "reset", "unavailable"),
            PER_TRY_TIMEOUT,
            True,
            id="issue-route-per-try-timeout",
        ),
        pytest.param(
            ("connect-failure", "reset", "unavailable"),
            CONNECT_FAILURE,
            True,
            id="issue-route-connect-failure",
        ),
    ],
)
def test_grpc_retryable(conditions: tuple[str, ...], outcome: Outcome, expected: bool) -> None:
    assert grpc_policy(*conditions).retryable(outcome) is expected


def test_grpc_policy_with_only_http_conditions_retries_per_try_timeouts() -> None:
    policy = grpc_policy("5xx", "gateway-error", "reset", "retriable-4xx")
    assert policy.enabled
    assert policy.max_attempts == 4
    assert policy.conditions == {"5xx", "gateway-error", "reset"}
    assert policy.ignored_conditions == {"retriable-4xx"}
    assert policy.retryable(PER_TRY_TIMEOUT)
    for outcome in (OVERALL_TIMEOUT, RESET, CONNECT_FAILURE, Outcome.grpc("INTERNAL")):
        assert not policy.retryable(outcome), outcome


def test_grpc_policy_with_other_http_conditions_is_no_policy() -> None:
    policy = grpc_policy("connect-failure", "retriable-4xx", "refused-stream")
    assert not policy.enabled
    assert policy.max_attempts == 1
    assert policy.ignored_conditions == {"connect-failure", "retriable-4xx", "refused-stream"}


@pytest.mark.parametrize(
    ("is_grpc", "num_retries", "attempts"),
    [
        pytest.param(True, 1, 2, id="grpc-default"),
        pytest.param(True, 4, 5, id="grpc-four-retries"),
        pytest.param(True, 10, 5, id="grpc-capped-at-5"),
        pytest.param(False, 10, 11, id="http-not-capped"),
        pytest.param(False, 0, 1, id="http-zero-retries"),
    ],
)
def test_max_attempts(is_grpc: bool, num_retries: int, attempts: int) -> None:
    cond = "unavailable" if is_grpc else "5xx"
    policy = CompiledRetryPolicy(
        RetryPolicy(retry_on=frozenset({cond}), num_retries=num_retries), is_grpc
    )
    assert policy.max_attempts == attempts


def test_no_policy_means_one_attempt() -> None:
    for is_grpc in (True, False):
        policy = CompiledRetryPolicy.from_policy(None, is_grpc)
        assert policy.max_attempts == 1
        assert not policy.retryable(Outcome.grpc("UNAVAILABLE"))


def test_compiled_policy_is_cached_by_identity() -> None:
    p = RetryPolicy(retry_on=frozenset({"unavailable"}))
    assert CompiledRetryPolicy.from_policy(p, True) is CompiledRetryPolicy.from_policy(p, True)
    assert CompiledRetryPolicy.from_policy(p, True) is not CompiledRetryPolicy.from_policy(p, False)
    twin = RetryPolicy(retry_on=frozenset({"unavailable"}))
    assert CompiledRetryPolicy.from_policy(twin, True) is not CompiledRetryPolicy.from_policy(
        p, True
    )


# -- HTTP conditions (Envoy x-envoy-retry-on) ---------------------------------------

RETRY_HEADER = HeaderMatcher(
    name="X-Retry-Me", kind="exact", string_matcher=StringMatcher("exact", "yes")
)


@pytest.mark.parametrize(
    ("conditions", "outcome", "expected"),
    [
        pytest.param(("5xx",), Outcome.http(500), True, id="5xx-500"),
        pytest.param(("5xx",), Outcome.http(503), True, id="5xx-503"),
        pytest.param(("5xx",), Outcome.http(404), False, id="5xx-not-404"),
        pytest.param(("5xx",), RESET, True, id="5xx-reset"),
        pytest.param(("5xx",), CONNECT_FAILURE, True, id="5xx-connect-failure"),
        pytest.param(("5xx",), REFUSED_STREAM, True, id="5xx-refused-stream"),
        pytest.param(("5xx",), PER_TRY_TIMEOUT, True, id="5xx-per-try-timeout"),
        pytest.param(("5xx",), OVERALL_TIMEOUT, False, id="5xx-not-overall-timeout"),
        pytest.param(("5xx",), LOCAL_CIRCUIT_OPEN, False, id="5xx-not-breaker"),
        pytest.param(("gateway-error",), Outcome.http(502), True, id="gateway-502"),
        pytest.param(("gateway-error",), Outcome.http(504), True, id="gateway-504"),
        pytest.param(("gateway-error",), Outcome.http(500), False, id="gateway-not-500"),
        pytest.param(("gateway-error",), PER_TRY_TIMEOUT, True, id="gateway-per-try-timeout"),
        pytest.param(("reset",), RESET, True, id="reset"),
        pytest.param(("reset",), Outcome.http(503), False, id="reset-not-503"),
        pytest.param(("connect-failure",), CONNECT_FAILURE, True, id="connect-failure"),
        pytest.param(("connect-failure",), RESET, False, id="connect-failure-not-reset"),
        pytest.param(("refused-stream",), REFUSED_STREAM, True, id="refused-stream"),
        pytest.param(("refused-stream",), RESET, False, id="refused-stream-not-reset"),
        pytest.param(("reset-before-request",), CONNECT_FAILURE, True, id="before-request"),
        pytest.param(("retriable-4xx",), Outcome.http(409), True, id="4xx-409"),
        pytest.param(("retriable-4xx",), Outcome.http(429), False, id="4xx-not-429"),
        pytest.param(("retriable-status-codes",), Outcome.http(429), True, id="codes-429"),
        pytest.param(("retriable-status-codes",), Outcome.http(500), False, id="codes-not-500"),
        pytest.param(
            ("retriable-headers",),
            Outcome.http(500, {"x-retry-me": "yes"}),
            True,
            id="headers-match",
        ),
        pytest.param(
            ("retriable-headers",),
            Outcome.http(200, {"x-retry-me": "yes"}),
            True,
            id="headers-match-on-success",
        ),
        pytest.param(
            ("retriable-headers",), Outcome.http(500, {"x-retry-me": "no"}), False, id="headers-no"
        ),
        pytest.param(
            ("envoy-ratelimited",),
            Outcome.http(429, {"x-envoy-ratelimited": "true"}),
            True,
            id="envoy-ratelimited",
        ),
        pytest.param(
            ("5xx",),
            Outcome.http(503, {"x-envoy-overloaded": "true"}),
            False,
            id="overloaded-never",
        ),
        pytest.param(("http3-post-connect-failure",), RESET, False, id="http3-ignored"),
        pytest.param(("unavailable",), Outcome.http(503), False, id="grpc-ignored-for-http"),
    ],
)
def test_http_retryable(conditions: tuple[str, ...], outcome: Outcome, expected: bool) -> None:
    policy = http_policy(
        *conditions,
        retriable_status_codes=frozenset({429}),
        retriable_headers=(RETRY_HEADER,),
    )
    assert policy.retryable(outcome) is expected


@pytest.mark.parametrize(
    ("conditions", "codes", "inspects"),
    [
        pytest.param(("5xx",), frozenset(), False, id="5xx"),
        pytest.param(("retriable-headers",), frozenset(), True, id="headers"),
        pytest.param(("retriable-status-codes",), frozenset({429}), False, id="codes-4xx"),
        pytest.param(("retriable-status-codes",), frozenset({204}), True, id="codes-2xx"),
        pytest.param(("envoy-ratelimited",), frozenset(), True, id="ratelimited"),
    ],
)
def test_inspects_success(
    conditions: tuple[str, ...], codes: frozenset[int], inspects: bool
) -> None:
    policy = http_policy(
        *conditions, retriable_status_codes=codes, retriable_headers=(RETRY_HEADER,)
    )
    assert policy.inspects_success is inspects


def test_retriable_request_headers_gate() -> None:
    gate = HeaderMatcher(name="x-idempotent", kind="present")
    policy = http_policy("5xx", retriable_request_headers=(gate,))
    assert policy.request_allows_retry({"x-idempotent": "1"})
    assert not policy.request_allows_retry({})
    assert http_policy("5xx").request_allows_retry({})


# -- backoff ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "maximum", "windows"),
    [
        pytest.param(0.025, 0.25, (0.025, 0.05, 0.1, 0.2, 0.25, 0.25), id="defaults"),
        pytest.param(0.1, 0.15, (0.1, 0.15, 0.15), id="max-below-double"),
        pytest.param(0.0001, 0.01, (0.001, 0.002, 0.004), id="below-1ms-rounds-up"),
        pytest.param(1.0, 1.0, (1.0, 1.0), id="base-equals-max"),
    ],
)
def test_backoff_bounds_over_many_samples(
    base: float, maximum: float, windows: tuple[float, ...]
) -> None:
    policy = http_policy("5xx", base_interval=base, max_interval=maximum)
    rng = random.Random(7)
    for attempt, window in enumerate(windows, start=1):
        samples = [policy.backoff(attempt, rng) for _ in range(2000)]
        assert min(samples) >= 0.0
        assert max(samples) < window
        assert max(samples) > 0.95 * window  # the whole range is used
        assert abs(sum(samples) / len(samples) - window / 2) < 0.05 * window


def test_backoff_never_exceeds_max_for_huge_attempts() -> None:
    policy = http_policy("5xx")
    rng = random.Random(1)
    assert all(policy.backoff(n, rng) < 0.25 for n in (10, 63, 64, 1000))


def _state(policy: CompiledRetryPolicy) -> RetryState:
    return RetryState(policy, first_host=("10.0.0.1", 80))


def test_decide_uses_growing_backoff_windows() -> None:
    policy = grpc_policy("unavailable", num_retries=4)
    state = _state(policy)
    rng = random.Random(3)
    delays = []
    for _ in range(4):
        decision = state.decide(Outcome.grpc("UNAVAILABLE"), None, rng)
        assert decision.retry and decision.reason == "retry"
        delays.append(decision.delay)
    for n, delay in enumerate(delays, start=1):
        assert 0 <= delay < min(0.025 * 2 ** (n - 1), 0.25)
    assert state.decide(Outcome.grpc("UNAVAILABLE"), None, rng).reason == "attempts_exhausted"
    assert state.attempts == 5


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        pytest.param(Outcome.grpc("INTERNAL"), "not_retryable", id="not-retryable"),
        pytest.param(LOCAL_CIRCUIT_OPEN, "circuit_open", id="breaker"),
        pytest.param(Outcome.grpc("UNAVAILABLE", pushback="stop"), "pushback_stop", id="stop"),
    ],
)
def test_decide_refusals(outcome: Outcome, reason: str) -> None:
    decision = _state(grpc_policy("unavailable")).decide(outcome, None, random.Random(0))
    assert not decision.retry
    assert decision.reason == reason


def test_pushback_overrides_backoff_and_restarts_the_sequence() -> None:
    policy = grpc_policy("unavailable", num_retries=4)
    state = _state(policy)
    rng = random.Random(0)
    first = state.decide(Outcome.grpc("UNAVAILABLE"), None, rng)
    second = state.decide(Outcome.grpc("UNAVAILABLE"), None, rng)
    assert first.delay < 0.025 and second.delay < 0.05
    pushed = state.decide(Outcome.grpc("UNAVAILABLE", pushback=1.5), None, rng)
    assert pushed.retry and pushed.delay == 1.5
    after = state.decide(Outcome.grpc("UNAVAILABLE"), None, rng)
    assert after.delay < 0.025  # back to the base window (gRFC A6)


def test_rate_limited_backoff_from_reset_headers() -> None:
    policy = http_policy(
        "retriable-status-codes",
        retriable_status_codes=frozenset({429}),
        rate_limited_retry_back_off=RateLimitedRetryBackOff(
            reset_headers=(
                ResetHeader("retry-after"),
                ResetHeader("x-ratelimit-reset", "UNIX_TIMESTAMP"),
            ),
            max_interval=10.0,
        ),
    )
    rng = random.Random(11)
    now = 1_700_000_000.0
    for _ in range(200):
        delay = policy.rate_limited_backoff({"retry-after": "2"}, now, rng)
        assert delay is not None and 2.0 <= delay < 3.0
    # Over max_interval: skipped, the next header is used.
    delay = policy.rate_limited_backoff(
        {"retry-after": "60", "x-ratelimit-reset": str(int(now) + 4)}, now, rng
    )
    assert delay is not None and 4.0 <= delay < 6.0
    # Capped at max_interval.
    assert all(
        (d := policy.rate_limited_backoff({"retry-after": "8"}, now, rng)) is not None and d <= 10
        for _ in range(200)
    )
    assert policy.rate_limited_backoff({"retry-after": "0"}, now, rng) is None
    assert policy.rate_limited_backoff({}, now, rng) is None
    state = RetryState(policy)
    decision = state.decide(Outcome.http(429, {"retry-after": "2"}), None, rng, now)
    assert decision.retry and 2.0 <= decision.delay < 3.0


def test_rate_limited_backoff_is_http_only() -> None:
    grpc = CompiledRetryPolicy(
        RetryPolicy(
            retry_on=frozenset({"unavailable"}),
            rate_limited_retry_back_off=RateLimitedRetryBackOff((ResetHeader("retry-after"),)),
        ),
        True,
    )
    assert grpc.rate_limited is None


# -- budget interplay ------------------------------------------------------------------


def test_budget_refusal_ends_the_call_with_a_named_reason() -> None:
    breaker = CircuitBreaker(
        "outbound|9080||reviews", Thresholds(max_retries=0, max_retries_explicit=True)
    )
    state = _state(grpc_policy("unavailable"))
    decision = state.decide(Outcome.grpc("UNAVAILABLE"), breaker.retry_budget, random.Random(0))
    assert not decision.retry and decision.reason == "budget_exhausted"
    err = retry_budget_exhausted(breaker.cluster, Outcome.grpc("UNAVAILABLE"), state.attempts)
    assert isinstance(err, RetryBudgetExhausted)
    assert str(err) == (
        "UNAVAILABLE (retry budget exhausted for cluster 'outbound|9080||reviews' after 1 attempt)"
    )
    assert breaker.stats["upstream_rq_retry_overflow"] == 1


def test_granted_retry_holds_a_budget_slot_until_released() -> None:
    breaker = CircuitBreaker("c")
    budget = breaker.retry_budget
    state = _state(grpc_policy("unavailable", num_retries=3))
    rng = random.Random(0)
    assert state.decide(Outcome.grpc("UNAVAILABLE"), budget, rng).retry
    assert budget.active == 1 and state.holding_retry
    # The next decision gives the previous slot back before taking one.
    assert state.decide(Outcome.grpc("UNAVAILABLE"), budget, rng).retry
    assert budget.active == 1
    state.release()
    state.release()
    assert budget.active == 0 and not state.holding_retry


# -- previous_hosts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicates", "max_attempts", "key", "selection", "accepted"),
    [
        pytest.param((), 1, ("a", 1), 1, True, id="no-predicate"),
        pytest.param(
            ("envoy.retry_host_predicates.previous_hosts",),
            1,
            ("a", 1),
            1,
            False,
            id="tried-rejected",
        ),
        pytest.param(
            ("envoy.retry_host_predicates.previous_hosts",),
            1,
            ("a", 1),
            2,
            True,
            id="last-pick-accepted",
        ),
        pytest.param(
            ("envoy.retry_host_predicates.previous_hosts",),
            3,
            ("a", 1),
            3,
            False,
            id="third-pick-rejected",
        ),
        pytest.param(
            ("envoy.retry_host_predicates.previous_hosts",),
            3,
            ("a", 1),
            4,
            True,
            id="fourth-pick-accepted",
        ),
        pytest.param(
            ("envoy.retry_host_predicates.previous_hosts",), 1, ("b", 1), 1, True, id="new-host"
        ),
    ],
)
def test_previous_hosts(
    predicates: tuple[str, ...],
    max_attempts: int,
    key: tuple[str, int],
    selection: int,
    accepted: bool,
) -> None:
    policy = CompiledRetryPolicy(
        RetryPolicy(
            retry_on=frozenset({"unavailable"}),
            retry_host_predicates=predicates,
            host_selection_retry_max_attempts=max_attempts,
        ),
        True,
    )
    state = RetryState(policy, first_host=("a", 1))
    assert state.accept_host(key, selection) is accepted
    assert state.excluded_hosts == ({("a", 1)} if predicates else frozenset())


# -- hedging --------------------------------------------------------------------------


def test_hedge_plan() -> None:
    assert HedgePlan.from_policy(None) is NO_HEDGING
    assert not NO_HEDGING.enabled
    plan = HedgePlan.from_policy(
        HedgePolicy(initial_requests=2, additional_request_chance_per_million=250_000)
    )
    rng = random.Random(5)
    counts = [plan.initial_attempts(rng) for _ in range(4000)]
    assert set(counts) == {2, 3}
    assert abs(counts.count(3) / len(counts) - 0.25) < 0.03
    always = HedgePlan.from_policy(HedgePolicy(additional_request_chance_per_million=1_000_000))
    assert always.initial_attempts(rng) == 2
    on_timeout = HedgePlan.from_policy(HedgePolicy(hedge_on_per_try_timeout=True))
    assert on_timeout.enabled and on_timeout.initial_attempts(rng) == 1
