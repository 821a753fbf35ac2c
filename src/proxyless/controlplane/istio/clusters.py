"""DestinationRule and service registry -> Cluster and ClusterLoadAssignment.

Mirrors istiod's outbound cluster translation (pilot/pkg/networking/core
cluster_traffic_policy.go, as documented on istio.io DestinationRule):

* one EDS cluster per service port, ``outbound|port||host``, plus one per
  DestinationRule subset ``outbound|port|subset|host`` whose endpoints are
  those whose labels carry the subset's labels; EDS over ADS with the cluster
  name as service name; ``connect_timeout`` 10 s unless ``tcp.connectTimeout``;
* a ServiceEntry with ``resolution: DNS`` gives STRICT_DNS clusters and one
  with ``DNS_ROUND_ROBIN`` LOGICAL_DNS clusters (istiod's cluster_builder),
  their endpoints (host names or IPs) inline in ``load_assignment``,
  ``dns_lookup_family: V4_ONLY`` and ``respect_dns_ttl`` as istiod sets them;
  a LOGICAL_DNS subset selecting no endpoint becomes an empty STRICT_DNS
  cluster (Envoy's LOGICAL_DNS needs exactly one endpoint);
* ``loadBalancer.simple`` -> ``lb_policy`` (LEAST_CONN = LEAST_REQUEST);
  ``consistentHash`` -> RING_HASH (or MAGLEV) and a route hash policy;
* ``connectionPool`` -> ``circuit_breakers`` DEFAULT thresholds, Istio's
  defaults (2^32-1) for fields left unset, ``maxRequestsPerConnection`` and
  ``idleTimeout`` -> upstream HTTP protocol options;
* ``outlierDetection`` -> ``outlier_detection`` with success-rate ejection
  disabled (``enforcing_success_rate: 0``) as istiod does; ``minHealthPercent``
  -> ``healthy_panic_threshold``;
* GRPC / HTTP2 / GRPC-WEB ports -> upstream HTTP/2
  (``envoy.extensions.upstreams.http.v3.HttpProtocolOptions``), which gRPC
  clients ignore and Envoy needs to speak gRPC upstream;
* endpoints grouped by locality ("region/zone/subzone"); a locality's weight
  is the sum of its endpoints' weights (gRPC skips a locality without one,
  gRFC A27); with outlier detection and locality load balancing on (Istio's
  default) a node with a locality gets priorities by proximity: same
  subzone 0, same zone 1, same region 2, ``failover`` target region next,
  the rest last (contiguous from 0); ``distribute`` sets locality weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    health_check_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

from proxyless.controlplane.istio.model import Port, TrafficPolicy, WorkloadEndpoint
from proxyless.controlplane.istio.registry import Registry, Service, cluster_name

__all__ = [
    "UINT32_MAX",
    "ads_config_source",
    "build_cluster",
    "build_load_assignment",
    "duration",
    "logical_dns_only",
    "pack",
]

UINT32_MAX = 2**32 - 1
DEFAULT_CONNECT_TIMEOUT = 10.0
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_LB = {
    None: cluster_pb2.Cluster.ROUND_ROBIN,
    "UNSPECIFIED": cluster_pb2.Cluster.ROUND_ROBIN,
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "PASSTHROUGH": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
}


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    whole = int(seconds)
    d.seconds = whole
    d.nanos = round((seconds - whole) * 1e9)
    return d


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def ads_config_source() -> config_source_pb2.ConfigSource:
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    source.ads.SetInParent()
    return source


def _u32(value: int | None, default: int = UINT32_MAX) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=default if value is None else value)


def build_cluster(
    name: str,
    port: Port,
    policy: TrafficPolicy | None,
    *,
    dns: endpoint_pb2.ClusterLoadAssignment | None = None,
    resolution: str = "STATIC",
) -> cluster_pb2.Cluster:
    """An EDS cluster, or with ``dns`` a STRICT_DNS / LOGICAL_DNS one carrying it inline."""
    if dns is None:
        cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
        cluster.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
        cluster.eds_cluster_config.service_name = name
    else:
        count = sum(len(group.lb_endpoints) for group in dns.endpoints)
        logical = resolution == "DNS_ROUND_ROBIN" and count == 1
        cluster = cluster_pb2.Cluster(
            name=name,
            type=cluster_pb2.Cluster.LOGICAL_DNS if logical else cluster_pb2.Cluster.STRICT_DNS,
            dns_lookup_family=cluster_pb2.Cluster.V4_ONLY,
            respect_dns_ttl=True,
        )
        cluster.load_assignment.CopyFrom(dns)
    pool = policy.connection_pool if policy else None
    connect = pool.connect_timeout if pool and pool.connect_timeout else DEFAULT_CONNECT_TIMEOUT
    cluster.connect_timeout.CopyFrom(duration(connect))
    chash = policy.consistent_hash if policy else None
    if chash is not None and chash.algorithm == "maglev":
        cluster.lb_policy = cluster_pb2.Cluster.MAGLEV
        if chash.maglev_table_size is not None:
            cluster.maglev_lb_config.table_size.value = chash.maglev_table_size
    elif chash is not None:
        cluster.lb_policy = cluster_pb2.Cluster.RING_HASH
        if chash.minimum_ring_size is not None:
            cluster.ring_hash_lb_config.minimum_ring_size.value = chash.minimum_ring_size
    else:
        cluster.lb_policy = _LB[policy.simple_lb if policy else None]
    if pool is not None:
        thresholds = cluster.circuit_breakers.thresholds.add(priority=base_pb2.DEFAULT)
        thresholds.max_connections.CopyFrom(_u32(pool.max_connections))
        thresholds.max_pending_requests.CopyFrom(_u32(pool.http1_max_pending_requests))
        thresholds.max_requests.CopyFrom(_u32(pool.http2_max_requests))
        thresholds.max_retries.CopyFrom(_u32(pool.max_retries))
    outlier = policy.outlier_detection if policy else None
    if outlier is not None:
        od = outlier_detection_pb2.OutlierDetection()
        od.enforcing_success_rate.value = 0
        if outlier.consecutive_5xx is not None:
            od.consecutive_5xx.value = outlier.consecutive_5xx
            od.enforcing_consecutive_5xx.value = 100 if outlier.consecutive_5xx > 0 else 0
        if outlier.consecutive_gateway_errors is not None:
            od.consecutive_gateway_failure.value = outlier.consecutive_gateway_errors
            od.enforcing_consecutive_gateway_failure.value = (
                100 if outlier.consecutive_gateway_errors > 0 else 0
            )
        if outlier.split_external_local_origin_errors:
            od.split_external_local_origin_errors = True
            if outlier.consecutive_local_origin_failures is not None:
                od.consecutive_local_origin_failure.value = (
                    outlier.consecutive_local_origin_failures
                )
                od.enforcing_consecutive_local_origin_failure.value = 100
        if outlier.interval is not None:
            od.interval.CopyFrom(duration(outlier.interval))
        if outlier.base_ejection_time is not None:
            od.base_ejection_time.CopyFrom(duration(outlier.base_ejection_time))
        if outlier.max_ejection_percent is not None:
            od.max_ejection_percent.value = outlier.max_ejection_percent
        cluster.outlier_detection.CopyFrom(od)
        cluster.common_lb_config.healthy_panic_threshold.value = float(
            outlier.min_health_percent or 0
        )
    options = http_protocol_options_pb2.HttpProtocolOptions()
    needs_options = False
    if pool is not None and (pool.max_requests_per_connection or pool.idle_timeout is not None):
        needs_options = True
        if pool.max_requests_per_connection:
            options.common_http_protocol_options.max_requests_per_connection.value = (
                pool.max_requests_per_connection
            )
        if pool.idle_timeout is not None:
            options.common_http_protocol_options.idle_timeout.CopyFrom(duration(pool.idle_timeout))
    if port.is_http2:
        needs_options = True
        h2 = protocol_pb2.Http2ProtocolOptions()
        if pool is not None and pool.max_concurrent_streams:
            h2.max_concurrent_streams.value = pool.max_concurrent_streams
        options.explicit_http_config.http2_protocol_options.CopyFrom(h2)
    elif needs_options:
        options.explicit_http_config.http_protocol_options.SetInParent()
    if needs_options:
        cluster.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(pack(options))
    return cluster


def logical_dns_only(clusters: Mapping[str, Message]) -> dict[str, Message]:
    """STRICT_DNS clusters of one endpoint as LOGICAL_DNS, for gRPC clients (gRFC A37)
    that take no STRICT_DNS; those with several endpoints are left as they are."""
    out: dict[str, Message] = {}
    for name, cluster in clusters.items():
        assert isinstance(cluster, cluster_pb2.Cluster)
        if cluster.type != cluster_pb2.Cluster.STRICT_DNS:
            continue
        if sum(len(g.lb_endpoints) for g in cluster.load_assignment.endpoints) != 1:
            continue
        logical = cluster_pb2.Cluster()
        logical.CopyFrom(cluster)
        logical.type = cluster_pb2.Cluster.LOGICAL_DNS
        out[name] = logical
    return out


def _split_locality(text: str) -> tuple[str, str, str]:
    parts = [*text.split("/"), "", "", ""][:3]
    return parts[0], parts[1], parts[2]


def _matches(pattern: str, locality: str) -> bool:
    """Istio locality patterns: ``region/zone/subzone`` segments, ``*`` for any."""
    want = pattern.split("/")
    have = locality.split("/")
    for i, seg in enumerate(want):
        if seg == "*":
            return True
        if i >= len(have) or not fnmatchcase(have[i], seg):
            return False
    return True


def _proximity(
    endpoint_locality: str, node: tuple[str, str, str], failover: Mapping[str, str]
) -> int:
    region, zone, subzone = _split_locality(endpoint_locality)
    if region == node[0]:
        if zone == node[1]:
            return 0 if subzone == node[2] else 1
        return 2
    if failover.get(node[0]) == region:
        return 3
    return 4


def build_load_assignment(
    registry: Registry,
    service: Service,
    port: Port,
    subset: str,
    node_locality: tuple[str, str, str],
) -> endpoint_pb2.ClusterLoadAssignment:
    name = cluster_name(port.number, subset, service.host)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    endpoints = registry.subset_endpoints(service, subset)
    policy = registry.policy(service.host, port.number, subset)
    lb = policy.locality_lb if policy else None
    by_locality: dict[str, list[WorkloadEndpoint]] = {}
    for ep in endpoints:
        by_locality.setdefault(ep.locality, []).append(ep)
    priorities = {loc: 0 for loc in by_locality}
    weights = {loc: sum(e.weight for e in eps) for loc, eps in by_locality.items()}
    node_loc = "/".join(p for p in node_locality if p)
    enabled = lb is None or lb.enabled is not False
    if policy is not None and enabled and node_locality[0]:
        distribute = None
        if lb is not None:
            for frm, to in lb.distribute:
                if _matches(frm, node_loc):
                    distribute = to
                    break
        if distribute is not None:
            weights = _distributed_weights(by_locality, distribute)
        elif policy.outlier_detection is not None:
            failover = dict(lb.failover) if lb is not None else {}
            raw = {loc: _proximity(loc, node_locality, failover) for loc in by_locality}
            ranks = {p: i for i, p in enumerate(sorted(set(raw.values())))}
            priorities = {loc: ranks[p] for loc, p in raw.items()}
    for loc in sorted(by_locality, key=lambda item: (priorities[item], item)):
        if weights.get(loc, 0) <= 0:
            continue
        group = cla.endpoints.add()
        region, zone, subzone = _split_locality(loc)
        group.locality.region = region
        group.locality.zone = zone
        group.locality.sub_zone = subzone
        group.load_balancing_weight.value = weights[loc]
        group.priority = priorities[loc]
        for ep in by_locality[loc]:
            lb_endpoint = group.lb_endpoints.add()
            assert isinstance(lb_endpoint, endpoint_components_pb2.LbEndpoint)
            lb_endpoint.endpoint.address.CopyFrom(
                address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(
                        address=ep.address, port_value=service.target_port(ep, port)
                    )
                )
            )
            lb_endpoint.load_balancing_weight.value = ep.weight
            lb_endpoint.health_status = health_check_pb2.HEALTHY
            if ep.labels:
                lb_endpoint.metadata.filter_metadata["istio"].update(
                    {"labels": dict(sorted(ep.labels.items()))}
                )
    _ensure_contiguous(cla)
    return cla


def _ensure_contiguous(cla: endpoint_pb2.ClusterLoadAssignment) -> None:
    present = sorted({group.priority for group in cla.endpoints})
    ranks = {p: i for i, p in enumerate(present)}
    for group in cla.endpoints:
        group.priority = ranks[group.priority]


def _distributed_weights(
    by_locality: Mapping[str, list[WorkloadEndpoint]], to: tuple[tuple[str, int], ...]
) -> dict[str, int]:
    """Each ``to`` pattern's percentage, split among its localities by endpoint count."""
    weights = dict.fromkeys(by_locality, 0)
    for pattern, percent in to:
        matching = [loc for loc in by_locality if _matches(pattern, loc)]
        total = sum(len(by_locality[loc]) for loc in matching)
        for loc in matching:
            weights[loc] += round(percent * 1000 * len(by_locality[loc]) / total)
    return weights
