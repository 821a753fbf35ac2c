"""One service per host: ServiceEntries (and Kubernetes Services) merged as istiod does.

istiod keys services by host and namespace (pilot/pkg/model/push_context.go,
service index; pilot/pkg/serviceregistry/serviceentry conversion):

* ServiceEntries of one namespace naming the same host make one service:
  ports are the union (for a port number defined twice the first entry in
  file order wins), endpoints are every entry's endpoints and the
  WorkloadEntries its ``workloadSelector`` picks; resolution, location and
  subject alt names come from the first entry (the loader warns when a later
  entry disagrees);
* a Kubernetes Service (:mod:`.kubernetes`) takes precedence over
  ServiceEntries for its host in its namespace, which are then ignored;
* ServiceEntries of different namespaces stay apart: a client sees the one
  of its own namespace, else the first in file order (:class:`.Registry`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proxyless.controlplane.istio.model import Port, ServiceEntry, WorkloadEndpoint, WorkloadEntry

__all__ = [
    "DNS_RESOLUTIONS",
    "HTTP_PROTOCOLS",
    "KUBERNETES_KIND",
    "Service",
    "entries_by_host",
    "merged_service",
    "selects",
]

DNS_RESOLUTIONS = ("DNS", "DNS_ROUND_ROBIN")
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})
#: ``Source.kind`` of a ServiceEntry made from a Kubernetes Service.
KUBERNETES_KIND = "Service"


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True, slots=True)
class Service:
    host: str
    namespace: str
    ports: tuple[Port, ...]
    endpoints: tuple[WorkloadEndpoint, ...]
    #: The first entry merged (resolution, location and identities come from it).
    entry: ServiceEntry
    #: Every entry merged, in file order.
    entries: tuple[ServiceEntry, ...] = ()

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

    @property
    def resolution(self) -> str:
        return self.entry.resolution

    @property
    def dns(self) -> bool:
        """True when the client (or Envoy) resolves the endpoints' host names."""
        return self.entry.resolution in DNS_RESOLUTIONS


def entries_by_host(
    entries: Iterable[ServiceEntry],
) -> dict[str, dict[str, list[ServiceEntry]]]:
    """host -> namespace -> entries, each level in file order."""
    out: dict[str, dict[str, list[ServiceEntry]]] = {}
    for entry in entries:
        for host in entry.hosts:
            out.setdefault(host, {}).setdefault(entry.source.namespace, []).append(entry)
    return out


def _selected(entry: ServiceEntry, workloads: Iterable[WorkloadEntry]) -> list[WorkloadEndpoint]:
    if entry.workload_selector is None:
        return []
    return [
        we.endpoint
        for we in workloads
        if we.source.namespace == entry.source.namespace
        and selects(entry.workload_selector, we.endpoint.labels)
    ]


def merged_service(
    host: str,
    namespace: str,
    entries: list[ServiceEntry],
    workloads: Iterable[WorkloadEntry] = (),
) -> Service:
    """The one service ``entries`` (same host, same namespace) make."""
    kube = [e for e in entries if e.source.kind == KUBERNETES_KIND]
    chosen = kube[:1] if kube else entries
    ports: list[Port] = []
    endpoints: list[WorkloadEndpoint] = []
    workloads = list(workloads)
    for entry in chosen:
        for port in entry.ports:
            if not any(p.number == port.number for p in ports):
                ports.append(port)
        endpoints += entry.endpoints
        endpoints += _selected(entry, workloads)
        own_host = WorkloadEndpoint(address=host, path="spec.hosts")
        if (
            not entry.endpoints
            and entry.workload_selector is None
            and entry.resolution in DNS_RESOLUTIONS
            and own_host not in endpoints
        ):
            # A DNS entry without endpoints resolves its own host.
            endpoints.append(own_host)
    return Service(host, namespace, tuple(ports), tuple(endpoints), chosen[0], tuple(chosen))
