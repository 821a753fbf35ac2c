"""``proxyless analyze``: mTLS conflicts and dangling references of the security kinds.

Each message carries istioctl's analyzer code where istioctl has one for the
same finding (istio.io/latest/docs/reference/config/analysis/), first in the
text as istioctl prints it:

* ``[IST0113]`` (MTLSPolicyConflict, an error): a DestinationRule whose
  ``tls.mode`` is DISABLE sends plaintext to a workload port whose
  PeerAuthentication is STRICT, or one whose mode is ISTIO_MUTUAL sends mTLS
  to a workload port whose PeerAuthentication is DISABLE — either way every
  call fails. istioctl reported this code while the authentication policy
  was the ``Policy`` kind; current istioctl has no code for the
  PeerAuthentication form, so the old code is kept for the same conflict.
* ``[IST0101]`` (ReferencedResourceNotFound): an AuthorizationPolicy's
  ``source.namespaces`` (or ``notNamespaces``, or a ``source.namespace``
  condition) names a namespace no document lives in. istioctl makes it an
  error against a live cluster; files alone cannot prove a namespace does not
  exist, so here it is a warning.
* ``[IST0127]`` (NoMatchingWorkloadsFound, a warning): an
  AuthorizationPolicy's selector matches no workload (ServiceEntry endpoint
  or WorkloadEntry) of its namespace (any namespace for the root namespace).
* no istioctl code: an exact principal ``<td>/ns/<ns>/sa/<sa>`` whose
  namespace no document lives in, or whose service account no workload of
  that namespace declares (when some declare one) — the rule can never match.

Namespaces "that exist" are those of every document, and the root namespace.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator

from proxyless.controlplane.istio.model import (
    AuthorizationPolicy,
    Issue,
    MeshConfig,
    Source,
    WorkloadEndpoint,
)
from proxyless.controlplane.istio.peer_authn import DISABLE, ROOT_NAMESPACE, STRICT, workload_mtls
from proxyless.controlplane.istio.registry import Registry, selects

__all__ = ["security_issues"]


def _sources(mesh: MeshConfig) -> Iterator[Source]:
    for group in (
        mesh.service_entries,
        mesh.workload_entries,
        mesh.virtual_services,
        mesh.destination_rules,
        mesh.peer_authentications,
        mesh.authorization_policies,
    ):
        for doc in group:
            yield doc.source


def _workloads(mesh: MeshConfig, registry: Registry) -> list[tuple[str, WorkloadEndpoint]]:
    """(namespace, endpoint) of every workload the files declare."""
    out = [(s.namespace, e) for s in registry.services.values() for e in s.endpoints]
    out += [(we.source.namespace, we.endpoint) for we in mesh.workload_entries]
    return out


def _mtls_conflicts(mesh: MeshConfig, registry: Registry) -> list[Issue]:
    issues = []
    seen: set[tuple[str, str, int, str]] = set()
    for service in registry.services.values():
        if service.entry.location == "MESH_EXTERNAL":
            continue
        rule = registry.destination_rules.get(service.host)
        if rule is None:
            continue
        for subset in ("", *(s.name for s in rule.subsets)):
            for port in service.ports:
                policy = registry.policy(service.host, port.number, subset)
                tls = policy.tls if policy is not None else None
                if tls is None or tls.mode not in ("DISABLE", "ISTIO_MUTUAL"):
                    continue
                for endpoint in registry.subset_endpoints(service, subset):
                    target = service.target_port(endpoint, port)
                    mtls = workload_mtls(mesh, service.namespace, endpoint.labels)
                    mode = mtls.for_port(target)
                    if (tls.mode, mode) not in (("DISABLE", STRICT), ("ISTIO_MUTUAL", DISABLE)):
                        continue
                    key = (service.host, subset, port.number, mode)
                    if key in seen:
                        continue
                    seen.add(key)
                    where = f"{service.host}:{port.number}" + (
                        f" subset {subset}" if subset else ""
                    )
                    by = ", ".join(mtls.decided_by) or "the mesh default"
                    if tls.mode == "DISABLE":
                        what = "sends plaintext (tls.mode DISABLE)"
                        need = "requires mTLS (STRICT)"
                    else:
                        what = "sends mTLS (tls.mode ISTIO_MUTUAL)"
                        need = "accepts only plaintext (DISABLE)"
                    issues.append(
                        Issue.at(
                            "error",
                            rule.source,
                            "spec.trafficPolicy.tls.mode",
                            f"[IST0113] MTLSPolicyConflict: {what} to {where}, but workload "
                            f"{endpoint.address} port {target} {need} by {by}: every call fails",
                        )
                    )
    return issues


def _matches_namespace(pattern: str, namespaces: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(ns, pattern) for ns in namespaces)


def _policy_namespaces(policy: AuthorizationPolicy) -> Iterator[tuple[str, str]]:
    """(field path, namespace pattern) of every namespace a policy names."""
    for i, rule in enumerate(policy.rules):
        for j, source in enumerate(rule.sources):
            for name in ("namespaces", "notNamespaces"):
                for k, value in enumerate(source.get(name, ())):
                    yield f"spec.rules[{i}].from[{j}].source.{name}[{k}]", value
        for j, (key, values, not_values) in enumerate(rule.conditions):
            if key == "source.namespace":
                for value in (*values, *not_values):
                    yield f"spec.rules[{i}].when[{j}]", value


def _policy_principals(policy: AuthorizationPolicy) -> Iterator[tuple[str, str]]:
    for i, rule in enumerate(policy.rules):
        for j, source in enumerate(rule.sources):
            for name in ("principals", "notPrincipals"):
                for k, value in enumerate(source.get(name, ())):
                    yield f"spec.rules[{i}].from[{j}].source.{name}[{k}]", value
        for j, (key, values, not_values) in enumerate(rule.conditions):
            if key == "source.principal":
                for value in (*values, *not_values):
                    yield f"spec.rules[{i}].when[{j}]", value


def _authz_references(mesh: MeshConfig, registry: Registry) -> list[Issue]:
    namespaces = {s.namespace for s in _sources(mesh)} | {ROOT_NAMESPACE}
    workloads = _workloads(mesh, registry)
    accounts: dict[str, set[str]] = {}
    for ns, endpoint in workloads:
        if endpoint.service_account:
            accounts.setdefault(ns, set()).add(endpoint.service_account)
    issues = []
    for policy in mesh.authorization_policies:
        source = policy.source
        if policy.selector:
            in_scope = [e for ns, e in workloads if source.namespace in (ns, ROOT_NAMESPACE)]
            if not any(selects(policy.selector, e.labels) for e in in_scope):
                labels = ",".join(f"{k}={v}" for k, v in sorted(policy.selector.items()))
                issues.append(
                    Issue.at(
                        "warning",
                        source,
                        "spec.selector",
                        "[IST0127] NoMatchingWorkloadsFound: no matching workloads for this "
                        f"resource with the following labels: {labels}",
                    )
                )
        for path, pattern in _policy_namespaces(policy):
            if not _matches_namespace(pattern, namespaces):
                issues.append(
                    Issue.at(
                        "warning",
                        source,
                        path,
                        f"[IST0101] ReferencedResourceNotFound: referenced namespace not found: "
                        f"{pattern!r}",
                    )
                )
        for path, principal in _policy_principals(policy):
            parts = principal.split("/")
            if "*" in principal or len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
                continue
            ns, sa = parts[2], parts[4]
            if ns not in namespaces:
                why = f"namespace {ns!r} has no document"
            elif ns in accounts and sa not in accounts[ns]:
                known = ", ".join(sorted(accounts[ns]))
                why = f"no workload of namespace {ns!r} runs as {sa!r} (known: {known})"
            else:
                continue
            issues.append(
                Issue.at(
                    "warning",
                    source,
                    path,
                    f"principal {principal!r} can never match: {why}",
                )
            )
    return issues


def security_issues(mesh: MeshConfig, registry: Registry) -> list[Issue]:
    """Every finding of this module (see the module docstring)."""
    return [*_mtls_conflicts(mesh, registry), *_authz_references(mesh, registry)]
