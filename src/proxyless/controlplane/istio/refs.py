"""Checks across documents: names, hosts, subsets, ports and weights.

These make a config unusable (errors): a duplicate name, a VirtualService
pointing at a host that no ServiceEntry or Kubernetes Service defines
(unless it names another namespace, see below), or at a
subset no DestinationRule defines, a destination port the service does not
have, weights of a multi-destination route not summing to 100 (Istio's
rule), the same endpoint twice in one cluster, also across merged
ServiceEntries (gRFC A27 makes the EDS resource invalid), two
VirtualServices for one host or two DestinationRules for one host in one
namespace that some namespace sees both of (``exportTo``).
Softer findings are warnings: a DestinationRule for an unknown host, an
unselected WorkloadEntry, a host of another namespace nothing defines yet
(``name.ns``, ``name.ns.svc`` or ``name.ns.svc.cluster.local``: istiod
accepts it; calls fail until it exists), a delegate that is missing
or not exported to its root, merged ServiceEntries that disagree on
resolution or location, a ServiceEntry a Kubernetes Service overrides.

Messages istioctl analyze has a code for carry it, as istioctl prints it
(istio.io/latest/docs/reference/config/analysis/): ``[IST0101]
ReferencedResourceNotFound`` for an unknown destination host, port or
subset, ``[IST0112] VirtualServiceDestinationPortSelectorRequired`` for a
destination without a port on a service with several, ``[IST0109]
ConflictingMeshGatewayVirtualServiceHosts`` for a host two VirtualServices of
the mesh gateway route (a VirtualService bound only to other gateways is
skipped by the loader), ``[IST0174] UnknownDestinationRuleHost`` for a DestinationRule
host no service matches. A subset selecting no endpoint is
``proxyless analyze``'s error IST0173 (:mod:`.analyze_rules`), not the
loader's: the control plane serves such a config, as istiod does.
"""

from __future__ import annotations

from proxyless.controlplane.istio.delegate import find_delegate
from proxyless.controlplane.istio.model import (
    Destination,
    Issue,
    MeshConfig,
    Source,
    VirtualService,
)
from proxyless.controlplane.istio.registry import CLUSTER_DOMAIN, Registry, selects
from proxyless.controlplane.istio.service_merge import KUBERNETES_KIND
from proxyless.controlplane.istio.visibility import meet

__all__ = ["check_references"]

NOT_FOUND = "[IST0101] ReferencedResourceNotFound:"
UNKNOWN_RULE_HOST = "[IST0174] UnknownDestinationRuleHost:"


def _err(source: Source, path: str, message: str) -> Issue:
    return Issue.at("error", source, path, message)


def _warn(source: Source, path: str, message: str) -> Issue:
    return Issue.at("warning", source, path, message)


def _check_names(mesh: MeshConfig) -> list[Issue]:
    issues = []
    seen: dict[str, Source] = {}
    docs = [
        *(x.source for x in mesh.service_entries),
        *(x.source for x in mesh.workload_entries),
        *(x.source for x in mesh.virtual_services),
        *(x.source for x in mesh.destination_rules),
        *(x.source for x in mesh.peer_authentications),
        *(x.source for x in mesh.authorization_policies),
    ]
    for source in sorted(docs, key=lambda s: (s.file, s.doc)):
        first = seen.get(source.key)
        if first is not None:
            issues.append(
                _err(
                    source,
                    "metadata.name",
                    f"duplicate {source.kind} {source.namespace}/{source.name} "
                    f"(first defined at {first.file}:doc{first.doc})",
                )
            )
        else:
            seen[source.key] = source
    return issues


def _elsewhere(host: str, namespace: str) -> bool:
    """True for a Kubernetes-style host of another namespace: ``name.ns``,
    ``name.ns.svc`` or ``name.ns.svc.cluster.local`` with ``ns`` not ``namespace``."""
    for suffix in (f".{CLUSTER_DOMAIN}", ".svc", ""):
        if not host.endswith(suffix):
            continue
        parts = host[: len(host) - len(suffix)].split(".")
        if len(parts) == 2 and all(parts):
            return parts[1] != namespace
    return False


def _check_destination(
    registry: Registry, vs: VirtualService, dest: Destination, own_hosts: set[str]
) -> list[Issue]:
    source = vs.source
    host = registry.resolve(dest.host, source.namespace)
    service = registry.services.get(host)
    shown = host if host == dest.host else f"{dest.host} (= {host})"
    if service is None:
        if _elsewhere(host, source.namespace):
            return [
                _warn(
                    source,
                    f"{dest.path}.host",
                    f"{NOT_FOUND} unknown host {shown} in another namespace: accepted; "
                    "calls fail until a service defines it",
                )
            ]
        return [
            _err(
                source,
                f"{dest.path}.host",
                f"{NOT_FOUND} unknown host {shown}: no ServiceEntry or Service defines it",
            )
        ]
    issues = []
    if dest.port is not None and service.port(dest.port) is None:
        ports = ", ".join(str(p.number) for p in service.ports)
        issues.append(
            _err(
                source,
                f"{dest.path}.port.number",
                f"{NOT_FOUND} {host} has no port {dest.port} (ports: {ports})",
            )
        )
    elif dest.port is None and len(service.ports) > 1 and host not in own_hosts:
        ports = ", ".join(str(p.number) for p in service.ports)
        issues.append(
            _err(
                source,
                f"{dest.path}.port",
                f"[IST0112] VirtualServiceDestinationPortSelectorRequired: is required: {host} "
                f"has several ports ({ports})",
            )
        )
    if dest.subset:
        rule = registry.destination_rules.get(host)
        if rule is None:
            issues.append(
                _err(
                    source,
                    f"{dest.path}.subset",
                    f"{NOT_FOUND} subset {dest.subset!r} is not defined: no DestinationRule "
                    f"for {host}",
                )
            )
        elif registry.subset(host, dest.subset) is None:
            known = ", ".join(s.name for s in rule.subsets) or "none"
            issues.append(
                _err(
                    source,
                    f"{dest.path}.subset",
                    f"{NOT_FOUND} subset {dest.subset!r} is not defined by DestinationRule "
                    f"{rule.source.namespace}/{rule.source.name} (subsets: {known})",
                )
            )
    return issues


def _check_hosts(registry: Registry, vs: VirtualService, own: set[str]) -> list[Issue]:
    issues = []
    source = vs.source
    for i, raw in enumerate(vs.hosts):
        hosts = registry.match_hosts(raw, source.namespace)
        own.update(hosts)
        if hosts:
            continue
        resolved = registry.resolve(raw, source.namespace)
        shown = raw if resolved == raw else f"{raw} (= {resolved})"
        if raw.startswith("*") or _elsewhere(resolved, source.namespace):
            issues.append(
                _warn(source, f"spec.hosts[{i}]", f"{shown} matches no service host (yet)")
            )
        else:
            issues.append(
                _err(
                    source,
                    f"spec.hosts[{i}]",
                    f"unknown host {shown}: no ServiceEntry or Service defines it",
                )
            )
    return issues


def _check_conflicts(registry: Registry, mesh: MeshConfig) -> list[Issue]:
    issues = []
    claimed: dict[str, list[VirtualService]] = {}
    for vs in mesh.virtual_services:
        for i, raw in enumerate(vs.hosts):
            if raw.startswith("*"):
                continue
            for host in registry.match_hosts(raw, vs.source.namespace):
                others = claimed.setdefault(host, [])
                other = next(
                    (
                        o
                        for o in others
                        if meet(o.export_to, o.source.namespace, vs.export_to, vs.source.namespace)
                    ),
                    None,
                )
                others.append(vs)
                if other is None:
                    continue
                issues.append(
                    _err(
                        vs.source,
                        f"spec.hosts[{i}]",
                        f"[IST0109] ConflictingMeshGatewayVirtualServiceHosts: {host} is "
                        f"already routed by VirtualService "
                        f"{other.source.namespace}/{other.source.name} "
                        f"({other.source.file}:doc{other.source.doc})",
                    )
                )
    return issues


def _check_virtual_services(registry: Registry, mesh: MeshConfig) -> list[Issue]:
    # Only VirtualServices of the mesh gateway reach here: the loader skips
    # those bound only to other gateways.
    issues = _check_conflicts(registry, mesh)
    for vs in mesh.virtual_services:
        source = vs.source
        own: set[str] = set()
        issues += _check_hosts(registry, vs, own)
        for route in vs.http:
            if route.delegate is not None and vs.hosts:
                if find_delegate(vs, route, mesh.virtual_services) is None:
                    name, namespace = route.delegate
                    issues.append(
                        _warn(
                            source,
                            f"{route.path}.delegate",
                            f"{NOT_FOUND} delegate VirtualService "
                            f"{namespace or source.namespace}/{name} does not exist or is not "
                            f"exported to {source.namespace}: this route is dropped",
                        )
                    )
            for dest in route.route:
                issues += _check_destination(registry, vs, dest.destination, own)
            for mirror in route.mirrors:
                issues += _check_destination(registry, vs, mirror.destination, own)
            if len(route.route) > 1:
                total = sum(d.weight or 0 for d in route.route)
                if total != 100:
                    issues.append(
                        _err(
                            source,
                            f"{route.path}.route",
                            f"weights sum to {total}; with several destinations they must sum to 100",
                        )
                    )
            elif len(route.route) == 1 and route.route[0].weight not in (None, 0, 100):
                issues.append(
                    _warn(
                        source,
                        f"{route.path}.route[0].weight",
                        "a single destination receives all traffic; its weight is ignored",
                    )
                )
    return issues


def _check_services(registry: Registry, mesh: MeshConfig) -> list[Issue]:
    issues = []
    for service in registry.services.values():
        first = service.entry
        for later in service.entries[1:]:
            if (later.resolution, later.location) != (first.resolution, first.location):
                issues.append(
                    _warn(
                        later.source,
                        "spec.resolution",
                        f"merged with ServiceEntry {first.source.namespace}/{first.source.name} "
                        f"for {service.host}, whose resolution {first.resolution} and location "
                        f"{first.location} are used",
                    )
                )
    for entry in mesh.service_entries:
        claimed = registry.services.get(entry.hosts[0]) if entry.hosts else None
        if (
            claimed is not None
            and entry.source.kind != KUBERNETES_KIND
            and claimed.entry.source.kind == KUBERNETES_KIND
            and claimed.namespace == entry.source.namespace
        ):
            issues.append(
                _warn(
                    entry.source,
                    "spec.hosts",
                    f"Kubernetes Service {claimed.namespace}/{claimed.entry.source.name} "
                    f"defines {claimed.host}: this ServiceEntry is ignored there",
                )
            )
        if not entry.endpoints and entry.workload_selector is None:
            if entry.resolution in ("DNS", "DNS_ROUND_ROBIN"):
                continue
            issues.append(
                _warn(entry.source, "spec.endpoints", "no endpoints: calls to this service fail")
            )
    for service in registry.services.values():
        if service.entry.hosts and service.host not in service.entry.hosts:
            continue  # a concrete host under a wildcard entry: checked as the wildcard
        owned = [(entry.source, ep) for entry in service.entries for ep in entry.endpoints]
        extra = list(service.endpoints)
        for _, ep in owned:
            if ep in extra:
                extra.remove(ep)
        owned += [(service.entry.source, ep) for ep in extra]
        for port in service.ports:
            seen: dict[str, tuple[Source, str]] = {}
            for where, ep in owned:
                key = f"{ep.address}:{service.target_port(ep, port)}"
                path = ep.path or "spec.workloadSelector"
                if key not in seen:
                    seen[key] = (where, path)
                    continue
                earlier, earlier_path = seen[key]
                also = (
                    earlier_path
                    if earlier is where
                    else f"{earlier.kind} {earlier.namespace}/{earlier.name} {earlier_path}"
                )
                issues.append(
                    _err(
                        where,
                        path,
                        f"endpoint {key} appears twice for port {port.number} (also {also})",
                    )
                )
    for we in mesh.workload_entries:
        if not any(
            se.workload_selector is not None
            and se.source.namespace == we.source.namespace
            and selects(se.workload_selector, we.endpoint.labels)
            for se in mesh.service_entries
        ):
            issues.append(
                _warn(
                    we.source,
                    "spec.labels",
                    "no ServiceEntry workloadSelector selects this WorkloadEntry",
                )
            )
    return issues


def _check_destination_rules(registry: Registry, mesh: MeshConfig) -> list[Issue]:
    issues = []
    for rule in mesh.destination_rules:
        host = registry.resolve(rule.host, rule.source.namespace)
        if host.startswith("*"):
            if not registry.match_hosts(host, rule.source.namespace):
                issues.append(
                    _warn(
                        rule.source,
                        "spec.host",
                        f"{UNKNOWN_RULE_HOST} no service matches {host}: the rule applies to nothing",
                    )
                )
            continue
        first = next(
            (
                other
                for other in mesh.destination_rules
                if other is not rule
                and other.source.namespace == rule.source.namespace
                and registry.resolve(other.host, other.source.namespace) == host
                and meet(
                    other.export_to, other.source.namespace, rule.export_to, rule.source.namespace
                )
            ),
            None,
        )
        if first is not None and (first.source.file, first.source.doc) < (
            rule.source.file,
            rule.source.doc,
        ):
            issues.append(
                _err(
                    rule.source,
                    "spec.host",
                    f"{host} already has DestinationRule {first.source.namespace}/{first.source.name} "
                    f"({first.source.file}:doc{first.source.doc})",
                )
            )
            continue
        service = registry.services.get(host)
        if service is None:
            shown = host if host == rule.host else f"{rule.host} (= {host})"
            issues.append(
                _warn(
                    rule.source,
                    "spec.host",
                    f"{UNKNOWN_RULE_HOST} unknown host {shown}: the rule applies to nothing",
                )
            )
            continue
        policies = [("spec.trafficPolicy", rule.traffic_policy)]
        policies += [(f"{s.path}.trafficPolicy", s.traffic_policy) for s in rule.subsets]
        for path, policy in policies:
            if policy is None:
                continue
            for i, (number, _) in enumerate(policy.port_level):
                if service.port(number) is None:
                    issues.append(
                        _warn(
                            rule.source,
                            f"{path}.portLevelSettings[{i}].port.number",
                            f"{host} has no port {number}",
                        )
                    )
    return issues


def check_references(mesh: MeshConfig, registry: Registry | None = None) -> list[Issue]:
    """Every cross-document problem of ``mesh``."""
    registry = registry or Registry(mesh)
    return [
        *_check_names(mesh),
        *_check_services(registry, mesh),
        *_check_virtual_services(registry, mesh),
        *_check_destination_rules(registry, mesh),
    ]
