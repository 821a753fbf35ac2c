"""An EDS update of a ClusterLoadBalancer: the endpoints it adds and removes,
which members a picker is built from, and when a picker is rebuilt."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from proxyless.config.snapshot import ClusterConfig
from proxyless.lb import ClusterLoadBalancer, EndpointState
from proxyless.lb.build import member_of_picker, picker_members
from proxyless.resources.model import (
    Cluster,
    ClusterLoadAssignment,
    Endpoint,
    HealthStatus,
    LbPolicy,
    LeastRequest,
    Locality,
    LocalityEndpoints,
    Maglev,
    RingHash,
    RoundRobin,
    WrrLocality,
)

ZONE_A = Locality("r", "a")
ZONE_B = Locality("r", "b")


def ep(host: int, health: HealthStatus = "HEALTHY", weight: int = 1) -> Endpoint:
    return Endpoint(f"10.0.0.{host}", 8080, health, weight)


def config(
    *localities: tuple[Locality, Sequence[Endpoint]], policy: LbPolicy | None = None
) -> ClusterConfig:
    level = tuple(LocalityEndpoints(loc, 1, 0, tuple(eps)) for loc, eps in localities)
    cluster = Cluster("svc", "EDS", lb_policy=policy or RoundRobin())
    return ClusterConfig("svc", cluster, ClusterLoadAssignment("svc", (level,)))


def keys(states: Sequence[EndpointState]) -> list[int]:
    return [int(s.key[0].rsplit(".", 1)[1]) for s in states]


@pytest.mark.parametrize(
    ("before", "after", "added", "removed"),
    [
        pytest.param([1, 2], [1, 2], [], [], id="unchanged"),
        pytest.param([1, 2], [3, 4], [3, 4], [1, 2], id="every-address-changed"),
        pytest.param([1, 2, 3], [1, 4, 3], [4], [2], id="one-replaced"),
        pytest.param([], [2, 1], [2, 1], [], id="first-endpoints-in-order"),
        pytest.param([1, 2], [], [], [1, 2], id="all-gone"),
    ],
)
def test_apply_reports_added_and_removed(
    before: list[int], after: list[int], added: list[int], removed: list[int]
) -> None:
    lb = ClusterLoadBalancer(config((ZONE_A, [ep(h) for h in before])), random.Random(1))
    old = {s.key: s for s in lb.endpoints}
    changes = lb.apply(config((ZONE_A, [ep(h) for h in after])))
    assert keys(changes.added) == added
    assert keys(changes.removed) == removed
    assert all(s.draining and old[s.key] is s for s in changes.removed)
    assert not any(s.key in old for s in changes.added)
    assert keys(lb.endpoints) == after


def test_update_still_returns_the_removed_endpoints() -> None:
    lb = ClusterLoadBalancer(config((ZONE_A, [ep(1), ep(2)])), random.Random(1))
    removed = lb.update(config((ZONE_A, [ep(2), ep(3)])))
    assert isinstance(removed, list) and keys(removed) == [1]


POLICIES = [
    pytest.param(RoundRobin(), id="round-robin"),
    pytest.param(LeastRequest(), id="least-request"),
    pytest.param(RingHash(), id="ring-hash"),
    pytest.param(Maglev(), id="maglev"),
    pytest.param(WrrLocality(RoundRobin()), id="wrr-locality-round-robin"),
    pytest.param(WrrLocality(Maglev()), id="wrr-locality-maglev"),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_picker_members_is_member_of_picker_for_each(policy: LbPolicy) -> None:
    states = [
        EndpointState(ep(i, health), ZONE_A, 0)
        for i, health in enumerate(
            ["HEALTHY", "UNKNOWN", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED", "HEALTHY"]
        )
    ]
    states[1].ejected = True
    states[6].ejected = True
    assert picker_members(policy, states) == [s for s in states if member_of_picker(policy, s)]


def _picker(lb: ClusterLoadBalancer) -> object:
    return lb._view.priorities[0].picker


@pytest.mark.parametrize(
    ("policy", "change", "rebuilt"),
    [
        pytest.param(RoundRobin(), "same", False, id="same-endpoints"),
        pytest.param(RoundRobin(), "same-values-new-objects", False, id="new-objects"),
        pytest.param(RoundRobin(), "weight", True, id="weight"),
        pytest.param(RoundRobin(), "health", True, id="health"),
        pytest.param(RoundRobin(), "locality", True, id="moved-locality"),
        pytest.param(RoundRobin(), "order", True, id="order"),
        pytest.param(RoundRobin(), "eject", True, id="ejected"),
        pytest.param(Maglev(), "eject", False, id="maglev-keeps-ejected"),
        pytest.param(WrrLocality(RoundRobin()), "locality", True, id="wrr-locality-moved"),
        pytest.param(WrrLocality(RoundRobin()), "same", False, id="wrr-locality-same"),
    ],
)
def test_picker_is_rebuilt_only_when_its_members_change(
    policy: LbPolicy, change: str, rebuilt: bool
) -> None:
    a, b = [ep(1), ep(2)], [ep(3), ep(4)]
    lb = ClusterLoadBalancer(config((ZONE_A, a), (ZONE_B, b), policy=policy), random.Random(1))
    picker = _picker(lb)
    if change == "same":
        lb.update(config((ZONE_A, a), (ZONE_B, b), policy=policy))
    elif change == "same-values-new-objects":
        lb.update(
            config((Locality("r", "a"), [ep(1), ep(2)]), (ZONE_B, [ep(3), ep(4)]), policy=policy)
        )
    elif change == "weight":
        lb.update(config((ZONE_A, [ep(1), ep(2, weight=3)]), (ZONE_B, b), policy=policy))
    elif change == "health":
        lb.update(config((ZONE_A, [ep(1), ep(2, "UNHEALTHY")]), (ZONE_B, b), policy=policy))
    elif change == "locality":
        lb.update(config((ZONE_A, [ep(1)]), (ZONE_B, [ep(2), *b]), policy=policy))
    elif change == "order":
        lb.update(config((ZONE_A, [ep(2), ep(1)]), (ZONE_B, b), policy=policy))
    elif change == "eject":
        state = lb.endpoint(("10.0.0.1", 8080))
        assert state is not None
        lb.set_ejected(state, True)
    assert (_picker(lb) is not picker) == rebuilt


def test_endpoint_that_left_and_came_back_gets_a_new_picker() -> None:
    lb = ClusterLoadBalancer(config((ZONE_A, [ep(1), ep(2)])), random.Random(1))
    first = lb.endpoint(("10.0.0.2", 8080))
    lb.update(config((ZONE_A, [ep(1)])))
    lb.update(config((ZONE_A, [ep(1), ep(2)])))
    back = lb.endpoint(("10.0.0.2", 8080))
    assert back is not None and back is not first
    picker = _picker(lb)
    assert picker is not None and back in picker.endpoints and first not in picker.endpoints
