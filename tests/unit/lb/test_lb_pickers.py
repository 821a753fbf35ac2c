"""Pickers: distribution, health skipping, exclusion, panic (seeded RNG, bounded picks)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest

from proxyless.lb import (
    EndpointState,
    LeastRequestPicker,
    Picker,
    PickFirstPicker,
    RandomPicker,
    RoundRobinPicker,
    build_picker,
)
from proxyless.resources.model import (
    Endpoint,
    HealthStatus,
    LbPolicy,
    LeastRequest,
    Locality,
    Maglev,
    PickFirst,
    Random,
    RingHash,
    RoundRobin,
)

LOC = Locality("region", "zone")


def make(
    weights: Sequence[int] = (1, 1, 1),
    health: Sequence[HealthStatus] | None = None,
) -> list[EndpointState]:
    out = []
    for i, w in enumerate(weights):
        status: HealthStatus = health[i] if health else "HEALTHY"
        out.append(EndpointState(Endpoint(f"10.0.0.{i + 1}", 8080, status, w), LOC, 0))
    return out


def shares(picker: Picker, rng: random.Random, picks: int) -> list[float]:
    counts: Counter[str] = Counter()
    for _ in range(picks):
        chosen = picker.pick(rng)
        assert chosen is not None
        counts[chosen.address] += 1
    return [counts[e.address] / picks for e in sorted(picker.endpoints, key=lambda e: e.address)]


DISTRIBUTION = [
    pytest.param(RoundRobin(), (1, 1, 1), 0.0, id="rr-equal-exact"),
    pytest.param(RoundRobin(), (1, 2, 3, 4), 0.001, id="rr-weighted-edf"),
    pytest.param(Random(), (1, 1, 1, 1), 0.03, id="random-equal"),
    pytest.param(Random(), (1, 3), 0.03, id="random-weighted"),
    pytest.param(LeastRequest(), (1, 1, 1), 0.03, id="least-request-idle-equal"),
    pytest.param(LeastRequest(), (1, 3), 0.01, id="least-request-weighted-edf"),
    pytest.param(RingHash(), (1, 1, 1, 1), 0.06, id="ring-hash-random-hash"),
    pytest.param(RingHash(), (1, 3), 0.06, id="ring-hash-weighted"),
    pytest.param(Maglev(), (1, 1, 1), 0.03, id="maglev-equal"),
    pytest.param(Maglev(), (1, 2), 0.03, id="maglev-weighted"),
]


@pytest.mark.parametrize(("policy", "weights", "tolerance"), DISTRIBUTION)
def test_distribution(policy: LbPolicy, weights: tuple[int, ...], tolerance: float) -> None:
    rng = random.Random(1234)
    picker = build_picker(policy, make(weights), rng)
    picks = 6000
    got = shares(picker, rng, picks)
    total = sum(weights)
    for share, weight in zip(got, weights, strict=True):
        assert abs(share - weight / total) <= tolerance, (got, weights)


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(RoundRobin(), id="rr"),
        pytest.param(Random(), id="random"),
        pytest.param(LeastRequest(), id="least-request"),
        pytest.param(RingHash(), id="ring-hash"),
        pytest.param(Maglev(), id="maglev"),
        pytest.param(PickFirst(), id="pick-first"),
    ],
)
class TestHealthAndExclusion:
    def test_skips_unhealthy_eds_status(self, policy: LbPolicy) -> None:
        endpoints = make((1, 1, 1, 1), ("UNHEALTHY", "HEALTHY", "DRAINING", "UNKNOWN"))
        rng = random.Random(5)
        picker = build_picker(policy, endpoints, rng)
        seen = {picker.pick(rng).address for _ in range(200)}  # type: ignore[union-attr]
        assert seen <= {"10.0.0.2:8080", "10.0.0.4:8080"}

    def test_skips_endpoint_ejected_after_build(self, policy: LbPolicy) -> None:
        endpoints = make((1, 1, 1))
        rng = random.Random(6)
        picker = build_picker(policy, endpoints, rng)
        endpoints[0].ejected = True
        endpoints[2].ejected = True
        for _ in range(100):
            assert picker.pick(rng, rng.getrandbits(64)) is endpoints[1]

    def test_exclude_avoids_previous_hosts(self, policy: LbPolicy) -> None:
        endpoints = make((1, 1, 1))
        rng = random.Random(7)
        picker = build_picker(policy, endpoints, rng)
        for _ in range(100):
            first = picker.pick(rng, 42)
            assert first is not None
            second = picker.pick(rng, 42, exclude={first.key})
            assert second is not None and second is not first

    def test_exclude_everything_still_returns_a_healthy_one(self, policy: LbPolicy) -> None:
        endpoints = make((1, 1), ("HEALTHY", "UNHEALTHY"))
        rng = random.Random(8)
        picker = build_picker(policy, endpoints, rng)
        keys = {e.key for e in endpoints}
        assert picker.pick(rng, 7, exclude=keys) is endpoints[0]

    def test_nothing_usable_returns_none(self, policy: LbPolicy) -> None:
        endpoints = make((1, 1), ("UNHEALTHY", "TIMEOUT"))
        rng = random.Random(9)
        assert build_picker(policy, endpoints, rng).pick(rng, 1) is None
        assert build_picker(policy, [], rng).pick(rng, 1) is None

    def test_panic_ignores_health(self, policy: LbPolicy) -> None:
        endpoints = make((1, 1), ("UNHEALTHY", "UNHEALTHY"))
        rng = random.Random(10)
        picker = build_picker(policy, endpoints, rng, panic=True)
        assert picker.panic
        chosen = picker.pick(rng, 3)
        assert chosen in endpoints


def test_round_robin_random_start_and_rotation() -> None:
    endpoints = make((1, 1, 1, 1, 1))
    starts = set()
    for seed in range(20):
        rng = random.Random(seed)
        picker = RoundRobinPicker(endpoints, rng)
        sequence = [picker.pick(rng) for _ in range(10)]
        starts.add(sequence[0].address)  # type: ignore[union-attr]
        first = endpoints.index(sequence[0])  # type: ignore[arg-type]
        assert sequence == [endpoints[(first + i) % 5] for i in range(10)]
    assert len(starts) > 1


def test_round_robin_weighted_is_smooth() -> None:
    endpoints = make((1, 3))
    rng = random.Random(3)
    picker = RoundRobinPicker(endpoints, rng)
    window = [picker.pick(rng) for _ in range(400)]
    for start in range(0, 400, 4):
        chunk = window[start : start + 4]
        assert 0 <= chunk.count(endpoints[0]) <= 2


def test_round_robin_explicit_weights() -> None:
    endpoints = make((1, 1))
    rng = random.Random(4)
    picker = RoundRobinPicker(endpoints, rng, weights=[1.0, 4.0])
    counts = Counter(picker.pick(rng) for _ in range(500))
    assert counts[endpoints[1]] == 400


def test_weights_length_checked() -> None:
    with pytest.raises(ValueError, match="2 weights given for 3 endpoints"):
        RoundRobinPicker(make(), random.Random(), weights=[1.0, 2.0])


@pytest.mark.parametrize(
    ("active", "choice_count", "min_share_idle"),
    [
        pytest.param((0, 50, 50), 2, 0.50, id="p2c-one-idle-of-three"),
        pytest.param((0, 50, 50), 3, 0.65, id="p3c-one-idle-of-three"),
        pytest.param((0, 10, 10, 10, 10), 2, 0.33, id="p2c-one-idle-of-five"),
    ],
)
def test_least_request_prefers_idle(
    active: tuple[int, ...], choice_count: int, min_share_idle: float
) -> None:
    endpoints = make((1,) * len(active))
    for endpoint, count in zip(endpoints, active, strict=True):
        endpoint.active_requests = count
    rng = random.Random(11)
    picker = LeastRequestPicker(endpoints, rng, choice_count=choice_count)
    picks = 3000
    idle = sum(picker.pick(rng) is endpoints[0] for _ in range(picks))
    # P(idle sampled at least once) = 1 - (1 - 1/n)^choices
    n = len(active)
    expected = 1 - (1 - 1 / n) ** choice_count
    assert idle / picks >= min_share_idle
    assert abs(idle / picks - expected) < 0.04


def test_least_request_weighted_uses_active_requests() -> None:
    endpoints = make((2, 1))
    endpoints[0].active_requests = 9  # effective weight 2 / 10 vs 1 / 1
    rng = random.Random(12)
    picker = LeastRequestPicker(endpoints, rng)
    counts = Counter(picker.pick(rng) for _ in range(600))
    assert 480 <= counts[endpoints[1]] <= 520  # 1 : 0.2


def test_least_request_bias_zero_is_weighted_round_robin() -> None:
    endpoints = make((2, 1))
    endpoints[0].active_requests = 100
    rng = random.Random(13)
    picker = LeastRequestPicker(endpoints, rng, active_request_bias=0.0)
    counts = Counter(picker.pick(rng) for _ in range(300))
    assert counts[endpoints[0]] == 200


def test_pick_first_order_and_shuffle() -> None:
    endpoints = make((1, 1, 1), ("UNHEALTHY", "HEALTHY", "HEALTHY"))
    rng = random.Random(14)
    assert PickFirstPicker(endpoints, rng).pick(rng) is endpoints[1]
    firsts = {
        PickFirstPicker(make((1,) * 6), random.Random(seed), shuffle=True).endpoints[0].address
        for seed in range(10)
    }
    assert len(firsts) > 1


def test_random_picker_reproducible() -> None:
    endpoints = make((1, 2, 3))
    a = RandomPicker(endpoints, random.Random(1))
    b = RandomPicker(endpoints, random.Random(1))
    ra, rb = random.Random(2), random.Random(2)
    assert [a.pick(ra) for _ in range(50)] == [b.pick(rb) for _ in range(50)]


def test_repr_names_size() -> None:
    picker = build_picker(RoundRobin(), make(), random.Random())
    assert repr(picker) == "RoundRobinPicker(3 endpoints)"
