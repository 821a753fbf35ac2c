"""Kubernetes Services, EndpointSlices, Endpoints and Pods -> services of the mesh.

Reads what ``kubectl get svc,endpointslices,pods -A -o yaml`` prints (a
``kind: List`` with ``items``, or one document per object), the way istiod's
Kubernetes registry turns them into services (pilot/pkg/serviceregistry/kube;
Kubernetes API reference for Service v1, EndpointSlice discovery.k8s.io/v1,
Endpoints v1, Pod v1):

* a Service ``name`` in namespace ``ns`` is host
  ``name.ns.svc.cluster.local``, with its ``ports`` (number, name,
  ``targetPort``); the port protocol is Istio's protocol selection:
  ``appProtocol``, else the port name's prefix before ``-`` (``http``,
  ``http2``, ``grpc``, ``grpc-web``, ``https``, ``tcp``, ``tls``, ``mongo``,
  ``mysql``, ``redis``); a ``UDP`` port is UDP. A port Istio would sniff
  (no protocol found) is served as HTTP, which carries HTTP/1.1 and gRPC;
* endpoints come from the EndpointSlices labelled
  ``kubernetes.io/service-name: name`` (every ready or ``ready``-less
  endpoint address; ``FQDN`` slices are skipped), else from the Endpoints
  object of the same name (``subsets[].addresses``), else from the Pods the
  Service ``selector`` picks (``status.podIP``, named ``targetPort`` looked up
  in the containers' ports). An endpoint port is the slice port whose name
  is the Service port's name;
* an endpoint's labels (what DestinationRule subsets select) and service
  account are those of the Pod its ``targetRef`` names, or else of the Pod
  with its IP;
* ``type: ExternalName`` becomes a DNS service resolving ``externalName``;
* annotation ``networking.istio.io/exportTo`` (comma-separated) is the
  service's ``exportTo``.

Fields not listed are read past without warnings: a cluster dump carries
many (``status``, ``managedFields`` ...). A value of the wrong type in a field
that is read is an error naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxyless.controlplane.istio.model import Issue, Port, ServiceEntry, Source, WorkloadEndpoint
from proxyless.controlplane.istio.reader import DocReader
from proxyless.controlplane.istio.registry import CLUSTER_DOMAIN
from proxyless.controlplane.istio.service_merge import selects

__all__ = ["KUBERNETES_KINDS", "KubeObject", "kubernetes_service_entries", "port_protocol"]

#: kind -> accepted apiVersions.
KUBERNETES_KINDS: Mapping[str, tuple[str, ...]] = {
    "Service": ("v1",),
    "Endpoints": ("v1",),
    "EndpointSlice": ("discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"),
    "Pod": ("v1",),
}
_PROTOCOLS = {
    "http": "HTTP",
    "http2": "HTTP2",
    "grpc": "GRPC",
    "grpc-web": "GRPC-WEB",
    "https": "HTTPS",
    "tcp": "TCP",
    "tls": "TLS",
    "mongo": "MONGO",
    "mysql": "MYSQL",
    "redis": "REDIS",
    "udp": "UDP",
    "kubernetes.io/h2c": "HTTP2",
    "kubernetes.io/ws": "HTTP",
    "kubernetes.io/wss": "HTTPS",
}
_EXPORT_TO = "networking.istio.io/exportTo"
_SERVICE_NAME = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class KubeObject:
    """One Kubernetes object of a kind in :data:`KUBERNETES_KINDS`, as read."""

    source: Source
    body: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


def port_protocol(name: str, app_protocol: str, l4: str) -> str:
    """Istio's protocol of a Service port (see the module docstring)."""
    if l4.upper() == "UDP":
        return "UDP"
    if app_protocol.lower() in _PROTOCOLS:
        return _PROTOCOLS[app_protocol.lower()]
    for prefix in (name.lower(), name.lower().split("-")[0]):
        if prefix in _PROTOCOLS:
            return _PROTOCOLS[prefix]
    if name.lower().startswith("grpc-web"):
        return "GRPC-WEB"
    return "HTTP"


@dataclass(slots=True)
class _Pod:
    labels: Mapping[str, str]
    ip: str
    service_account: str
    named_ports: dict[str, int]


def _pods(objects: Iterable[KubeObject], issues: list[Issue]) -> dict[tuple[str, str], _Pod]:
    out: dict[tuple[str, str], _Pod] = {}
    for obj in objects:
        r = DocReader(obj.source)
        spec = r.mapping(obj.body.get("spec"), "spec") or {}
        status = r.mapping(obj.body.get("status"), "status") or {}
        named: dict[str, int] = {}
        for i, c in enumerate(r.items(spec.get("containers"), "spec.containers")):
            box = r.mapping(c, f"spec.containers[{i}]") or {}
            for j, p in enumerate(r.items(box.get("ports"), f"spec.containers[{i}].ports")):
                pbox = r.mapping(p, f"spec.containers[{i}].ports[{j}]") or {}
                number = r.integer(
                    pbox.get("containerPort"), f"spec.containers[{i}].ports[{j}].containerPort"
                )
                if isinstance(pbox.get("name"), str) and number is not None:
                    named[pbox["name"]] = number
        out[(obj.source.namespace, obj.source.name)] = _Pod(
            labels=obj.labels,
            ip=r.string(status.get("podIP"), "status.podIP") or "",
            service_account=r.string(spec.get("serviceAccountName"), "spec.serviceAccountName")
            or "",
            named_ports=named,
        )
        issues += r.issues
    return out


@dataclass(slots=True)
class _Address:
    ip: str
    pod: _Pod | None
    ports: dict[str, int]


def _pod_of(
    r: DocReader, raw: Any, path: str, ns: str, ip: str, pods: Mapping[tuple[str, str], _Pod]
) -> _Pod | None:
    ref = r.mapping(raw, path)
    if ref is not None and ref.get("kind", "Pod") == "Pod" and isinstance(ref.get("name"), str):
        found = pods.get((str(ref.get("namespace") or ns), ref["name"]))
        if found is not None:
            return found
    return next((p for (pns, _), p in pods.items() if pns == ns and p.ip == ip), None)


def _slice_addresses(
    obj: KubeObject, pods: Mapping[tuple[str, str], _Pod], issues: list[Issue]
) -> list[_Address]:
    r = DocReader(obj.source)
    body = obj.body
    ns = obj.source.namespace
    out: list[_Address] = []
    kind = r.string(body.get("addressType"), "addressType") or "IPv4"
    if kind == "FQDN":
        r.warn("addressType", "FQDN EndpointSlices are not read")
        issues += r.issues
        return out
    ports: dict[str, int] = {}
    for i, p in enumerate(r.items(body.get("ports"), "ports")):
        box = r.mapping(p, f"ports[{i}]") or {}
        number = r.integer(box.get("port"), f"ports[{i}].port", minimum=1, maximum=65535)
        if number is not None:
            ports[r.string(box.get("name"), f"ports[{i}].name") or ""] = number
    for i, e in enumerate(r.items(body.get("endpoints"), "endpoints")):
        path = f"endpoints[{i}]"
        box = r.mapping(e, path) or {}
        conditions = r.mapping(box.get("conditions"), f"{path}.conditions") or {}
        if conditions.get("ready") is False:
            continue
        for j, raw in enumerate(r.items(box.get("addresses"), f"{path}.addresses")):
            ip = r.string(raw, f"{path}.addresses[{j}]")
            if ip:
                pod = _pod_of(r, box.get("targetRef"), f"{path}.targetRef", ns, ip, pods)
                out.append(_Address(ip, pod, dict(ports)))
    issues += r.issues
    return out


def _endpoints_addresses(
    obj: KubeObject, pods: Mapping[tuple[str, str], _Pod], issues: list[Issue]
) -> list[_Address]:
    r = DocReader(obj.source)
    out: list[_Address] = []
    for i, subset in enumerate(r.items(obj.body.get("subsets"), "subsets")):
        box = r.mapping(subset, f"subsets[{i}]") or {}
        ports: dict[str, int] = {}
        for j, p in enumerate(r.items(box.get("ports"), f"subsets[{i}].ports")):
            pbox = r.mapping(p, f"subsets[{i}].ports[{j}]") or {}
            number = r.integer(pbox.get("port"), f"subsets[{i}].ports[{j}].port")
            if number is not None:
                ports[str(pbox.get("name") or "")] = number
        for j, a in enumerate(r.items(box.get("addresses"), f"subsets[{i}].addresses")):
            path = f"subsets[{i}].addresses[{j}]"
            abox = r.mapping(a, path) or {}
            ip = r.string(abox.get("ip"), f"{path}.ip", required=True)
            if ip:
                pod = _pod_of(
                    r, abox.get("targetRef"), f"{path}.targetRef", obj.source.namespace, ip, pods
                )
                out.append(_Address(ip, pod, dict(ports)))
    issues += r.issues
    return out


def _service(
    obj: KubeObject,
    addresses: list[_Address] | None,
    pods: Mapping[tuple[str, str], _Pod],
    issues: list[Issue],
) -> ServiceEntry | None:
    r = DocReader(obj.source)
    spec = r.mapping(obj.body.get("spec"), "spec", required=True)
    if spec is None:
        issues += r.issues
        return None
    ns = obj.source.namespace
    host = f"{obj.source.name}.{ns}.{CLUSTER_DOMAIN}"
    ports: list[Port] = []
    named_targets: dict[str, str] = {}
    for i, raw in enumerate(r.items(spec.get("ports"), "spec.ports")):
        path = f"spec.ports[{i}]"
        box = r.mapping(raw, path) or {}
        number = r.integer(box.get("port"), f"{path}.port", minimum=1, maximum=65535, required=True)
        name = r.string(box.get("name"), f"{path}.name") or ""
        target = box.get("targetPort")
        target_number: int | None = None
        if isinstance(target, str) and not target.isdigit():
            named_targets[name] = target
        elif target is not None:
            target_number = r.integer(
                int(target) if isinstance(target, str) else target,
                f"{path}.targetPort",
                minimum=1,
                maximum=65535,
            )
        protocol = port_protocol(
            name,
            r.string(box.get("appProtocol"), f"{path}.appProtocol") or "",
            r.string(box.get("protocol"), f"{path}.protocol") or "TCP",
        )
        if number is not None:
            ports.append(Port(number, protocol, name, target_number))
    export_to = tuple(
        x.strip() for x in obj.annotations.get(_EXPORT_TO, "").split(",") if x.strip()
    )
    if spec.get("type") == "ExternalName":
        external = r.string(spec.get("externalName"), "spec.externalName", required=True)
        issues += r.issues
        if not external:
            return None
        return ServiceEntry(
            obj.source,
            (host,),
            tuple(ports),
            (WorkloadEndpoint(address=external, path="spec.externalName"),),
            resolution="DNS",
            export_to=export_to,
        )
    if addresses is None:
        selector = r.labels(spec.get("selector"), "spec.selector")
        addresses = [
            _Address(p.ip, p, {})
            for (pns, _), p in pods.items()
            if pns == ns and selector and p.ip and selects(selector, p.labels)
        ]
    endpoints: list[WorkloadEndpoint] = []
    seen: set[tuple[str, tuple[tuple[str, int], ...]]] = set()
    for address in addresses:
        key = (address.ip, tuple(sorted(address.ports.items())))
        if key in seen:
            continue
        seen.add(key)
        mapped: dict[str, int] = {}
        for port in ports:
            if port.name in address.ports:
                mapped[port.name] = address.ports[port.name]
            elif port.name in named_targets and address.pod is not None:
                found = address.pod.named_ports.get(named_targets[port.name])
                if found is not None:
                    mapped[port.name] = found
        pod = address.pod
        endpoints.append(
            WorkloadEndpoint(
                address=address.ip,
                ports=mapped,
                labels=dict(pod.labels) if pod else {},
                service_account=pod.service_account if pod else "",
                path="endpoints",
            )
        )
    issues += r.issues
    return ServiceEntry(obj.source, (host,), tuple(ports), tuple(endpoints), export_to=export_to)


def kubernetes_service_entries(
    objects: Iterable[KubeObject],
) -> tuple[list[ServiceEntry], list[Issue]]:
    """The services the Kubernetes objects describe (as ServiceEntries of kind Service)."""
    issues: list[Issue] = []
    by_kind: dict[str, list[KubeObject]] = {kind: [] for kind in KUBERNETES_KINDS}
    for obj in objects:
        by_kind[obj.source.kind].append(obj)
    pods = _pods(by_kind["Pod"], issues)
    from_slices: dict[tuple[str, str], list[_Address]] = {}
    for obj in by_kind["EndpointSlice"]:
        owner = obj.labels.get(_SERVICE_NAME)
        if not owner:
            issues.append(
                Issue.at(
                    "warning",
                    obj.source,
                    f"metadata.labels.{_SERVICE_NAME}",
                    "is missing: the slice belongs to no Service and is ignored",
                )
            )
            continue
        key = (obj.source.namespace, owner)
        from_slices.setdefault(key, []).extend(_slice_addresses(obj, pods, issues))
    from_endpoints = {
        (obj.source.namespace, obj.source.name): _endpoints_addresses(obj, pods, issues)
        for obj in by_kind["Endpoints"]
    }
    entries = []
    for obj in by_kind["Service"]:
        key = (obj.source.namespace, obj.source.name)
        addresses = from_slices.get(key, from_endpoints.get(key))
        entry = _service(obj, addresses, pods, issues)
        if entry is not None:
            entries.append(entry)
    return entries, issues
