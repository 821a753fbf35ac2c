"""Circuit breaking per cluster and routing priority.

Implements Envoy's ``circuit_breakers.thresholds`` (``circuit_breaker.proto``,
"Circuit breaking" architecture doc) with gRFC A32's rules for clients:
``max_requests`` (default 1024) is always enforced, an overflow fails the
attempt at once (gRPC: UNAVAILABLE), is never retried and is counted; a
new CDS limit applies to the counts already held (they are not reset, so
with 105 requests in flight and the limit lowered to 100, new requests fail
until fewer than 100 are in flight). Beyond gRPC, ``max_pending_requests``
and ``max_connections`` are available to transports that queue requests or
open connections (httpx pools), and ``max_retries`` / ``retry_budget`` are
enforced by the :class:`~proxyless.resilience.budget.RetryBudget` each
breaker owns.

Counting model: one request slot per attempt in flight (Envoy counts
upstream requests), acquired before the attempt is sent and released when it
ends, hedged attempts included. Each ``try_acquire_*`` is O(1): a compare
and an increment under a per-breaker ``threading.Lock`` that is never held
across I/O.

Overflow counters use Envoy's cluster statistic names:
``upstream_rq_pending_overflow`` (``max_pending_requests``),
``upstream_rq_retry_overflow`` (``max_retries`` or the retry budget),
``upstream_cx_overflow`` (``max_connections``), plus ``upstream_rq_overflow``
for ``max_requests`` (Envoy folds that one into the pending overflow) and
``budget_exhausted`` (the retry budget's share of the retry overflows).
Each overflow is also recorded as ``proxyless.circuit_breaker.overflows``
with the limit's name (:mod:`proxyless.observability.signals`), after the
lock is released.
"""

from __future__ import annotations

import threading
from typing import Final, Literal, TypeAlias, final

from proxyless.errors import CircuitBreakerOpen
from proxyless.observability import signals
from proxyless.resilience.budget import RetryBudget
from proxyless.resources.model import CircuitBreakers, Thresholds

__all__ = ["BreakerLimit", "CircuitBreaker", "ClusterCircuitBreakers", "Priority"]

Priority: TypeAlias = Literal["default", "high"]
BreakerLimit: TypeAlias = Literal[
    "max_requests", "max_pending_requests", "max_connections", "max_retries"
]

_DEFAULT_THRESHOLDS: Final = Thresholds()


@final
class CircuitBreaker:
    """The circuit-breaker counters and limits of one cluster at one priority.

    ``requests``, ``pending_requests`` and ``connections`` are the slots held
    now; ``stats`` holds the overflow counters (module docstring).
    ``retry_budget`` admits retries against this breaker's active requests.
    """

    __slots__ = (
        "_lock",
        "cluster",
        "connections",
        "max_connections",
        "max_pending_requests",
        "max_requests",
        "pending_requests",
        "priority",
        "requests",
        "retry_budget",
        "stats",
    )

    def __init__(
        self,
        cluster: str,
        thresholds: Thresholds | None = None,
        priority: Priority = "default",
    ) -> None:
        t = thresholds if thresholds is not None else _DEFAULT_THRESHOLDS
        self.cluster = cluster
        self.priority: Priority = priority
        self._lock = threading.Lock()
        self.max_requests = t.max_requests
        self.max_pending_requests = t.max_pending_requests
        self.max_connections = t.max_connections
        self.requests = 0
        self.pending_requests = 0
        self.connections = 0
        self.stats: dict[str, int] = {
            "upstream_rq_overflow": 0,
            "upstream_rq_pending_overflow": 0,
            "upstream_cx_overflow": 0,
            "upstream_rq_retry_overflow": 0,
            "budget_exhausted": 0,
        }
        self.retry_budget = RetryBudget(self._in_flight, self._lock, t, self.stats, cluster)

    def _in_flight(self) -> int:
        """Active plus pending requests: what the retry budget is a share of."""
        return self.requests + self.pending_requests

    # -- requests -------------------------------------------------------------

    def try_acquire_request(self) -> bool:
        """Take a ``max_requests`` slot; False (and counted) when the limit is reached."""
        with self._lock:
            if self.requests < self.max_requests:
                self.requests += 1
                return True
            self.stats["upstream_rq_overflow"] += 1
        signals.breaker_overflow(self.cluster, "max_requests")
        return False

    def release_request(self) -> None:
        with self._lock:
            if self.requests > 0:
                self.requests -= 1

    # -- pending requests -----------------------------------------------------

    def try_acquire_pending(self) -> bool:
        """Take a ``max_pending_requests`` slot (a request queued for a connection)."""
        with self._lock:
            if self.pending_requests < self.max_pending_requests:
                self.pending_requests += 1
                return True
            self.stats["upstream_rq_pending_overflow"] += 1
        signals.breaker_overflow(self.cluster, "max_pending_requests")
        return False

    def release_pending(self) -> None:
        with self._lock:
            if self.pending_requests > 0:
                self.pending_requests -= 1

    # -- connections ----------------------------------------------------------

    def try_acquire_connection(self) -> bool:
        """Take a ``max_connections`` slot before opening an upstream connection."""
        with self._lock:
            if self.connections < self.max_connections:
                self.connections += 1
                return True
            self.stats["upstream_cx_overflow"] += 1
        signals.breaker_overflow(self.cluster, "max_connections")
        return False

    def release_connection(self) -> None:
        with self._lock:
            if self.connections > 0:
                self.connections -= 1

    # -- config and errors ----------------------------------------------------

    def update(self, thresholds: Thresholds | None) -> None:
        """Apply limits from a new CDS resource, keeping every count (gRFC A32)."""
        t = thresholds if thresholds is not None else _DEFAULT_THRESHOLDS
        with self._lock:
            self.max_requests = t.max_requests
            self.max_pending_requests = t.max_pending_requests
            self.max_connections = t.max_connections
            self.retry_budget.configure(t)

    def limit_value(self, limit: BreakerLimit) -> int:
        """The current value of the named limit (for ``max_retries``: the retry limit now)."""
        if limit == "max_requests":
            return self.max_requests
        if limit == "max_pending_requests":
            return self.max_pending_requests
        if limit == "max_connections":
            return self.max_connections
        return self.retry_budget.limit()

    def open_error(self, limit: BreakerLimit = "max_requests") -> CircuitBreakerOpen:
        """The fail-fast error for an overflow of ``limit``, naming cluster and limit.

        Adapters raise it (gRPC: status UNAVAILABLE with this message) and
        never retry it (gRFC A32).
        """
        where = f"cluster {self.cluster!r}"
        if self.priority != "default":
            where += f" (priority {self.priority})"
        return CircuitBreakerOpen(
            f"circuit breaker {limit}={self.limit_value(limit)} reached for {where}"
        )

    def gauges(self) -> dict[str, int]:
        """Envoy ``circuit_breakers.<priority>.*`` gauges: ``*_open`` is 1 while
        the limit is reached, ``remaining_*`` the slots left."""
        budget = self.retry_budget
        retry_limit = budget.limit()
        return {
            "rq_open": int(self.requests >= self.max_requests),
            "rq_pending_open": int(self.pending_requests >= self.max_pending_requests),
            "cx_open": int(self.connections >= self.max_connections),
            "rq_retry_open": int(budget.active >= retry_limit),
            "remaining_rq": max(0, self.max_requests - self.requests),
            "remaining_pending": max(0, self.max_pending_requests - self.pending_requests),
            "remaining_cx": max(0, self.max_connections - self.connections),
            "remaining_retries": max(0, retry_limit - budget.active),
        }

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.cluster!r} {self.priority} "
            f"rq={self.requests}/{self.max_requests} "
            f"pending={self.pending_requests}/{self.max_pending_requests} "
            f"cx={self.connections}/{self.max_connections} "
            f"retries={self.retry_budget.active}/{self.retry_budget.limit()})"
        )


@final
class ClusterCircuitBreakers:
    """The two breakers of a cluster (Envoy routing priorities DEFAULT and HIGH)."""

    __slots__ = ("cluster", "default", "high")

    def __init__(self, cluster: str, config: CircuitBreakers | None = None) -> None:
        c = config if config is not None else CircuitBreakers()
        self.cluster = cluster
        self.default = CircuitBreaker(cluster, c.default, "default")
        self.high = CircuitBreaker(cluster, c.high, "high")

    def for_priority(self, priority: Priority = "default") -> CircuitBreaker:
        return self.high if priority == "high" else self.default

    def update(self, config: CircuitBreakers | None) -> None:
        """Apply a new CDS ``circuit_breakers``; counts are kept (gRFC A32)."""
        c = config if config is not None else CircuitBreakers()
        self.default.update(c.default)
        self.high.update(c.high)

    def __repr__(self) -> str:
        return f"ClusterCircuitBreakers({self.default!r}, {self.high!r})"
