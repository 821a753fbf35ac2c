"""The embedded control plane's output next to istiod's for the same Istio YAML.

istiod's side is :mod:`tests.e2e.controlplane.istiod_shapes` (what its gRPC
generator sends a proxyless node); the embedded side is the translation for a
gRPC node that takes certificates from a certificate provider. What must be
equal is asserted equal; what differs is asserted to differ exactly as
``docs/control-plane.md`` ("Differences from istiod") says, so the list
cannot silently go stale.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from tests.e2e.controlplane.istiod_shapes import (
    cluster_name,
    istiod_cluster,
    istiod_listener,
    istiod_route,
    istiod_route_configuration,
)

from proxyless.controlplane.istio.load import load_mesh
from proxyless.controlplane.istio.translate import NodeProfile, Translator
from proxyless.controlplane.istio.upstream_tls import STYLE_PROVIDER
from proxyless.controlplane.model import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Snapshot,
)

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
RATINGS_ID = "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"

MESH = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [{REVIEWS}]
  ports: [{{number: 9080, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: 10.1.0.1, labels: {{app: reviews, version: v1}}}}
  - {{address: 10.1.0.2, labels: {{app: reviews, version: v2}}}}
  - {{address: 10.1.0.3, labels: {{app: reviews, version: v3}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings}}
spec:
  hosts: [{RATINGS}]
  ports: [{{number: 9080, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: 10.1.0.4, serviceAccount: bookinfo-ratings, labels: {{app: ratings}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
  - {{name: v3, labels: {{version: v3}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings}}
spec:
  host: ratings
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]
  - name: split
    route:
    - {{destination: {{host: reviews, subset: v1}}, weight: 80}}
    - {{destination: {{host: reviews, subset: v3}}, weight: 20}}
"""


@pytest.fixture(scope="module")
def embedded() -> Snapshot:
    return Translator(load_mesh(MESH)).snapshot(NodeProfile(certificates=STYLE_PROVIDER))


def _hcm(listener: Any) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    listener.api_listener.api_listener.Unpack(hcm)
    return hcm


def _tls(cluster: Any) -> tls_pb2.UpstreamTlsContext:
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    return context


def _as(message_type: type[Any], resource: Any) -> Any:
    if isinstance(resource, bytes):
        return message_type.FromString(resource)
    return resource


def test_names_of_listeners_clusters_and_endpoints_match(embedded: Snapshot) -> None:
    istiod_clusters = {cluster_name(9080, s, REVIEWS) for s in ("", "v1", "v2", "v3")}
    istiod_clusters.add(cluster_name(9080, "", RATINGS))
    assert set(embedded.get(CLUSTER_TYPE)) == istiod_clusters
    assert set(embedded.get(ENDPOINT_TYPE)) == istiod_clusters
    for name, resource in embedded.get(CLUSTER_TYPE).items():
        cluster = _as(cluster_pb2.Cluster, resource)
        assert cluster.type == cluster_pb2.Cluster.EDS
        assert cluster.eds_cluster_config.service_name == name == istiod_cluster(name).name
        assert cluster.eds_cluster_config.eds_config.HasField("ads")
    # istiod answers the names asked for; the embedded one sends the FQDN and every alias
    assert {f"{REVIEWS}:9080", "reviews:9080", "reviews.default:9080"} <= set(
        embedded.get(LISTENER_TYPE)
    )


def test_the_route_configuration_is_named_differently(embedded: Snapshot) -> None:
    listener = _as(listener_pb2.Listener, embedded.get(LISTENER_TYPE)[f"{REVIEWS}:9080"])
    istiod = _hcm(istiod_listener(f"{REVIEWS}:9080", REVIEWS, 9080, "10.96.0.1"))
    assert istiod.rds.route_config_name == f"outbound|9080||{REVIEWS}"
    assert _hcm(listener).rds.route_config_name == f"{REVIEWS}:9080"
    assert set(embedded.get(ROUTE_TYPE)) >= {f"{REVIEWS}:9080"}
    # no VIP: istiod puts the service address on the listener
    assert not listener.HasField("address")
    # the fault filter only when some VirtualService injects faults
    assert [f.name for f in _hcm(listener).http_filters] == ["envoy.filters.http.router"]


def test_routes_pick_the_same_clusters(embedded: Snapshot) -> None:
    config = _as(route_pb2.RouteConfiguration, embedded.get(ROUTE_TYPE)[f"{REVIEWS}:9080"])
    istiod = istiod_route_configuration(
        REVIEWS,
        9080,
        "10.96.0.1",
        [
            istiod_route("jason", REVIEWS, 9080, [("v2", 100)], header=("end-user", "jason")),
            istiod_route("split", REVIEWS, 9080, [("v1", 80), ("v3", 20)]),
        ],
    )
    (ours,), (theirs,) = config.virtual_hosts, istiod.virtual_hosts
    assert ours.name == theirs.name
    assert set(ours.domains) == {d for d in theirs.domains if not d.startswith("10.96.")}
    assert [r.name for r in ours.routes] == [r.name for r in theirs.routes]
    for mine, istiods in zip(ours.routes, theirs.routes, strict=True):
        assert mine.match.prefix == istiods.match.prefix == "/"
        assert list(mine.match.headers) == list(istiods.match.headers)
        assert mine.route.cluster == istiods.route.cluster
        assert [(c.name, c.weight.value) for c in mine.route.weighted_clusters.clusters] == [
            (c.name, c.weight.value) for c in istiods.route.weighted_clusters.clusters
        ]
        assert mine.route.timeout == istiods.route.timeout  # 0s: no timeout
        # istiod adds its default retry policy; the embedded one only what `retries` says
        assert istiods.route.HasField("retry_policy")
        assert not mine.route.HasField("retry_policy")


def test_istio_mutual_names_the_same_certificate_provider_instances(embedded: Snapshot) -> None:
    name = cluster_name(9080, "", RATINGS)
    ours = _tls(_as(cluster_pb2.Cluster, embedded.get(CLUSTER_TYPE)[name]))
    istiods = _tls(istiod_cluster(name, istio_mutual_sans=[RATINGS_ID]))
    for context in (ours, istiods):
        common = context.common_tls_context
        assert common.tls_certificate_certificate_provider_instance.instance_name == "default"
        assert common.tls_certificate_certificate_provider_instance.certificate_name == "default"
        combined = common.combined_validation_context
        ca = combined.validation_context_certificate_provider_instance
        assert (ca.instance_name, ca.certificate_name) == ("default", "ROOTCA")
        assert [m.exact for m in combined.default_validation_context.match_subject_alt_names] == [
            RATINGS_ID
        ]
    # the embedded one fills the current fields too; istiod only the deprecated ones
    assert ours.common_tls_context.HasField("tls_certificate_provider_instance")
    assert not istiods.common_tls_context.HasField("tls_certificate_provider_instance")
