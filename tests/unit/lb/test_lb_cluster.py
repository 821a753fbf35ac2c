"""ClusterLoadBalancer: state across updates, draining, priorities, panic, drops, errors."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest

from proxyless.config.snapshot import ClusterConfig
from proxyless.errors import ClusterNotAvailable, NoHealthyEndpoints
from proxyless.lb import ClusterLoadBalancer, EndpointState
from proxyless.resources.model import (
    Cluster,
    ClusterLoadAssignment,
    DropOverload,
    Endpoint,
    HealthStatus,
    LbPolicy,
    Locality,
    LocalityEndpoints,
    RingHash,
    RoundRobin,
)

ZONE_A = Locality("r", "a")
ZONE_B = Locality("r", "b")


def ep(host: int, health: HealthStatus = "HEALTHY", weight: int = 1, net: int = 0) -> Endpoint:
    return Endpoint(f"10.0.{net}.{host}", 8080, health, weight)


def config(
    priorities: Sequence[Sequence[Endpoint]],
    *,
    policy: LbPolicy | None = None,
    drops: tuple[DropOverload, ...] = (),
    locality_weighted: bool = False,
    name: str = "svc",
    panic_threshold: float = 50.0,
) -> ClusterConfig:
    levels = tuple(
        (LocalityEndpoints(ZONE_A, 1, p, tuple(endpoints)),)
        for p, endpoints in enumerate(priorities)
    )
    cluster = Cluster(
        name,
        "EDS",
        lb_policy=policy or RoundRobin(),
        locality_weighted_lb=locality_weighted,
        healthy_panic_threshold=panic_threshold,
    )
    return ClusterConfig(name, cluster, ClusterLoadAssignment(name, levels, drop_overloads=drops))


def addresses(lb: ClusterLoadBalancer, rng: random.Random, picks: int) -> Counter[str]:
    return Counter(lb.pick(None, rng).address for _ in range(picks))


def test_round_robin_over_one_priority() -> None:
    lb = ClusterLoadBalancer(config([[ep(1), ep(2), ep(3)]]), random.Random(1))
    counts = addresses(lb, random.Random(2), 300)
    assert sorted(counts.values()) == [100, 100, 100]


def test_update_keeps_state_and_drains_removed() -> None:
    lb = ClusterLoadBalancer(config([[ep(1), ep(2), ep(3)]]), random.Random(1))
    first = {e.key: e for e in lb.endpoints}
    first[("10.0.0.1", 8080)].active_requests = 4
    first[("10.0.0.2", 8080)].ejected = True
    removed = lb.update(config([[ep(1), ep(2, weight=5), ep(4)]]))
    assert [e.key for e in removed] == [("10.0.0.3", 8080)]
    assert removed[0].draining
    kept = lb.endpoint(("10.0.0.1", 8080))
    assert kept is first[("10.0.0.1", 8080)] and kept.active_requests == 4
    reweighted = lb.endpoint(("10.0.0.2", 8080))
    assert reweighted is first[("10.0.0.2", 8080)] and reweighted.ejected and reweighted.weight == 5
    assert lb.endpoint(("10.0.0.3", 8080)) is None
    # an endpoint coming back is a fresh, non-draining member again
    back = lb.update(config([[ep(1), ep(3)]]))
    assert {e.key for e in back} == {("10.0.0.2", 8080), ("10.0.0.4", 8080)}
    returned = lb.endpoint(("10.0.0.3", 8080))
    assert returned is not None and not returned.draining


def test_update_moves_endpoint_between_priorities() -> None:
    lb = ClusterLoadBalancer(config([[ep(1)], [ep(2)]]), random.Random(1))
    state = lb.endpoint(("10.0.0.2", 8080))
    lb.update(config([[ep(2)], [ep(1)]]))
    assert lb.endpoint(("10.0.0.2", 8080)) is state and state is not None and state.priority == 0


def test_unchanged_update_keeps_picker_rotation() -> None:
    cfg = config([[ep(1), ep(2), ep(3)]])
    lb = ClusterLoadBalancer(cfg, random.Random(1))
    rng = random.Random(2)
    before = [lb.pick(None, rng).address for _ in range(2)]
    lb.update(cfg)
    after = lb.pick(None, rng).address
    assert len({*before, after}) == 3


FAILOVER = [
    pytest.param("envoy", ["HEALTHY"] * 2, {"p0": 1.0}, id="envoy-p0-healthy"),
    pytest.param("envoy", ["UNHEALTHY"] * 2, {"p1": 1.0}, id="envoy-p0-down"),
    pytest.param("envoy", ["HEALTHY", "UNHEALTHY"], {"p0": 0.7, "p1": 0.3}, id="envoy-p0-half"),
    pytest.param("grpc", ["HEALTHY", "UNHEALTHY"], {"p0": 1.0}, id="grpc-p0-half"),
    pytest.param("grpc", ["UNHEALTHY"] * 2, {"p1": 1.0}, id="grpc-p0-down"),
]


@pytest.mark.parametrize(("mode", "p0_health", "shares"), FAILOVER)
def test_priority_failover(
    mode: str, p0_health: list[HealthStatus], shares: dict[str, float]
) -> None:
    p0 = [ep(i + 1, h) for i, h in enumerate(p0_health)]
    p1 = [ep(1, net=1), ep(2, net=1)]
    lb = ClusterLoadBalancer(config([p0, p1]), random.Random(3), mode=mode)  # type: ignore[arg-type]
    rng = random.Random(4)
    picks = 2000
    counts = Counter(f"p{lb.pick(None, rng).priority}" for _ in range(picks))
    for level, share in shares.items():
        assert abs(counts[level] / picks - share) < 0.04


def test_failover_and_back_via_eds() -> None:
    healthy = config([[ep(1), ep(2)], [ep(1, net=1)]])
    down = config([[ep(1, "UNHEALTHY"), ep(2, "DRAINING")], [ep(1, net=1)]])
    lb = ClusterLoadBalancer(healthy, random.Random(5))
    rng = random.Random(6)
    assert {lb.pick(None, rng).priority for _ in range(50)} == {0}
    lb.update(down)
    assert {lb.pick(None, rng).priority for _ in range(50)} == {1}
    lb.update(healthy)
    assert {lb.pick(None, rng).priority for _ in range(50)} == {0}


def test_set_ejected_shifts_load_and_back() -> None:
    lb = ClusterLoadBalancer(config([[ep(1), ep(2)], [ep(1, net=1)]]), random.Random(7))
    rng = random.Random(8)
    first, second = lb.endpoints[0], lb.endpoints[1]
    lb.set_ejected(first, True)
    assert lb.load.loads == (70, 30)
    assert first not in {lb.pick(None, rng) for _ in range(200)}
    lb.set_ejected(second, True)
    assert lb.load.loads == (0, 100)
    lb.set_ejected(first, False, refresh=False)
    lb.set_ejected(second, False, refresh=False)
    lb.refresh_health()
    assert lb.load.loads == (100, 0)
    assert {lb.pick(None, rng) for _ in range(20)} == {first, second}


def test_health_changed_behind_its_back_is_noticed() -> None:
    cfg = config([[ep(1), ep(2), ep(3)]], panic_threshold=0.0)  # no panic: health only
    lb = ClusterLoadBalancer(cfg, random.Random(9))
    rng = random.Random(10)
    a, b, c = lb.endpoints
    lb.set_ejected(a, True)  # pickers now hold b and c only
    b.ejected = True  # not announced: the pick-time check skips it
    assert all(lb.pick(None, rng) is c for _ in range(20))
    c.ejected = True
    a.ejected = False  # not announced: the failing pick rebuilds and finds a
    assert all(lb.pick(None, rng) is a for _ in range(10))
    assert lb.load.health == (46,)


def test_envoy_panic_uses_unhealthy_endpoints() -> None:
    lb = ClusterLoadBalancer(
        config([[ep(1), ep(2, "UNHEALTHY"), ep(3, "UNHEALTHY")]]), random.Random(11)
    )
    assert lb.load.panic == (True,)
    counts = addresses(lb, random.Random(12), 300)
    assert len(counts) == 3


def test_panic_disabled_fails() -> None:
    lb = ClusterLoadBalancer(config([[ep(1, "UNHEALTHY")]], panic_threshold=0.0), random.Random(13))
    with pytest.raises(NoHealthyEndpoints):
        lb.pick(None, random.Random(14))


def test_grpc_mode_fails_fast_with_located_message() -> None:
    cfg = config([[ep(1, "UNHEALTHY"), ep(2)], [ep(1, "TIMEOUT", net=1)]])
    lb = ClusterLoadBalancer(cfg, random.Random(15), mode="grpc")
    lb.set_ejected(lb.endpoints[1], True)
    with pytest.raises(NoHealthyEndpoints) as caught:
        lb.pick(None, random.Random(16))
    message = str(caught.value)
    assert "'svc'" in message
    assert "priority 0: 2 endpoints, 0 healthy, 1 unhealthy in EDS, 1 ejected" in message
    assert "priority 1: 1 endpoints, 0 healthy, 1 unhealthy in EDS, 0 ejected" in message
    assert caught.value.flag == "UH"


def test_empty_cluster() -> None:
    lb = ClusterLoadBalancer(config([]), random.Random(17))
    with pytest.raises(NoHealthyEndpoints, match="has no endpoints"):
        lb.pick(None, random.Random(18))


def test_exclude_previous_host() -> None:
    lb = ClusterLoadBalancer(config([[ep(1), ep(2)]]), random.Random(19))
    rng = random.Random(20)
    for _ in range(20):
        first = lb.pick(None, rng)
        assert lb.pick(None, rng, exclude={first.key}) is not first


def test_ring_hash_cluster_is_sticky_and_priority_by_hash() -> None:
    cfg = config([[ep(1), ep(2, "UNHEALTHY")], [ep(1, net=1), ep(2, net=1)]], policy=RingHash())
    lb = ClusterLoadBalancer(cfg, random.Random(21))
    assert lb.load.loads == (70, 30)
    rng = random.Random(22)
    for key in range(0, 2**64, 2**58):
        chosen = lb.pick(key, rng)
        assert all(lb.pick(key, rng) is chosen for _ in range(3))
        assert chosen.priority == (0 if key % 100 < 70 else 1)


def test_ring_hash_random_when_no_hash() -> None:
    lb = ClusterLoadBalancer(
        config([[ep(i) for i in range(1, 5)]], policy=RingHash()), random.Random(23)
    )
    assert len(addresses(lb, random.Random(24), 200)) == 4


def test_locality_weighted_cluster() -> None:
    levels = (
        (
            LocalityEndpoints(ZONE_A, 3, 0, (ep(1), ep(2))),
            LocalityEndpoints(ZONE_B, 1, 0, (ep(3), ep(4))),
        ),
    )
    cluster = Cluster("svc", "EDS", locality_weighted_lb=True)
    lb = ClusterLoadBalancer(
        ClusterConfig("svc", cluster, ClusterLoadAssignment("svc", levels)), random.Random(25)
    )
    rng = random.Random(26)
    counts = Counter(lb.pick(None, rng).locality for _ in range(4000))
    assert abs(counts[ZONE_A] / 4000 - 0.75) < 0.03


@pytest.mark.parametrize(
    ("drops", "expected"),
    [
        pytest.param((DropOverload("lb", 250_000),), {"lb": 0.25}, id="quarter"),
        pytest.param(
            (DropOverload("a", 500_000), DropOverload("b", 500_000)),
            {"a": 0.5, "b": 0.25},
            id="in-order",
        ),
        pytest.param((DropOverload("never", 0),), {}, id="zero"),
        pytest.param((DropOverload("all", 1_000_000),), {"all": 1.0}, id="all"),
    ],
)
def test_drop_overloads(drops: tuple[DropOverload, ...], expected: dict[str, float]) -> None:
    lb = ClusterLoadBalancer(config([[ep(1)]], drops=drops), random.Random(27))
    rng = random.Random(28)
    picks = 4000
    counts: Counter[str] = Counter()
    for _ in range(picks):
        dropped = lb.check_drop(rng)
        if dropped is not None:
            counts[dropped.category] += 1
    assert set(counts) == set(expected)
    for category, share in expected.items():
        assert abs(counts[category] / picks - share) < 0.03


def test_no_drops_consume_no_randomness() -> None:
    lb = ClusterLoadBalancer(config([[ep(1)]]), random.Random(29))
    rng = random.Random(30)
    state = rng.getstate()
    assert lb.check_drop(rng) is None
    assert rng.getstate() == state


def test_debug_state() -> None:
    lb = ClusterLoadBalancer(
        config([[ep(1), ep(2, "UNHEALTHY")], [ep(1, net=1)]], drops=(DropOverload("x", 5),)),
        random.Random(31),
    )
    lb.endpoints[0].active_requests = 2
    state = lb.debug_state()
    assert state["cluster"] == "svc" and state["priority_mode"] == "envoy"
    assert state["drop_overloads"] == [{"category": "x", "per_million": 5}]
    p0 = state["priorities"][0]
    assert (p0["load_percent"], p0["health_percent"], p0["panic"]) == (70, 70, False)
    assert p0["localities"][0]["locality"] == "r/a/"
    first = p0["localities"][0]["endpoints"][0]
    assert first == {
        "address": "10.0.0.1:8080",
        "health": "HEALTHY",
        "weight": 1,
        "healthy": True,
        "ejected": False,
        "draining": False,
        "connectivity": None,
        "active_requests": 2,
    }
    assert "ClusterLoadBalancer('svc', 3 endpoints, P0 70%" in repr(lb)


def test_aggregate_cluster_concatenates_children() -> None:
    primary = config([[ep(1, "UNHEALTHY")]], name="primary")
    fallback = config([[ep(1, net=1)]], name="fallback", policy=RingHash())
    aggregate = ClusterConfig(
        "agg",
        Cluster("agg", "AGGREGATE", aggregate_clusters=("primary", "fallback")),
        children=("primary", "fallback"),
    )
    lb = ClusterLoadBalancer(
        aggregate, random.Random(32), clusters={"primary": primary, "fallback": fallback}
    )
    state = lb.debug_state()
    assert [p["cluster"] for p in state["priorities"]] == ["primary", "fallback"]
    assert [p["policy"] for p in state["priorities"]] == ["RoundRobin", "RingHash"]
    assert lb.pick(None, random.Random(33)).address == "10.0.1.1:8080"


def test_bad_configs() -> None:
    lb = ClusterLoadBalancer(config([[ep(1)]]), random.Random(34))
    with pytest.raises(ValueError, match="given config of 'other'"):
        lb.update(config([[ep(1)]], name="other"))
    broken = ClusterConfig("svc", None, error=ClusterNotAvailable("NACKed"))
    with pytest.raises(ClusterNotAvailable, match="'svc' is not usable: NACKed"):
        lb.update(broken)
    with pytest.raises(ValueError, match="priority mode"):
        ClusterLoadBalancer(config([[ep(1)]]), random.Random(), mode="x")  # type: ignore[arg-type]


def test_endpoint_state_shared_with_pickers() -> None:
    lb = ClusterLoadBalancer(config([[ep(1)]]), random.Random(35))
    chosen = lb.pick(None, random.Random(36))
    assert isinstance(chosen, EndpointState)
    assert chosen is lb.endpoint(("10.0.0.1", 8080))
