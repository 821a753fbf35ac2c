"""Load-aware pickers: gRFC A58's weight arithmetic, blackout and expiration,
the weighted schedule, and the peak-EWMA estimate and picks (fake clock,
seeded RNG, bounded picks)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from proxyless.config.snapshot import ClusterConfig
from proxyless.lb import ClusterLoadBalancer, build_picker
from proxyless.lb.load_state import attach_load_state
from proxyless.lb.peak_ewma import LatencyFeedback, PeakEwmaPicker, RttEwma
from proxyless.lb.state import EndpointState
from proxyless.lb.wrr import (
    EndpointWeight,
    WeightedRoundRobinPicker,
    orca_weight,
    scheduling_weights,
)
from proxyless.resources.model import (
    ClientSideWeightedRoundRobin,
    Cluster,
    ClusterLoadAssignment,
    Endpoint,
    LbPolicy,
    Locality,
    LocalityEndpoints,
    PeakEwma,
    RoundRobin,
    WrrLocality,
)
from proxyless.testing import FakeClock


def _endpoints(n: int) -> list[EndpointState]:
    return [EndpointState(Endpoint("10.0.0.1", 8000 + i), Locality(), 0) for i in range(n)]


# -- gRFC A58 weights ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("qps", "eps", "utilization", "penalty", "expected"),
    [
        pytest.param(100.0, 0.0, 0.5, 1.0, 200.0, id="qps-over-utilization"),
        pytest.param(100.0, 10.0, 0.5, 1.0, 100.0 / 0.6, id="errors-add-eps-over-qps"),
        pytest.param(100.0, 10.0, 0.5, 0.0, 200.0, id="no-penalty-ignores-errors"),
        pytest.param(100.0, 50.0, 0.5, 2.0, 100.0 / 1.5, id="penalty-scales-error-rate"),
        pytest.param(0.0, 0.0, 0.5, 1.0, 0.0, id="zero-qps-is-no-weight"),
        pytest.param(100.0, 0.0, 0.0, 1.0, 0.0, id="zero-utilization-is-no-weight"),
        pytest.param(100.0, 0.0, 2.0, 1.0, 50.0, id="utilization-above-one"),
    ],
)
def test_orca_weight(
    qps: float, eps: float, utilization: float, penalty: float, expected: float
) -> None:
    assert orca_weight(qps, eps, utilization, penalty) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("reports", "read_at", "expected"),
    [
        pytest.param([], 0.0, 0.0, id="never-reported"),
        pytest.param([(0.0, 10.0)], 5.0, 0.0, id="in-blackout"),
        pytest.param([(0.0, 10.0)], 10.0, 10.0, id="blackout-over"),
        pytest.param([(0.0, 10.0), (9.0, 20.0)], 10.0, 20.0, id="latest-report-wins"),
        pytest.param([(0.0, 10.0)], 60.0, 0.0, id="expired"),
        pytest.param([(0.0, 10.0), (70.0, 20.0)], 75.0, 0.0, id="blackout-again-after-expiry"),
        pytest.param([(0.0, 10.0), (70.0, 20.0)], 80.0, 20.0, id="usable-after-new-blackout"),
    ],
)
def test_endpoint_weight_blackout_and_expiration(
    reports: list[tuple[float, float]], read_at: float, expected: float
) -> None:
    clock = FakeClock(start=0.0)
    weight = EndpointWeight(1.0, clock.monotonic)
    for at, qps in reports:
        clock.advance(at - clock.monotonic())
        if at >= 60.0:  # a read after expiry resets non_empty_since, as A58's GetWeight does
            weight.value(clock.monotonic(), 60.0, 10.0)
        weight.report(qps, 0.0, 1.0)
    assert weight.value(read_at, 60.0, 10.0) == expected


def test_a_zero_report_changes_nothing() -> None:
    clock = FakeClock(start=0.0)
    weight = EndpointWeight(1.0, clock.monotonic)
    weight.report(10.0, 0.0, 1.0)
    clock.advance(5.0)
    weight.report(0.0, 0.0, 1.0)
    assert (weight.weight, weight.last_updated) == (10.0, 0.0)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        pytest.param([], None, id="none"),
        pytest.param([0.0, 0.0, 0.0], None, id="nothing-known"),
        pytest.param([5.0, 0.0, 0.0], None, id="one-known-is-round-robin"),
        pytest.param([2.0, 4.0], [2.0, 4.0], id="all-known"),
        pytest.param([2.0, 4.0, 0.0], [2.0, 4.0, 3.0], id="unknown-gets-the-mean"),
    ],
)
def test_scheduling_weights(weights: list[float], expected: list[float] | None) -> None:
    assert scheduling_weights(weights) == expected


def _wrr(
    n: int, clock: FakeClock, **policy: float
) -> tuple[WeightedRoundRobinPicker, list[EndpointState]]:
    endpoints = _endpoints(n)
    config = ClientSideWeightedRoundRobin(**policy)  # type: ignore[arg-type]
    attach_load_state([(config, endpoints)], clock.monotonic)
    picker = build_picker(config, endpoints, random.Random(1), clock=clock.monotonic)
    assert isinstance(picker, WeightedRoundRobinPicker)
    return picker, endpoints


def _counts(picker: object, rng: random.Random, picks: int) -> Counter[int]:
    counts: Counter[int] = Counter()
    for _ in range(picks):
        chosen = picker.pick(rng)  # type: ignore[attr-defined]
        counts[chosen.key[1] - 8000] += 1
    return counts


def _near(counts: Counter[int], expected: dict[int, int], slack: int = 2) -> bool:
    return set(counts) == set(expected) and all(
        abs(counts[k] - v) <= slack for k, v in expected.items()
    )


def test_wrr_is_round_robin_until_weights_are_known_then_follows_them() -> None:
    clock = FakeClock(start=0.0)
    picker, endpoints = _wrr(3, clock, blackout_period=0.0, weight_update_period=1.0)
    rng = random.Random(2)
    assert _counts(picker, rng, 300) == {0: 100, 1: 100, 2: 100}
    # utilization 0.2, 0.2 and 0.8 at the same qps: weights 4:4:1
    for endpoint, utilization in zip(endpoints, (0.2, 0.2, 0.8), strict=True):
        endpoint.orca.report(100.0, 0.0, utilization)
    assert _counts(picker, rng, 90) == {0: 30, 1: 30, 2: 30}  # not rescheduled yet
    clock.advance(1.0)
    counts = _counts(picker, rng, 900)
    assert _near(counts, {0: 400, 1: 400, 2: 100}), counts
    assert picker.weights == pytest.approx([500.0, 500.0, 125.0])


def test_wrr_endpoint_without_reports_gets_the_mean_weight() -> None:
    clock = FakeClock(start=0.0)
    picker, endpoints = _wrr(3, clock, blackout_period=0.0)
    endpoints[0].orca.report(100.0, 0.0, 1.0)  # 100
    endpoints[1].orca.report(100.0, 0.0, 0.25)  # 400
    clock.advance(1.0)
    counts = _counts(picker, random.Random(3), 1000)
    assert _near(counts, {0: 133, 1: 533, 2: 333}), counts  # 100 : 400 : the mean, 250


def test_wrr_skips_an_unhealthy_endpoint_and_falls_back_when_alone() -> None:
    clock = FakeClock(start=0.0)
    picker, endpoints = _wrr(2, clock)
    endpoints[0].ejected = True
    assert {picker.pick(random.Random(4)) for _ in range(10)} == {endpoints[1]}
    endpoints[1].ready = False
    endpoints[1].connectivity = "CONNECTING"
    assert picker.pick(random.Random(4)) is endpoints[1]


def test_wrr_under_wrr_locality_and_weights_survive_rebuilds() -> None:
    clock = FakeClock(start=0.0)
    endpoints = _endpoints(2)
    policy = WrrLocality(ClientSideWeightedRoundRobin(blackout_period=0.0))
    attach_load_state([(policy, endpoints)], clock.monotonic)
    endpoints[0].orca.report(10.0, 0.0, 1.0)
    kept = endpoints[0].orca
    attach_load_state([(policy, endpoints)], clock.monotonic)
    assert endpoints[0].orca is kept
    attach_load_state([(RoundRobin(), endpoints)], clock.monotonic)
    assert endpoints[0].orca is None and endpoints[0].rtt is None


# -- peak EWMA ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "samples", "expected"),
    [
        pytest.param(0.030, [], 0.030, id="default-rtt"),
        pytest.param(0.030, [(1.0, 0.100)], 0.100, id="a-peak-replaces-the-estimate"),
        pytest.param(
            0.030,
            [(10.0, 0.010)],
            0.030 * math.exp(-1) + 0.010 * (1 - math.exp(-1)),
            id="lower-sample-decays-in-by-elapsed-time",
        ),
        pytest.param(0.030, [(0.0, 0.010)], 0.030, id="no-time-elapsed-no-change"),
        pytest.param(
            0.030, [(5.0, 0.100), (15.0, 0.0)], 0.100 * math.exp(-1), id="decays-toward-zero"
        ),
    ],
)
def test_rtt_ewma(start: float, samples: list[tuple[float, float]], expected: float) -> None:
    ewma = RttEwma(start, now=0.0)
    for now, rtt in samples:
        ewma.observe(rtt, now, 10.0)
    assert ewma.estimate == pytest.approx(expected)


def test_cost_counts_pending_requests_and_decays() -> None:
    ewma = RttEwma(0.020, now=0.0)
    assert ewma.cost(0, 0.0, 10.0) == pytest.approx(0.020)
    assert ewma.cost(3, 0.0, 10.0) == pytest.approx(0.080)
    assert ewma.cost(0, 10.0, 10.0) == pytest.approx(0.020 * math.exp(-1))


def test_latency_feedback_turns_an_attempt_into_a_sample() -> None:
    clock = FakeClock(start=0.0)
    feedback = LatencyFeedback(10.0, 0.030, clock.monotonic)
    endpoint = _endpoints(1)[0]
    feedback.attach([endpoint])

    class Attempt:
        def __init__(self) -> None:
            self.endpoint = endpoint

    attempt = Attempt()
    feedback.sent(attempt)
    clock.advance(0.250)
    feedback.done(attempt)
    assert endpoint.rtt.estimate == pytest.approx(0.250)
    feedback.done(type("Unstamped", (), {"endpoint": endpoint})())  # no stamp: no sample
    assert endpoint.rtt.estimate == pytest.approx(0.250)


def _ewma(n: int, clock: FakeClock) -> tuple[PeakEwmaPicker, list[EndpointState]]:
    endpoints = _endpoints(n)
    policy = PeakEwma()
    assert attach_load_state([(policy, endpoints)], clock.monotonic) is not None
    picker = build_picker(policy, endpoints, random.Random(5), clock=clock.monotonic)
    assert isinstance(picker, PeakEwmaPicker)
    return picker, endpoints


def test_peak_ewma_avoids_the_slow_endpoint() -> None:
    clock = FakeClock(start=0.0)
    picker, endpoints = _ewma(3, clock)
    endpoints[2].rtt.observe(0.200, 0.0, 10.0)  # a 200 ms peak
    counts = _counts(picker, random.Random(6), 900)
    assert counts[2] == 0 and counts[0] + counts[1] == 900, counts


def test_peak_ewma_weighs_pending_requests() -> None:
    clock = FakeClock(start=0.0)
    picker, endpoints = _ewma(2, clock)
    endpoints[0].active_requests = 5  # same estimate, 6x the cost
    assert {picker.pick(random.Random(7)) for _ in range(20)} == {endpoints[1]}


def test_peak_ewma_tries_a_slow_endpoint_again_once_its_peak_decays() -> None:
    clock = FakeClock(start=0.0)
    picker, endpoints = _ewma(2, clock)
    endpoints[1].rtt.observe(0.300, 0.0, 10.0)
    assert picker.pick(random.Random(8)) is endpoints[0]
    clock.advance(60.0)  # 300 ms * e^-6 < 1 ms; the fast one is measured at 30 ms
    endpoints[0].rtt.observe(0.030, 60.0, 10.0)
    assert picker.pick(random.Random(8)) is endpoints[1]


@pytest.mark.parametrize("excluded", [0, 1], ids=["first-excluded", "second-excluded"])
def test_peak_ewma_respects_exclude_and_health(excluded: int) -> None:
    clock = FakeClock(start=0.0)
    picker, endpoints = _ewma(2, clock)
    other = endpoints[1 - excluded]
    for seed in range(10):
        assert picker.pick(random.Random(seed), exclude={endpoints[excluded].key}) is other
    endpoints[1 - excluded].ejected = True
    assert picker.pick(random.Random(9)) is endpoints[excluded]


@pytest.mark.parametrize(
    ("policy", "shown", "hidden"),
    [
        pytest.param(
            ClientSideWeightedRoundRobin(), "orca_weight", "rtt_ms", id="wrr-shows-weights"
        ),
        pytest.param(PeakEwma(), "rtt_ms", "orca_weight", id="peak-ewma-shows-rtt"),
        pytest.param(RoundRobin(), None, "rtt_ms", id="round-robin-shows-neither"),
    ],
)
def test_cluster_balancer_attaches_state_and_shows_it(
    policy: LbPolicy, shown: str | None, hidden: str
) -> None:
    clock = FakeClock(start=0.0)
    assignment = ClusterLoadAssignment(
        "svc", ((LocalityEndpoints(Locality(), 1, 0, (Endpoint("10.0.0.1", 80),)),),)
    )
    config = ClusterConfig("svc", Cluster("svc", "EDS", lb_policy=policy), assignment)
    lb = ClusterLoadBalancer(config, random.Random(1), clock=clock.monotonic)
    assert (lb.latency is not None) == isinstance(policy, PeakEwma)
    endpoint = lb.debug_state()["priorities"][0]["localities"][0]["endpoints"][0]
    assert hidden not in endpoint
    if shown is not None:
        assert endpoint[shown] == {"orca_weight": 0.0, "rtt_ms": 30.0}[shown]
    assert lb.pick(None, random.Random(2)).address == "10.0.0.1:80"


class _Stream:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def test_out_of_band_streams_stop_when_the_mode_or_policy_changes() -> None:
    clock = FakeClock(start=0.0)
    endpoints = _endpoints(2)
    oob = ClientSideWeightedRoundRobin(enable_oob_load_report=True, oob_reporting_period=5.0)
    attach_load_state([(oob, endpoints)], clock.monotonic)
    assert [e.orca.oob_period for e in endpoints] == [5.0, 5.0]
    streams = [_Stream(), _Stream()]
    for endpoint, stream in zip(endpoints, streams, strict=True):
        endpoint.orca.stream = stream
    attach_load_state([(oob, endpoints)], clock.monotonic)  # same config: streams kept
    assert not any(s.cancelled for s in streams)
    attach_load_state([(ClientSideWeightedRoundRobin(), endpoints[:1])], clock.monotonic)
    assert streams[0].cancelled and endpoints[0].orca.oob_period is None
    attach_load_state([(RoundRobin(), endpoints[1:])], clock.monotonic)
    assert streams[1].cancelled and endpoints[1].orca is None


def test_an_endpoint_leaving_the_cluster_ends_its_stream() -> None:
    policy = ClientSideWeightedRoundRobin(enable_oob_load_report=True)
    one = (LocalityEndpoints(Locality(), 1, 0, (Endpoint("10.0.0.1", 80),)),)
    config = ClusterConfig(
        "svc", Cluster("svc", "EDS", lb_policy=policy), ClusterLoadAssignment("svc", (one,))
    )
    lb = ClusterLoadBalancer(config, random.Random(1))
    endpoint = lb.endpoints[0]
    endpoint.orca.stream = stream = _Stream()
    other = (LocalityEndpoints(Locality(), 1, 0, (Endpoint("10.0.0.2", 80),)),)
    lb.update(
        ClusterConfig(
            "svc", Cluster("svc", "EDS", lb_policy=policy), ClusterLoadAssignment("svc", (other,))
        )
    )
    assert stream.cancelled and endpoint.orca is None and endpoint.draining
