"""``proxyless analyze``: errors and pitfalls of an Istio mesh config.

Like ``istioctl analyze``, but for the files alone. Errors are everything
the loader refuses (:mod:`.load`, :mod:`.refs`): invalid YAML, unknown kinds,
wrong fields, unknown hosts and subsets, weights not summing to 100, invalid
RE2 regexes, duplicate names. On top of that it warns about field pitfalls:

* retries without outlier detection or a retry limit
  (``connectionPool.http.maxRetries``) on the destination: retries keep
  landing on a failing endpoint and multiply load (Envoy's retry budget and
  outlier docs);
* ``maxEjectionPercent: 100`` (every endpoint may be ejected), or the default
  10% with fewer than 10 endpoints (only one endpoint is ejected at a time:
  Envoy and gRFC A50 always allow one ejection);
* STRICT and PERMISSIVE PeerAuthentication mixed in one namespace;
* mTLS conflicts between DestinationRule and PeerAuthentication, and
  AuthorizationPolicy references to nothing, with istioctl's codes
  (:mod:`.analyze_security`);
* references ``exportTo`` hides from a VirtualService (IST0101,
  :mod:`.analyze_visibility`);
* unreachable routing rules, overlapping VirtualServices, subsets selecting
  no endpoint, TLS origination without ``caCertificates``, ServiceEntry
  protocol conflicts and TCP ServiceEntry ports without ``addresses``, with
  istioctl's codes (:mod:`.analyze_rules`);
* load balancers grpcio's own xDS client rejects (MAGLEV, RANDOM,
  LEAST_REQUEST: it NACKs the cluster), DNS ServiceEntries with several
  endpoints (STRICT_DNS, which it NACKs too) and query-parameter matches it
  never matches (gRFC A28);
* fields accepted but not translated (reported while loading).

Finally a valid config is translated for a proxyless and an Envoy node and
every resource is run through proxyless' own resource parsers
(:mod:`proxyless.resources.parse`); a resource they reject is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from proxyless.controlplane.istio.analyze_rules import rule_issues
from proxyless.controlplane.istio.analyze_security import security_issues
from proxyless.controlplane.istio.analyze_visibility import visibility_issues
from proxyless.controlplane.istio.load import load_files
from proxyless.controlplane.istio.model import Issue, MeshConfig, Source, TrafficPolicy
from proxyless.controlplane.istio.registry import Registry, cluster_name
from proxyless.controlplane.istio.routes import resolve_destination
from proxyless.controlplane.istio.translate import ENVOY, NodeProfile, Translator
from proxyless.controlplane.istio.upstream_tls import (
    STYLE_ENVOY,
    STYLE_PROVIDER,
    istio_mutual_pitfalls,
)
from proxyless.controlplane.model import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from proxyless.resources.parse import (
    decode_cluster,
    decode_cluster_load_assignment,
    decode_listener,
    decode_route_configuration,
)
from proxyless.xds_client.resource_type import DecodeResult

__all__ = ["analyze_files", "analyze_mesh"]

_NATIVE_GRPC_NACKS = {"RANDOM", "LEAST_REQUEST"}


def _warn(source: Source, path: str, message: str) -> Issue:
    return Issue.at("warning", source, path, message)


def _policies(mesh: MeshConfig) -> Iterable[tuple[Source, str, TrafficPolicy, str, str]]:
    """(source, path, policy, host-as-written, subset) of every traffic policy."""
    for rule in mesh.destination_rules:
        found: list[tuple[str, TrafficPolicy | None, str]] = [
            ("spec.trafficPolicy", rule.traffic_policy, "")
        ]
        found += [(f"{s.path}.trafficPolicy", s.traffic_policy, s.name) for s in rule.subsets]
        for path, policy, subset in found:
            if policy is None:
                continue
            yield rule.source, path, policy, rule.host, subset
            for i, (_, level) in enumerate(policy.port_level):
                yield rule.source, f"{path}.portLevelSettings[{i}]", level, rule.host, subset


def _retry_pitfalls(mesh: MeshConfig, registry: Registry) -> list[Issue]:
    issues = []
    for vs in mesh.virtual_services:
        ns = vs.source.namespace
        for route in vs.http:
            if route.retries is None or route.retries.attempts == 0:
                continue
            unguarded = []
            for rd in route.route:
                # the route's own port is unknown here: use the destination's first port
                host = registry.resolve(rd.destination.host, ns)
                service = registry.services.get(host)
                if service is None or not service.ports:
                    continue
                resolved = resolve_destination(
                    registry, rd.destination, ns, service.ports[0].number
                )
                if resolved is None:
                    continue
                policy = registry.policy(resolved[0], resolved[1], rd.destination.subset)
                guarded = policy is not None and (
                    policy.outlier_detection is not None
                    or (
                        policy.connection_pool is not None
                        and policy.connection_pool.max_retries is not None
                    )
                )
                if not guarded:
                    unguarded.append(cluster_name(resolved[1], rd.destination.subset, resolved[0]))
            if unguarded:
                issues.append(
                    _warn(
                        vs.source,
                        f"{route.path}.retries",
                        f"retries without outlierDetection or connectionPool.http.maxRetries on "
                        f"{', '.join(unguarded)}: retries keep hitting a failing endpoint and multiply load",
                    )
                )
    return issues


def _ejection_pitfalls(mesh: MeshConfig, registry: Registry) -> list[Issue]:
    issues = []
    for source, path, policy, host, subset in _policies(mesh):
        od = policy.outlier_detection
        if od is None:
            continue
        if od.max_ejection_percent == 100:
            issues.append(
                _warn(
                    source,
                    f"{path}.outlierDetection.maxEjectionPercent",
                    "100 lets every endpoint be ejected: calls fail when all are",
                )
            )
        elif od.max_ejection_percent is None:
            service = registry.services.get(registry.resolve(host, source.namespace))
            if service is None:
                continue
            count = len(registry.subset_endpoints(service, subset))
            if 1 < count < 10:
                issues.append(
                    _warn(
                        source,
                        f"{path}.outlierDetection",
                        f"maxEjectionPercent defaults to 10: with {count} endpoints only one "
                        "endpoint is ejected at a time; set it explicitly",
                    )
                )
    return issues


def _lb_pitfalls(mesh: MeshConfig) -> list[Issue]:
    issues = []
    for source, path, policy, _, _ in _policies(mesh):
        if policy.simple_lb in _NATIVE_GRPC_NACKS:
            issues.append(
                _warn(
                    source,
                    f"{path}.loadBalancer.simple",
                    f"{policy.simple_lb} is not supported by grpcio's native xDS client (it NACKs the cluster)",
                )
            )
        if policy.consistent_hash is not None and policy.consistent_hash.algorithm == "maglev":
            issues.append(
                _warn(
                    source,
                    f"{path}.loadBalancer.consistentHash.maglev",
                    "MAGLEV is not supported by grpcio's native xDS client (it NACKs the cluster)",
                )
            )
    for entry in mesh.service_entries:
        if entry.resolution == "DNS" and len(entry.endpoints) > 1:
            issues.append(
                _warn(
                    entry.source,
                    "spec.resolution",
                    "DNS with several endpoints is a STRICT_DNS cluster, which grpcio's native "
                    "xDS client does not support (it NACKs the cluster; gRFC A37 has only "
                    "LOGICAL_DNS); proxyless clients and Envoy resolve it",
                )
            )
    for vs in mesh.virtual_services:
        for route in vs.http:
            for i, match in enumerate(route.matches):
                if match.query_params:
                    issues.append(
                        _warn(
                            vs.source,
                            f"{route.path}.match[{i}].queryParams",
                            "gRPC clients never match routes on query parameters (gRFC A28)",
                        )
                    )
    return issues


def _mtls_pitfalls(mesh: MeshConfig) -> list[Issue]:
    issues = []
    by_ns: dict[str, list[tuple[Source, set[str]]]] = {}
    for pa in mesh.peer_authentications:
        modes = {pa.mode, *(m for _, m in pa.port_modes)}
        by_ns.setdefault(pa.source.namespace, []).append((pa.source, modes))
    for ns, entries in by_ns.items():
        all_modes = set().union(*(m for _, m in entries))
        if {"STRICT", "PERMISSIVE"} <= all_modes:
            for source, modes in entries:
                if modes & {"STRICT", "PERMISSIVE"}:
                    issues.append(
                        _warn(
                            source,
                            "spec.mtls.mode",
                            f"namespace {ns} mixes STRICT and PERMISSIVE PeerAuthentication: "
                            "plaintext is accepted by some workloads and refused by others",
                        )
                    )
    return issues


_DECODERS: dict[str, tuple[str, Callable[[bytes], DecodeResult]]] = {
    LISTENER_TYPE: ("Listener", decode_listener),
    ROUTE_TYPE: ("RouteConfiguration", decode_route_configuration),
    CLUSTER_TYPE: ("Cluster", decode_cluster),
    ENDPOINT_TYPE: ("ClusterLoadAssignment", decode_cluster_load_assignment),
}


def _translation_check(mesh: MeshConfig, file: str) -> list[Issue]:
    translator = Translator(mesh)
    ports = tuple(
        (f"{s.host}:{p.number}", 20000 + i)
        for i, (s, p) in enumerate(
            (s, p) for s in translator.registry.services.values() for p in s.http_ports()
        )
    )
    issues = []
    seen: set[tuple[str, str]] = set()
    profiles = (
        NodeProfile(),
        NodeProfile(certificates=STYLE_PROVIDER),
        NodeProfile(kind=ENVOY, listener_ports=ports, certificates=STYLE_ENVOY),
    )
    for profile in profiles:
        snapshot = translator.snapshot(profile)
        for type_url, (label, decode) in _DECODERS.items():
            if type_url == LISTENER_TYPE and profile.kind == ENVOY:
                continue  # socket listeners are for Envoy, not for proxyless clients
            for name, resource in snapshot.get(type_url).items():
                data = resource if isinstance(resource, bytes) else resource.SerializeToString()
                result = decode(data)
                if result.ok or (type_url, name) in seen:
                    continue
                seen.add((type_url, name))
                issues.append(
                    Issue(
                        "error",
                        file,
                        0,
                        "",
                        "",
                        "",
                        f"translated {label} {name!r} is rejected by proxyless clients: "
                        + "; ".join(result.errors),
                    )
                )
    return issues


def analyze_mesh(
    mesh: MeshConfig, *, file: str = "<config>", translate: bool = True
) -> list[Issue]:
    """Pitfall warnings for a loaded mesh (and, if ``translate``, translation errors)."""
    registry = Registry(mesh)
    issues = [
        *_retry_pitfalls(mesh, registry),
        *_ejection_pitfalls(mesh, registry),
        *_lb_pitfalls(mesh),
        *_mtls_pitfalls(mesh),
        *security_issues(mesh, registry),
        *rule_issues(mesh, registry),
        *visibility_issues(mesh, registry),
        *istio_mutual_pitfalls(registry),
    ]
    if translate:
        issues += _translation_check(mesh, file)
    return issues


def analyze_files(paths: Iterable[str | Path]) -> list[Issue]:
    """Every finding for ``paths`` analysed as one mesh, sorted by file and document."""
    paths = list(paths)
    result = load_files(paths)
    issues = list(result.issues)
    label = str(paths[0]) if paths else "<config>"
    issues += analyze_mesh(result.mesh, file=label, translate=result.ok)
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (i.file, i.doc))
