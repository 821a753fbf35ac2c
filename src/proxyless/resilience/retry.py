"""Retry decisions, backoff and hedging for one route's policy.

Implements the retry semantics of gRFC A44 (xDS-configured retries for
gRPC: conditions ``cancelled``, ``deadline-exceeded``, ``internal``,
``resource-exhausted``, ``unavailable``; ``num_retries + 1`` attempts capped
at 5 as gRFC A6 caps ``maxAttempts``) and, for HTTP and for everything gRPC
leaves out, Envoy's router documentation (``x-envoy-retry-on`` conditions,
``retry_back_off``, ``rate_limited_retry_back_off``, ``retry_host_predicate``
``previous_hosts``, ``host_selection_retry_max_attempts``, ``hedge_policy``;
``route_components.proto``).

Backoff is Envoy's fully jittered exponential backoff as implemented in
``JitteredExponentialBackOffStrategy`` (``source/common/common/backoff_strategy.cc``):
retry *n* (1 for the first retry) waits a uniformly random time in
``[0, min(base * 2**(n-1), max_interval))``. (Envoy's router documentation
describes the range as ``[0, (2**n - 1) * base)``, which was the original
implementation; the windows used here are never wider.) Server pushback
(gRFC A6 ``grpc-retry-pushback-ms``, HTTP ``Retry-After``) replaces the
computed backoff and restarts the exponential sequence at the base, as
gRFC A6 prescribes. Rate-limited backoff takes the first configured reset
header holding an interval no longer than its ``max_interval`` and waits a
random time in ``[interval, 1.5 * interval)``, capped at ``max_interval``
(Envoy ``JitteredLowerBoundBackOffStrategy``).

gRPC routes also act on three of Envoy's HTTP conditions, for per-try
timeouts only: ``reset`` ("disconnect/reset/read timeout"), ``5xx`` and
``gateway-error`` each retry an attempt that hit ``per_try_timeout``, as
Envoy's router does for gRPC traffic (gRFC A44 knows only status names, so
a gRPC client would otherwise retry a per-try timeout only with
``deadline-exceeded``); every other outcome of a gRPC attempt is retried
by status name alone (:data:`GRPC_TIMEOUT_CONDITIONS`).

Everything here is pure: the RNG and wall-clock ``now`` are arguments. A
:class:`CompiledRetryPolicy` is built once per ``RetryPolicy`` object and
cached by identity; the per-call :class:`RetryState` is created only after a
first attempt failed, so the success path allocates nothing here.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, Literal, TypeAlias, final

from proxyless.errors import RetryBudgetExhausted
from proxyless.resilience.outcome import Outcome, parse_retry_after
from proxyless.resources.model import (
    HeaderMatcher,
    HedgePolicy,
    RateLimitedRetryBackOff,
    RetryPolicy,
)

if TYPE_CHECKING:
    from proxyless.resilience.budget import RetryBudget

__all__ = [
    "GRPC_MAX_ATTEMPTS",
    "GRPC_RETRY_CONDITIONS",
    "GRPC_TIMEOUT_CONDITIONS",
    "HTTP_RETRY_CONDITIONS",
    "NO_HEDGING",
    "CompiledRetryPolicy",
    "HedgePlan",
    "RetryDecision",
    "RetryReason",
    "RetryState",
    "retry_budget_exhausted",
]

#: gRFC A6: ``maxAttempts`` above 5 is treated as 5.
GRPC_MAX_ATTEMPTS: Final = 5

#: gRFC A44: the ``retry_on`` values a gRPC client honours, by status name.
GRPC_RETRY_CONDITIONS: Final[Mapping[str, str]] = {
    "cancelled": "CANCELLED",
    "deadline-exceeded": "DEADLINE_EXCEEDED",
    "internal": "INTERNAL",
    "resource-exhausted": "RESOURCE_EXHAUSTED",
    "unavailable": "UNAVAILABLE",
}

#: Envoy's HTTP ``retry_on`` conditions that, on a gRPC route, retry a per-try timeout.
GRPC_TIMEOUT_CONDITIONS: Final[frozenset[str]] = frozenset({"5xx", "gateway-error", "reset"})

#: Envoy's HTTP ``retry_on`` conditions understood for HTTP routes.
#: ``http3-post-connect-failure`` is accepted and ignored (no HTTP/3 upstreams).
HTTP_RETRY_CONDITIONS: Final[frozenset[str]] = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
        "http3-post-connect-failure",
    }
)

_PREVIOUS_HOSTS: Final = "envoy.retry_host_predicates.previous_hosts"
_MIN_INTERVAL: Final = 0.001  # Envoy and gRFC A44: values below 1 ms count as 1 ms
_GATEWAY: Final = frozenset({502, 503, 504})
_CACHE_LIMIT: Final = 1024

RetryReason: TypeAlias = Literal[
    "retry",
    "no_policy",
    "not_retryable",
    "attempts_exhausted",
    "pushback_stop",
    "budget_exhausted",
    "circuit_open",
]


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Whether to make another attempt, after how long, and why (not)."""

    retry: bool
    delay: float
    reason: RetryReason


_NO_POLICY: Final = RetryDecision(False, 0.0, "no_policy")
_NOT_RETRYABLE: Final = RetryDecision(False, 0.0, "not_retryable")
_EXHAUSTED: Final = RetryDecision(False, 0.0, "attempts_exhausted")
_PUSHBACK_STOP: Final = RetryDecision(False, 0.0, "pushback_stop")
_BUDGET: Final = RetryDecision(False, 0.0, "budget_exhausted")
_CIRCUIT_OPEN: Final = RetryDecision(False, 0.0, "circuit_open")


@final
class CompiledRetryPolicy:
    """A ``RetryPolicy`` prepared for one transport (gRPC or HTTP).

    Build with :meth:`from_policy` (cached by the policy object's identity).
    ``conditions`` are the ``retry_on`` values acted on, ``ignored_conditions``
    the rest. ``inspects_success`` is true when a response the transport
    calls a success may still be retried (``retriable-status-codes`` with a
    code below 400, ``retriable-headers``, ``envoy-ratelimited``): only then
    must the adapter call :meth:`retryable` on successes.
    """

    __slots__ = (
        "_grpc_statuses",
        "_on_4xx",
        "_on_5xx",
        "_on_connect_failure",
        "_on_gateway",
        "_on_grpc_timeout",
        "_on_headers",
        "_on_ratelimited",
        "_on_refused_stream",
        "_on_reset",
        "_on_reset_before_request",
        "_on_status_codes",
        "base_interval",
        "conditions",
        "enabled",
        "host_selection_max_attempts",
        "ignored_conditions",
        "inspects_success",
        "is_grpc",
        "max_attempts",
        "max_interval",
        "per_try_idle_timeout",
        "per_try_timeout",
        "policy",
        "previous_hosts",
        "rate_limited",
        "retriable_headers",
        "retriable_request_headers",
        "retriable_status_codes",
    )

    def __init__(self, policy: RetryPolicy | None, is_grpc: bool) -> None:
        self.policy = policy
        self.is_grpc = is_grpc
        p = policy if policy is not None else RetryPolicy()
        retry_on = p.retry_on if policy is not None else frozenset()
        if is_grpc:
            known = frozenset(
                c for c in retry_on if c in GRPC_RETRY_CONDITIONS or c in GRPC_TIMEOUT_CONDITIONS
            )
            self._grpc_statuses = frozenset(
                GRPC_RETRY_CONDITIONS[c] for c in known if c in GRPC_RETRY_CONDITIONS
            )
        else:
            known = frozenset(c for c in retry_on if c in HTTP_RETRY_CONDITIONS)
            self._grpc_statuses = frozenset()
        self.conditions = known
        self.ignored_conditions = frozenset(retry_on - known)
        http = not is_grpc
        self._on_5xx = http and "5xx" in known
        self._on_gateway = http and "gateway-error" in known
        self._on_reset = http and "reset" in known
        self._on_grpc_timeout = is_grpc and (
            "deadline-exceeded" in known or bool(known & GRPC_TIMEOUT_CONDITIONS)
        )
        self._on_reset_before_request = http and "reset-before-request" in known
        self._on_connect_failure = http and "connect-failure" in known
        self._on_4xx = http and "retriable-4xx" in known
        self._on_refused_stream = http and "refused-stream" in known
        self._on_status_codes = http and "retriable-status-codes" in known
        self._on_headers = http and "retriable-headers" in known and bool(p.retriable_headers)
        self._on_ratelimited = http and "envoy-ratelimited" in known
        self.retriable_status_codes = p.retriable_status_codes
        self.retriable_headers: tuple[HeaderMatcher, ...] = tuple(
            _lower_name(m) for m in p.retriable_headers
        )
        self.retriable_request_headers: tuple[HeaderMatcher, ...] = tuple(
            _lower_name(m) for m in p.retriable_request_headers
        )
        acting = known - {"http3-post-connect-failure"}
        self.enabled = policy is not None and bool(acting)
        attempts = max(1, p.num_retries + 1) if self.enabled else 1
        if is_grpc:
            attempts = min(attempts, GRPC_MAX_ATTEMPTS)
        self.max_attempts = attempts
        # 0s means no per-try timeout, as in Envoy (the timer is set only when > 0).
        self.per_try_timeout = _positive(p.per_try_timeout) if policy is not None else None
        self.per_try_idle_timeout = (
            _positive(p.per_try_idle_timeout) if policy is not None else None
        )
        self.base_interval = max(_MIN_INTERVAL, p.base_interval)
        self.max_interval = max(self.base_interval, p.max_interval)
        self.previous_hosts = _PREVIOUS_HOSTS in p.retry_host_predicates
        self.host_selection_max_attempts = max(1, p.host_selection_retry_max_attempts)
        self.rate_limited: RateLimitedRetryBackOff | None = (
            None if is_grpc else p.rate_limited_retry_back_off
        )
        self.inspects_success = (
            self._on_headers
            or self._on_ratelimited
            or (self._on_status_codes and any(c < 400 for c in self.retriable_status_codes))
        )

    # -- construction ---------------------------------------------------------

    @classmethod
    def from_policy(cls, policy: RetryPolicy | None, is_grpc: bool) -> CompiledRetryPolicy:
        """The compiled form of ``policy`` for gRPC or HTTP, cached by identity.

        ``None`` (no retry policy on the route or virtual host) gives a policy
        allowing one attempt.
        """
        if policy is None:
            return _NONE_GRPC if is_grpc else _NONE_HTTP
        cache = _grpc_cache if is_grpc else _http_cache
        hit = cache.get(id(policy))
        if hit is not None and hit[0] is policy:
            return hit[1]
        compiled = cls(policy, is_grpc)
        with _cache_lock:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[id(policy)] = (policy, compiled)
        return compiled

    # -- conditions -------------------------------------------------------------

    def retryable(self, outcome: Outcome) -> bool:
        """True when ``outcome`` matches one of the policy's ``retry_on`` conditions.

        Attempts left, budget and pushback are checked by :meth:`RetryState.decide`.
        """
        if not self.enabled:
            return False
        kind = outcome.kind
        if kind == "local_circuit_open":
            return False  # gRFC A32: a breaker overflow is never retried
        if self.is_grpc:
            statuses = self._grpc_statuses
            if kind == "error_status":
                return outcome.status in statuses
            if kind == "timeout":
                # A per-try timeout is a DEADLINE_EXCEEDED of that attempt, and
                # Envoy's reset / 5xx / gateway-error retry it too; the overall
                # deadline ends the call.
                return outcome.per_try_timeout and self._on_grpc_timeout
            if kind in ("reset", "connect_failure", "refused_stream"):
                return "UNAVAILABLE" in statuses  # gRPC surfaces these as UNAVAILABLE
            return False
        if kind == "timeout":
            return outcome.per_try_timeout and (self._on_5xx or self._on_gateway or self._on_reset)
        if kind == "reset":
            return self._on_5xx or self._on_gateway or self._on_reset
        if kind == "connect_failure":
            return (
                self._on_5xx
                or self._on_gateway
                or self._on_reset
                or self._on_reset_before_request
                or self._on_connect_failure
            )
        if kind == "refused_stream":
            return (
                self._on_5xx
                or self._on_gateway
                or self._on_reset
                or self._on_reset_before_request
                or self._on_refused_stream
            )
        return self._retryable_response(outcome)

    def _retryable_response(self, outcome: Outcome) -> bool:
        headers = outcome.headers
        if "x-envoy-overloaded" in headers:
            return False  # Envoy never retries an overloaded answer
        status = outcome.status
        if isinstance(status, int):
            if self._on_5xx and status >= 500:
                return True
            if self._on_gateway and status in _GATEWAY:
                return True
            if self._on_4xx and status == 409:
                return True
            if self._on_status_codes and status in self.retriable_status_codes:
                return True
        if self._on_ratelimited and "x-envoy-ratelimited" in headers:
            return True
        if self._on_headers:
            for matcher in self.retriable_headers:
                if matcher.matches(headers.get(matcher.name)):
                    return True
        return False

    def request_allows_retry(self, request_headers: Mapping[str, str]) -> bool:
        """Envoy ``retriable_request_headers``: when set, a request is retried only
        if at least one matcher matches its (lower-case) headers."""
        if not self.retriable_request_headers:
            return True
        return any(m.matches(request_headers.get(m.name)) for m in self.retriable_request_headers)

    # -- backoff ------------------------------------------------------------------

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Fully jittered exponential backoff before retry number ``attempt`` (1-based):
        uniform in ``[0, min(base * 2**(attempt-1), max_interval))``."""
        window = self.max_interval
        if attempt < 64:
            window = min(window, self.base_interval * float(1 << max(0, attempt - 1)))
        return rng.random() * window

    def rate_limited_backoff(
        self, headers: Mapping[str, str], now_wall: float, rng: random.Random
    ) -> float | None:
        """Backoff from ``rate_limited_retry_back_off`` reset headers, or None.

        Headers are tried in order; a value that is missing, unparsable, not
        above 1 ms, or above ``max_interval`` is skipped (Envoy). ``SECONDS``
        accepts delta-seconds or an HTTP-date; ``UNIX_TIMESTAMP`` is seconds
        since the epoch compared with ``now_wall``.
        """
        config = self.rate_limited
        if config is None or not headers:
            return None
        for reset in config.reset_headers:
            raw = headers.get(reset.name)
            if raw is None:
                continue
            interval: float | None
            if reset.format == "UNIX_TIMESTAMP":
                text = raw.strip()
                interval = int(text) - now_wall if text.isascii() and text.isdigit() else None
            else:
                interval = parse_retry_after(raw, now_wall)
            if interval is None or interval <= _MIN_INTERVAL or interval > config.max_interval:
                continue
            return min(interval + rng.random() * interval * 0.5, config.max_interval)
        return None

    def __repr__(self) -> str:
        mode = "grpc" if self.is_grpc else "http"
        return (
            f"CompiledRetryPolicy({mode} on={sorted(self.conditions)} "
            f"max_attempts={self.max_attempts} backoff={self.base_interval}s..{self.max_interval}s"
            f"{' previous_hosts' if self.previous_hosts else ''})"
        )


def _positive(seconds: float | None) -> float | None:
    return seconds if seconds is not None and seconds > 0 else None


def _lower_name(matcher: HeaderMatcher) -> HeaderMatcher:
    if matcher.name == matcher.name.lower():
        return matcher
    return replace(matcher, name=matcher.name.lower())


# id(policy) -> (policy, compiled); holding the policy keeps its id from being reused.
_grpc_cache: dict[int, tuple[RetryPolicy, CompiledRetryPolicy]] = {}
_http_cache: dict[int, tuple[RetryPolicy, CompiledRetryPolicy]] = {}
_cache_lock = threading.Lock()
_NONE_GRPC: Final = CompiledRetryPolicy(None, True)
_NONE_HTTP: Final = CompiledRetryPolicy(None, False)


@final
class RetryState:
    """Retry bookkeeping of one call, created once its first attempt failed.

    ``attempts`` counts attempts started, the granted one included.
    ``tried_hosts`` holds the endpoint keys (``EndpointState.key``) used so
    far; with the ``previous_hosts`` predicate the picker should avoid them
    (:meth:`accept_host`). ``holding_retry`` is true while a retry granted by
    the cluster's :class:`~proxyless.resilience.budget.RetryBudget` is
    outstanding: call :meth:`release` when that attempt ends.
    """

    __slots__ = ("_budget", "_step", "attempts", "holding_retry", "policy", "tried_hosts")

    def __init__(
        self,
        policy: CompiledRetryPolicy,
        first_host: tuple[str, int] | None = None,
        attempts: int = 1,
    ) -> None:
        self.policy = policy
        self.attempts = attempts
        self.tried_hosts: set[tuple[str, int]] = set()
        if first_host is not None:
            self.tried_hosts.add(first_host)
        self.holding_retry = False
        self._budget: RetryBudget | None = None
        self._step = 0  # position in the exponential backoff sequence

    def add_host(self, key: tuple[str, int]) -> None:
        """Record the endpoint an attempt went to."""
        self.tried_hosts.add(key)

    @property
    def excluded_hosts(self) -> frozenset[tuple[str, int]] | set[tuple[str, int]]:
        """Keys the picker should skip (empty without ``previous_hosts``)."""
        return self.tried_hosts if self.policy.previous_hosts else frozenset()

    def accept_host(self, key: tuple[str, int], selection: int) -> bool:
        """Whether pick number ``selection`` (1-based) of this attempt may use ``key``.

        With ``previous_hosts`` a host already tried is rejected for the first
        ``host_selection_retry_max_attempts`` picks; the pick after that is
        accepted whatever it is (Envoy).
        """
        if not self.policy.previous_hosts or key not in self.tried_hosts:
            return True
        return selection > self.policy.host_selection_max_attempts

    def decide(
        self,
        outcome: Outcome,
        budget: RetryBudget | None,
        rng: random.Random,
        now_wall: float = 0.0,
    ) -> RetryDecision:
        """Decide on another attempt after ``outcome``.

        Order (Envoy router): condition match, pushback ``stop``, attempts
        left, then the retry budget / ``max_retries`` breaker (only a retry
        that would otherwise happen is counted as refused), then the delay:
        server pushback if given, else rate-limited backoff, else the
        jittered exponential backoff.
        """
        policy = self.policy
        if not policy.enabled:
            return _NO_POLICY
        if outcome.kind == "local_circuit_open":
            return _CIRCUIT_OPEN
        if not policy.retryable(outcome):
            return _NOT_RETRYABLE
        pushback = outcome.pushback
        if pushback == "stop":
            return _PUSHBACK_STOP
        if self.attempts >= policy.max_attempts:
            return _EXHAUSTED
        if budget is not None:
            self.release()
            if not budget.try_acquire_retry():
                return _BUDGET
            self._budget = budget
            self.holding_retry = True
        self.attempts += 1
        if pushback is not None:
            self._step = 0  # gRFC A6: after pushback the backoff starts over
            return RetryDecision(True, max(0.0, float(pushback)), "retry")
        delay = policy.rate_limited_backoff(outcome.headers, now_wall, rng)
        if delay is None:
            self._step += 1
            delay = policy.backoff(self._step, rng)
        return RetryDecision(True, delay, "retry")

    def release(self) -> None:
        """Give back the retry slot held since the last granted retry (idempotent)."""
        budget = self._budget
        if budget is not None and self.holding_retry:
            self.holding_retry = False
            self._budget = None
            budget.release_retry()

    def __repr__(self) -> str:
        return (
            f"RetryState(attempts={self.attempts}/{self.policy.max_attempts} "
            f"tried={sorted(self.tried_hosts)} holding_retry={self.holding_retry})"
        )


def retry_budget_exhausted(
    cluster: str, last: Outcome | str, attempts: int
) -> RetryBudgetExhausted:
    """The error ending a call whose retry the budget refused.

    It names the cluster and carries the last attempt's error, e.g.
    ``"UNAVAILABLE: ... (retry budget exhausted for cluster 'x' after 2 attempts)"``;
    adapters keep the last attempt's status code and use this text as details.
    """
    text = last.describe() if isinstance(last, Outcome) else last
    plural = "attempt" if attempts == 1 else "attempts"
    return RetryBudgetExhausted(
        f"{text} (retry budget exhausted for cluster {cluster!r} after {attempts} {plural})"
    )


@final
@dataclass(frozen=True, slots=True)
class HedgePlan:
    """Envoy ``HedgePolicy`` for unary calls: how many attempts to start at once.

    ``initial_attempts(rng)`` is ``initial_requests``, plus one more with
    probability ``additional_request_chance``. With
    ``hedge_on_per_try_timeout`` a per-try timeout starts another attempt
    while the slow one keeps running; the first response wins and the others
    are cancelled. Hedged attempts beyond the first count as retries (budget
    and ``num_retries``), as in Envoy.
    """

    initial_requests: int = 1
    additional_request_chance_per_million: int = 0
    hedge_on_per_try_timeout: bool = False

    @classmethod
    def from_policy(cls, policy: HedgePolicy | None) -> HedgePlan:
        if policy is None:
            return NO_HEDGING
        return cls(
            initial_requests=max(1, policy.initial_requests),
            additional_request_chance_per_million=min(
                1_000_000, max(0, policy.additional_request_chance_per_million)
            ),
            hedge_on_per_try_timeout=policy.hedge_on_per_try_timeout,
        )

    @property
    def enabled(self) -> bool:
        return (
            self.initial_requests > 1
            or self.additional_request_chance_per_million > 0
            or self.hedge_on_per_try_timeout
        )

    def initial_attempts(self, rng: random.Random) -> int:
        """Attempts to start when the call begins."""
        chance = self.additional_request_chance_per_million
        if chance and rng.randrange(1_000_000) < chance:
            return self.initial_requests + 1
        return self.initial_requests


NO_HEDGING: Final = HedgePlan()
