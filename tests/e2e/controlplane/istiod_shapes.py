"""Resources shaped as istiod's gRPC generator sends them to a proxyless gRPC client.

Written from istiod's documented behaviour (pilot/pkg/networking/grpcgen:
lds.go, rds.go, cds.go, grpcgen.go) for one Kubernetes service, not copied:

* **Listener** ``<host>:<port>``, one per name the client asked for (the
  FQDN and, if asked, a short form): a socket address of the service VIP, an
  ``api_listener`` HttpConnectionManager with the HTTP filters fault then
  router and RDS over ADS for route ``outbound|<port>||<host>`` (istiod names
  the route like the service's default cluster).
* **RouteConfiguration** ``outbound|<port>||<host>``: one virtual host
  ``<host>:<port>`` whose domains are the host, its short forms and the VIP,
  each with and without the port; routes as a sidecar gets them (prefix
  ``/``, ``timeout: 0s`` and, for a proxyless node, ``max_stream_duration``
  0s, istiod's default retry policy (2 retries, 503 retriable, the
  ``previous_hosts`` predicate), a ``decorator``), to ``outbound|<port>|<subset>|<host>``
  clusters or weighted splits of them; ``validate_clusters: false``.
* **Cluster** ``outbound|<port>|<subset>|<host>``: EDS over ADS with
  ``service_name`` the cluster name; for DestinationRule ``ISTIO_MUTUAL`` a
  ``transport_socket`` named ``envoy.transport_sockets.tls`` whose
  CommonTlsContext names certificate-provider instance ``default``
  (certificates ``default`` and ``ROOTCA``) in the deprecated fields istiod
  fills (``tls_certificate_certificate_provider_instance``,
  ``combined_validation_context.validation_context_certificate_provider_instance``)
  and the service accounts as exact ``match_subject_alt_names``.
* **ClusterLoadAssignment** named like its cluster: one locality (region,
  zone), endpoints HEALTHY with weight 1 and ``istio`` filter metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, struct_pb2

__all__ = [
    "Backend",
    "cluster_name",
    "istiod_cluster",
    "istiod_listener",
    "istiod_load_assignment",
    "istiod_route",
    "istiod_route_configuration",
]

Backend = tuple[str, int, Mapping[str, str]]  # address, port, labels


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _ads() -> config_source_pb2.ConfigSource:
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    source.ads.SetInParent()
    return source


def cluster_name(port: int, subset: str, host: str) -> str:
    return f"outbound|{port}|{subset}|{host}"


def istiod_listener(name: str, host: str, port: int, vip: str) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.fault", typed_config=_any(fault_pb2.HTTPFault())
            ),
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=_any(router_pb2.Router())
            ),
        ],
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=cluster_name(port, "", host)),
    )
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=vip, port_value=port)
        ),
        api_listener=api_listener_pb2.ApiListener(api_listener=_any(hcm)),
    )


def _retry_policy() -> route_components_pb2.RetryPolicy:
    policy = route_components_pb2.RetryPolicy(
        retry_on="connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        host_selection_retry_max_attempts=5,
    )
    policy.num_retries.value = 2
    policy.retriable_status_codes.append(503)
    policy.retry_host_predicate.add(
        name="envoy.retry_host_predicates.previous_hosts",
        typed_config=_any(previous_hosts_pb2.PreviousHostsPredicate()),
    )
    return policy


def istiod_route(
    name: str,
    host: str,
    port: int,
    split: Sequence[tuple[str, int]],
    *,
    header: tuple[str, str] | None = None,
) -> route_components_pb2.Route:
    """A sidecar-style route to ``split`` ((subset, weight) pairs; one pair: no weights)."""
    match = route_components_pb2.RouteMatch(prefix="/")
    if header is not None:
        match.headers.add(name=header[0], string_match=string_pb2.StringMatcher(exact=header[1]))
    action = route_components_pb2.RouteAction(retry_policy=_retry_policy())
    action.timeout.SetInParent()
    action.max_stream_duration.max_stream_duration.SetInParent()
    if len(split) == 1:
        action.cluster = cluster_name(port, split[0][0], host)
    else:
        for subset, weight in split:
            entry = action.weighted_clusters.clusters.add(name=cluster_name(port, subset, host))
            entry.weight.value = weight
    return route_components_pb2.Route(
        name=name,
        match=match,
        route=action,
        decorator=route_components_pb2.Decorator(operation=f"{host}:{port}/*"),
    )


def istiod_route_configuration(
    host: str, port: int, vip: str, routes: Sequence[route_components_pb2.Route]
) -> route_pb2.RouteConfiguration:
    name, namespace = host.split(".")[:2]
    forms = [host, name, f"{name}.{namespace}", f"{name}.{namespace}.svc", vip]
    domains = [d for form in forms for d in (form, f"{form}:{port}")]
    config = route_pb2.RouteConfiguration(
        name=cluster_name(port, "", host),
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=f"{host}:{port}",
                domains=domains,
                routes=routes,
                include_request_attempt_count=True,
            )
        ],
    )
    config.validate_clusters.value = False
    return config


def _istio_mutual(sans: Sequence[str]) -> base_pb2.TransportSocket:
    common = tls_pb2.CommonTlsContext()
    common.tls_certificate_certificate_provider_instance.instance_name = "default"
    common.tls_certificate_certificate_provider_instance.certificate_name = "default"
    combined = common.combined_validation_context
    combined.validation_context_certificate_provider_instance.instance_name = "default"
    combined.validation_context_certificate_provider_instance.certificate_name = "ROOTCA"
    combined.default_validation_context.match_subject_alt_names.extend(
        string_pb2.StringMatcher(exact=san) for san in sans
    )
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common)
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_any(context))


def istiod_cluster(
    name: str, *, istio_mutual_sans: Sequence[str] | None = None
) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    cluster.eds_cluster_config.service_name = name
    cluster.eds_cluster_config.eds_config.CopyFrom(_ads())
    if istio_mutual_sans is not None:
        cluster.transport_socket.CopyFrom(_istio_mutual(istio_mutual_sans))
    return cluster


def istiod_load_assignment(
    name: str, backends: Sequence[Backend]
) -> endpoint_pb2.ClusterLoadAssignment:
    locality = endpoint_components_pb2.LocalityLbEndpoints()
    locality.locality.region = "us-central1"
    locality.locality.zone = "us-central1-a"
    locality.load_balancing_weight.value = len(backends)
    for address, port, labels in backends:
        lb = locality.lb_endpoints.add(health_status=health_check_pb2.HEALTHY)
        lb.endpoint.address.socket_address.address = address
        lb.endpoint.address.socket_address.port_value = port
        lb.load_balancing_weight.value = 1
        workload = ";".join(
            (
                labels.get("app", ""),
                "default",
                labels.get("app", ""),
                labels.get("version", ""),
                "Kubernetes",
            )
        )
        lb.metadata.filter_metadata["istio"].CopyFrom(
            struct_pb2.Struct(fields={"workload": struct_pb2.Value(string_value=workload)})
        )
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[locality])
