"""What outlier detection counts per endpoint, and how an outcome counts.

Envoy's outlier detection (``outlier_detection.proto``; the "Outlier
detection" architecture doc) sorts every attempt's result into external
origin (the upstream answered: ``5xx``, and among them the gateway errors
502/503/504) and local origin (connect failure, timeout, reset before an
answer). :func:`outlier_class` names the class of an
:class:`~proxyless.resilience.outcome.Outcome`; gRPC statuses map as Envoy
maps them to HTTP (UNAVAILABLE -> 503 and DEADLINE_EXCEEDED -> 504, gateway
errors; INTERNAL, UNKNOWN, DATA_LOSS -> 500; others are the caller's
problem, like 4xx).

:class:`EndpointOutlierState` is hung on ``EndpointState.outlier``: the
consecutive-failure counters and two call-count buckets, the *active* one
the request path bumps and the *inactive* one the interval sweep reads, then
swaps (grpc-go's ``callcounter``, gRFC A50: no lock per call), plus the
ejection bookkeeping. The algorithm that reads them is
:mod:`proxyless.resilience.outlier`.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, final

from proxyless.resilience.outcome import Outcome

__all__ = [
    "EJECTION_TYPES",
    "ENFORCING_FIELDS",
    "EXT_5XX",
    "EXT_GATEWAY",
    "IGNORED",
    "LOCAL_CONNECT",
    "LOCAL_TIMEOUT",
    "SUCCESS",
    "CallBucket",
    "EjectionType",
    "EndpointOutlierState",
    "OutlierClass",
    "classify",
    "new_stats",
    "outlier_class",
]

EjectionType: TypeAlias = Literal[
    "consecutive_5xx",
    "consecutive_gateway_failure",
    "consecutive_local_origin_failure",
    "success_rate",
    "local_origin_success_rate",
    "failure_percentage",
    "local_origin_failure_percentage",
]
EJECTION_TYPES: Final[tuple[EjectionType, ...]] = (
    "consecutive_5xx",
    "consecutive_gateway_failure",
    "consecutive_local_origin_failure",
    "success_rate",
    "local_origin_success_rate",
    "failure_percentage",
    "local_origin_failure_percentage",
)

#: The ``OutlierDetection`` field giving the enforcement percentage of each ejection type.
ENFORCING_FIELDS: Final[dict[EjectionType, str]] = {
    "consecutive_5xx": "enforcing_consecutive_5xx",
    "consecutive_gateway_failure": "enforcing_consecutive_gateway_failure",
    "consecutive_local_origin_failure": "enforcing_consecutive_local_origin_failure",
    "success_rate": "enforcing_success_rate",
    "local_origin_success_rate": "enforcing_local_origin_success_rate",
    "failure_percentage": "enforcing_failure_percentage",
    "local_origin_failure_percentage": "enforcing_failure_percentage_local_origin",
}

OutlierClass: TypeAlias = Literal[
    "success", "external_5xx", "external_gateway", "local_connect", "local_timeout", "ignored"
]

# Internal codes of OutlierClass, ordered so that "local" codes are >= LOCAL_CONNECT.
SUCCESS: Final = 0
EXT_5XX: Final = 1
EXT_GATEWAY: Final = 2
LOCAL_CONNECT: Final = 3
LOCAL_TIMEOUT: Final = 4
IGNORED: Final = 5
_CLASS_NAMES: Final[tuple[OutlierClass, ...]] = (
    "success",
    "external_5xx",
    "external_gateway",
    "local_connect",
    "local_timeout",
    "ignored",
)
#: gRPC statuses that count against an endpoint (others are the caller's
#: problem, like HTTP 4xx). Envoy maps UNAVAILABLE to 503 and
#: DEADLINE_EXCEEDED to 504 (gateway errors); INTERNAL, UNKNOWN and
#: DATA_LOSS to 500.
_GRPC_CLASS: Final[dict[str, int]] = {
    "INTERNAL": EXT_5XX,
    "UNKNOWN": EXT_5XX,
    "DATA_LOSS": EXT_5XX,
    "UNAVAILABLE": EXT_GATEWAY,
    "DEADLINE_EXCEEDED": EXT_GATEWAY,
}
_KIND_CLASS: Final[dict[str, int]] = {
    "success": SUCCESS,
    "reset": EXT_GATEWAY,
    "connect_failure": LOCAL_CONNECT,
    "refused_stream": LOCAL_CONNECT,
    "timeout": LOCAL_TIMEOUT,
    "local_circuit_open": IGNORED,
}


def classify(outcome: Outcome) -> int:
    """The class code of ``outcome`` (``SUCCESS`` ... ``IGNORED``; local codes
    are ``>= LOCAL_CONNECT``): the request path's form of :func:`outlier_class`."""
    kind = outcome.kind
    if kind != "error_status":
        return _KIND_CLASS.get(kind, IGNORED)
    status = outcome.status
    if isinstance(status, int):
        if status < 500:
            return SUCCESS
        return EXT_GATEWAY if status in (502, 503, 504) else EXT_5XX
    return _GRPC_CLASS.get(str(status), SUCCESS)


def outlier_class(outcome: Outcome) -> OutlierClass:
    """How outlier detection counts ``outcome`` (see :mod:`proxyless.resilience.outcome`).

    ``local_*`` classes count as gateway 5xx (503 / 504) unless
    ``split_external_local_origin_errors`` is set.
    """
    return _CLASS_NAMES[classify(outcome)]


@final
class CallBucket:
    """One interval's call counts: external and local origin, total and succeeded."""

    __slots__ = ("ext_ok", "ext_total", "local_ok", "local_total")

    def __init__(self) -> None:
        self.ext_total = 0
        self.ext_ok = 0
        self.local_total = 0
        self.local_ok = 0

    def clear(self) -> None:
        self.ext_total = 0
        self.ext_ok = 0
        self.local_total = 0
        self.local_ok = 0


@final
class EndpointOutlierState:
    """What outlier detection keeps per endpoint (``EndpointState.outlier``).

    ``active`` is the bucket the request path writes; ``inactive`` holds the
    previous interval's counts that the sweep reads. ``multiplier`` is
    Envoy's ejection time backoff; ``ejected_at`` / ``unejected_at`` are
    monotonic times; ``jitter`` is the extra ejection time drawn at ejection.
    """

    __slots__ = (
        "active",
        "consecutive_5xx",
        "consecutive_gateway",
        "consecutive_local",
        "ejected_at",
        "ejection_type",
        "inactive",
        "jitter",
        "multiplier",
        "num_ejections",
        "owner",
        "unejected_at",
    )

    def __init__(self, owner: object) -> None:
        #: the OutlierDetector keeping this state (compared by identity only)
        self.owner = owner
        self.active = CallBucket()
        self.inactive = CallBucket()
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.consecutive_local = 0
        self.multiplier = 0
        self.ejected_at: float | None = None
        self.unejected_at: float | None = None
        self.jitter = 0.0
        self.num_ejections = 0
        self.ejection_type: EjectionType | None = None

    def __repr__(self) -> str:
        return (
            f"EndpointOutlierState(c5xx={self.consecutive_5xx} cgw={self.consecutive_gateway} "
            f"clocal={self.consecutive_local} multiplier={self.multiplier} "
            f"ejections={self.num_ejections} ejected_at={self.ejected_at})"
        )


def new_stats() -> dict[str, int]:
    """Every counter of ``OutlierDetector.stats`` at zero (Envoy ``outlier_detection.*`` names)."""
    stats = {
        "ejections_active": 0,
        "ejections_total": 0,
        "ejections_enforced_total": 0,
        "ejections_overflow": 0,
        "ejections_skipped_enforcement": 0,
        "unejections_total": 0,
    }
    for kind in EJECTION_TYPES:
        stats[f"ejections_detected_{kind}"] = 0
        stats[f"ejections_enforced_{kind}"] = 0
    for prefix in ("", "local_origin_"):
        for algo in ("success_rate", "failure_percentage"):
            stats[f"{prefix}{algo}_skipped_minimum_hosts"] = 0
            stats[f"{prefix}{algo}_skipped_request_volume"] = 0
    return stats
