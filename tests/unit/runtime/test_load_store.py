"""LoadStore: per-interval deltas of the request path's running totals."""

from __future__ import annotations

from types import SimpleNamespace

from proxyless.lb.state import EndpointState
from proxyless.resources.model.endpoint import Endpoint, Locality
from proxyless.runtime.load_report import LoadStore


def _cluster(*eps: EndpointState, drops: dict[str, int] | None = None) -> SimpleNamespace:
    config = SimpleNamespace(cluster=SimpleNamespace(eds_service_name="svc-eds"))
    return SimpleNamespace(name="c", config=config, endpoints=lambda: eps, drops=dict(drops or {}))


def test_each_report_carries_what_happened_since_the_last() -> None:
    now = [100.0]
    store = LoadStore(clock=lambda: now[0])
    a = EndpointState(Endpoint("10.0.0.1", 80), Locality("r", "z", "s"), 0)
    b = EndpointState(Endpoint("10.0.0.2", 80), Locality("r", "z2", ""), 1)
    cluster = _cluster(a, b, drops={"lb": 2})
    store.start("c")
    a.total_requests, a.total_successes, a.total_errors, a.active_requests = 5, 3, 1, 1
    b.total_requests, b.total_successes = 2, 2
    now[0] = 110.0
    first = store.cluster_stats(cluster, endpoints=True)
    assert first.cluster_service_name == "svc-eds"
    assert first.load_report_interval.seconds == 10
    by_zone = {u.locality.zone: u for u in first.upstream_locality_stats}
    assert by_zone["z"].total_issued_requests == 5 and by_zone["z"].total_error_requests == 1
    assert by_zone["z"].total_requests_in_progress == 1 and by_zone["z2"].priority == 1
    assert by_zone["z"].upstream_endpoint_stats[0].address.socket_address.address == "10.0.0.1"
    assert first.total_dropped_requests == 2 and first.dropped_requests[0].category == "lb"

    a.total_requests, a.total_successes, a.active_requests = 7, 5, 0
    cluster.drops["lb"] = 3
    now[0] = 111.0
    second = store.cluster_stats(cluster)
    by_zone = {u.locality.zone: u for u in second.upstream_locality_stats}
    assert by_zone["z"].total_issued_requests == 2 and by_zone["z"].total_successful_requests == 2
    assert by_zone["z2"].total_issued_requests == 0
    assert not by_zone["z"].upstream_endpoint_stats  # not asked for this time
    assert second.total_dropped_requests == 1
    assert second.load_report_interval.seconds == 1


def test_an_endpoint_that_came_back_starts_from_zero() -> None:
    store = LoadStore(clock=lambda: 0.0)
    a = EndpointState(Endpoint("10.0.0.1", 80), Locality(), 0)
    a.total_requests = 4
    store.cluster_stats(_cluster(a))
    fresh = EndpointState(Endpoint("10.0.0.1", 80), Locality(), 0)
    fresh.total_requests = 1
    report = store.cluster_stats(_cluster(fresh))
    assert report.upstream_locality_stats[0].total_issued_requests == 1
