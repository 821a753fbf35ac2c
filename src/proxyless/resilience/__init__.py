"""proxyless.resilience: retries, retry budgets, circuit breaking, outlier
detection and fault injection, independent of the transport.

The gRPC and httpx adapters classify each attempt once into an
:class:`Outcome` and drive the per-route :class:`CompiledRetryPolicy` /
:class:`RetryState`, the per-cluster :class:`CircuitBreaker` (with its
:class:`RetryBudget`) and :class:`OutlierDetector`, and the
:class:`FaultInjector` of the applicable fault filter config. Semantics follow
gRFC A6, A32, A33, A44 and A50 and Envoy's router, circuit breaking, outlier
detection and fault filter documentation; ``docs/resilience.md`` has the
details and the worked arithmetic.
"""

from __future__ import annotations

from proxyless.resilience.breaker import (
    BreakerLimit,
    CircuitBreaker,
    ClusterCircuitBreakers,
    Priority,
)
from proxyless.resilience.budget import DEFAULT_RETRY_BUDGET, RetryBudget
from proxyless.resilience.fault import NO_FAULT, FaultDecision, FaultInjector
from proxyless.resilience.outcome import (
    CONNECT_FAILURE,
    GRPC_STATUS_CODES,
    GRPC_STATUS_NAMES,
    LOCAL_CIRCUIT_OPEN,
    OVERALL_TIMEOUT,
    PER_TRY_TIMEOUT,
    REFUSED_STREAM,
    RESET,
    SUCCESS,
    Outcome,
    OutcomeKind,
    Pushback,
    grpc_status_name,
    http_status_to_grpc,
    parse_grpc_pushback,
    parse_retry_after,
)
from proxyless.resilience.outlier import OutlierDetector
from proxyless.resilience.outlier_state import (
    EjectionType,
    EndpointOutlierState,
    OutlierClass,
    outlier_class,
)
from proxyless.resilience.retry import (
    GRPC_MAX_ATTEMPTS,
    NO_HEDGING,
    CompiledRetryPolicy,
    HedgePlan,
    RetryDecision,
    RetryReason,
    RetryState,
    retry_budget_exhausted,
)

__all__ = [
    "CONNECT_FAILURE",
    "DEFAULT_RETRY_BUDGET",
    "GRPC_MAX_ATTEMPTS",
    "GRPC_STATUS_CODES",
    "GRPC_STATUS_NAMES",
    "LOCAL_CIRCUIT_OPEN",
    "NO_FAULT",
    "NO_HEDGING",
    "OVERALL_TIMEOUT",
    "PER_TRY_TIMEOUT",
    "REFUSED_STREAM",
    "RESET",
    "SUCCESS",
    "BreakerLimit",
    "CircuitBreaker",
    "ClusterCircuitBreakers",
    "CompiledRetryPolicy",
    "EjectionType",
    "EndpointOutlierState",
    "FaultDecision",
    "FaultInjector",
    "HedgePlan",
    "Outcome",
    "OutcomeKind",
    "OutlierClass",
    "OutlierDetector",
    "Priority",
    "Pushback",
    "RetryBudget",
    "RetryDecision",
    "RetryReason",
    "RetryState",
    "grpc_status_name",
    "http_status_to_grpc",
    "outlier_class",
    "parse_grpc_pushback",
    "parse_retry_after",
    "retry_budget_exhausted",
]
