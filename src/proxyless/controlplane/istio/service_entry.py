"""Parse and validate ServiceEntry and WorkloadEntry documents.

Follows Istio's ServiceEntry and WorkloadEntry references
(istio.io/latest/docs/reference/config/networking/service-entry/ and
.../workload-entry/). A ServiceEntry lists its hosts (exact
names or a ``*.suffix`` wildcard), its ports and either ``endpoints`` or a
``workloadSelector`` choosing WorkloadEntries by label.

``resolution`` STATIC and NONE take IP endpoints. DNS and DNS_ROUND_ROBIN
(istiod's STRICT_DNS and LOGICAL_DNS clusters) also take host names as
endpoint addresses, and without endpoints resolve the entry's own hosts,
which then must not be wildcards; DNS_ROUND_ROBIN allows at most one
endpoint (Istio's validation; Envoy's LOGICAL_DNS has one). ``exportTo``
is checked by :func:`.visibility.check_export_to`. ``addresses`` (virtual
IPs or CIDRs) are checked and kept for ``proxyless analyze`` (IST0134); they
shape no xDS resource a proxyless client or Envoy node gets. Every port
protocol Istio defines is accepted, but only HTTP, HTTP2, GRPC and GRPC-WEB
ports are routed (the others are warned about). Fields Istio defines but the embedded control
plane does not translate are accepted with a warning; fields Istio does not
define are warned about as unknown.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from proxyless.controlplane.istio.model import Port, ServiceEntry, WorkloadEndpoint, WorkloadEntry
from proxyless.controlplane.istio.reader import DocReader
from proxyless.controlplane.istio.service_merge import DNS_RESOLUTIONS
from proxyless.controlplane.istio.visibility import check_export_to

__all__ = ["is_host_name", "parse_service_entry", "parse_workload_entry"]

#: Port protocols Istio defines for a ServiceEntry port.
PROTOCOLS = frozenset(
    {"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP"}
)


_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$")


def is_host_name(text: str) -> bool:
    """True for a DNS host name (``api.example.com``, ``localhost``), not an IP."""
    if not text or len(text) > 253:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return all(_HOST_LABEL.match(label) for label in text.rstrip(".").split("."))
    return False


def _check_address(r: DocReader, address: str, path: str, *, names: bool) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        pass
    else:
        return True
    if names and is_host_name(address):
        return True
    if names:
        why = "must be an IP address or a DNS host name (unix sockets are not supported)"
    else:
        why = (
            "must be an IP address (host names need resolution DNS or DNS_ROUND_ROBIN; "
            "unix sockets are not supported)"
        )
    r.error(path, f"{why}, got {address!r}")
    return False


def _endpoint(
    r: DocReader, raw: Any, path: str, *, entry: bool, names: bool = False
) -> WorkloadEndpoint | None:
    known = ("address", "ports", "labels", "locality", "weight", "network", "serviceAccount")
    box = r.mapping(raw, path, known=known)
    if box is None:
        return None
    address = r.string(box.get("address"), f"{path}.address", required=True)
    if address is not None and not _check_address(r, address, f"{path}.address", names=names):
        address = None
    ports: dict[str, int] = {}
    raw_ports = r.mapping(box.get("ports"), f"{path}.ports")
    for name, number in (raw_ports or {}).items():
        value = r.integer(number, f"{path}.ports.{name}", minimum=1, maximum=65535)
        if value is not None:
            ports[str(name)] = value
    locality = r.string(box.get("locality"), f"{path}.locality") or ""
    if locality and (locality.count("/") > 2 or any(not p for p in locality.split("/"))):
        r.error(
            f"{path}.locality",
            f"must be 'region', 'region/zone' or 'region/zone/subzone', got {locality!r}",
        )
    weight = r.integer(box.get("weight"), f"{path}.weight", minimum=0, maximum=2**32 - 1)
    if address is None:
        return None
    del entry
    return WorkloadEndpoint(
        address=address,
        ports=ports,
        labels=r.labels(box.get("labels"), f"{path}.labels"),
        locality=locality,
        weight=1 if weight in (None, 0) else weight,
        network=r.string(box.get("network"), f"{path}.network") or "",
        service_account=r.string(box.get("serviceAccount"), f"{path}.serviceAccount") or "",
        path=path,
    )


def parse_service_entry(r: DocReader, spec: dict[str, Any]) -> ServiceEntry | None:
    hosts: list[str] = []
    for i, raw in enumerate(r.items(spec.get("hosts"), "spec.hosts", required=True)):
        host = r.string(raw, f"spec.hosts[{i}]", required=True)
        if host is None:
            continue
        if host in hosts:
            r.error(f"spec.hosts[{i}]", f"duplicate host {host!r}")
        elif host.startswith("*") and (not host.startswith("*.") or not is_host_name(host[2:])):
            r.error(
                f"spec.hosts[{i}]",
                f"a wildcard host must be '*.' and a domain (such as '*.example.com'), "
                f"got {host!r}",
            )
        elif not host.startswith("*") and not is_host_name(host):
            r.error(f"spec.hosts[{i}]", f"must be a DNS host name, got {host!r}")
        else:
            hosts.append(host)
    if spec.get("hosts") is not None and not hosts and r.ok:
        r.error("spec.hosts", "must list at least one host")
    ports: list[Port] = []
    for i, raw in enumerate(r.items(spec.get("ports"), "spec.ports", required=True)):
        path = f"spec.ports[{i}]"
        box = r.mapping(raw, path, known=("number", "protocol", "name", "targetPort"))
        if box is None:
            continue
        number = r.integer(
            box.get("number"), f"{path}.number", minimum=1, maximum=65535, required=True
        )
        protocol = r.string(box.get("protocol"), f"{path}.protocol") or "TCP"
        if protocol.upper() not in PROTOCOLS:
            r.error(
                f"{path}.protocol",
                f"must be one of {', '.join(sorted(PROTOCOLS))}; got {protocol!r}",
            )
        name = r.string(box.get("name"), f"{path}.name", required=True)
        target = r.integer(box.get("targetPort"), f"{path}.targetPort", minimum=1, maximum=65535)
        if number is None or name is None:
            continue
        if any(p.number == number for p in ports):
            r.error(f"{path}.number", f"duplicate port {number}")
        elif any(p.name == name for p in ports):
            r.error(f"{path}.name", f"duplicate port name {name!r}")
        else:
            ports.append(Port(number, protocol.upper(), name, target))
            if protocol.upper() not in ("HTTP", "HTTP2", "GRPC", "GRPC-WEB"):
                r.warn(
                    f"{path}.protocol",
                    f"{protocol} ports get no HTTP routing; only HTTP, HTTP2 and GRPC are routed",
                )
    resolution = r.enum(
        spec.get("resolution", "STATIC"),
        "spec.resolution",
        ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"),
    )
    location = r.enum(
        spec.get("location", "MESH_INTERNAL"), "spec.location", ("MESH_INTERNAL", "MESH_EXTERNAL")
    )
    endpoints = []
    for i, raw in enumerate(r.items(spec.get("endpoints"), "spec.endpoints")):
        ep = _endpoint(
            r, raw, f"spec.endpoints[{i}]", entry=False, names=resolution in DNS_RESOLUTIONS
        )
        if ep is None:
            continue
        for port_name in ep.ports:
            if not any(p.name == port_name for p in ports):
                r.error(
                    f"spec.endpoints[{i}].ports.{port_name}",
                    f"no port named {port_name!r} in spec.ports",
                )
        endpoints.append(ep)
    selector = None
    if spec.get("workloadSelector") is not None:
        box = r.mapping(spec.get("workloadSelector"), "spec.workloadSelector", known=("labels",))
        selector = r.labels((box or {}).get("labels"), "spec.workloadSelector.labels")
        if not selector:
            r.error("spec.workloadSelector.labels", "must select at least one label")
        if endpoints:
            r.error("spec.workloadSelector", "cannot be combined with spec.endpoints")
    if resolution in DNS_RESOLUTIONS:
        if selector is not None:
            r.error(
                "spec.workloadSelector",
                f"cannot be used with resolution {resolution}: list endpoints instead",
            )
        if not endpoints and any(h.startswith("*") for h in hosts):
            r.error(
                "spec.hosts",
                f"resolution {resolution} without endpoints resolves the hosts, "
                "so they cannot be wildcards",
            )
        if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
            r.error(
                "spec.endpoints",
                "resolution DNS_ROUND_ROBIN allows at most one endpoint (use DNS for several)",
            )
    addresses = []
    for i, raw in enumerate(r.items(spec.get("addresses"), "spec.addresses")):
        address = r.string(raw, f"spec.addresses[{i}]")
        if address is None:
            continue
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            r.error(f"spec.addresses[{i}]", f"must be an IP address or a CIDR, got {address!r}")
        else:
            addresses.append(address)
    sans = tuple(str(s) for s in r.items(spec.get("subjectAltNames"), "spec.subjectAltNames") if s)
    export_to = tuple(str(x) for x in r.items(spec.get("exportTo"), "spec.exportTo"))
    problem = check_export_to(export_to)
    if problem is not None:
        r.error("spec.exportTo", problem)
    return ServiceEntry(
        source=r.source,
        hosts=tuple(hosts),
        ports=tuple(ports),
        endpoints=tuple(endpoints),
        workload_selector=selector,
        resolution=resolution or "STATIC",
        location=location or "MESH_INTERNAL",
        subject_alt_names=sans,
        export_to=export_to,
        addresses=tuple(addresses),
    )


def parse_workload_entry(r: DocReader, spec: dict[str, Any]) -> WorkloadEntry | None:
    ep = _endpoint(r, spec, "spec", entry=True)
    return None if ep is None else WorkloadEntry(r.source, ep)
