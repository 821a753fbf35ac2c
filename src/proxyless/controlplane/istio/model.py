"""Validated Istio configuration: frozen models of the supported Istio kinds.

The fields follow Istio's API reference (istio.io/latest/docs/reference/
config/networking/ and .../security/): ServiceEntry, WorkloadEntry,
VirtualService, DestinationRule (networking.istio.io v1, v1beta1, v1alpha3)
and PeerAuthentication, AuthorizationPolicy (security.istio.io v1, v1beta1).
Durations are seconds (float); percentages are 0..100 floats. Every model
keeps the field path it came from so later checks can name it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "AuthorizationPolicy",
    "AuthzRule",
    "ClientTls",
    "ConnectionPool",
    "ConsistentHash",
    "Destination",
    "DestinationRule",
    "Fault",
    "HeaderOps",
    "Headers",
    "HttpRoute",
    "Issue",
    "LocalityLb",
    "MatchRequest",
    "MeshConfig",
    "Mirror",
    "OutlierDetection",
    "PeerAuthentication",
    "Port",
    "Retry",
    "Rewrite",
    "RouteDestination",
    "ServiceEntry",
    "Source",
    "StringMatch",
    "Subset",
    "TrafficPolicy",
    "VirtualService",
    "WorkloadEndpoint",
    "WorkloadEntry",
]


_CODE = re.compile(r"\[(IST\d{4})\] ")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a document came from: file, 1-based document index, kind and name."""

    file: str
    doc: int
    kind: str
    name: str
    namespace: str = "default"

    @property
    def where(self) -> str:
        return f"{self.file}:doc{self.doc} {self.kind}/{self.name}"

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding: ``severity`` is "error", "warning" or "info" (istioctl's three levels)."""

    severity: str
    file: str
    doc: int
    kind: str
    name: str
    path: str
    message: str

    @classmethod
    def at(cls, severity: str, source: Source, path: str, message: str) -> Issue:
        return cls(severity, source.file, source.doc, source.kind, source.name, path, message)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    @property
    def code(self) -> str:
        """istioctl's message code the message starts with (``"IST0101"``), or ""."""
        match = _CODE.match(self.message)
        return match.group(1) if match else ""

    def __str__(self) -> str:
        where = f"{self.file}:doc{self.doc}" if self.doc else self.file
        if self.kind:
            where += f" {self.kind}/{self.name or '?'}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return text


# --- service registry -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Port:
    number: int
    protocol: str
    name: str
    target_port: int | None = None

    @property
    def is_http2(self) -> bool:
        return self.protocol in ("GRPC", "GRPC-WEB", "HTTP2")


@dataclass(frozen=True, slots=True)
class WorkloadEndpoint:
    #: An IP address, or a host name for a DNS ServiceEntry.
    address: str
    ports: Mapping[str, int] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    locality: str = ""
    weight: int = 1
    network: str = ""
    service_account: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    source: Source
    hosts: tuple[str, ...]
    ports: tuple[Port, ...]
    endpoints: tuple[WorkloadEndpoint, ...] = ()
    workload_selector: Mapping[str, str] | None = None
    resolution: str = "STATIC"
    location: str = "MESH_INTERNAL"
    #: ``subjectAltNames``: extra identities the service's workloads present.
    subject_alt_names: tuple[str, ...] = ()
    #: ``exportTo`` as written (empty: every namespace, Istio's default).
    export_to: tuple[str, ...] = ()
    #: ``addresses``: the virtual IPs or CIDRs of the service, as written.
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkloadEntry:
    source: Source
    endpoint: WorkloadEndpoint


# --- VirtualService -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Istio StringMatch: ``kind`` is "exact", "prefix" or "regex"."""

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class MatchRequest:
    name: str = ""
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch], ...] = ()
    without_headers: tuple[tuple[str, StringMatch], ...] = ()
    query_params: tuple[tuple[str, StringMatch], ...] = ()
    ignore_uri_case: bool = False
    port: int | None = None
    source_labels: Mapping[str, str] = field(default_factory=dict)
    source_namespace: str = ""


@dataclass(frozen=True, slots=True)
class HeaderOps:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True, slots=True)
class Headers:
    request: HeaderOps = HeaderOps()
    response: HeaderOps = HeaderOps()


@dataclass(frozen=True, slots=True)
class Destination:
    #: The host as written (short names are resolved by the translation).
    host: str
    subset: str = ""
    port: int | None = None
    path: str = ""


@dataclass(frozen=True, slots=True)
class RouteDestination:
    destination: Destination
    weight: int | None = None
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int
    per_try_timeout: float | None = None
    #: None: Istio's default conditions.
    retry_on: tuple[str, ...] | None = None
    path: str = ""


@dataclass(frozen=True, slots=True)
class Fault:
    delay: float | None = None
    delay_percent: float = 100.0
    abort_http_status: int | None = None
    abort_grpc_status: str | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Mirror:
    destination: Destination
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Rewrite:
    uri: str | None = None
    authority: str | None = None


@dataclass(frozen=True, slots=True)
class HttpRoute:
    path: str
    name: str = ""
    matches: tuple[MatchRequest, ...] = ()
    route: tuple[RouteDestination, ...] = ()
    timeout: float | None = None
    retries: Retry | None = None
    fault: Fault | None = None
    headers: Headers | None = None
    mirrors: tuple[Mirror, ...] = ()
    rewrite: Rewrite | None = None
    #: ``delegate``: (name, namespace) of the VirtualService whose routes
    #: replace this one (namespace "" is the root's own).
    delegate: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class VirtualService:
    source: Source
    hosts: tuple[str, ...]
    http: tuple[HttpRoute, ...] = ()
    gateways: tuple[str, ...] = ()
    export_to: tuple[str, ...] = ()


# --- DestinationRule ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsistentHash:
    header: str | None = None
    cookie: str | None = None
    cookie_path: str = ""
    cookie_ttl: float | None = None
    source_ip: bool = False
    query_parameter: str | None = None
    #: "ring" or "maglev"
    algorithm: str = "ring"
    minimum_ring_size: int | None = None
    maglev_table_size: int | None = None


@dataclass(frozen=True, slots=True)
class LocalityLb:
    enabled: bool | None = None
    distribute: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    failover: tuple[tuple[str, str], ...] = ()
    failover_priority: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    max_connections: int | None = None
    connect_timeout: float | None = None
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: float | None = None
    max_concurrent_streams: int | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx: int | None = None
    consecutive_gateway_errors: int | None = None
    consecutive_local_origin_failures: int | None = None
    split_external_local_origin_errors: bool = False
    interval: float | None = None
    base_ejection_time: float | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None
    path: str = ""


@dataclass(frozen=True, slots=True)
class ClientTls:
    mode: str
    sni: str = ""
    subject_alt_names: tuple[str, ...] = ()
    #: SIMPLE / MUTUAL: PEM file paths ("" when not given).
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    simple_lb: str | None = None
    consistent_hash: ConsistentHash | None = None
    locality_lb: LocalityLb | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTls | None = None
    port_level: tuple[tuple[int, TrafficPolicy], ...] = ()

    def has_lb(self) -> bool:
        return (
            self.simple_lb is not None
            or self.consistent_hash is not None
            or self.locality_lb is not None
        )


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    labels: Mapping[str, str]
    traffic_policy: TrafficPolicy | None = None
    path: str = ""


@dataclass(frozen=True, slots=True)
class DestinationRule:
    source: Source
    host: str
    subsets: tuple[Subset, ...] = ()
    traffic_policy: TrafficPolicy | None = None
    export_to: tuple[str, ...] = ()


# --- security -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerAuthentication:
    source: Source
    selector: Mapping[str, str] | None
    mode: str
    port_modes: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AuthzRule:
    sources: tuple[Mapping[str, tuple[str, ...]], ...] = ()
    operations: tuple[Mapping[str, tuple[str, ...]], ...] = ()
    conditions: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    source: Source
    selector: Mapping[str, str] | None
    action: str
    rules: tuple[AuthzRule, ...] = ()
    provider: str = ""


# --- the whole mesh -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """Every validated document, in file order, plus the warnings found loading them."""

    service_entries: tuple[ServiceEntry, ...] = ()
    workload_entries: tuple[WorkloadEntry, ...] = ()
    virtual_services: tuple[VirtualService, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    peer_authentications: tuple[PeerAuthentication, ...] = ()
    authorization_policies: tuple[AuthorizationPolicy, ...] = ()
    warnings: tuple[Issue, ...] = ()
