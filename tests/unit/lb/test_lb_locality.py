"""Locality weighting: Envoy's health-scaled locality weights, wrr_locality, folded hash weights."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from proxyless.lb import (
    EndpointState,
    LocalityPicker,
    RingHashPicker,
    build_picker,
    effective_locality_weight,
    locality_name,
)
from proxyless.resources.model import (
    Endpoint,
    LeastRequest,
    Locality,
    RingHash,
    RoundRobin,
    WrrLocality,
)

EAST = Locality("us", "east")
WEST = Locality("us", "west")


def group(locality: Locality, healthy: int, total: int, base: int) -> list[EndpointState]:
    return [
        EndpointState(
            Endpoint(f"10.0.{base}.{i + 1}", 80, "HEALTHY" if i < healthy else "UNHEALTHY"),
            locality,
            0,
        )
        for i in range(total)
    ]


@pytest.mark.parametrize(
    ("weight", "healthy", "total", "expected"),
    [
        pytest.param(10, 4, 4, 10.0, id="all-healthy"),
        pytest.param(10, 3, 4, 10.0, id="75pct-still-full"),
        pytest.param(10, 1, 2, 7.0, id="50pct-70"),
        pytest.param(10, 0, 4, 0.0, id="none-healthy"),
        pytest.param(10, 0, 0, 0.0, id="empty"),
    ],
)
def test_effective_locality_weight(weight: int, healthy: int, total: int, expected: float) -> None:
    assert effective_locality_weight(weight, healthy, total) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("east", "west", "weights", "east_share"),
    [
        pytest.param((2, 2), (2, 2), {EAST: 3, WEST: 1}, 0.75, id="weights-3-1"),
        pytest.param((1, 2), (2, 2), {EAST: 1, WEST: 1}, 0.7 / 1.7, id="east-half-healthy"),
        pytest.param((0, 2), (2, 2), {EAST: 9, WEST: 1}, 0.0, id="east-down"),
        pytest.param((2, 2), (2, 2), {}, 0.5, id="missing-weights-default-1"),
    ],
)
def test_locality_shares(
    east: tuple[int, int], west: tuple[int, int], weights: dict[Locality, int], east_share: float
) -> None:
    endpoints = group(EAST, *east, base=1) + group(WEST, *west, base=2)
    rng = random.Random(21)
    picker = build_picker(WrrLocality(RoundRobin()), endpoints, rng, locality_weights=weights)
    assert isinstance(picker, LocalityPicker)
    picks = 5000
    counts = Counter(picker.pick(rng).locality for _ in range(picks))  # type: ignore[union-attr]
    assert abs(counts[EAST] / picks - east_share) < 0.03


def test_locality_child_policy_is_used() -> None:
    endpoints = group(EAST, 2, 2, 1)
    endpoints[0].active_requests = 100
    rng = random.Random(3)
    picker = build_picker(WrrLocality(LeastRequest()), endpoints, rng, locality_weights={EAST: 1})
    counts = Counter(picker.pick(rng) for _ in range(400))
    assert counts[endpoints[1]] >= 280  # P2C avoids the busy one


def test_locality_fallback_when_chosen_locality_all_ejected() -> None:
    endpoints = group(EAST, 1, 1, 1) + group(WEST, 1, 1, 2)
    rng = random.Random(4)
    picker = build_picker(
        WrrLocality(RoundRobin()), endpoints, rng, locality_weights={EAST: 99, WEST: 1}
    )
    endpoints[0].ejected = True
    assert all(picker.pick(rng) is endpoints[1] for _ in range(50))


def test_locality_exclude_prefers_other_locality() -> None:
    endpoints = group(EAST, 1, 1, 1) + group(WEST, 1, 1, 2)
    rng = random.Random(5)
    picker = build_picker(
        WrrLocality(RoundRobin()), endpoints, rng, locality_weights={EAST: 99, WEST: 1}
    )
    assert picker.pick(rng, exclude={endpoints[0].key}) is endpoints[1]
    keys = {e.key for e in endpoints}
    assert picker.pick(rng, exclude=keys) in endpoints


def test_panic_ignores_localities() -> None:
    endpoints = group(EAST, 0, 2, 1) + group(WEST, 0, 2, 2)
    rng = random.Random(6)
    picker = build_picker(
        WrrLocality(RoundRobin()), endpoints, rng, locality_weights={EAST: 1, WEST: 1}, panic=True
    )
    assert not isinstance(picker, LocalityPicker)
    assert len({picker.pick(rng) for _ in range(8)}) == 4  # type: ignore[arg-type]


def test_ring_hash_folds_locality_weights() -> None:
    endpoints = group(EAST, 1, 1, 1) + group(WEST, 3, 3, 2)
    rng = random.Random(7)
    picker = build_picker(RingHash(), endpoints, rng, locality_weights={EAST: 1, WEST: 1})
    assert isinstance(picker, RingHashPicker)
    owners = Counter(picker._owners)
    # east's single endpoint holds half the ring; each west endpoint a sixth
    assert owners[0] == 3 * owners[1] == 3 * owners[2] == 3 * owners[3]


def test_locality_name_and_repr() -> None:
    assert locality_name(Locality("r", "z", "s")) == "r/z/s"
    picker = build_picker(
        WrrLocality(RoundRobin()), group(EAST, 1, 1, 1), random.Random(), locality_weights={EAST: 2}
    )
    assert repr(picker) == "LocalityPicker(us/east/=2)"
