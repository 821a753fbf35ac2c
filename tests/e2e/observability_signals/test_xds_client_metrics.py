"""gRFC A78 xDS client metrics end to end, a Mesh against the real ADS
server on 127.0.0.1:

- ``grpc.xds_client.resource_updates_valid`` / ``_invalid`` add up, per
  resource type, to the resources the server sent, the invalid ones being
  exactly the resources that were NACKed;
- ``grpc.xds_client.resources`` shows each subscribed resource in its cache
  state (requested, does_not_exist after the 15 s timer on the fake clock,
  acked, nacked, nacked_but_cached);
- ``grpc.xds_client.connected`` stays 1 across a stream the server closes
  after responses (gRFC A57: not a failure) and drops to 0 when the server
  goes away, counted once in ``grpc.xds_client.server_failure``.

Every wait is bounded (``wait_until``).
"""

from __future__ import annotations

from collections.abc import Callable

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import duration_pb2
from tests.e2e.observability_signals.conftest import NODE_ID, Metrics
from tests.e2e.resilience.conftest import (
    CLUSTER,
    Echo,
    Service,
    breaker_cluster,
    outlier_detection,
    wait_served,
    wait_until,
)

from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing import FakeClock
from proxyless.testing.backends import EchoServer
from proxyless.testing.resources import CLUSTER_URL, ENDPOINT_URL, cluster, endpoints, route
from proxyless.xds_client import DOES_NOT_EXIST_TIMEOUT

Backends = Callable[..., list[EchoServer]]

RESOURCES = "grpc.xds_client.resources"
VALID = "grpc.xds_client.resource_updates_valid"
INVALID = "grpc.xds_client.resource_updates_invalid"
CONNECTED = "grpc.xds_client.connected"
FAILURES = "grpc.xds_client.server_failure"
LDS = "envoy.config.listener.v3.Listener"
RDS = "envoy.config.route.v3.RouteConfiguration"
CDS = "envoy.config.cluster.v3.Cluster"
EDS = "envoy.config.endpoint.v3.ClusterLoadAssignment"
OTHER = "c2"


def _bad_cluster(name: str) -> cluster_pb2.Cluster:
    """A cluster the parser rejects (a negative ejection time)."""
    c = breaker_cluster(name, outlier=outlier_detection())
    c.outlier_detection.base_ejection_time.CopyFrom(duration_pb2.Duration(seconds=-1))
    return c


def _count(metrics: Metrics, rtype: str, state: str) -> float:
    return metrics.value(
        RESOURCES,
        grpc__target=NODE_ID,
        grpc__xds__authority="#old",
        grpc__xds__resource_type=rtype,
        grpc__xds__cache_state=state,
    )


def _states(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (a["grpc.xds.resource_type"], a["grpc.xds.cache_state"]): v
        for a, v in metrics.points(RESOURCES, grpc__target=NODE_ID)
    }


def _settled(ads: AdsServer) -> Callable[[], bool]:
    """Every response sent to the node has been ACKed or NACKed."""

    def check() -> bool:
        answered = {r.response_nonce for r in list(ads.requests) if r.node_id == NODE_ID}
        return all(r.nonce in answered for r in list(ads.responses) if r.node_id == NODE_ID)

    return check


def test_resource_updates_and_cache_states(
    metrics: Metrics,
    ads: AdsServer,
    service: Service,
    backends: Backends,
    echo: Echo,
    mesh: Mesh,
    clock: FakeClock,
) -> None:
    (a,) = backends("a")
    ads.set_resources(
        ENDPOINT_URL,
        {CLUSTER: endpoints(CLUSTER, [a.address]), OTHER: endpoints(OTHER, [a.address])},
    )
    # c2 is invalid from its first version: NACKed with nothing cached.
    ads.set_resources(CLUSTER_URL, {CLUSTER: cluster(CLUSTER), OTHER: _bad_cluster(OTHER)})
    service.set_routes([route(prefix="/other", cluster=OTHER), route(prefix="/", cluster=CLUSTER)])
    service.set_listener()
    wait_served(echo, [a])
    mesh.config("missing:80")  # a listener the server does not have

    expected = {
        (LDS, "acked"): 1,
        (LDS, "requested"): 1,
        (RDS, "acked"): 1,
        (CDS, "acked"): 1,
        (CDS, "nacked"): 1,
        (EDS, "acked"): 1,
    }
    wait_until(lambda: _states(metrics) == expected, what=f"resources {expected}")

    clock.advance(DOES_NOT_EXIST_TIMEOUT)
    expected[(LDS, "does_not_exist")] = expected.pop((LDS, "requested"))
    wait_until(lambda: _states(metrics) == expected, what="missing:80 does not exist")

    # A bad version of c: NACKed, the good one kept.
    before_bad = len(ads.responses)
    ads.set_resource(CLUSTER_URL, CLUSTER, _bad_cluster(CLUSTER))
    expected[(CDS, "nacked_but_cached")] = expected.pop((CDS, "acked"))
    wait_until(lambda: _states(metrics) == expected, what="c nacked but cached")
    wait_until(_settled(ads), what="every response answered")

    # -- the counters add up to what the server sent -----------------------------------------
    for rtype in (LDS, RDS, CDS, EDS):
        total = invalid = 0
        for i, r in enumerate(list(ads.responses)):
            if r.node_id != NODE_ID or not r.type_url.endswith("/" + rtype):
                continue
            total += len(r.resource_names)
            if rtype == CDS:  # c2 always bad; c bad from the push at before_bad
                invalid += (OTHER in r.resource_names) + (
                    i >= before_bad and CLUSTER in r.resource_names
                )
        attrs = {
            "grpc__target": NODE_ID,
            "grpc__xds__server": ads.target,
            "grpc__xds__resource_type": rtype,
        }
        assert total > 0, rtype
        assert metrics.value(VALID, **attrs) == total - invalid, rtype
        assert metrics.value(INVALID, **attrs) == invalid, rtype
    assert metrics.value(INVALID, grpc__xds__resource_type=CDS) >= 2  # c2 once, c once
    assert len(ads.nacks()) >= 2


def test_connected_and_server_failure(
    metrics: Metrics,
    ads: AdsServer,
    service: Service,
    backends: Backends,
    echo: Echo,
    mesh: Mesh,
) -> None:
    (a,) = backends("a")
    service.publish([a])
    wait_served(echo, [a])
    server = {"grpc__target": NODE_ID, "grpc__xds__server": ads.target}
    assert metrics.value(CONNECTED, **server) == 1
    assert metrics.points(FAILURES) == []

    # Closed by the server after responses: reconnected at once, not a failure (A57).
    ads.disconnect_all()
    wait_until(
        lambda: any(r.stream_id != 1 for r in list(ads.responses) if r.node_id == NODE_ID),
        what="a response on the second stream",
    )
    assert metrics.value(CONNECTED, **server) == 1
    assert metrics.points(FAILURES) == []

    # The server goes away: the next stream fails without a response.
    ads.stop()
    wait_until(lambda: metrics.value(CONNECTED, **server) == 0, what="connected 0")
    assert metrics.value(FAILURES, **server) == 1
    assert metrics.points(CONNECTED, grpc__target=NODE_ID) == [
        ({"grpc.target": NODE_ID, "grpc.xds.server": ads.target}, 0)
    ]

    # A closed Mesh reports no gauge.
    mesh.close()
    assert metrics.points(CONNECTED, grpc__target=NODE_ID) == []
    assert metrics.points(RESOURCES, grpc__target=NODE_ID) == []
