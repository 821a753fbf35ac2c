"""A validated mesh -> per-node xDS snapshot (LDS, RDS, CDS, EDS).

Two kinds of node (decided from the node of the ADS stream):

* **Envoy** — ``node.user_agent_name == "envoy"`` (Envoy always sets it) and
  node metadata ``GENERATOR`` is not ``"grpc"``. It gets one listener on a
  real socket per entry of node metadata ``PROXYLESS_LISTENER_PORTS``, a map
  ``{"host:port": local_port}`` (short hosts resolve in the node's
  ``NAMESPACE``), bound to ``PROXYLESS_LISTENER_ADDRESS`` (default
  ``127.0.0.1``); each has an HttpConnectionManager with codec AUTO (HTTP/1.1
  and HTTP/2, so gRPC too), RDS over ADS for route ``host:port``, and the
  HTTP filters fault (when any VirtualService injects faults) then router.
  Its virtual hosts also match ``*``: a listener serves one service.
* **proxyless** — every other node (gRPC with ``GENERATOR: grpc`` as
  istio-agent writes it, proxyless' own client, grpcio's xDS client). It gets
  an ``api_listener`` per HTTP/GRPC service port, named ``host:port`` as
  istiod's gRPC generator names it, plus the short aliases ``name.ns:port``,
  ``name.ns.svc:port`` and, for nodes in the service's namespace,
  ``name:port``; each points at RDS ``host:port``.

When any ServiceEntry, VirtualService or DestinationRule sets ``exportTo``,
a node's snapshot is built from what is exported to its ``NAMESPACE``
(:mod:`.visibility`; one translation per namespace, cached). DNS
ServiceEntries give STRICT_DNS / LOGICAL_DNS clusters with their endpoints
inline and no EDS (:mod:`.clusters`); a node that is neither Envoy nor
proxyless' own client (``node.user_agent_name``) takes only LOGICAL_DNS
(gRFC A37) and gets one-endpoint STRICT_DNS clusters as LOGICAL_DNS.

A node that serves a workload (node metadata ``INSTANCE_IPS``) also gets
inbound Listeners carrying its mTLS mode and RBAC, and an Envoy node the
inbound clusters to its application (:mod:`.inbound`).

Both kinds get the same clusters, except for the TLS ``transport_socket``
of DestinationRule ``ISTIO_MUTUAL`` clusters, whose shape depends on where
the node takes certificates from (:mod:`.upstream_tls`): Envoy nodes and
proxyless' own client (``node.user_agent_name == "proxyless"``) get SDS
secrets over ADS; every other node (grpcio and other gRFC A29 clients, which
cannot take SDS) gets istiod's gRPC-generator shape, certificate-provider
instance ``default`` read from its bootstrap. Endpoints differ only by node locality
(priorities, see :mod:`.clusters`); routes differ by the ``*`` domain and by
matches on ``sourceLabels`` / ``sourceNamespace`` (node metadata ``LABELS``
and ``NAMESPACE``). References: istiod pilot/pkg/networking/grpcgen, gRFC
A27 (api_listener), Envoy listener and http_connection_manager protos.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.message import Message

from proxyless.controlplane.istio.cert_delivery import PROVIDER, certificate_delivery
from proxyless.controlplane.istio.clusters import (
    ads_config_source,
    build_cluster,
    build_load_assignment,
    logical_dns_only,
    pack,
)
from proxyless.controlplane.istio.inbound import InboundNode, inbound_node, inbound_resources
from proxyless.controlplane.istio.model import MeshConfig
from proxyless.controlplane.istio.registry import (
    Registry,
    Service,
    cluster_name,
    listener_aliases,
)
from proxyless.controlplane.istio.routes import FAULT_FILTER, build_route_configuration
from proxyless.controlplane.istio.upstream_tls import (
    STYLE_ENVOY,
    STYLE_PROVIDER,
    STYLE_SDS,
    upstream_transport_socket,
)
from proxyless.controlplane.model import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    NodeInfo,
    Snapshot,
)

__all__ = [
    "ENVOY",
    "LISTENER_ADDRESS_KEY",
    "LISTENER_PORTS_KEY",
    "PROXYLESS",
    "NodeProfile",
    "Translator",
    "node_profile",
]

_log = logging.getLogger(__name__)

ENVOY = "envoy"
PROXYLESS = "proxyless"
LISTENER_PORTS_KEY = "PROXYLESS_LISTENER_PORTS"
LISTENER_ADDRESS_KEY = "PROXYLESS_LISTENER_ADDRESS"
_ROUTER = "envoy.filters.http.router"
_HCM = "envoy.filters.network.http_connection_manager"


@dataclass(frozen=True, slots=True)
class NodeProfile:
    """What of a node shapes its snapshot; equal profiles get equal snapshots."""

    kind: str = PROXYLESS
    namespace: str = "default"
    labels: tuple[tuple[str, str], ...] = ()
    locality: tuple[str, str, str] = ("", "", "")
    listener_address: str = "127.0.0.1"
    listener_ports: tuple[tuple[str, int], ...] = ()
    #: Inbound side (workload addresses, certificate delivery): :mod:`.inbound`.
    inbound: InboundNode = field(default_factory=InboundNode)
    #: How ISTIO_MUTUAL clusters name certificates (``upstream_tls.STYLE_*``).
    certificates: str = STYLE_SDS
    #: The node takes STRICT_DNS clusters (Envoy, proxyless' own client); other
    #: gRPC clients (gRFC A37) only LOGICAL_DNS.
    strict_dns: bool = True


def node_profile(node: NodeInfo) -> NodeProfile:
    """Classify a node (see the module docstring); bad metadata is logged and skipped."""
    meta: Mapping[str, Any] = node.metadata
    generator = meta.get("GENERATOR")
    kind = ENVOY if node.user_agent_name == "envoy" and generator != "grpc" else PROXYLESS
    namespace = meta.get("NAMESPACE")
    if not isinstance(namespace, str) or not namespace:
        namespace = "default"
    raw_labels = meta.get("LABELS")
    labels = (
        tuple(sorted((str(k), str(v)) for k, v in raw_labels.items()))
        if isinstance(raw_labels, dict)
        else ()
    )
    locality = node.proto.locality
    ports: list[tuple[str, int]] = []
    raw_ports = meta.get(LISTENER_PORTS_KEY)
    if raw_ports is not None and not isinstance(raw_ports, dict):
        _log.warning(
            "node %r: metadata %s must be a map of host:port to port", node.id, LISTENER_PORTS_KEY
        )
    elif isinstance(raw_ports, dict):
        for key, value in raw_ports.items():
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and 0 < value < 65536
                and value == int(value)
            ):
                ports.append((str(key), int(value)))
            else:
                _log.warning(
                    "node %r: %s[%r] must be a port number, got %r",
                    node.id,
                    LISTENER_PORTS_KEY,
                    key,
                    value,
                )
    address = meta.get(LISTENER_ADDRESS_KEY)
    # One rule for inbound and outbound (cert_delivery); Envoy's SDS clusters
    # carry Istio's ALPN and TLS parameters too.
    if certificate_delivery(node.user_agent_name) == PROVIDER:
        certificates = STYLE_PROVIDER
    elif kind == ENVOY:
        certificates = STYLE_ENVOY
    else:
        certificates = STYLE_SDS
    return NodeProfile(
        kind=kind,
        namespace=namespace,
        labels=labels,
        locality=(locality.region, locality.zone, locality.sub_zone),
        listener_address=address if isinstance(address, str) and address else "127.0.0.1",
        listener_ports=tuple(sorted(ports)),
        inbound=inbound_node(node),
        certificates=certificates,
        strict_dns=kind == ENVOY or node.user_agent_name == "proxyless",
    )


def _http_filters(with_fault: bool) -> list[hcm_pb2.HttpFilter]:
    filters = []
    if with_fault:
        filters.append(
            hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault()))
        )
    filters.append(hcm_pb2.HttpFilter(name=_ROUTER, typed_config=pack(router_pb2.Router())))
    return filters


def _hcm(
    route_name: str, stat_prefix: str, with_fault: bool, *, codec_auto: bool
) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=stat_prefix)
    if codec_auto:
        hcm.codec_type = hcm_pb2.HttpConnectionManager.AUTO
    hcm.rds.config_source.CopyFrom(ads_config_source())
    hcm.rds.route_config_name = route_name
    hcm.http_filters.extend(_http_filters(with_fault))
    return hcm


def _stat_prefix(name: str) -> str:
    return "outbound_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


class Translator:
    """Translates one validated :class:`MeshConfig`; build a new one per config."""

    def __init__(
        self,
        mesh: MeshConfig,
        *,
        trust_domain: str = "cluster.local",
        namespace: str | None = None,
    ) -> None:
        self.mesh = mesh
        self.trust_domain = trust_domain
        self.namespace = namespace
        self.registry = Registry(mesh, namespace)
        self.uses_fault = any(r.fault is not None for vs in mesh.virtual_services for r in vs.http)
        self._clusters: dict[str, Message] = {}
        self._tls_clusters: dict[tuple[str, bool], dict[str, Message]] = {}
        self._cluster_keys: list[tuple[Service, int, str]] = []
        self._views: dict[str, Translator] = {}
        #: exportTo makes what a node sees depend on its namespace.
        self._scoped = namespace is None and (
            any(x.export_to for x in mesh.service_entries)
            or any(x.export_to for x in mesh.virtual_services)
            or any(x.export_to for x in mesh.destination_rules)
        )
        for service in self.registry.services.values():
            rule = self.registry.destination_rules.get(service.host)
            subsets = [""] + [s.name for s in rule.subsets] if rule else [""]
            for port in service.ports:
                for subset in subsets:
                    name = cluster_name(port.number, subset, service.host)
                    policy = self.registry.policy(service.host, port.number, subset)
                    dns = None
                    if service.dns:
                        dns = build_load_assignment(
                            self.registry, service, port, subset, ("", "", "")
                        )
                    self._clusters[name] = build_cluster(
                        name, port, policy, dns=dns, resolution=service.resolution
                    )
                    self._cluster_keys.append((service, port.number, subset))

    def view(self, namespace: str) -> Translator:
        """The translation for nodes of ``namespace`` (itself when no exportTo is used)."""
        if not self._scoped:
            return self
        found = self._views.get(namespace)
        if found is None:
            found = self._views[namespace] = Translator(
                self.mesh, trust_domain=self.trust_domain, namespace=namespace
            )
        return found

    # per type ----------------------------------------------------------------------
    def clusters(self, profile: NodeProfile | None = None) -> dict[str, Message]:
        style = profile.certificates if profile is not None else STYLE_SDS
        strict_dns = profile.strict_dns if profile is not None else True
        cached = self._tls_clusters.get((style, strict_dns))
        if cached is None:
            cached = self._tls_clusters[(style, strict_dns)] = self._with_tls(style, strict_dns)
        return dict(cached)

    def _with_tls(self, style: str, strict_dns: bool) -> dict[str, Message]:
        """The clusters, ISTIO_MUTUAL ones with a transport socket in ``style``."""
        out = dict(self._clusters)
        if not strict_dns:
            out.update(logical_dns_only(out))
        for service, number, subset in self._cluster_keys:
            policy = self.registry.policy(service.host, number, subset)
            port = service.port(number)
            if policy is None or policy.tls is None or port is None:
                continue
            socket = upstream_transport_socket(
                style,
                policy.tls,
                service,
                number,
                subset,
                trust_domain=self.trust_domain,
                http2=port.is_http2,
            )
            if socket is not None:
                name = cluster_name(number, subset, service.host)
                cluster = cluster_pb2.Cluster()
                cluster.CopyFrom(out[name])
                cluster.transport_socket.CopyFrom(socket)
                out[name] = cluster
        return out

    def load_assignments(self, profile: NodeProfile) -> dict[str, Message]:
        out: dict[str, Message] = {}
        for service, number, subset in self._cluster_keys:
            port = service.port(number)
            assert port is not None
            if service.dns:
                continue  # the cluster carries its endpoints
            cla = build_load_assignment(self.registry, service, port, subset, profile.locality)
            out[cla.cluster_name] = cla
        return out

    def route_configurations(self, profile: NodeProfile) -> dict[str, Message]:
        out: dict[str, Message] = {}
        labels = dict(profile.labels)
        for service in self.registry.services.values():
            for port in service.http_ports():
                config = build_route_configuration(
                    self.registry,
                    service,
                    port.number,
                    node_namespace=profile.namespace,
                    node_labels=labels,
                    catch_all=profile.kind == ENVOY,
                )
                out[config.name] = config
        return out

    def inbound(self, profile: NodeProfile) -> tuple[dict[str, Message], dict[str, Message]]:
        """(Listeners, Clusters) of the node's inbound side (:mod:`.inbound`)."""
        return inbound_resources(
            self.mesh,
            self.registry,
            profile.inbound,
            envoy=profile.kind == ENVOY,
            namespace=profile.namespace,
            labels=dict(profile.labels),
            listener_address=profile.listener_address,
        )

    def listeners(self, profile: NodeProfile) -> dict[str, Message]:
        return {**self._outbound_listeners(profile), **self.inbound(profile)[0]}

    def _outbound_listeners(self, profile: NodeProfile) -> dict[str, Message]:
        if profile.kind == ENVOY:
            return self._envoy_listeners(profile)
        out: dict[str, Message] = {}
        for service in self.registry.services.values():
            for port in service.http_ports():
                route_name = f"{service.host}:{port.number}"
                names = [
                    route_name,
                    *listener_aliases(service.host, port.number, profile.namespace),
                ]
                for name in names:
                    hcm = _hcm(
                        route_name, _stat_prefix(route_name), self.uses_fault, codec_auto=False
                    )
                    listener = listener_pb2.Listener(name=name)
                    listener.api_listener.api_listener.CopyFrom(pack(hcm))
                    out.setdefault(name, listener)
        return out

    def _envoy_listeners(self, profile: NodeProfile) -> dict[str, Message]:
        out: dict[str, Message] = {}
        for key, local_port in profile.listener_ports:
            host_part, _, port_text = key.rpartition(":")
            if not host_part or not port_text.isdigit():
                _log.warning("%s key %r is not host:port", LISTENER_PORTS_KEY, key)
                continue
            host = self.registry.resolve(host_part, profile.namespace)
            service = self.registry.services.get(host)
            port = service.port(int(port_text)) if service else None
            if service is None or port is None:
                _log.warning("%s key %r names no service port", LISTENER_PORTS_KEY, key)
                continue
            route_name = f"{host}:{port.number}"
            hcm = _hcm(route_name, _stat_prefix(route_name), self.uses_fault, codec_auto=True)
            listener = listener_pb2.Listener(
                name=route_name,
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(
                        address=profile.listener_address, port_value=local_port
                    )
                ),
                traffic_direction=base_pb2.OUTBOUND,
            )
            chain = listener.filter_chains.add()
            chain.filters.add(name=_HCM, typed_config=pack(hcm))
            out[route_name] = listener
        return out

    def snapshot(self, profile: NodeProfile) -> Snapshot:
        view = self.view(profile.namespace)
        if view is not self:
            return view.snapshot(profile)
        inbound_listeners, inbound_clusters = self.inbound(profile)
        return Snapshot(
            {
                LISTENER_TYPE: {**self._outbound_listeners(profile), **inbound_listeners},
                ROUTE_TYPE: self.route_configurations(profile),
                CLUSTER_TYPE: {**self.clusters(profile), **inbound_clusters},
                ENDPOINT_TYPE: self.load_assignments(profile),
            }
        )
