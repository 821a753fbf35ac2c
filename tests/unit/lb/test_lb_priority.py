"""Priority load: Envoy levels with overprovisioning and panic, and gRPC's first-healthy mode."""

from __future__ import annotations

import pytest

from proxyless.lb import EndpointState, PriorityLoad, priority_load
from proxyless.resources.model import Endpoint, Locality

LOC = Locality("r", "z")


def level(
    healthy: int, total: int, priority: int = 0, weights: list[int] | None = None
) -> list[EndpointState]:
    out = []
    for i in range(total):
        status = "HEALTHY" if i < healthy else "UNHEALTHY"
        weight = weights[i] if weights else 1
        out.append(
            EndpointState(Endpoint(f"10.{priority}.0.{i + 1}", 80, status, weight), LOC, priority)
        )  # type: ignore[arg-type]
    return out


ENVOY = [
    # levels as (healthy, total); expected loads, health, panic flags
    pytest.param([(1, 1)], (100,), (100,), (False,), id="1-of-1"),
    pytest.param([(3, 3)], (100,), (100,), (False,), id="3-of-3"),
    pytest.param([(2, 3)], (100,), (93,), (False,), id="2-of-3-scaled"),
    pytest.param([(1, 2)], (100,), (70,), (False,), id="1-of-2-at-threshold"),
    pytest.param([(1, 3)], (100,), (46,), (True,), id="1-of-3-panic"),
    pytest.param([(0, 1)], (100,), (0,), (True,), id="0-of-1-total-panic"),
    pytest.param([(2, 3), (3, 3)], (93, 7), (93, 100), (False, False), id="p0-93-spills-7"),
    pytest.param([(1, 2), (2, 2)], (70, 30), (70, 100), (False, False), id="p0-70-p1-30"),
    pytest.param([(0, 3), (1, 1)], (0, 100), (0, 100), (False, False), id="p0-down-p1-all"),
    pytest.param([(5, 7), (1, 1)], (100, 0), (100, 100), (False, False), id="p0-71pct-keeps-all"),
    pytest.param([(1, 3), (1, 3)], (50, 50), (46, 46), (True, True), id="total-panic-by-count"),
    pytest.param([(0, 1), (0, 3)], (25, 75), (0, 0), (True, True), id="total-panic-sizes"),
    pytest.param(
        [(1, 4), (1, 2)], (35, 65), (35, 70), (False, False), id="availability-100-never-panics"
    ),
    pytest.param([(0, 4), (1, 2)], (0, 100), (0, 70), (True, False), id="p0-panic-alone"),
    pytest.param(
        [(1, 10), (1, 10), (1, 10)],
        (34, 33, 33),
        (14, 14, 14),
        (True, True, True),
        id="three-levels-total-panic",
    ),
    pytest.param(
        [(1, 5), (2, 5), (5, 5)],
        (28, 56, 16),
        (28, 56, 100),
        (False, False, False),
        id="three-levels-spill",
    ),
    pytest.param([], (), (), (), id="no-priorities"),
]


@pytest.mark.parametrize(("levels", "loads", "health", "panic"), ENVOY)
def test_envoy_mode(
    levels: list[tuple[int, int]],
    loads: tuple[int, ...],
    health: tuple[int, ...],
    panic: tuple[bool, ...],
) -> None:
    result = priority_load([level(h, t, p) for p, (h, t) in enumerate(levels)])
    assert (result.loads, result.health, result.panic) == (loads, health, panic)
    if levels:
        assert sum(result.loads) == 100


GRPC = [
    pytest.param([(1, 1)], (100,), id="1-of-1"),
    pytest.param([(1, 3)], (100,), id="1-of-3-no-panic"),
    pytest.param([(1, 3), (3, 3)], (100, 0), id="p0-any-healthy-keeps-all"),
    pytest.param([(0, 3), (3, 3)], (0, 100), id="p0-none-healthy"),
    pytest.param([(0, 3), (0, 1), (1, 4)], (0, 0, 100), id="third-level"),
    pytest.param([(0, 3), (0, 3)], (0, 0), id="nothing-healthy-fails"),
]


@pytest.mark.parametrize(("levels", "loads"), GRPC)
def test_grpc_mode(levels: list[tuple[int, int]], loads: tuple[int, ...]) -> None:
    result = priority_load([level(h, t, p) for p, (h, t) in enumerate(levels)], mode="grpc")
    assert result.loads == loads
    assert not any(result.panic)
    assert result.choose(0) == (loads.index(100) if 100 in loads else None)


@pytest.mark.parametrize(
    ("threshold", "levels", "loads", "panic"),
    [
        pytest.param(
            0.0, [(0, 2), (0, 2)], (100, 0), (False, False), id="disabled-nothing-healthy"
        ),
        pytest.param(0.0, [(1, 4)], (100,), (False,), id="disabled-no-panic"),
        pytest.param(30.0, [(1, 3)], (100,), (False,), id="33pct-above-30"),
        pytest.param(80.0, [(3, 4)], (100,), (False,), id="75pct-health-100-no-panic"),
        pytest.param(100.0, [(2, 3)], (100,), (True,), id="threshold-100"),
        pytest.param(150.0, [(2, 3)], (100,), (True,), id="threshold-capped-100"),
    ],
)
def test_panic_threshold(
    threshold: float, levels: list[tuple[int, int]], loads: tuple[int, ...], panic: tuple[bool, ...]
) -> None:
    result = priority_load(
        [level(h, t, p) for p, (h, t) in enumerate(levels)], panic_threshold=threshold
    )
    assert result.loads == loads
    assert result.panic == panic


def test_overprovisioning_factor() -> None:
    # 100 = no overprovisioning: health equals the healthy percentage.
    result = priority_load([level(1, 2, 0), level(2, 2, 1)], overprovisioning_factor=100)
    assert result.loads == (50, 50)
    assert result.health == (50, 100)


def test_ejected_counts_as_unhealthy() -> None:
    p0 = level(2, 2, 0)
    p0[0].ejected = True
    assert priority_load([p0, level(1, 1, 1)]).loads == (70, 30)


def test_weighted_priority_health() -> None:
    p0 = level(1, 2, 0, weights=[3, 1])  # healthy weight 3 of 4
    assert priority_load([p0, level(1, 1, 1)]).health[0] == 70
    assert priority_load([p0, level(1, 1, 1)], weighted=True).health[0] == 100


@pytest.mark.parametrize(
    ("loads", "value", "expected"),
    [
        pytest.param((70, 30), 0, 0, id="first-point"),
        pytest.param((70, 30), 69, 0, id="last-of-p0"),
        pytest.param((70, 30), 70, 1, id="first-of-p1"),
        pytest.param((70, 30), 199, 1, id="modulo"),
        pytest.param((0, 100), 0, 1, id="zero-load-skipped"),
        pytest.param((0, 0), 5, None, id="no-load"),
    ],
)
def test_choose(loads: tuple[int, ...], value: int, expected: int | None) -> None:
    load = PriorityLoad("envoy", loads, (0,) * len(loads), (False,) * len(loads), 100)
    assert load.choose(value) == expected


def test_describe_and_bad_mode() -> None:
    result = priority_load([level(1, 2, 0), level(2, 2, 1)])
    assert result.describe() == "P0 70% (health 70), P1 30% (health 100)"
    with pytest.raises(ValueError, match="'envoy' or 'grpc'"):
        priority_load([], mode="other")  # type: ignore[arg-type]
