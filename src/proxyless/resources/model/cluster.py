"""Cluster model (CDS): ``envoy.config.cluster.v3.Cluster`` as a client uses it.

Cluster types EDS, LOGICAL_DNS, STATIC and aggregate (gRFC A37), and
STRICT_DNS as Envoy defines it (resolved by :mod:`proxyless.runtime.dns`); load
balancing from the legacy ``lb_policy`` enum or from
``load_balancing_policy`` (gRFC A52: the first supported policy wins);
circuit breakers (gRFC A32, Envoy ``circuit_breaker.proto`` with retry
budgets); outlier detection with every field and Envoy's defaults (gRFC
A50, Envoy ``outlier_detection.proto``); upstream TLS (gRFC A29).

Durations are float seconds; percentages are as in the proto (0-100)
unless a name says per-million.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from proxyless.resources.model.endpoint import ClusterLoadAssignment
from proxyless.resources.model.security import UpstreamTlsContext

__all__ = [
    "PEAK_EWMA_TYPE_URL",
    "CircuitBreakers",
    "ClientSideWeightedRoundRobin",
    "Cluster",
    "ClusterType",
    "LbPolicy",
    "LeastRequest",
    "Maglev",
    "OutlierDetection",
    "PeakEwma",
    "PickFirst",
    "Random",
    "RetryBudget",
    "RingHash",
    "RoundRobin",
    "Thresholds",
    "WrrLocality",
]

ClusterType = Literal["EDS", "LOGICAL_DNS", "STRICT_DNS", "STATIC", "AGGREGATE"]


@dataclass(frozen=True, slots=True)
class RoundRobin:
    """``ROUND_ROBIN`` / ``envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin``."""


@dataclass(frozen=True, slots=True)
class ClientSideWeightedRoundRobin(RoundRobin):
    """``load_balancing_policies.client_side_weighted_round_robin.v3`` (gRFC A58):
    weights from the backends' ORCA load reports. Durations in seconds, A58's
    defaults (``weight_update_period`` is at least 0.1 s). Balanced by
    :class:`proxyless.lb.wrr.WeightedRoundRobinPicker`; a subclass of
    :class:`RoundRobin` because with fewer than two weights known it is one."""

    enable_oob_load_report: bool = False
    oob_reporting_period: float = 10.0
    blackout_period: float = 10.0
    weight_expiration_period: float = 180.0
    weight_update_period: float = 1.0
    error_utilization_penalty: float = 1.0
    metric_names_for_computing_utilization: tuple[str, ...] = ()


#: The ``type_url`` of the ``xds.type.v3.TypedStruct`` (or
#: ``udpa.type.v1.TypedStruct``) that selects :class:`PeakEwma` in a
#: Cluster's ``load_balancing_policy``.
PEAK_EWMA_TYPE_URL = "type.googleapis.com/proxyless.lb.PeakEwma"


@dataclass(frozen=True, slots=True)
class PeakEwma:
    """proxyless' latency-aware policy (Linkerd's balancer): power of two
    choices by ``rtt_ewma * (active + 1)``, the RTT average peak-sensitive
    and decaying over ``decay`` seconds, starting at ``default_rtt``. Selected
    by a TypedStruct whose ``type_url`` is :data:`PEAK_EWMA_TYPE_URL`."""

    decay: float = 10.0
    default_rtt: float = 0.030


@dataclass(frozen=True, slots=True)
class Random:
    """``RANDOM`` / ``load_balancing_policies.random.v3.Random``."""


@dataclass(frozen=True, slots=True)
class PickFirst:
    """``load_balancing_policies.pick_first.v3.PickFirst`` (gRFC A62)."""

    shuffle_address_list: bool = False


@dataclass(frozen=True, slots=True)
class LeastRequest:
    """``LEAST_REQUEST`` (gRFC A48, Envoy): P2C over ``choice_count`` (>= 2)
    candidates; Envoy weights by ``weight / (active + 1) ** active_request_bias``."""

    choice_count: int = 2
    active_request_bias: float = 1.0


@dataclass(frozen=True, slots=True)
class RingHash:
    """``RING_HASH`` (gRFC A42): XX_HASH only; 1 <= min <= max <= 8,388,608."""

    minimum_ring_size: int = 1024
    maximum_ring_size: int = 8_388_608


@dataclass(frozen=True, slots=True)
class Maglev:
    """``MAGLEV`` (Envoy): ``table_size`` is prime (default 65537)."""

    table_size: int = 65537


@dataclass(frozen=True, slots=True)
class WrrLocality:
    """``load_balancing_policies.wrr_locality.v3.WrrLocality``: weighted
    locality pick, then ``child`` within the locality (gRFC A52)."""

    child: LbPolicy


LbPolicy: TypeAlias = (
    RoundRobin | Random | PickFirst | LeastRequest | RingHash | Maglev | WrrLocality | PeakEwma
)


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """``CircuitBreakers.Thresholds.RetryBudget``: retries may be at most
    ``budget_percent`` % of active + pending requests, and at least
    ``min_retry_concurrency`` concurrent retries are always allowed."""

    budget_percent: float = 20.0
    min_retry_concurrency: int = 3


@dataclass(frozen=True, slots=True)
class Thresholds:
    """``CircuitBreakers.Thresholds`` for one routing priority.

    ``max_retries_explicit`` tells whether ``max_retries`` was set (when a
    ``retry_budget`` is present it overrides ``max_retries``).
    """

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    max_retries_explicit: bool = False
    retry_budget: RetryBudget | None = None


@dataclass(frozen=True, slots=True)
class CircuitBreakers:
    """``envoy.config.cluster.v3.CircuitBreakers``: the first Thresholds entry
    for each routing priority (DEFAULT, HIGH); defaults when absent."""

    default: Thresholds = field(default_factory=Thresholds)
    high: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """``envoy.config.cluster.v3.OutlierDetection``, every field, Envoy defaults.

    Durations in seconds; ``enforcing_*``, ``max_ejection_percent`` and
    ``failure_percentage_threshold`` in percent (0-100);
    ``success_rate_stdev_factor`` is the proto value (divide by 1000).
    """

    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_time_jitter: float = 0.0
    max_ejection_percent: int = 10
    consecutive_5xx: int = 5
    enforcing_consecutive_5xx: int = 100
    consecutive_gateway_failure: int = 5
    enforcing_consecutive_gateway_failure: int = 0
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failure: int = 5
    enforcing_consecutive_local_origin_failure: int = 100
    enforcing_local_origin_success_rate: int = 100
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: int = 1900
    enforcing_success_rate: int = 100
    failure_percentage_threshold: int = 85
    enforcing_failure_percentage: int = 0
    enforcing_failure_percentage_local_origin: int = 0
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    successful_active_health_check_uneject_host: bool = True
    always_eject_one_host: bool = False


@dataclass(frozen=True, slots=True)
class Cluster:
    """``envoy.config.cluster.v3.Cluster``.

    - EDS: ``eds_service_name`` (defaults to ``name``) is the EDS resource.
    - LOGICAL_DNS: ``dns_address``/``dns_port`` from the single endpoint of
      ``load_assignment`` (gRFC A37).
    - STATIC: ``load_assignment`` holds the endpoints.
    - STRICT_DNS: ``load_assignment`` holds endpoints named by host name or IP,
      resolved every ``dns_refresh_rate`` seconds (None: Envoy's 5 s) with
      ``dns_lookup_family`` (the enum's name, default AUTO).
    - AGGREGATE: ``aggregate_clusters`` in priority order (non-empty).

    ``lb_policy`` from a legacy enum is the plain policy (no WrrLocality);
    ``locality_weighted_lb`` reflects ``common_lb_config.locality_weighted_lb_config``.
    ``healthy_panic_threshold`` is percent (default 50). ``connect_timeout``
    defaults to 5 s. ``http2`` is true when the upstream speaks HTTP/2
    (``http2_protocol_options`` or ``envoy.extensions.upstreams.http.v3.HttpProtocolOptions``
    explicit HTTP/2). ``lrs_server`` is true when load reports go to the
    ADS server (``lrs_server.self``). ``ignored_fields`` lists set-but-unused paths.
    """

    name: str
    type: ClusterType
    lb_policy: LbPolicy = field(default_factory=RoundRobin)
    eds_service_name: str = ""
    aggregate_clusters: tuple[str, ...] = ()
    dns_address: str = ""
    dns_port: int = 0
    load_assignment: ClusterLoadAssignment | None = None
    dns_refresh_rate: float | None = None
    dns_lookup_family: str = "AUTO"
    circuit_breakers: CircuitBreakers = field(default_factory=CircuitBreakers)
    outlier_detection: OutlierDetection | None = None
    healthy_panic_threshold: float = 50.0
    locality_weighted_lb: bool = False
    connect_timeout: float = 5.0
    upstream_tls: UpstreamTlsContext | None = None
    http2: bool = False
    max_requests_per_connection: int | None = None
    lrs_server: bool = False
    ignored_fields: tuple[str, ...] = ()
