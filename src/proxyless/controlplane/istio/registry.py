"""The service registry built from ServiceEntries (Kubernetes Services included) and
WorkloadEntries, as one client namespace sees it, and Istio naming.

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
Istio's DestinationRule host lookup. Of several exact rules for one host the
client's namespace wins, then the service's, then the root namespace
(:func:`.visibility.rule_precedence`).

What a client of a namespace sees follows ``exportTo`` (:mod:`.visibility`);
ServiceEntries for one host merge per namespace (:mod:`.service_merge`);
delegate VirtualServices are merged into their roots (:mod:`.delegate`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from proxyless.controlplane.istio.delegate import resolve_delegates
from proxyless.controlplane.istio.model import (
    DestinationRule,
    MeshConfig,
    Subset,
    TrafficPolicy,
    VirtualService,
    WorkloadEndpoint,
)
from proxyless.controlplane.istio.service_merge import (
    HTTP_PROTOCOLS,
    Service,
    entries_by_host,
    merged_service,
    selects,
)
from proxyless.controlplane.istio.visibility import (
    DEFAULT_ROOT_NAMESPACE,
    exported_to,
    rule_precedence,
)

__all__ = [
    "CLUSTER_DOMAIN",
    "HTTP_PROTOCOLS",
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

    ``namespace`` is the client's namespace: only documents exported to it
    count (:mod:`.visibility`); None sees every document. ServiceEntries of
    one namespace for the same host merge (:mod:`.service_merge`); of
    several namespaces the client's own wins, else the first in file order.
    A VirtualService destination or host, or a DestinationRule host, that
    only a wildcard ServiceEntry (``*.example.com``) covers gets a service of
    its own, with the wildcard entry's ports and endpoints, named by the
    concrete host (istiod names the cluster by the destination host too). Of several VirtualServices
    for one host the first in file order wins; the reference check reports
    the later ones.
    """

    def __init__(
        self,
        mesh: MeshConfig,
        namespace: str | None = None,
        *,
        root_namespace: str = DEFAULT_ROOT_NAMESPACE,
    ) -> None:
        self.mesh = mesh
        self.namespace = namespace
        self.root_namespace = root_namespace
        self.services: dict[str, Service] = {}
        entries = [
            e
            for e in mesh.service_entries
            if exported_to(e.export_to, e.source.namespace, namespace)
        ]
        for host, namespaces in entries_by_host(entries).items():
            ns = namespace if namespace in namespaces else next(iter(namespaces))
            self.services[host] = merged_service(host, ns, namespaces[ns], mesh.workload_entries)
        visible_vs = [
            vs
            for vs in mesh.virtual_services
            if vs.hosts
            and (not vs.gateways or "mesh" in vs.gateways)
            and exported_to(vs.export_to, vs.source.namespace, namespace)
        ]
        rules = [
            r
            for r in mesh.destination_rules
            if exported_to(r.export_to, r.source.namespace, namespace)
        ]
        self._add_wildcard_aliases(visible_vs, rules)
        self.destination_rules: dict[str, DestinationRule] = {}
        exact: dict[str, list[DestinationRule]] = {}
        wildcards: list[tuple[str, DestinationRule]] = []
        for rule in rules:
            host = self.resolve(rule.host, rule.source.namespace)
            if host.startswith("*"):
                wildcards.append((host, rule))
            else:
                exact.setdefault(host, []).append(rule)
        for host, found in exact.items():
            self.destination_rules[host] = min(found, key=lambda r: self._rank(r, host))
        # A wildcard host (``*.suffix`` or ``*``) covers every service no exact
        # rule names; the most specific (longest) wildcard wins, as in Istio.
        for host, rule in sorted(wildcards, key=lambda item: -len(item[0])):
            for service_host in self.match_hosts(host, rule.source.namespace):
                self.destination_rules.setdefault(service_host, rule)
        self.virtual_services: dict[str, VirtualService] = {}
        for vs in resolve_delegates(self, visible_vs, mesh.virtual_services):
            for raw in vs.hosts:
                for host in self.match_hosts(raw, vs.source.namespace):
                    self.virtual_services.setdefault(host, vs)

    def _rank(self, rule: DestinationRule, host: str) -> int:
        service = self.services.get(host)
        service_ns = service.namespace if service is not None else rule.source.namespace
        return rule_precedence(
            rule.source.namespace, self.namespace, service_ns, self.root_namespace
        )

    def _add_wildcard_aliases(
        self, virtual_services: list[VirtualService], rules: list[DestinationRule]
    ) -> None:
        wildcards = sorted((h for h in self.services if h.startswith("*.")), key=len, reverse=True)
        if not wildcards:
            return
        named = [(r.host, r.source.namespace) for r in rules if not r.host.startswith("*")]
        for vs in virtual_services:
            ns = vs.source.namespace
            named += [(h, ns) for h in vs.hosts if not h.startswith("*")]
            for route in vs.http:
                named += [(d.destination.host, ns) for d in route.route]
                named += [(m.destination.host, ns) for m in route.mirrors]
        for raw, ns in named:
            host = resolve_host(raw, ns, self.services)
            if host in self.services:
                continue
            cover = next((w for w in wildcards if host.endswith(w[1:])), None)
            if cover is not None:
                self.services[host] = replace(self.services[cover], host=host)

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
