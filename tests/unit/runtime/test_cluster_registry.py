"""ClusterRegistry tells endpoint pools which addresses join and leave its
clusters: after every snapshot a pool's books list each address as often as
the clusters that list it."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest

from proxyless.config.snapshot import ClusterConfig, XdsConfig
from proxyless.errors import ClusterNotAvailable
from proxyless.resources.model import (
    Cluster,
    ClusterLoadAssignment,
    Endpoint,
    Locality,
    LocalityEndpoints,
    RouteConfiguration,
)
from proxyless.runtime.cluster import ClusterRegistry, release_refs, retain_refs


class _Books:
    """An EndpointPool that only keeps the books (what the real pools keep)."""

    def __init__(self) -> None:
        self.refs: dict[str, int] = {}
        self.gone: set[str] = set()

    def retain(self, addresses: Sequence[str]) -> None:
        retain_refs(self.refs, addresses)

    def release(self, addresses: Sequence[str]) -> None:
        self.gone |= release_refs(self.refs, addresses)


def _snapshot(clusters: dict[str, list[int]], version: int) -> XdsConfig:
    configs = {}
    for name, ports in clusters.items():
        endpoints = tuple(Endpoint("10.0.0.1", port, "HEALTHY") for port in ports)
        level = (LocalityEndpoints(Locality("r", "z"), 1, 0, endpoints),)
        cluster = Cluster(name, "EDS")
        configs[name] = ClusterConfig(name, cluster, ClusterLoadAssignment(name, (level,)))
    return XdsConfig("svc", None, RouteConfiguration("rc", ()), configs, None, version)


def _listed(clusters: dict[str, list[int]]) -> Counter[str]:
    return Counter(f"10.0.0.1:{port}" for ports in clusters.values() for port in ports)


@pytest.mark.parametrize(
    "updates",
    [
        pytest.param([{"a": [1, 2, 3]}, {"a": [4, 5, 6]}], id="every-address-changed"),
        pytest.param(
            [{"a": [1, 2, 3]}, {"a": [1, 9, 3]}, {"a": [1, 2, 3]}], id="one-back-and-forth"
        ),
        pytest.param([{"a": [1, 2], "b": [2, 3]}, {"a": [4], "b": [2, 3]}], id="shared-address"),
        pytest.param([{"a": [1, 2], "b": [2]}, {"a": [1]}], id="cluster-dropped"),
        pytest.param([{"a": list(range(1, 300))}, {"a": list(range(150, 450))}], id="big-overlap"),
        pytest.param([{"a": [1]}, {"a": []}, {"a": [1]}], id="empty-and-back"),
    ],
)
def test_pool_books_follow_every_snapshot(updates: list[dict[str, list[int]]]) -> None:
    registry = ClusterRegistry(random.Random(1))
    books = _Books()
    registry.add_pool(books)
    previous: Counter[str] = Counter()
    for version, clusters in enumerate(updates):
        registry.apply(_snapshot(clusters, version))
        listed = _listed(clusters)
        assert Counter(books.refs) == listed
        assert books.gone == set(previous) - set(listed)
        books.gone.clear()
        previous = listed


def _aggregate_snapshot(children: dict[str, list[int]], version: int) -> XdsConfig:
    """Aggregate cluster ``agg`` over the leaf clusters ``children``."""
    snap = _snapshot(children, version)
    names = tuple(children)
    agg = ClusterConfig("agg", Cluster("agg", "AGGREGATE", aggregate_clusters=names), None, names)
    return XdsConfig("svc", None, snap.route_config, {**snap.clusters, "agg": agg}, None, version)


def test_an_aggregate_endpoint_is_reached_as_its_leaf_says() -> None:
    registry = ClusterRegistry(random.Random(1))
    registry.apply(_aggregate_snapshot({"a": [1], "b": [2]}, 1))
    agg = registry.get("agg")
    assert agg is not None
    by_port = {es.endpoint.port: es for es in agg.endpoints()}
    assert registry.leaf_of(agg, by_port[1]) is registry.get("a")
    assert registry.leaf_of(agg, by_port[2]) is registry.get("b")
    leaf_a = registry.get("a")
    assert leaf_a is not None and registry.leaf_of(leaf_a, by_port[1]) is leaf_a


def test_an_aggregate_endpoint_whose_leaf_is_gone_fails_closed() -> None:
    """An endpoint picked just before an update took its leaf away: never
    the aggregate (which has no transport socket, so plaintext)."""
    registry = ClusterRegistry(random.Random(1))
    registry.apply(_aggregate_snapshot({"a": [1], "b": [2]}, 1))
    agg = registry.get("agg")
    assert agg is not None
    stale = next(es for es in agg.endpoints() if es.endpoint.port == 2)
    registry.apply(_aggregate_snapshot({"a": [1]}, 2))
    agg = registry.get("agg")
    assert agg is not None
    with pytest.raises(ClusterNotAvailable, match="'b', which it no longer has"):
        registry.leaf_of(agg, stale)
