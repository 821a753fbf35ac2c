"""The service registry built from ServiceEntries and WorkloadEntries, and Istio naming.

Naming follows istiod's proxyless (gRPC) generator so the same client target
works against both control planes:

* listener and route configuration ``host:port``
  (``reviews.default.svc.cluster.local:9080``);
* clusters ``outbound|port|subset|host`` (``outbound|9080|v1|reviews...``),
  the EDS service name being the cluster name;
* a short host (``reviews``, no dot) in namespace ``ns`` means
  ``reviews.ns.svc.cluster.local``, as in Istio; hosts with a dot are taken as
  written, and a ServiceEntry's hosts are always taken as written.

Policy merging follows DestinationRule's reference: port-level settings
override the rule's policy, a subset's policy (and its port-level settings)
override those; each of loadBalancer, connectionPool, outlierDetection and tls
is replaced as a whole.

A DestinationRule whose host is a wildcard (``*.default.svc.cluster.local``,
``*.local``, ``*``) applies to every service it matches that no rule names
exactly; of several wildcards the most specific (longest) wins, as in
Istio's DestinationRule host lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from proxyless.controlplane.istio.model import (
    DestinationRule,
    MeshConfig,
    Port,
    ServiceEntry,
    Subset,
    TrafficPolicy,
    VirtualService,
    WorkloadEndpoint,
)

__all__ = [
    "CLUSTER_DOMAIN",
    "Registry",
    "Service",
    "cluster_name",
    "domains",
    "effective_policy",
    "listener_aliases",
    "resolve_host",
    "selects",
]

CLUSTER_DOMAIN = "svc.cluster.local"
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})


def cluster_name(port: int, subset: str, host: str) -> str:
    return f"outbound|{port}|{subset}|{host}"


def resolve_host(host: str, namespace: str, known: Iterable[str] = ()) -> str:
    """Istio's short-name rule; a bare name that a ServiceEntry uses literally stays as is."""
    if "." in host or host.startswith("*"):
        return host
    fqdn = f"{host}.{namespace}.{CLUSTER_DOMAIN}"
    known_set = set(known)
    if fqdn not in known_set and host in known_set:
        return host
    return fqdn


def _short_forms(host: str, node_namespace: str) -> list[str]:
    """``name.ns`` and ``name.ns.svc`` (and ``name`` within ``ns``) for Kubernetes-style hosts."""
    suffix = f".{CLUSTER_DOMAIN}"
    if not host.endswith(suffix):
        return []
    parts = host[: -len(suffix)].split(".")
    if len(parts) != 2:
        return []
    name, ns = parts
    forms = [f"{name}.{ns}.svc", f"{name}.{ns}"]
    if ns == node_namespace:
        forms.append(name)
    return forms


def domains(host: str, port: int, node_namespace: str) -> list[str]:
    """Virtual host domains: the host, ``host:port`` and istiod's short forms."""
    out = [host, f"{host}:{port}"]
    for form in _short_forms(host, node_namespace):
        out += [form, f"{form}:{port}"]
    return out


def listener_aliases(host: str, port: int, node_namespace: str) -> list[str]:
    """Extra listener names a proxyless client may ask for (``reviews:9080`` ...)."""
    return [f"{form}:{port}" for form in _short_forms(host, node_namespace)]


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True, slots=True)
class Service:
    host: str
    namespace: str
    ports: tuple[Port, ...]
    endpoints: tuple[WorkloadEndpoint, ...]
    entry: ServiceEntry

    def port(self, number: int) -> Port | None:
        for p in self.ports:
            if p.number == number:
                return p
        return None

    def http_ports(self) -> tuple[Port, ...]:
        return tuple(p for p in self.ports if p.protocol in HTTP_PROTOCOLS)

    def target_port(self, endpoint: WorkloadEndpoint, port: Port) -> int:
        if port.name in endpoint.ports:
            return endpoint.ports[port.name]
        return port.target_port or port.number


def _merge(base: TrafficPolicy | None, over: TrafficPolicy | None) -> TrafficPolicy | None:
    if over is None:
        return base
    if base is None:
        return replace(over, port_level=())
    lb_from = over if over.has_lb() else base
    return TrafficPolicy(
        simple_lb=lb_from.simple_lb,
        consistent_hash=lb_from.consistent_hash,
        locality_lb=lb_from.locality_lb,
        connection_pool=over.connection_pool or base.connection_pool,
        outlier_detection=over.outlier_detection or base.outlier_detection,
        tls=over.tls or base.tls,
    )


def _at_port(policy: TrafficPolicy | None, port: int) -> TrafficPolicy | None:
    if policy is None:
        return None
    result: TrafficPolicy | None = replace(policy, port_level=())
    for number, level in policy.port_level:
        if number == port:
            result = _merge(result, level)
    return result


def effective_policy(
    rule: DestinationRule | None, port: int, subset: Subset | None
) -> TrafficPolicy | None:
    if rule is None:
        return None
    policy = _at_port(rule.traffic_policy, port)
    if subset is not None:
        policy = _merge(policy, _at_port(subset.traffic_policy, port))
    return policy


class Registry:
    """Services by host, and the VirtualService / DestinationRule that applies to each.

    When two documents claim the same thing the first in file order wins; the
    reference check reports the later one as an error.
    """

    def __init__(self, mesh: MeshConfig) -> None:
        self.mesh = mesh
        self.services: dict[str, Service] = {}
        for entry in mesh.service_entries:
            endpoints = list(entry.endpoints)
            if entry.workload_selector is not None:
                endpoints += [
                    we.endpoint
                    for we in mesh.workload_entries
                    if we.source.namespace == entry.source.namespace
                    and selects(entry.workload_selector, we.endpoint.labels)
                ]
            for host in entry.hosts:
                if host not in self.services:
                    self.services[host] = Service(
                        host, entry.source.namespace, entry.ports, tuple(endpoints), entry
                    )
        self.destination_rules: dict[str, DestinationRule] = {}
        wildcards: list[tuple[str, DestinationRule]] = []
        for rule in mesh.destination_rules:
            host = self.resolve(rule.host, rule.source.namespace)
            if host.startswith("*"):
                wildcards.append((host, rule))
            else:
                self.destination_rules.setdefault(host, rule)
        # A wildcard host (``*.suffix`` or ``*``) covers every service no exact
        # rule names; the most specific (longest) wildcard wins, as in Istio.
        for host, rule in sorted(wildcards, key=lambda item: -len(item[0])):
            for service_host in self.match_hosts(host, rule.source.namespace):
                self.destination_rules.setdefault(service_host, rule)
        self.virtual_services: dict[str, VirtualService] = {}
        for vs in mesh.virtual_services:
            if vs.gateways and "mesh" not in vs.gateways:
                continue
            for raw in vs.hosts:
                for host in self.match_hosts(raw, vs.source.namespace):
                    self.virtual_services.setdefault(host, vs)

    def resolve(self, host: str, namespace: str) -> str:
        return resolve_host(host, namespace, self.services)

    def match_hosts(self, raw: str, namespace: str) -> list[str]:
        """Service hosts a VirtualService host (possibly ``*.suffix`` or ``*``) covers."""
        if raw == "*":
            return list(self.services)
        if raw.startswith("*."):
            suffix = raw[1:]
            return [h for h in self.services if h.endswith(suffix)]
        host = self.resolve(raw, namespace)
        return [host] if host in self.services else []

    def subset(self, host: str, name: str) -> Subset | None:
        rule = self.destination_rules.get(host)
        if rule is None:
            return None
        for subset in rule.subsets:
            if subset.name == name:
                return subset
        return None

    def policy(self, host: str, port: int, subset: str = "") -> TrafficPolicy | None:
        rule = self.destination_rules.get(host)
        return effective_policy(rule, port, self.subset(host, subset) if subset else None)

    def subset_endpoints(self, service: Service, subset: str) -> tuple[WorkloadEndpoint, ...]:
        if not subset:
            return service.endpoints
        found = self.subset(service.host, subset)
        if found is None:
            return ()
        return tuple(e for e in service.endpoints if selects(found.labels, e.labels))
