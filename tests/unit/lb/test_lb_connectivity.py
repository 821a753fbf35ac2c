"""Connectivity and picking: READY endpoints first, the fallbacks when none is
ready, priorities, and coming back (seeded RNG, bounded picks, no transport)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from proxyless.config.snapshot import ClusterConfig
from proxyless.lb import ClusterLoadBalancer, EndpointState, build_picker
from proxyless.lb.pickers import EndpointKey, fallback_candidates
from proxyless.resources.model import (
    Cluster,
    ClusterLoadAssignment,
    Endpoint,
    LbPolicy,
    LeastRequest,
    Locality,
    LocalityEndpoints,
    Maglev,
    PickFirst,
    Random,
    RingHash,
    RoundRobin,
    WrrLocality,
)

ZONE_A = Locality("r", "a")
ZONE_B = Locality("r", "b")
PICKS = 120

TF = "TRANSIENT_FAILURE"
CONNECTING = "CONNECTING"

POLICIES = [
    pytest.param(RoundRobin(), None, id="round-robin"),
    pytest.param(RoundRobin(), (1, 2, 3), id="round-robin-weighted"),
    pytest.param(Random(), None, id="random"),
    pytest.param(LeastRequest(), None, id="least-request"),
    pytest.param(LeastRequest(), (1, 2, 3), id="least-request-weighted"),
    pytest.param(RingHash(), None, id="ring-hash"),
    pytest.param(Maglev(table_size=251), None, id="maglev"),
    pytest.param(PickFirst(), None, id="pick-first"),
    pytest.param(WrrLocality(RoundRobin()), None, id="wrr-locality"),
]

# (connectivity of endpoints 0, 1, 2; excluded indexes; indexes a pick may return)
CASES = [
    pytest.param((None, None, None), (), {0, 1, 2}, id="unknown-all-pickable"),
    pytest.param(("READY", CONNECTING, TF), (), {0}, id="only-ready"),
    pytest.param(("IDLE", CONNECTING, TF), (), {0}, id="idle-is-pickable"),
    pytest.param((None, CONNECTING, TF), (), {0}, id="unknown-is-pickable"),
    pytest.param((CONNECTING, "READY", "READY"), (), {1, 2}, id="connecting-skipped"),
    pytest.param((CONNECTING, CONNECTING, TF), (), {0, 1}, id="none-ready-connecting-first"),
    pytest.param((TF, "SHUTDOWN", TF), (), {1}, id="none-ready-shutdown-before-tf"),
    pytest.param((TF, TF, TF), (), {0, 1, 2}, id="all-tf-still-picks"),
    pytest.param(("READY", CONNECTING, CONNECTING), (0,), {0}, id="ready-beats-exclusion"),
    pytest.param(("READY", "READY", CONNECTING), (0,), {1}, id="exclusion-among-ready"),
    pytest.param((CONNECTING, CONNECTING, TF), (0,), {1}, id="exclusion-among-connecting"),
]


def make(states: Sequence[str | None], weights: Sequence[int] | None = None) -> list[EndpointState]:
    out = []
    for i, state in enumerate(states):
        weight = weights[i] if weights else 1
        locality = ZONE_A if i % 2 == 0 else ZONE_B
        es = EndpointState(Endpoint(f"10.0.0.{i + 1}", 8080, "HEALTHY", weight), locality, 0)
        es.set_connectivity(state)
        out.append(es)
    return out


@pytest.mark.parametrize(("policy", "weights"), POLICIES)
@pytest.mark.parametrize(("states", "excluded", "allowed"), CASES)
def test_pickers_prefer_ready_endpoints(
    policy: LbPolicy,
    weights: tuple[int, ...] | None,
    states: tuple[str | None, ...],
    excluded: tuple[int, ...],
    allowed: set[int],
) -> None:
    endpoints = make(states, weights)
    rng = random.Random(7)
    locality_weights = {ZONE_A: 1, ZONE_B: 1} if isinstance(policy, WrrLocality) else None
    picker = build_picker(policy, endpoints, rng, locality_weights=locality_weights)
    exclude: set[EndpointKey] = {endpoints[i].key for i in excluded}
    got = set()
    for _ in range(PICKS):
        chosen = picker.pick(rng, None, exclude)
        assert chosen is not None
        got.add(endpoints.index(chosen))
    assert got <= allowed, (got, allowed)
    if not isinstance(policy, (PickFirst, RingHash, Maglev)) and len(allowed) > 1:
        assert got == allowed  # every allowed endpoint takes picks


@pytest.mark.parametrize(
    ("state", "ready"),
    [
        pytest.param(None, True, id="unknown"),
        pytest.param("IDLE", True, id="idle"),
        pytest.param("READY", True, id="ready"),
        pytest.param(CONNECTING, False, id="connecting"),
        pytest.param(TF, False, id="transient-failure"),
        pytest.param("SHUTDOWN", False, id="shutdown"),
    ],
)
def test_set_connectivity(state: str | None, ready: bool) -> None:
    (es,) = make([state])
    assert es.ready is ready
    assert es.connectivity == state
    assert (state or "") in repr(es)


def test_fallback_candidates_order() -> None:
    endpoints = make((TF, CONNECTING, TF))
    assert fallback_candidates(endpoints, (), False) == ([endpoints[1]], True)
    assert fallback_candidates(endpoints, {endpoints[1].key}, False) == ([endpoints[1]], False)
    endpoints[1].set_connectivity(TF)
    assert fallback_candidates(endpoints, {endpoints[0].key}, False) == (
        [endpoints[1], endpoints[2]],
        True,
    )


def test_unhealthy_ready_endpoint_is_not_preferred() -> None:
    endpoints = make(("READY", CONNECTING))
    picker = build_picker(RoundRobin(), endpoints, random.Random(3))
    endpoints[0].ejected = True  # ejected after the picker was built
    rng = random.Random(4)
    assert {picker.pick(rng) for _ in range(10)} == {endpoints[1]}


def test_endpoint_comes_back_when_ready() -> None:
    endpoints = make(("READY", TF, TF))
    picker = build_picker(RoundRobin(), endpoints, random.Random(5))
    rng = random.Random(6)
    assert {picker.pick(rng) for _ in range(30)} == {endpoints[0]}
    endpoints[1].set_connectivity("READY")
    endpoints[2].set_connectivity(None)  # its connection was closed: unknown again
    assert {picker.pick(rng) for _ in range(30)} == set(endpoints)


def _two_priorities(policy: LbPolicy) -> ClusterLoadBalancer:
    levels = tuple(
        (
            LocalityEndpoints(
                ZONE_A, 1, p, (Endpoint(f"10.0.{p}.1", 80), Endpoint(f"10.0.{p}.2", 80))
            ),
        )
        for p in range(2)
    )
    cluster = Cluster("svc", "EDS", lb_policy=policy)
    config = ClusterConfig("svc", cluster, ClusterLoadAssignment("svc", levels))
    return ClusterLoadBalancer(config, random.Random(8))


@pytest.mark.parametrize(
    ("p0", "p1", "expected_priorities"),
    [
        pytest.param((None, None), (None, None), {0}, id="unknown-stays-p0"),
        pytest.param(("READY", CONNECTING), ("READY", "READY"), {0}, id="one-ready-stays-p0"),
        pytest.param((CONNECTING, TF), ("READY", TF), {1}, id="p0-not-ready-fails-over"),
        pytest.param((TF, TF), (TF, TF), {0}, id="nothing-ready-stays-p0"),
    ],
)
@pytest.mark.parametrize("policy", [RoundRobin(), RingHash()], ids=["rr", "ring-hash"])
def test_priority_without_ready_endpoint_fails_over(
    policy: LbPolicy,
    p0: tuple[str | None, str | None],
    p1: tuple[str | None, str | None],
    expected_priorities: set[int],
) -> None:
    lb = _two_priorities(policy)
    for level, states in enumerate((p0, p1)):
        members = [es for es in lb.endpoints if es.priority == level]
        for es, state in zip(members, states, strict=True):
            es.set_connectivity(state)
    # Envoy mode sends a share of load to P1 only when P0 is unhealthy: 100% P0 here.
    assert lb.load.loads[0] == 100
    rng = random.Random(9)
    got = {lb.pick(None, rng).priority for _ in range(PICKS)}
    assert got == expected_priorities


@pytest.mark.parametrize(
    "policy", [RingHash(), Maglev(table_size=251)], ids=["ring-hash", "maglev"]
)
def test_hash_policy_moves_a_key_off_an_unready_endpoint_and_back(policy: LbPolicy) -> None:
    endpoints = make((None, None, None, None))
    picker = build_picker(policy, endpoints, random.Random(10))
    rng = random.Random(11)
    key = 0x1234_5678_9ABC_DEF0
    owner = picker.pick(rng, key)
    assert owner is not None
    owner.set_connectivity(CONNECTING)
    moved = picker.pick(rng, key)
    assert moved is not None and moved is not owner
    assert all(picker.pick(rng, key) is moved for _ in range(10))  # still deterministic
    owner.set_connectivity("READY")
    assert picker.pick(rng, key) is owner
    for es in endpoints:
        es.set_connectivity(TF)
    owner.set_connectivity(CONNECTING)
    assert picker.pick(rng, key) is owner  # none ready: the connecting one
