"""Which workload identity a node gets: its namespace and service account.

The embedded control plane mints each node an X.509-SVID
``spiffe://<trust domain>/ns/<namespace>/sa/<service account>`` (Istio's
identity form, istio.io "Security" concepts). The identity is read from
what the node says about itself, first match wins:

1. node metadata ``SERVICE_ACCOUNT`` (what istio-agent writes), in the
   node's namespace;
2. the WorkloadEntry, or ServiceEntry endpoint, whose address is one of the
   node's IPs (metadata ``INSTANCE_IPS``, a comma-separated string or a
   list, and the IP in an Istio node id) and that declares a
   ``serviceAccount``: that workload's namespace and service account;
3. service account ``default`` (as Kubernetes gives a pod) in the node's
   namespace.

The node's namespace is metadata ``NAMESPACE``, else ``POD_NAMESPACE``,
else the namespace of an Istio node id
(``sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local``), else
``default``.

The control plane believes the node: this is development-only trust (see
:mod:`proxyless.controlplane.ca`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proxyless.controlplane.ca import spiffe_id
from proxyless.controlplane.istio.model import MeshConfig
from proxyless.controlplane.model import NodeInfo

__all__ = [
    "DEFAULT_SERVICE_ACCOUNT",
    "NodeIdentity",
    "node_identity",
    "node_ips",
    "workload_identities",
    "workloads_by_ip",
]

DEFAULT_SERVICE_ACCOUNT = "default"


@dataclass(frozen=True, slots=True, order=True)
class NodeIdentity:
    """A workload identity: Kubernetes-style namespace and service account."""

    namespace: str
    service_account: str

    def spiffe_id(self, trust_domain: str) -> str:
        return spiffe_id(trust_domain, self.namespace, self.service_account)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service_account}"


def _canonical_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def _istio_node_id(node_id: str) -> tuple[str, str] | None:
    """(ip, namespace) from ``type~ip~pod.namespace~namespace.svc.domain``."""
    parts = node_id.split("~")
    if len(parts) != 4 or parts[0] not in ("sidecar", "router"):
        return None
    domain = parts[3]
    namespace = domain.split(".", 1)[0] if domain else ""
    if not namespace and "." in parts[2]:
        namespace = parts[2].rsplit(".", 1)[1]
    return parts[1], namespace


def node_ips(node: NodeInfo) -> tuple[str, ...]:
    """The node's IPs: metadata ``INSTANCE_IPS`` then the IP of an Istio node id."""
    raw: Any = node.metadata.get("INSTANCE_IPS")
    texts: list[str] = []
    if isinstance(raw, str):
        texts += raw.split(",")
    elif isinstance(raw, list):
        texts += [str(item) for item in raw]
    parsed = _istio_node_id(node.id)
    if parsed is not None:
        texts.append(parsed[0])
    out: list[str] = []
    for text in texts:
        ip = _canonical_ip(text)
        if ip is not None and ip not in out:
            out.append(ip)
    return tuple(out)


def workloads_by_ip(mesh: MeshConfig) -> dict[str, NodeIdentity]:
    """Address -> identity of every workload that declares a service account
    (WorkloadEntries first, then ServiceEntry endpoints; first in file order wins)."""
    out: dict[str, NodeIdentity] = {}
    for we in mesh.workload_entries:
        ip = _canonical_ip(we.endpoint.address)
        if ip is not None and we.endpoint.service_account:
            out.setdefault(ip, NodeIdentity(we.source.namespace, we.endpoint.service_account))
    for se in mesh.service_entries:
        for ep in se.endpoints:
            ip = _canonical_ip(ep.address)
            if ip is not None and ep.service_account:
                out.setdefault(ip, NodeIdentity(se.source.namespace, ep.service_account))
    return out


def _text(meta: Mapping[str, Any], key: str) -> str:
    value = meta.get(key)
    return value if isinstance(value, str) else ""


def node_identity(
    node: NodeInfo, mesh: MeshConfig, *, by_ip: Mapping[str, NodeIdentity] | None = None
) -> NodeIdentity:
    """The identity the node is issued (see the module docstring); ``by_ip`` is
    :func:`workloads_by_ip` of ``mesh`` when the caller keeps it."""
    meta = node.metadata
    workload: NodeIdentity | None = None
    if by_ip is None:
        by_ip = workloads_by_ip(mesh)
    for ip in node_ips(node):
        if ip in by_ip:
            workload = by_ip[ip]
            break
    parsed = _istio_node_id(node.id)
    namespace = (
        _text(meta, "NAMESPACE")
        or _text(meta, "POD_NAMESPACE")
        or (parsed[1] if parsed else "")
        or "default"
    )
    account = _text(meta, "SERVICE_ACCOUNT")
    if account:
        return NodeIdentity(namespace, account)
    if workload is not None:
        return workload
    account = DEFAULT_SERVICE_ACCOUNT
    return NodeIdentity(namespace, account)


def workload_identities(
    mesh: MeshConfig, extra: Iterable[NodeIdentity] = ()
) -> tuple[NodeIdentity, ...]:
    """Every identity the mesh declares (WorkloadEntry and ServiceEntry endpoint
    ``serviceAccount``s in their namespaces), plus ``extra``; sorted, unique."""
    found = set(workloads_by_ip(mesh).values())
    for we in mesh.workload_entries:
        if we.endpoint.service_account:
            found.add(NodeIdentity(we.source.namespace, we.endpoint.service_account))
    for se in mesh.service_entries:
        for ep in se.endpoints:
            if ep.service_account:
                found.add(NodeIdentity(se.source.namespace, ep.service_account))
    found.update(extra)
    return tuple(sorted(found))
