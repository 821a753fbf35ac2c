"""``proxyless analyze``: routing rules, subsets, upstream TLS and ServiceEntry ports.

Each message carries istioctl's analyzer code and name, first in the text as
istioctl prints it (istio.io/latest/docs/reference/config/analysis/), with
istioctl's severity unless said otherwise:

* ``[IST0109]`` ConflictingMeshGatewayVirtualServiceHosts: a VirtualService
  of the mesh gateway whose wildcard host (``*.suffix``, ``*``) covers a
  service an earlier VirtualService already routes. The control plane
  serves the earlier one (file order) for that service and ignores the
  later one there. istioctl compares hosts as written and has an error for
  the same host twice (the loader refuses that, :mod:`.refs`); an
  overlapping wildcard is a warning here, saying which VirtualService wins.
* ``[IST0128]`` NoServerCertificateVerificationDestinationLevel and
  ``[IST0129]`` NoServerCertificateVerificationPortLevel (warnings): a
  DestinationRule ``tls.mode`` SIMPLE or MUTUAL without ``caCertificates``,
  in a traffic policy or in one of its ``portLevelSettings``. proxyless
  clients then verify the server against the system roots only.
* ``[IST0130]`` VirtualServiceUnreachableRule (a warning): an ``http`` rule
  that can never be chosen — it follows a rule without ``match`` (which
  takes every request), or each of its matches is taken by earlier ones.
* ``[IST0131]`` VirtualServiceIneffectiveMatch (info): a ``match`` entry
  that an earlier one takes entirely: the same conditions, or an earlier
  ``uri`` prefix of its ``uri`` with no condition the later one lacks.
* ``[IST0134]`` ServiceEntryAddressesRequired (a warning): a ServiceEntry
  without ``addresses`` with a port whose protocol is TCP or unset. A sidecar
  tells TCP services apart only by their virtual IP, so istiod gives such a
  port one listener shared by every address-less entry on that port. The
  embedded control plane never routes TCP ports (they are warned about while
  loading). istioctl skips the check when the mesh config turns on DNS
  capture with address auto-allocation (``ISTIO_META_DNS_AUTO_ALLOCATE``);
  the files carry no mesh config, so the check always runs. Kubernetes
  Services have a cluster IP and are not checked, as in istioctl.
* ``[IST0173]`` DestinationRuleSubsetNotSelectPods (an error): a subset
  whose labels select no endpoint (ServiceEntry endpoint or WorkloadEntry)
  of its host; calls routed to it fail with no healthy upstream. The
  control plane still serves the config, as istiod does.
* ``[IST0177]`` ConflictingServiceEntryProtocol (a warning): ServiceEntries
  defining the same host and port with different protocols. Entries of one
  namespace merge (:mod:`.service_merge`) and the first entry's port (file
  order) is served.
"""

from __future__ import annotations

from collections.abc import Iterator

from proxyless.controlplane.istio.model import (
    ClientTls,
    Issue,
    MatchRequest,
    MeshConfig,
    Source,
    StringMatch,
    TrafficPolicy,
    VirtualService,
)
from proxyless.controlplane.istio.registry import Registry, selects
from proxyless.controlplane.istio.service_merge import KUBERNETES_KIND

__all__ = ["rule_issues"]

_Pairs = frozenset[tuple[str, str, str]]


def _pairs(items: tuple[tuple[str, StringMatch], ...]) -> _Pairs:
    return frozenset((name, m.kind, m.value) for name, m in items)


def _conditions(m: MatchRequest) -> tuple[tuple[str, object], ...]:
    """Every condition of a match except ``uri``, as (field, value); unset fields left out."""
    scalars: list[tuple[str, object]] = [
        (name, value)
        for name, value in (
            ("scheme", m.scheme),
            ("method", m.method),
            ("authority", m.authority),
            ("port", m.port),
            ("sourceNamespace", m.source_namespace or None),
        )
        if value is not None
    ]
    scalars += [("headers", p) for p in _pairs(m.headers)]
    scalars += [("withoutHeaders", p) for p in _pairs(m.without_headers)]
    scalars += [("queryParams", p) for p in _pairs(m.query_params)]
    scalars += [("sourceLabels", item) for item in m.source_labels.items()]
    return tuple(scalars)


def _same(a: MatchRequest, b: MatchRequest) -> bool:
    """The same conditions (the match ``name`` aside)."""
    return (
        a.uri == b.uri
        and (a.uri is None or a.ignore_uri_case == b.ignore_uri_case)
        and set(_conditions(a)) == set(_conditions(b))
    )


def _covers(a: MatchRequest, b: MatchRequest) -> bool:
    """Every request ``b`` matches, ``a`` matches too."""
    if a.uri is not None:
        if b.uri is None or a.ignore_uri_case != b.ignore_uri_case:
            return False
        if a.uri != b.uri and not (
            a.uri.kind == "prefix"
            and b.uri.kind in ("prefix", "exact")
            and b.uri.value.startswith(a.uri.value)
        ):
            return False
    return set(_conditions(a)) <= set(_conditions(b))


def _rule_label(index: int, name: str) -> str:
    return f"{name!r}" if name else f"#{index}"


def _unreachable(vs: VirtualService) -> list[Issue]:
    issues = []
    catch_all = ""
    earlier: list[tuple[str, str, MatchRequest]] = []
    for n, route in enumerate(vs.http):
        label = _rule_label(n, route.name)
        if catch_all:
            issues.append(
                Issue.at(
                    "warning",
                    vs.source,
                    route.path,
                    f"[IST0130] VirtualServiceUnreachableRule: rule {label} is never used "
                    f"(rule {catch_all} has no match and takes every request)",
                )
            )
            continue
        if not route.matches:
            catch_all = label
            continue
        taken = 0
        for i, match in enumerate(route.matches):
            shown = _rule_label(i, match.name)
            for other_rule, other_match, other in earlier:
                if _same(other, match):
                    how = "duplicates"
                elif _covers(other, match):
                    how = "is covered by"
                else:
                    continue
                taken += 1
                issues.append(
                    Issue.at(
                        "info",
                        vs.source,
                        f"{route.path}.match[{i}]",
                        f"[IST0131] VirtualServiceIneffectiveMatch: rule {label} match {shown} "
                        f"is never used: it {how} match {other_match} of rule {other_rule}",
                    )
                )
                break
            else:
                earlier.append((label, shown, match))
        if taken == len(route.matches):
            issues.append(
                Issue.at(
                    "warning",
                    vs.source,
                    route.path,
                    f"[IST0130] VirtualServiceUnreachableRule: rule {label} is never used "
                    "(earlier rules take all its matches)",
                )
            )
    return issues


def _wildcard_overlaps(mesh: MeshConfig, registry: Registry) -> list[Issue]:
    issues = []
    claimed: dict[str, VirtualService] = {}
    for vs in mesh.virtual_services:
        if vs.gateways and "mesh" not in vs.gateways:
            continue
        for i, raw in enumerate(vs.hosts):
            lost: dict[str, list[str]] = {}
            for host in registry.match_hosts(raw, vs.source.namespace):
                other = claimed.setdefault(host, vs)
                if other is not vs and raw.startswith("*"):
                    lost.setdefault(f"{other.source.namespace}/{other.source.name}", []).append(
                        host
                    )
            for winner, hosts in lost.items():
                issues.append(
                    Issue.at(
                        "warning",
                        vs.source,
                        f"spec.hosts[{i}]",
                        f"[IST0109] ConflictingMeshGatewayVirtualServiceHosts: {raw} overlaps "
                        f"VirtualService {winner}, which is served for {', '.join(sorted(hosts))}; "
                        "this VirtualService does not apply there",
                    )
                )
    return issues


def _tls_settings(
    policy: TrafficPolicy | None, path: str
) -> Iterator[tuple[str, ClientTls, int | None]]:
    if policy is None:
        return
    if policy.tls is not None:
        yield f"{path}.tls", policy.tls, None
    for i, (number, level) in enumerate(policy.port_level):
        if level.tls is not None:
            yield f"{path}.portLevelSettings[{i}].tls", level.tls, number


def _unverified_servers(mesh: MeshConfig) -> list[Issue]:
    issues = []
    for rule in mesh.destination_rules:
        found = [("spec.trafficPolicy", rule.traffic_policy)]
        found += [(f"{s.path}.trafficPolicy", s.traffic_policy) for s in rule.subsets]
        for base, policy in found:
            for path, tls, port in _tls_settings(policy, base):
                if tls.mode not in ("SIMPLE", "MUTUAL") or tls.ca_certificates:
                    continue
                if port is None:
                    code = "[IST0128] NoServerCertificateVerificationDestinationLevel"
                    where = rule.host
                else:
                    code = "[IST0129] NoServerCertificateVerificationPortLevel"
                    where = f"{rule.host} port {port}"
                issues.append(
                    Issue.at(
                        "warning",
                        rule.source,
                        path,
                        f"{code}: tls.mode {tls.mode} without caCertificates to verify the "
                        f"server identity of {where}; proxyless clients fall back to the "
                        "system roots",
                    )
                )
    return issues


def _addresses_required(mesh: MeshConfig) -> list[Issue]:
    return [
        Issue.at(
            "warning",
            entry.source,
            f"spec.ports[{i}]",
            f"[IST0134] ServiceEntryAddressesRequired: port {port.name!r} ({port.number}) "
            f"serves {port.protocol}, which needs spec.addresses to tell this service's "
            "traffic from other TCP traffic on the same port",
        )
        for entry in mesh.service_entries
        if entry.source.kind != KUBERNETES_KIND and not entry.addresses
        for i, port in enumerate(entry.ports)
        if port.protocol == "TCP"
    ]


def _empty_subsets(mesh: MeshConfig, registry: Registry) -> list[Issue]:
    issues = []
    for rule in mesh.destination_rules:
        host = registry.resolve(rule.host, rule.source.namespace)
        service = registry.services.get(host)
        if service is None or registry.destination_rules.get(host) is not rule:
            continue  # wildcard, unknown host or a second rule: reported elsewhere
        for subset in rule.subsets:
            if not any(selects(subset.labels, e.labels) for e in service.endpoints):
                issues.append(
                    Issue.at(
                        "error",
                        rule.source,
                        f"{subset.path}.labels",
                        f"[IST0173] DestinationRuleSubsetNotSelectPods: subset {subset.name!r} "
                        f"selects no endpoint of {host}: calls routed to it fail "
                        "(no healthy upstream)",
                    )
                )
    return issues


def _protocol_conflicts(mesh: MeshConfig) -> list[Issue]:
    by_port: dict[tuple[str, int], list[tuple[Source, str]]] = {}
    for entry in mesh.service_entries:
        for host in entry.hosts:
            for port in entry.ports:
                by_port.setdefault((host, port.number), []).append((entry.source, port.protocol))
    issues = []
    reported: set[str] = set()
    for (host, number), defined in by_port.items():
        protocols = sorted({protocol for _, protocol in defined})
        if len(protocols) < 2:
            continue
        names = sorted(dict.fromkeys(f"{s.namespace}/{s.name}" for s, _ in defined))
        first = defined[0][0]
        for source, _ in defined:
            if source.key in reported:
                continue
            reported.add(source.key)
            issues.append(
                Issue.at(
                    "warning",
                    source,
                    "spec.ports",
                    f"[IST0177] ConflictingServiceEntryProtocol: ServiceEntries "
                    f"{', '.join(names)} define host {host} port {number} with conflicting "
                    f"protocols ({', '.join(protocols)}); ServiceEntry "
                    f"{first.namespace}/{first.name} is served",
                )
            )
    return issues


def rule_issues(mesh: MeshConfig, registry: Registry) -> list[Issue]:
    """Every finding of this module (see the module docstring)."""
    issues = [issue for vs in mesh.virtual_services for issue in _unreachable(vs)]
    return [
        *issues,
        *_wildcard_overlaps(mesh, registry),
        *_unverified_servers(mesh),
        *_addresses_required(mesh),
        *_empty_subsets(mesh, registry),
        *_protocol_conflicts(mesh),
    ]
