"""Cluster choice: single, weighted (injected RNG), cluster_header."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from proxyless.resources.model import ClusterWeight, RouteAction
from proxyless.routing import RequestInfo, choose_cluster


def _req(headers: dict[str, str] | None = None, is_grpc: bool = True) -> RequestInfo:
    return RequestInfo("svc", "/pkg.S/M", headers=headers or {}, is_grpc=is_grpc)


@pytest.mark.parametrize(
    ("action", "request_info", "expected"),
    [
        pytest.param(RouteAction(cluster="a"), _req(), "a", id="single"),
        pytest.param(
            RouteAction(cluster_header="x-cluster"),
            _req({"x-cluster": "blue"}),
            "blue",
            id="header",
        ),
        pytest.param(RouteAction(cluster_header="x-cluster"), _req(), None, id="header-missing"),
        pytest.param(
            RouteAction(cluster_header="x-cluster"),
            _req({"x-cluster": ""}),
            None,
            id="header-empty",
        ),
        pytest.param(
            RouteAction(cluster_header="x-c-bin"),
            _req({"x-c-bin": "a"}),
            None,
            id="header-bin-grpc",
        ),
        pytest.param(
            RouteAction(weighted_clusters=(ClusterWeight("only", 5),)),
            _req(),
            "only",
            id="one-weight",
        ),
    ],
)
def test_choose_cluster(
    action: RouteAction, request_info: RequestInfo, expected: str | None
) -> None:
    name, _ = choose_cluster(action, request_info, random.Random(1))
    assert name == expected


@pytest.mark.parametrize(
    ("weights", "tolerance"),
    [
        pytest.param((90, 10), 0.02, id="90-10"),
        pytest.param((1, 1, 2), 0.02, id="1-1-2"),
        pytest.param((1, 999), 0.005, id="skewed"),
    ],
)
def test_weighted_split(weights: tuple[int, ...], tolerance: float) -> None:
    entries = tuple(ClusterWeight(f"c{i}", w) for i, w in enumerate(weights))
    action = RouteAction(weighted_clusters=entries)
    rng = random.Random(2024)
    picks = 20_000
    counts: Counter[str] = Counter()
    for _ in range(picks):
        name, entry = choose_cluster(action, _req(), rng)
        assert entry is not None and entry.name == name
        counts[name or ""] += 1
    total = sum(weights)
    for i, w in enumerate(weights):
        assert abs(counts[f"c{i}"] / picks - w / total) <= tolerance


def test_weighted_uses_cumulative_randrange() -> None:
    entries = (ClusterWeight("a", 3), ClusterWeight("b", 7))
    action = RouteAction(weighted_clusters=entries)
    rng = random.Random(5)
    expected_rng = random.Random(5)
    for _ in range(50):
        r = expected_rng.randrange(10)
        name, _ = choose_cluster(action, _req(), rng)
        assert name == ("a" if r < 3 else "b")
