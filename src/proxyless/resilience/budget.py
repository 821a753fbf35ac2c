"""Retry budgets: how many retries a cluster may have outstanding at once.

Implements Envoy's ``CircuitBreakers.Thresholds.retry_budget`` and
``max_retries`` (``circuit_breaker.proto``; "Circuit breaking" and "Retry
budgets" in the architecture docs):

* with a ``retry_budget``, a retry is admitted while the retries outstanding
  are fewer than ``max(min_retry_concurrency, budget_percent / 100 *
  (active requests + pending requests))`` (the product truncated to an
  integer, as Envoy does);
* retries waiting in backoff are outstanding (envoyproxy/envoy#30205): a
  slot is taken when the retry is granted and given back when that attempt
  ends;
* with no ``retry_budget`` and no explicit ``max_retries``, proxyless still
  applies a budget of 20 % with ``min_retry_concurrency`` 3 (the proto's
  budget defaults), so retries can never multiply an outage's load;
* ``max_retries`` (default 3) is a fixed limit that applies only when the
  control plane set it explicitly and sent no budget; a budget overrides it.

A refused retry is counted in the breaker's ``upstream_rq_retry_overflow``
(Envoy's name) and, when a budget refused it, in ``budget_exhausted``; it is
recorded as ``proxyless.retry_budget.refusals`` (a budget) or as
``proxyless.circuit_breaker.overflows`` with limit ``max_retries``
(:mod:`proxyless.observability.signals`). The call then ends with its last
attempt's error and the reason "retry budget exhausted"
(:func:`proxyless.resilience.retry.retry_budget_exhausted`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, MutableMapping
from typing import Final, final

from proxyless.observability import signals
from proxyless.resources.model import RetryBudget as RetryBudgetConfig
from proxyless.resources.model import Thresholds

__all__ = ["DEFAULT_RETRY_BUDGET", "RetryBudget"]

#: The budget applied when a cluster configures none (20 %, at least 3).
DEFAULT_RETRY_BUDGET: Final = RetryBudgetConfig(budget_percent=20.0, min_retry_concurrency=3)


@final
class RetryBudget:
    """Outstanding-retry accounting of one
    :class:`~proxyless.resilience.breaker.CircuitBreaker`.

    Created by the breaker, sharing its lock: ``in_flight`` returns the
    breaker's active plus pending requests, and refusals are counted in the
    breaker's ``stats`` (and recorded under ``cluster``). ``active`` is the
    number of retries outstanding.
    """

    __slots__ = (
        "_in_flight",
        "_lock",
        "_stats",
        "active",
        "budget_percent",
        "cluster",
        "max_retries",
        "min_retry_concurrency",
        "uses_budget",
    )

    def __init__(
        self,
        in_flight: Callable[[], int],
        lock: threading.Lock,
        thresholds: Thresholds,
        stats: MutableMapping[str, int],
        cluster: str = "",
    ) -> None:
        self.cluster = cluster
        self._in_flight = in_flight
        self._lock = lock
        self._stats = stats
        self.active = 0
        self.uses_budget = True
        self.budget_percent = DEFAULT_RETRY_BUDGET.budget_percent
        self.min_retry_concurrency = DEFAULT_RETRY_BUDGET.min_retry_concurrency
        self.max_retries = thresholds.max_retries
        self.configure(thresholds)

    def configure(self, thresholds: Thresholds) -> None:
        """Take the retry limits of new thresholds; ``active`` is kept."""
        budget = thresholds.retry_budget
        if budget is None and thresholds.max_retries_explicit:
            self.uses_budget = False
            budget = DEFAULT_RETRY_BUDGET
        else:
            self.uses_budget = True
            if budget is None:
                budget = DEFAULT_RETRY_BUDGET
        self.budget_percent = budget.budget_percent
        self.min_retry_concurrency = budget.min_retry_concurrency
        self.max_retries = thresholds.max_retries

    def limit(self) -> int:
        """How many retries may be outstanding right now."""
        if not self.uses_budget:
            return self.max_retries
        in_flight = self._in_flight()
        return max(self.min_retry_concurrency, int(self.budget_percent * in_flight / 100.0))

    def try_acquire_retry(self) -> bool:
        """Admit one retry; False (and counted) when the budget or ``max_retries`` is spent."""
        with self._lock:
            if self.active < self.limit():
                self.active += 1
                return True
            stats = self._stats
            stats["upstream_rq_retry_overflow"] += 1
            budget = self.uses_budget
            if budget:
                stats["budget_exhausted"] += 1
        if budget:
            signals.budget_refusal(self.cluster)
        else:
            signals.breaker_overflow(self.cluster, "max_retries")
        return False

    def release_retry(self) -> None:
        """The retry attempt ended (or was abandoned before it started)."""
        with self._lock:
            if self.active > 0:
                self.active -= 1

    def __repr__(self) -> str:
        rule = (
            f"budget {self.budget_percent:g}%/min {self.min_retry_concurrency}"
            if self.uses_budget
            else f"max_retries {self.max_retries}"
        )
        return f"RetryBudget({rule} active={self.active} limit={self.limit()})"
