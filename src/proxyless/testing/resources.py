"""Builders for Envoy v3 xDS resources, for tests.

Small functions returning real protos with the shapes gRPC's and Istio's
proxyless clients get (api_listener + RDS over ADS, EDS clusters), so tests
of the data path and the xDS client read as the config they mean::

    ads.set_resources(LISTENER_URL, {"svc": listener("svc", "svc-routes")})
    ads.set_resources(ROUTE_URL, {"svc-routes": route_config("svc-routes", "svc", [
        route(prefix="/", cluster="a"),
    ])})
    ads.set_resources(CLUSTER_URL, {"a": cluster("a")})
    ads.set_resources(ENDPOINT_URL, {"a": endpoints("a", ["127.0.0.1:5001"])})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

__all__ = [
    "CLUSTER_URL",
    "ENDPOINT_URL",
    "LISTENER_URL",
    "ROUTE_URL",
    "SECRET_URL",
    "certificate_secret",
    "cluster",
    "duration",
    "endpoints",
    "header_match",
    "listener",
    "route",
    "route_config",
    "sds_config",
    "trust_secret",
    "upstream_tls",
    "virtual_host",
]

LISTENER_URL = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_URL = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_URL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_URL = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def _pack(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def listener(
    name: str,
    route_config_name: str | None = None,
    *,
    inline: route_pb2.RouteConfiguration | None = None,
    max_stream_duration: float | None = None,
    http_filters: Sequence[hcm_pb2.HttpFilter] = (),
) -> listener_pb2.Listener:
    """An api_listener whose HttpConnectionManager uses RDS over ADS (or ``inline``)."""
    hcm = hcm_pb2.HttpConnectionManager(
        http_filters=[
            *http_filters,
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router())
            ),
        ]
    )
    if inline is not None:
        hcm.route_config.CopyFrom(inline)
    else:
        hcm.rds.route_config_name = route_config_name or name
        hcm.rds.config_source.ads.SetInParent()
        hcm.rds.config_source.resource_api_version = config_source_pb2.V3
    if max_stream_duration is not None:
        hcm.common_http_protocol_options.max_stream_duration.CopyFrom(duration(max_stream_duration))
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=_pack(hcm))
    )


def header_match(
    name: str,
    *,
    exact: str | None = None,
    regex: str | None = None,
    prefix: str | None = None,
    present: bool | None = None,
    invert: bool = False,
) -> route_components_pb2.HeaderMatcher:
    m = route_components_pb2.HeaderMatcher(name=name, invert_match=invert)
    if exact is not None:
        m.string_match.exact = exact
    elif regex is not None:
        m.string_match.safe_regex.CopyFrom(
            regex_pb2.RegexMatcher(google_re2=regex_pb2.RegexMatcher.GoogleRE2(), regex=regex)
        )
    elif prefix is not None:
        m.string_match.prefix = prefix
    elif present is not None:
        m.present_match = present
    return m


def route(
    *,
    prefix: str | None = None,
    path: str | None = None,
    regex: str | None = None,
    case_sensitive: bool | None = None,
    headers: Iterable[route_components_pb2.HeaderMatcher] = (),
    cluster: str | None = None,
    weighted: Mapping[str, int] | None = None,
    timeout: float | None = None,
    max_stream_duration: float | None = None,
    grpc_timeout_header_max: float | None = None,
    retry_policy: route_components_pb2.RetryPolicy | None = None,
    hash_headers: Sequence[str] = (),
    non_forwarding: bool = False,
    name: str = "",
) -> route_components_pb2.Route:
    """A route matching a path (``prefix`` default "/") sending to ``cluster`` or ``weighted``."""
    match = route_components_pb2.RouteMatch(headers=list(headers))
    if path is not None:
        match.path = path
    elif regex is not None:
        match.safe_regex.CopyFrom(
            regex_pb2.RegexMatcher(google_re2=regex_pb2.RegexMatcher.GoogleRE2(), regex=regex)
        )
    else:
        match.prefix = prefix if prefix is not None else "/"
    if case_sensitive is not None:
        match.case_sensitive.CopyFrom(wrappers_pb2.BoolValue(value=case_sensitive))
    r = route_components_pb2.Route(name=name, match=match)
    if non_forwarding:
        r.non_forwarding_action.SetInParent()
        return r
    action = r.route
    if weighted is not None:
        for cname, w in weighted.items():
            action.weighted_clusters.clusters.add(
                name=cname, weight=wrappers_pb2.UInt32Value(value=w)
            )
    else:
        action.cluster = cluster or ""
    if timeout is not None:
        action.timeout.CopyFrom(duration(timeout))
    if max_stream_duration is not None:
        action.max_stream_duration.max_stream_duration.CopyFrom(duration(max_stream_duration))
    if grpc_timeout_header_max is not None:
        action.max_stream_duration.grpc_timeout_header_max.CopyFrom(
            duration(grpc_timeout_header_max)
        )
    if retry_policy is not None:
        action.retry_policy.CopyFrom(retry_policy)
    for h in hash_headers:
        action.hash_policy.add().header.header_name = h
    return r


def virtual_host(
    domains: Sequence[str], routes: Sequence[route_components_pb2.Route], name: str = ""
) -> route_components_pb2.VirtualHost:
    return route_components_pb2.VirtualHost(
        name=name or domains[0], domains=list(domains), routes=list(routes)
    )


def route_config(
    name: str,
    domain: str | Sequence[str],
    routes: Sequence[route_components_pb2.Route],
    *,
    extra_vhosts: Sequence[route_components_pb2.VirtualHost] = (),
) -> route_pb2.RouteConfiguration:
    domains = [domain] if isinstance(domain, str) else list(domain)
    return route_pb2.RouteConfiguration(
        name=name, virtual_hosts=[virtual_host(domains, routes), *extra_vhosts]
    )


_LB = {
    "round_robin": cluster_pb2.Cluster.ROUND_ROBIN,
    "least_request": cluster_pb2.Cluster.LEAST_REQUEST,
    "ring_hash": cluster_pb2.Cluster.RING_HASH,
    "random": cluster_pb2.Cluster.RANDOM,
    "maglev": cluster_pb2.Cluster.MAGLEV,
}


def cluster(
    name: str,
    *,
    eds_service_name: str = "",
    lb: str = "round_robin",
    max_requests: int | None = None,
    outlier: outlier_detection_pb2.OutlierDetection | None = None,
    aggregate: Sequence[str] = (),
    tls: tls_pb2.UpstreamTlsContext | None = None,
) -> cluster_pb2.Cluster:
    """An EDS cluster over ADS (or an aggregate cluster when ``aggregate`` is
    given); ``tls`` (see :func:`upstream_tls`) becomes its transport socket."""
    c = cluster_pb2.Cluster(name=name, lb_policy=_LB[lb])
    if tls is not None:
        c.transport_socket.name = "envoy.transport_sockets.tls"
        c.transport_socket.typed_config.Pack(tls)
    if aggregate:
        from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as agg_pb2

        c.cluster_type.name = "envoy.clusters.aggregate"
        c.cluster_type.typed_config.Pack(agg_pb2.ClusterConfig(clusters=list(aggregate)))
        return c
    c.type = cluster_pb2.Cluster.EDS
    c.eds_cluster_config.eds_config.ads.SetInParent()
    c.eds_cluster_config.eds_config.resource_api_version = config_source_pb2.V3
    if eds_service_name:
        c.eds_cluster_config.service_name = eds_service_name
    if max_requests is not None:
        c.circuit_breakers.thresholds.add(max_requests=wrappers_pb2.UInt32Value(value=max_requests))
    if outlier is not None:
        c.outlier_detection.CopyFrom(outlier)
    return c


_HEALTH = {
    "UNKNOWN": health_check_pb2.UNKNOWN,
    "HEALTHY": health_check_pb2.HEALTHY,
    "UNHEALTHY": health_check_pb2.UNHEALTHY,
    "DRAINING": health_check_pb2.DRAINING,
    "TIMEOUT": health_check_pb2.TIMEOUT,
    "DEGRADED": health_check_pb2.DEGRADED,
}


def endpoints(
    name: str,
    addresses: Sequence[str] | Sequence[Sequence[str]],
    *,
    weights: Mapping[str, int] | None = None,
    health: Mapping[str, str] | None = None,
    locality: tuple[str, str, str] = ("", "", ""),
) -> endpoint_pb2.ClusterLoadAssignment:
    """A ClusterLoadAssignment; ``addresses`` is a list of "host:port" (priority 0) or a
    list of such lists (one per priority)."""
    if addresses and not isinstance(addresses[0], str):
        priorities = [list(p) for p in addresses]
    else:
        priorities = [list(addresses)]  # type: ignore[arg-type]
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for prio, addrs in enumerate(priorities):
        loc = cla.endpoints.add(priority=prio)
        loc.locality.CopyFrom(
            base_pb2.Locality(region=locality[0], zone=locality[1], sub_zone=locality[2])
        )
        loc.load_balancing_weight.value = 1
        for addr in addrs:
            host, _, port = addr.rpartition(":")
            lbe = loc.lb_endpoints.add()
            lbe.endpoint.address.CopyFrom(
                address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=host, port_value=int(port))
                )
            )
            if weights and addr in weights:
                lbe.load_balancing_weight.value = weights[addr]
            lbe.health_status = _HEALTH[(health or {}).get(addr, "HEALTHY")]
    return cla


# --- TLS: SDS secrets and upstream TLS contexts -----------------------------------------------


def certificate_secret(name: str, chain_pem: bytes, key_pem: bytes) -> secret_pb2.Secret:
    """An SDS Secret holding a workload certificate (istio-agent's ``default``)."""
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=chain_pem),
            private_key=base_pb2.DataSource(inline_bytes=key_pem),
        ),
    )


def trust_secret(name: str, roots_pem: bytes) -> secret_pb2.Secret:
    """An SDS Secret holding a validation context (istio-agent's ``ROOTCA``)."""
    return secret_pb2.Secret(
        name=name,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=roots_pem)
        ),
    )


def sds_config(target: str = "", *, cluster: str = "") -> config_source_pb2.ConfigSource:
    """A ConfigSource naming a separate SDS server: a ``google_grpc`` target
    (``unix:/path``) or an ``envoy_grpc`` cluster; neither: the ADS stream."""
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    if not target and not cluster:
        source.ads.SetInParent()
        return source
    api = source.api_config_source
    api.api_type = config_source_pb2.ApiConfigSource.GRPC
    api.transport_api_version = config_source_pb2.V3
    service = api.grpc_services.add()
    if target:
        service.google_grpc.target_uri = target
        service.google_grpc.stat_prefix = "sds"
    else:
        service.envoy_grpc.cluster_name = cluster
    return source


def upstream_tls(
    *,
    sni: str = "",
    identity_secret: str | None = None,
    trust_secret: str | None = None,
    sds: config_source_pb2.ConfigSource | None = None,
    provider_instance: str | None = None,
    san_uris: Sequence[str] = (),
) -> tls_pb2.UpstreamTlsContext:
    """An UpstreamTlsContext whose certificate and trust come by SDS secret
    name (``identity_secret``/``trust_secret``, from ``sds`` or the ADS
    stream) or from a certificate-provider instance (certificates
    ``default`` and ``ROOTCA``, as istiod's gRPC generator names them);
    ``san_uris`` become exact matchers of the server's SPIFFE ID."""
    common = tls_pb2.CommonTlsContext()
    if identity_secret is not None:
        ref = common.tls_certificate_sds_secret_configs.add(name=identity_secret)
        if sds is not None:
            ref.sds_config.CopyFrom(sds)
    if provider_instance is not None:
        common.tls_certificate_provider_instance.instance_name = provider_instance
        common.tls_certificate_provider_instance.certificate_name = "default"
    matchers = [
        common_pb2.SubjectAltNameMatcher(
            san_type=common_pb2.SubjectAltNameMatcher.URI,
            matcher=string_pb2.StringMatcher(exact=uri),
        )
        for uri in san_uris
    ]
    combined = common.combined_validation_context
    combined.default_validation_context.match_typed_subject_alt_names.extend(matchers)
    if provider_instance is not None:
        provider = combined.default_validation_context.ca_certificate_provider_instance
        provider.instance_name = provider_instance
        provider.certificate_name = "ROOTCA"
    if trust_secret is not None:
        combined.validation_context_sds_secret_config.name = trust_secret
        if sds is not None:
            combined.validation_context_sds_secret_config.sds_config.CopyFrom(sds)
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=sni)
