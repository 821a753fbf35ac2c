"""Outlier detection: consecutive errors, ejection time, caps, success rate,
failure percentage and enforcement (Envoy semantics, gRFC A50)."""

from __future__ import annotations

import logging
import random
from dataclasses import replace

import pytest

from proxyless.lb.state import EndpointState
from proxyless.resilience import (
    CONNECT_FAILURE,
    LOCAL_CIRCUIT_OPEN,
    OVERALL_TIMEOUT,
    PER_TRY_TIMEOUT,
    REFUSED_STREAM,
    SUCCESS,
    Outcome,
    OutlierDetector,
)
from proxyless.resources.model import Endpoint, Locality, OutlierDetection
from proxyless.testing import FakeClock

CLUSTER = "outbound|9080||reviews"
HTTP_500 = Outcome.http(500)
HTTP_503 = Outcome.http(503)


class FixedRolls(random.Random):
    """An RNG whose randrange answers are given in advance (enforcement rolls)."""

    def __init__(self, rolls: list[int]) -> None:
        super().__init__(0)
        self.rolls = list(rolls)

    def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        return self.rolls.pop(0)


def make(
    n: int, rng: random.Random | None = None, **config: object
) -> tuple[OutlierDetector, list[EndpointState], FakeClock]:
    clock = FakeClock()
    det = OutlierDetector(
        CLUSTER,
        OutlierDetection(**config),  # type: ignore[arg-type]
        clock,
        rng if rng is not None else random.Random(1),
    )
    eps = [EndpointState(Endpoint(f"10.0.0.{i + 1}", 8080), Locality(), 0) for i in range(n)]
    det.set_endpoints(eps)
    return det, eps, clock


def fail(det: OutlierDetector, es: EndpointState, times: int, outcome: Outcome = HTTP_500) -> None:
    for _ in range(times):
        det.record(es, outcome)


def sweep_after(det: OutlierDetector, clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    det.sweep(clock.monotonic())


# -- consecutive errors and ejection time -----------------------------------------------


def test_one_bad_of_three_ejected_after_consecutive_5xx_and_back_after_base_time() -> None:
    det, (bad, good1, good2), clock = make(3)
    clock.advance(5)  # ejection happens between sweeps
    for _ in range(4):
        det.record(bad, HTTP_500)
        det.record_success(good1)
        det.record(good2, SUCCESS)
    assert not bad.ejected
    det.record(bad, HTTP_500)  # the 5th consecutive 5xx ejects at once
    assert bad.ejected and not bad.healthy
    assert not good1.ejected and not good2.ejected
    assert det.stats["ejections_detected_consecutive_5xx"] == 1
    assert det.stats["ejections_enforced_consecutive_5xx"] == 1
    assert det.stats["ejections_active"] == 1
    assert det.next_sweep_in(clock.monotonic()) == pytest.approx(5.0)
    sweep_after(det, clock, 5)  # t+10: ejected 5 s ago
    sweep_after(det, clock, 10)  # t+20
    sweep_after(det, clock, 10)  # t+30: ejected 25 s ago
    assert bad.ejected
    sweep_after(det, clock, 10)  # t+40: 35 s >= base_ejection_time 30 s
    assert not bad.ejected and bad.healthy
    assert det.stats["ejections_active"] == 0
    assert det.stats["unejections_total"] == 1
    assert bad.outlier.consecutive_5xx == 0


def test_success_resets_the_consecutive_count() -> None:
    det, (es,), _ = make(1)
    fail(det, es, 4)
    det.record_success(es)
    fail(det, es, 4)
    assert not es.ejected
    fail(det, es, 1)
    assert es.ejected


def test_client_side_errors_do_not_count_but_do_not_reset_either_way() -> None:
    det, (es,), _ = make(1)
    fail(det, es, 4)
    det.record(es, Outcome.http(404))  # a 4xx is a success for outlier detection
    fail(det, es, 4)
    assert not es.ejected
    det.record(es, LOCAL_CIRCUIT_OPEN)  # never reached the endpoint: ignored
    fail(det, es, 1)
    assert es.ejected


def test_multiplier_growth_cap_and_decay() -> None:
    det, (es,), clock = make(1, base_ejection_time=30.0, max_ejection_time=60.0)

    def eject_and_measure() -> float:
        fail(det, es, 5)
        assert es.ejected
        start = clock.monotonic()
        while es.ejected:
            sweep_after(det, clock, 10)
        return clock.monotonic() - start

    durations = [eject_and_measure() for _ in range(4)]
    # base * multiplier, capped at max_ejection_time: 30, 60, 60 (3 x 30 capped), 60
    assert durations == [30.0, 60.0, 60.0, 60.0]
    assert es.outlier.multiplier == 3  # stops growing once multiplier * base >= max + base
    # Healthy intervals after the un-ejection lower the multiplier by one each.
    for expected in (2, 1, 0, 0):
        sweep_after(det, clock, 10)
        assert es.outlier.multiplier == expected
    assert eject_and_measure() == 30.0


def test_max_ejection_time_defaults_to_at_least_base() -> None:
    det, (es,), clock = make(1, base_ejection_time=400.0, max_ejection_time=300.0, interval=100.0)
    fail(det, es, 5)
    sweep_after(det, clock, 300)
    assert es.ejected  # the cap is max(base, max) = 400 s
    sweep_after(det, clock, 100)
    assert not es.ejected


def test_ejection_jitter() -> None:
    det, (es,), clock = make(1, interval=0.5, max_ejection_time_jitter=5.0, rng=random.Random(9))
    fail(det, es, 5)
    jitter = es.outlier.jitter
    assert 0.0 < jitter <= 5.0
    elapsed = 0.0
    while es.ejected:
        sweep_after(det, clock, 0.5)
        elapsed += 0.5
    assert 30.0 + jitter <= elapsed < 30.0 + jitter + 0.5


# -- max_ejection_percent: worked arithmetic for 1-3 endpoints ---------------------------


@pytest.mark.parametrize(
    ("hosts", "max_percent", "always_one", "bad", "ejected"),
    [
        pytest.param(1, 10, False, 1, 1, id="1-host-10pct-at-least-one"),
        pytest.param(2, 10, False, 2, 1, id="2-hosts-10pct"),
        pytest.param(2, 50, False, 2, 1, id="2-hosts-50pct"),
        pytest.param(2, 100, False, 2, 2, id="2-hosts-100pct"),
        pytest.param(3, 10, False, 3, 1, id="3-hosts-10pct"),
        pytest.param(3, 50, False, 2, 1, id="3-hosts-50pct-two-bad-one-ejected"),
        pytest.param(3, 66, False, 3, 1, id="3-hosts-66pct"),
        pytest.param(3, 67, False, 3, 2, id="3-hosts-67pct"),
        pytest.param(3, 100, False, 3, 3, id="3-hosts-100pct"),
        pytest.param(3, 0, False, 1, 0, id="0pct-disables"),
        pytest.param(3, 0, True, 1, 1, id="0pct-always-eject-one-host"),
    ],
)
def test_max_ejection_percent(
    hosts: int, max_percent: int, always_one: bool, bad: int, ejected: int
) -> None:
    det, eps, _ = make(hosts, max_ejection_percent=max_percent, always_eject_one_host=always_one)
    for es in eps[:bad]:
        fail(det, es, 5)
    assert sum(es.ejected for es in eps) == ejected
    assert det.ejected_count == ejected
    assert det.stats["ejections_overflow"] == bad - ejected


def test_overflow_is_logged_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    det, eps, _ = make(3, max_ejection_percent=50)
    with caplog.at_level(logging.INFO, logger="proxyless.resilience.outlier"):
        fail(det, eps[0], 5)
        fail(det, eps[1], 5)
    messages = [r.getMessage() for r in caplog.records]
    assert any("10.0.0.1:8080 ejected (consecutive_5xx) for 30s" in m for m in messages)
    assert any(
        "10.0.0.2:8080 not ejected (consecutive_5xx): max_ejection_percent=50% reached "
        "with 1 of 3 endpoints ejected" in m
        for m in messages
    )


# -- enforcement --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enforcing", "rolls", "ejected"),
    [
        pytest.param(100, [], True, id="100-always-no-roll"),
        pytest.param(0, [], False, id="0-never"),
        pytest.param(50, [49], True, id="50-roll-49-enforced"),
        pytest.param(50, [50], False, id="50-roll-50-skipped"),
        pytest.param(1, [0], True, id="1-roll-0-enforced"),
    ],
)
def test_enforcement_roll(enforcing: int, rolls: list[int], ejected: bool) -> None:
    rng = FixedRolls(rolls)
    det, (es,), _ = make(1, rng=rng, enforcing_consecutive_5xx=enforcing)
    fail(det, es, 5)
    assert es.ejected is ejected
    assert rng.rolls == []
    assert det.stats["ejections_detected_consecutive_5xx"] == 1
    assert det.stats["ejections_enforced_consecutive_5xx"] == int(ejected)
    assert det.stats["ejections_skipped_enforcement"] == int(not ejected)
    if not ejected:  # the counter restarts after a detection, ejected or not
        assert es.outlier.consecutive_5xx == 0


def test_enforcement_percentage_over_many_detections() -> None:
    det, (es,), _ = make(1, rng=random.Random(42), enforcing_consecutive_5xx=30)
    for _ in range(1000):
        fail(det, es, 5)
        if es.ejected:
            det.close()
            det.set_endpoints([es])
    enforced = det.stats["ejections_enforced_consecutive_5xx"]
    assert det.stats["ejections_detected_consecutive_5xx"] == 1000
    assert 260 <= enforced <= 340


def test_gateway_failures_are_detected_but_not_enforced_by_default() -> None:
    det, (es,), _ = make(1)
    fail(det, es, 5, HTTP_503)
    assert es.ejected
    assert det.stats["ejections_detected_consecutive_gateway_failure"] == 1
    assert det.stats["ejections_enforced_consecutive_gateway_failure"] == 0
    assert det.stats["ejections_enforced_consecutive_5xx"] == 1


def test_gateway_failure_ejection_when_enforced() -> None:
    det, (es,), _ = make(
        1,
        consecutive_5xx=100,
        consecutive_gateway_failure=3,
        enforcing_consecutive_gateway_failure=100,
    )
    fail(det, es, 2, HTTP_503)
    det.record(es, HTTP_500)  # a non-gateway 5xx restarts the gateway count
    fail(det, es, 2, HTTP_503)
    assert not es.ejected
    det.record(es, Outcome.grpc("UNAVAILABLE"))
    assert es.ejected
    assert det.stats["ejections_enforced_consecutive_gateway_failure"] == 1


# -- local-origin errors ----------------------------------------------------------------


def test_without_split_local_errors_count_as_gateway_5xx() -> None:
    det, (es,), _ = make(1)
    fail(det, es, 3, CONNECT_FAILURE)
    fail(det, es, 2, PER_TRY_TIMEOUT)
    assert es.ejected
    assert det.stats["ejections_enforced_consecutive_5xx"] == 1
    assert det.stats["ejections_detected_consecutive_gateway_failure"] == 1


def test_split_local_origin_errors() -> None:
    det, (es,), _ = make(
        1, split_external_local_origin_errors=True, consecutive_local_origin_failure=3
    )
    fail(det, es, 2, CONNECT_FAILURE)
    det.record(es, HTTP_500)  # the connection worked: resets the local count
    fail(det, es, 2, CONNECT_FAILURE)
    assert not es.ejected
    assert es.outlier.consecutive_5xx == 1  # local errors do not touch external counts
    det.record(es, PER_TRY_TIMEOUT)
    assert es.ejected
    assert det.stats["ejections_enforced_consecutive_local_origin_failure"] == 1
    assert det.stats["ejections_detected_consecutive_5xx"] == 0


LOCAL_ORIGIN = [
    pytest.param(CONNECT_FAILURE, id="connect-failure"),
    pytest.param(PER_TRY_TIMEOUT, id="per-try-timeout"),
    pytest.param(OVERALL_TIMEOUT, id="overall-timeout"),
    pytest.param(REFUSED_STREAM, id="refused-stream"),
]


@pytest.mark.parametrize("outcome", LOCAL_ORIGIN)
@pytest.mark.parametrize(
    ("config", "times", "ejected_by", "detected"),
    [
        # Envoy defaults: consecutive_5xx 5 (enforced), consecutive gateway
        # failure 5 (enforcing 0), consecutive local-origin failure 5 (enforced,
        # split mode only).
        pytest.param(
            {},
            5,
            "consecutive_5xx",
            {"consecutive_5xx": 1, "consecutive_gateway_failure": 1},
            id="no-split-counts-as-5xx-and-gateway",
        ),
        pytest.param(
            {"consecutive_local_origin_failure": 1},
            4,
            None,
            {},
            id="no-split-ignores-local-threshold",
        ),
        pytest.param(
            {"split_external_local_origin_errors": True},
            5,
            "consecutive_local_origin_failure",
            {"consecutive_local_origin_failure": 1},
            id="split-default-threshold-5",
        ),
        pytest.param(
            {"split_external_local_origin_errors": True},
            4,
            None,
            {},
            id="split-below-threshold",
        ),
        pytest.param(
            {
                "split_external_local_origin_errors": True,
                "enforcing_consecutive_local_origin_failure": 0,
            },
            5,
            None,
            {"consecutive_local_origin_failure": 1},
            id="split-not-enforced",
        ),
        pytest.param(
            {"split_external_local_origin_errors": True, "consecutive_5xx": 1},
            5,
            "consecutive_local_origin_failure",
            {"consecutive_local_origin_failure": 1},
            id="split-keeps-local-out-of-5xx",
        ),
    ],
)
def test_local_origin_failures(
    outcome: Outcome,
    config: dict[str, object],
    times: int,
    ejected_by: str | None,
    detected: dict[str, int],
) -> None:
    det, (es, _other), _ = make(2, max_ejection_percent=100, **config)
    fail(det, es, times, outcome)
    assert es.ejected is (ejected_by is not None)
    assert es.outlier.ejection_type == ejected_by
    for kind in (
        "consecutive_5xx",
        "consecutive_gateway_failure",
        "consecutive_local_origin_failure",
    ):
        assert det.stats[f"ejections_detected_{kind}"] == detected.get(kind, 0), kind


def test_split_success_resets_local_origin_count() -> None:
    det, (es,), _ = make(1, split_external_local_origin_errors=True)
    fail(det, es, 4, PER_TRY_TIMEOUT)
    det.record_success(es)
    fail(det, es, 4, CONNECT_FAILURE)
    assert not es.ejected
    det.record(es, CONNECT_FAILURE)
    assert es.ejected


# -- success rate -----------------------------------------------------------------------


def feed(det: OutlierDetector, es: EndpointState, ok: int, failed: int) -> None:
    """Record ``ok`` successes and ``failed`` 500s interleaved, so no run of
    failures reaches a consecutive threshold."""
    for i in range(max(ok, failed)):
        if i < failed:
            det.record(es, HTTP_500)
        if i < ok:
            det.record_success(es)


def test_success_rate_worked_example(caplog: pytest.LogCaptureFixture) -> None:
    """Success rates 50, 100, 100, 100, 100 %: mean 90, stdev 20,
    threshold 90 - 1.9 * 20 = 52, so the 50 % endpoint is ejected."""
    det, eps, clock = make(5)
    feed(det, eps[0], 50, 50)
    for es in eps[1:]:
        feed(det, es, 100, 0)
    with caplog.at_level(logging.INFO, logger="proxyless.resilience.outlier"):
        sweep_after(det, clock, 10)
    assert [es.ejected for es in eps] == [True, False, False, False, False]
    assert det.stats["ejections_detected_success_rate"] == 1
    assert det.stats["ejections_enforced_success_rate"] == 1
    assert any("success rate 50.0% < threshold 52.0%" in r.getMessage() for r in caplog.records)


def test_success_rate_within_the_spread_is_not_ejected() -> None:
    """90, 90, 100, 100, 100 %: mean 96, stdev 4.90, threshold 86.7: nobody."""
    det, eps, clock = make(5)
    feed(det, eps[0], 90, 10)
    feed(det, eps[1], 90, 10)
    for es in eps[2:]:
        feed(det, es, 100, 0)
    sweep_after(det, clock, 10)
    assert not any(es.ejected for es in eps)
    assert det.stats["ejections_detected_success_rate"] == 0


def test_success_rate_needs_minimum_hosts() -> None:
    det, eps, clock = make(4)
    feed(det, eps[0], 50, 50)
    for es in eps[1:]:
        feed(det, es, 100, 0)
    sweep_after(det, clock, 10)
    assert not eps[0].ejected
    assert det.stats["success_rate_skipped_minimum_hosts"] == 1


def test_success_rate_needs_request_volume() -> None:
    det, eps, clock = make(5)
    feed(det, eps[0], 50, 49)  # 99 requests < request_volume 100
    for es in eps[1:]:
        feed(det, es, 100, 0)
    sweep_after(det, clock, 10)
    assert not eps[0].ejected
    assert det.stats["success_rate_skipped_request_volume"] == 1
    assert det.stats["success_rate_skipped_minimum_hosts"] == 1


def test_success_rate_reads_the_previous_interval_only() -> None:
    det, eps, clock = make(5)
    feed(det, eps[0], 50, 50)
    for es in eps[1:]:
        feed(det, es, 100, 0)
    assert eps[0].outlier.active.ext_total == 100
    det.sweep(clock.monotonic() + 1)  # swap: last interval's counts become inactive
    assert eps[0].outlier.inactive.ext_total == 100
    assert eps[0].outlier.active.ext_total == 0
    det.close()
    det.set_endpoints(eps)
    sweep_after(det, clock, 10)  # a quiet interval: nothing to judge
    assert not any(es.ejected for es in eps)


# -- failure percentage -------------------------------------------------------------------


def test_failure_percentage_worked_example() -> None:
    """threshold 85 %, request_volume 50, minimum_hosts 3: 54 of 60 failed
    (90 %) is ejected, 48 of 60 (80 %) is not."""
    det, eps, clock = make(
        3,
        consecutive_5xx=1000,
        enforcing_success_rate=0,
        enforcing_failure_percentage=100,
        failure_percentage_minimum_hosts=3,
        max_ejection_percent=100,
    )
    feed(det, eps[0], 6, 54)
    feed(det, eps[1], 12, 48)
    feed(det, eps[2], 60, 0)
    sweep_after(det, clock, 10)
    assert [es.ejected for es in eps] == [True, False, False]
    assert det.stats["ejections_enforced_failure_percentage"] == 1


def test_failure_percentage_is_off_by_default_in_envoy() -> None:
    det, eps, clock = make(5, consecutive_5xx=1000)
    for es in eps[:1]:
        feed(det, es, 0, 60)
    for es in eps[1:]:
        feed(det, es, 60, 0)
    sweep_after(det, clock, 10)
    # detected (enforcing_failure_percentage defaults to 0), not ejected;
    # success rate has too little volume (60 < 100)
    assert not eps[0].ejected
    assert det.stats["ejections_detected_failure_percentage"] == 1
    assert det.stats["ejections_skipped_enforcement"] == 1


def test_local_origin_failure_percentage_with_split() -> None:
    det, eps, clock = make(
        3,
        split_external_local_origin_errors=True,
        consecutive_local_origin_failure=1000,
        enforcing_failure_percentage_local_origin=100,
        failure_percentage_minimum_hosts=3,
        max_ejection_percent=100,
    )
    for _ in range(50):
        det.record(eps[0], CONNECT_FAILURE)
    for es in eps[1:]:
        for _ in range(50):
            det.record_success(es)
    sweep_after(det, clock, 10)
    assert [es.ejected for es in eps] == [True, False, False]
    assert det.stats["ejections_enforced_local_origin_failure_percentage"] == 1


# -- membership, config and timer ------------------------------------------------------------


def test_update_config_keeps_state_and_restarts_the_timer_for_the_remaining_time() -> None:
    det, (es,), clock = make(1)
    fail(det, es, 5)
    sweep_after(det, clock, 10)
    clock.advance(4)
    assert det.next_sweep_in(clock.monotonic()) == pytest.approx(6.0)
    det.update_config(replace(det.config, interval=5.0, base_ejection_time=60.0))
    assert es.ejected and det.ejected_count == 1
    assert det.next_sweep_in(clock.monotonic()) == pytest.approx(1.0)
    sweep_after(det, clock, 16)  # 30 s after ejection, but base is now 60 s
    assert es.ejected
    sweep_after(det, clock, 30)
    assert not es.ejected


def test_removed_endpoint_no_longer_counts() -> None:
    det, eps, _ = make(3, max_ejection_percent=50)
    fail(det, eps[0], 5)
    assert det.ejected_count == 1
    det.set_endpoints(eps[1:])
    assert det.ejected_count == 0
    assert not eps[0].ejected and eps[0].outlier is None
    fail(det, eps[0], 5)  # records for an endpoint that left are ignored
    assert not eps[0].ejected
    fail(det, eps[1], 5)  # 1 of 2 may now be ejected
    assert eps[1].ejected


def test_kept_endpoint_keeps_its_state_across_updates() -> None:
    det, eps, _ = make(2)
    fail(det, eps[0], 3)
    state = eps[0].outlier
    newcomer = EndpointState(Endpoint("10.0.0.9", 8080), Locality(), 1)
    det.set_endpoints([eps[0], eps[1], newcomer])
    assert eps[0].outlier is state
    fail(det, eps[0], 2)
    assert eps[0].ejected


def test_close_unejects_everything() -> None:
    det, eps, _ = make(2, max_ejection_percent=100)
    fail(det, eps[0], 5)
    fail(det, eps[1], 5)
    det.close()
    assert not any(es.ejected for es in eps)
    assert det.ejected_count == 0 and det.endpoints == ()


def test_another_detector_adopting_an_endpoint_clears_a_stale_ejection() -> None:
    old, eps, clock = make(1)
    fail(old, eps[0], 5)
    assert eps[0].ejected
    new = OutlierDetector(CLUSTER, OutlierDetection(), clock, random.Random(0))
    new.set_endpoints(eps)
    assert not eps[0].ejected
    fail(old, eps[0], 5)  # the old detector no longer owns it
    assert not eps[0].ejected


def test_on_change_is_called_after_ejections_and_unejections() -> None:
    calls: list[int] = []
    det, (es,), clock = make(1)
    det.on_change = lambda: calls.append(det.ejected_count)
    fail(det, es, 5)
    assert calls == [1]  # called on the recording thread, after the lock
    sweep_after(det, clock, 10)
    assert calls == [1]  # nothing changed
    sweep_after(det, clock, 30)
    assert calls == [1, 0]
    fail(det, es, 5)
    det.close()
    assert calls == [1, 0, 1, 0]
