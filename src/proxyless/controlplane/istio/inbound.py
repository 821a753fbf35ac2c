"""Inbound Listeners: mTLS mode (PeerAuthentication) and RBAC (AuthorizationPolicy).

**Which workload a node is.** Node metadata ``INSTANCE_IPS`` (istio-agent's
comma-separated string, or a list) is matched against the addresses of
ServiceEntry endpoints and WorkloadEntries; the node serves every workload
port of the matches (a ServiceEntry port's target port on that endpoint, and
each port a WorkloadEntry names). Its namespace is node metadata
``NAMESPACE``; its labels are node metadata ``LABELS``, or, when absent, the
labels of the matched endpoints. A node without ``INSTANCE_IPS`` gets no
inbound Listener.

**proxyless and gRPC servers** (gRFC A36; istiod's ``grpcgen/lds.go``): a
server asks for ``xds.istio.io/grpc/lds/inbound/<ip>:<port>`` (istio-agent's
``server_listener_resource_name_template``). For each workload port the
snapshot holds that Listener for each instance IP and for ``0.0.0.0`` and
``[::]`` (servers bound to a wildcard), with ``address`` the host and port of
the name, no listener filters, and filter chains by the port's mTLS mode:

* STRICT: one chain ``inbound-mtls`` with a ``DownstreamTlsContext``
  (``require_client_certificate: true``), no ``filter_chain_match``;
* DISABLE: one chain ``inbound-plaintext`` without transport socket;
* PERMISSIVE: ``inbound-mtls`` with ``filter_chain_match.transport_protocol:
  "tls"`` and ``inbound-plaintext`` with ``transport_protocol: "raw_buffer"``.
  A proxyless server must tell them apart by the first bytes of the
  connection (a TLS handshake record begins ``0x16 0x03``): TLS goes to the
  ``tls`` chain, anything else to ``raw_buffer``. A stock gRPC server never
  matches ``transport_protocol: "tls"`` (A36 accepts only ``raw_buffer``)
  and so serves the port in plaintext only — what istiod sends gRPC for
  PERMISSIVE anyway. As istiod does, a node receiving certificate-provider
  references (a stock gRPC server) whose workload carries the label
  ``security.istio.io/tlsMode: istio`` (its clients use mTLS automatically)
  gets STRICT instead of PERMISSIVE.

Each chain's HttpConnectionManager has an inline route configuration
``inbound`` (domain ``*``, prefix ``/``, ``non_forwarding_action``, as A36
requires) and the HTTP filters RBAC DENY, RBAC ALLOW (:mod:`.authz`), router.

**Envoy nodes** (Envoy's own shape, not istiod's port-15006 capture
listener): node metadata ``PROXYLESS_INBOUND_PORTS`` maps a workload port to
the local port of the application, ``{"9080": 19080}``. For each entry the
node gets a Listener ``inbound|<port>`` on ``PROXYLESS_LISTENER_ADDRESS:port``
(traffic direction INBOUND) with the same filter chains (and the
``tls_inspector`` listener filter when PERMISSIVE), codec AUTO, a route to
cluster ``inbound|<port>||`` — a STATIC cluster to ``127.0.0.1:<local port>``
speaking the downstream's HTTP version.

TLS contexts use SDS or certificate-provider instances by
:mod:`.cert_delivery`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf.message import Message

from proxyless.controlplane.istio.authz import applicable_policies, rbac_filters
from proxyless.controlplane.istio.cert_delivery import (
    CERTIFICATE_NAME,
    PROVIDER,
    PROVIDER_INSTANCE,
    ROOT_CA_NAME,
    SDS,
    certificate_delivery,
)
from proxyless.controlplane.istio.clusters import ads_config_source, pack
from proxyless.controlplane.istio.model import MeshConfig
from proxyless.controlplane.istio.peer_authn import DISABLE, PERMISSIVE, STRICT, workload_mtls
from proxyless.controlplane.istio.registry import Registry
from proxyless.controlplane.model import NodeInfo

__all__ = [
    "INBOUND_PORTS_KEY",
    "INSTANCE_IPS_KEY",
    "SERVER_LISTENER_PREFIX",
    "InboundNode",
    "Workload",
    "downstream_tls_context",
    "envoy_inbound",
    "filter_chains",
    "grpc_inbound_listeners",
    "inbound_node",
    "inbound_resources",
    "node_workload",
]

_log = logging.getLogger(__name__)

SERVER_LISTENER_PREFIX = "xds.istio.io/grpc/lds/inbound/"
INSTANCE_IPS_KEY = "INSTANCE_IPS"
INBOUND_PORTS_KEY = "PROXYLESS_INBOUND_PORTS"
_WILDCARDS = ("0.0.0.0", "::")
_TLS_SOCKET = "envoy.transport_sockets.tls"
_TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
_HCM = "envoy.filters.network.http_connection_manager"
_ROUTER = "envoy.filters.http.router"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS_MODE_LABEL = "security.istio.io/tlsMode"


@dataclass(frozen=True, slots=True)
class InboundNode:
    """What of a node's metadata shapes its inbound Listeners."""

    instance_ips: tuple[str, ...] = ()
    #: :data:`.cert_delivery.SDS` or :data:`.cert_delivery.PROVIDER`.
    delivery: str = SDS
    #: Envoy only: (workload port, local application port).
    inbound_ports: tuple[tuple[int, int], ...] = ()


def _port(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == int(value):
        if 0 < value < 65536:
            return int(value)
    return None


def inbound_node(node: NodeInfo) -> InboundNode:
    """Read ``INSTANCE_IPS`` and ``PROXYLESS_INBOUND_PORTS``; bad entries are logged and skipped."""
    meta: Mapping[str, Any] = node.metadata
    raw = meta.get(INSTANCE_IPS_KEY)
    items = raw.split(",") if isinstance(raw, str) else raw if isinstance(raw, list) else []
    ips = []
    for item in items:
        try:
            ips.append(str(ip_address(str(item).strip())))
        except ValueError:
            _log.warning(
                "node %r: %s entry %r is not an IP address", node.id, INSTANCE_IPS_KEY, item
            )
    ports = []
    raw_ports = meta.get(INBOUND_PORTS_KEY)
    if isinstance(raw_ports, dict):
        for key, value in raw_ports.items():
            workload, local = _port(key), _port(value)
            if workload is None or local is None:
                _log.warning(
                    "node %r: %s[%r] = %r is not port: port", node.id, INBOUND_PORTS_KEY, key, value
                )
                continue
            ports.append((workload, local))
    elif raw_ports is not None:
        _log.warning("node %r: %s must be a map of port to port", node.id, INBOUND_PORTS_KEY)
    return InboundNode(
        tuple(dict.fromkeys(ips)), certificate_delivery(node.user_agent_name), tuple(sorted(ports))
    )


@dataclass(frozen=True, slots=True)
class Workload:
    namespace: str
    labels: Mapping[str, str]
    ports: tuple[int, ...]


def node_workload(
    registry: Registry,
    instance_ips: Sequence[str],
    namespace: str,
    node_labels: Mapping[str, str],
) -> Workload | None:
    """The workload a node serves (see the module docstring); None if no address matches."""
    ips = set(instance_ips)
    if not ips:
        return None
    ports: set[int] = set()
    labels: dict[str, str] = {}
    found = False
    for service in registry.services.values():
        for endpoint in service.endpoints:
            if endpoint.address not in ips:
                continue
            found = True
            labels.update(endpoint.labels)
            ports.update(service.target_port(endpoint, p) for p in service.ports)
    for entry in registry.mesh.workload_entries:
        if entry.endpoint.address in ips:
            found = True
            labels.update(entry.endpoint.labels)
            ports.update(entry.endpoint.ports.values())
    if not found:
        return None
    return Workload(namespace, dict(node_labels) or labels, tuple(sorted(ports)))


def downstream_tls_context(delivery: str) -> tls_pb2.DownstreamTlsContext:
    """``require_client_certificate`` with the node's certificate and trust bundle."""
    ctx = tls_pb2.DownstreamTlsContext()
    ctx.require_client_certificate.value = True
    common = ctx.common_tls_context
    if delivery == SDS:
        common.tls_certificate_sds_secret_configs.add(
            name=CERTIFICATE_NAME, sds_config=ads_config_source()
        )
        common.validation_context_sds_secret_config.CopyFrom(
            secret_pb2.SdsSecretConfig(name=ROOT_CA_NAME, sds_config=ads_config_source())
        )
        return ctx
    # istiod's gRPC generator sends both field generations for older gRPC servers.
    common.tls_certificate_provider_instance.CopyFrom(
        common_pb2.CertificateProviderPluginInstance(
            instance_name=PROVIDER_INSTANCE, certificate_name=CERTIFICATE_NAME
        )
    )
    common.tls_certificate_certificate_provider_instance.CopyFrom(
        tls_pb2.CommonTlsContext.CertificateProviderInstance(
            instance_name=PROVIDER_INSTANCE, certificate_name=CERTIFICATE_NAME
        )
    )
    combined = common.combined_validation_context
    combined.default_validation_context.ca_certificate_provider_instance.CopyFrom(
        common_pb2.CertificateProviderPluginInstance(
            instance_name=PROVIDER_INSTANCE, certificate_name=ROOT_CA_NAME
        )
    )
    combined.validation_context_certificate_provider_instance.CopyFrom(
        tls_pb2.CommonTlsContext.CertificateProviderInstance(
            instance_name=PROVIDER_INSTANCE, certificate_name=ROOT_CA_NAME
        )
    )
    return ctx


def filter_chains(
    mode: str, hcm: hcm_pb2.HttpConnectionManager, delivery: str
) -> list[listener_components_pb2.FilterChain]:
    """The chains of a port in ``mode`` (STRICT, PERMISSIVE or DISABLE), each running ``hcm``."""

    def chain(name: str, tls: bool, transport: str) -> listener_components_pb2.FilterChain:
        fc = listener_components_pb2.FilterChain(name=name)
        if transport:
            fc.filter_chain_match.transport_protocol = transport
        fc.filters.add(name=_HCM, typed_config=pack(hcm))
        if tls:
            fc.transport_socket.name = _TLS_SOCKET
            fc.transport_socket.typed_config.CopyFrom(pack(downstream_tls_context(delivery)))
        return fc

    if mode == STRICT:
        return [chain("inbound-mtls", True, "")]
    if mode == PERMISSIVE:
        return [chain("inbound-mtls", True, "tls"), chain("inbound-plaintext", False, "raw_buffer")]
    if mode != DISABLE:
        raise ValueError(f"unknown mTLS mode {mode!r}")
    return [chain("inbound-plaintext", False, "")]


def _http_filters(mesh: MeshConfig, workload: Workload) -> list[hcm_pb2.HttpFilter]:
    filters = rbac_filters(applicable_policies(mesh, workload.namespace, workload.labels))
    filters.append(hcm_pb2.HttpFilter(name=_ROUTER, typed_config=pack(router_pb2.Router())))
    return filters


def _stat_prefix(port: int) -> str:
    return f"inbound_{port}"


def _socket(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def _listener_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def grpc_inbound_listeners(
    mesh: MeshConfig, workload: Workload, node: InboundNode
) -> dict[str, Message]:
    """``xds.istio.io/grpc/lds/inbound/<ip>:<port>`` Listeners for a proxyless or gRPC server."""
    mtls = workload_mtls(mesh, workload.namespace, workload.labels)
    filters = _http_filters(mesh, workload)
    out: dict[str, Message] = {}
    for port in workload.ports:
        hcm = hcm_pb2.HttpConnectionManager(stat_prefix=_stat_prefix(port))
        vhost = hcm.route_config.virtual_hosts.add(name="inbound|http", domains=["*"])
        route = vhost.routes.add(match=route_components_pb2.RouteMatch(prefix="/"))
        route.non_forwarding_action.SetInParent()
        hcm.route_config.name = "inbound"
        hcm.http_filters.extend(filters)
        mode = mtls.for_port(port)
        if (
            mode == PERMISSIVE
            and node.delivery == PROVIDER
            and workload.labels.get(_TLS_MODE_LABEL) == "istio"
        ):
            mode = STRICT
        chains = filter_chains(mode, hcm, node.delivery)
        for ip in (*node.instance_ips, *_WILDCARDS):
            name = f"{SERVER_LISTENER_PREFIX}{_listener_host(ip)}:{port}"
            listener = listener_pb2.Listener(name=name, address=_socket(ip, port))
            listener.filter_chains.extend(chains)
            out[name] = listener
    return out


def _inbound_cluster(name: str, local_port: int) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
    cluster.connect_timeout.FromSeconds(1)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    lb = endpoint_components_pb2.LbEndpoint()
    lb.endpoint.address.CopyFrom(_socket("127.0.0.1", local_port))
    cla.endpoints.add().lb_endpoints.append(lb)
    cluster.load_assignment.CopyFrom(cla)
    options = http_protocol_options_pb2.HttpProtocolOptions()
    downstream = options.use_downstream_protocol_config
    downstream.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    downstream.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(pack(options))
    return cluster


def envoy_inbound(
    mesh: MeshConfig, workload: Workload, node: InboundNode, listener_address: str
) -> tuple[dict[str, Message], dict[str, Message]]:
    """(Listeners, Clusters) of an Envoy node's inbound side (see the module docstring)."""
    mtls = workload_mtls(mesh, workload.namespace, workload.labels)
    filters = _http_filters(mesh, workload)
    listeners: dict[str, Message] = {}
    clusters: dict[str, Message] = {}
    for port, local_port in node.inbound_ports:
        cluster_name = f"inbound|{port}||"
        hcm = hcm_pb2.HttpConnectionManager(
            stat_prefix=_stat_prefix(port), codec_type=hcm_pb2.HttpConnectionManager.AUTO
        )
        hcm.route_config.CopyFrom(route_pb2.RouteConfiguration(name=f"inbound|{port}"))
        vhost = hcm.route_config.virtual_hosts.add(name=f"inbound|{port}", domains=["*"])
        route = vhost.routes.add(match=route_components_pb2.RouteMatch(prefix="/"))
        route.route.cluster = cluster_name
        route.route.timeout.SetInParent()  # 0: no timeout (streams)
        hcm.http_filters.extend(filters)
        mode = mtls.for_port(port)
        name = f"inbound|{port}"
        listener = listener_pb2.Listener(
            name=name,
            address=_socket(listener_address, port),
            traffic_direction=base_pb2.INBOUND,
        )
        if mode == PERMISSIVE:
            listener.listener_filters.add(
                name=_TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())
            )
        listener.filter_chains.extend(filter_chains(mode, hcm, node.delivery))
        listeners[name] = listener
        clusters[cluster_name] = _inbound_cluster(cluster_name, local_port)
    return listeners, clusters


def inbound_resources(
    mesh: MeshConfig,
    registry: Registry,
    node: InboundNode,
    *,
    envoy: bool,
    namespace: str,
    labels: Mapping[str, str],
    listener_address: str,
) -> tuple[dict[str, Message], dict[str, Message]]:
    """(Listeners, Clusters) of a node's inbound side; both empty when it serves nothing."""
    workload = node_workload(registry, node.instance_ips, namespace, labels)
    if envoy:
        if not node.inbound_ports:
            return {}, {}
        if workload is None:
            workload = Workload(namespace, dict(labels), ())
        return envoy_inbound(mesh, workload, node, listener_address)
    if workload is None:
        return {}, {}
    return grpc_inbound_listeners(mesh, workload, node), {}
