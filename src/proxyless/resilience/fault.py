"""Fault injection: the HTTP fault filter on the client side (gRFC A33).

Implements ``envoy.extensions.filters.http.fault.v3.HTTPFault`` as gRFC A33
applies it to gRPC clients and Envoy's fault filter documentation describes
it for HTTP:

* the fault applies only to requests whose headers match every
  ``headers`` matcher (and, when set, to ``upstream_cluster`` and to
  ``downstream_nodes`` named by ``x-envoy-downstream-service-node``);
* **delay**: ``fixed_delay``, or with ``header_delay`` the
  ``x-envoy-fault-delay-request`` header (integer milliseconds; no header,
  no delay); applied to ``percentage`` of requests, or with ``header_delay``
  to ``x-envoy-fault-delay-request-percentage`` when that header is present
  (capped at the configured percentage); a delay of 0 is no delay;
* **abort**: ``http_status`` or ``grpc_status``, or with ``header_abort`` the
  ``x-envoy-fault-abort-request`` (HTTP status in [200, 600)) /
  ``x-envoy-fault-abort-grpc-request`` (gRPC code in [0, 16]) headers, with
  ``x-envoy-fault-abort-request-percentage`` as for delays. A gRPC call
  aborted with an HTTP status fails with the status gRPC's HTTP mapping
  gives (:func:`proxyless.resilience.outcome.http_status_to_grpc`);
* **max_active_faults**: when that many faulted requests are in flight, a
  new request gets no fault (counted as ``faults_overflow``).

Delay and abort are drawn independently in one :meth:`FaultInjector.decide`
call; the adapter sleeps first, then aborts. The resource model stores
percentages per million, so a header percentage is read as a percentage of
100 (the proto's default denominator) before the cap is applied.

The caller resolves which config applies (the listener's filter, or a
``typed_per_filter_config`` override on the route, virtual host or cluster
weight) and uses :meth:`FaultInjector.for_config`, which keeps one injector,
and so one active-fault count, per config object.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final, final

from proxyless.resources.model import FaultFilterConfig, HeaderMatcher

__all__ = [
    "ABORT_PERCENTAGE_HEADER",
    "DELAY_HEADER",
    "DELAY_PERCENTAGE_HEADER",
    "DOWNSTREAM_NODE_HEADER",
    "GRPC_ABORT_HEADER",
    "HTTP_ABORT_HEADER",
    "NO_FAULT",
    "FaultDecision",
    "FaultInjector",
]

DELAY_HEADER: Final = "x-envoy-fault-delay-request"
DELAY_PERCENTAGE_HEADER: Final = "x-envoy-fault-delay-request-percentage"
HTTP_ABORT_HEADER: Final = "x-envoy-fault-abort-request"
GRPC_ABORT_HEADER: Final = "x-envoy-fault-abort-grpc-request"
ABORT_PERCENTAGE_HEADER: Final = "x-envoy-fault-abort-request-percentage"
DOWNSTREAM_NODE_HEADER: Final = "x-envoy-downstream-service-node"

_MILLION: Final = 1_000_000
_CACHE_LIMIT: Final = 1024


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """The faults to inject into one request: a delay (seconds) and/or an abort.

    ``abort_grpc`` wins over ``abort_http`` on gRPC calls; an HTTP request
    with only ``abort_grpc`` gets status 200 with that ``grpc-status``, as
    Envoy answers.
    """

    delay: float | None = None
    abort_http: int | None = None
    abort_grpc: int | None = None

    @property
    def active(self) -> bool:
        return self.delay is not None or self.abort_http is not None or self.abort_grpc is not None


NO_FAULT: Final = FaultDecision()


def _parse_uint(raw: str | None) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text)


@final
class FaultInjector:
    """Decides the faults of each request for one ``FaultFilterConfig``.

    ``stats``: ``delays_injected``, ``aborts_injected``, ``faults_overflow``
    (Envoy's fault filter statistics); ``active_faults`` is the gauge of
    faulted requests in flight. Every :meth:`decide` that returns a fault
    has taken an active-fault slot: call :meth:`end` when that request ends.
    """

    __slots__ = ("_headers", "_lock", "_nodes", "active_faults", "config", "stats")

    def __init__(self, config: FaultFilterConfig) -> None:
        self.config = config
        self._headers: tuple[HeaderMatcher, ...] = tuple(
            m if m.name == m.name.lower() else replace(m, name=m.name.lower())
            for m in config.headers
        )
        self._nodes = frozenset(config.downstream_nodes)
        self._lock = threading.Lock()
        self.active_faults = 0
        self.stats: dict[str, int] = {
            "delays_injected": 0,
            "aborts_injected": 0,
            "faults_overflow": 0,
        }

    @classmethod
    def for_config(cls, config: FaultFilterConfig) -> FaultInjector:
        """The injector of ``config``, shared by every request using that config object."""
        key = id(config)
        hit = _cache.get(key)
        if hit is not None and hit[0] is config:
            return hit[1]
        injector = cls(config)
        with _cache_lock:
            if len(_cache) >= _CACHE_LIMIT:
                _cache.clear()
            _cache[key] = (config, injector)
        return injector

    def decide(
        self,
        headers: Mapping[str, str],
        rng: random.Random,
        cluster: str | None = None,
    ) -> FaultDecision:
        """Faults for a request with lower-case ``headers`` going to ``cluster``."""
        c = self.config
        if c.upstream_cluster and cluster != c.upstream_cluster:
            return NO_FAULT
        if self._nodes and headers.get(DOWNSTREAM_NODE_HEADER) not in self._nodes:
            return NO_FAULT
        for matcher in self._headers:
            if not matcher.matches(headers.get(matcher.name)):
                return NO_FAULT
        delay = self._delay(headers, rng)
        abort_http, abort_grpc = self._abort(headers, rng)
        if delay is None and abort_http is None and abort_grpc is None:
            return NO_FAULT
        if not self.begin():
            return NO_FAULT
        with self._lock:
            if delay is not None:
                self.stats["delays_injected"] += 1
            if abort_http is not None or abort_grpc is not None:
                self.stats["aborts_injected"] += 1
        return FaultDecision(delay, abort_http, abort_grpc)

    def begin(self) -> bool:
        """Take an active-fault slot; False (counted) when ``max_active_faults`` is reached."""
        limit = self.config.max_active_faults
        with self._lock:
            if limit is not None and self.active_faults >= limit:
                self.stats["faults_overflow"] += 1
                return False
            self.active_faults += 1
            return True

    def end(self) -> None:
        """A faulted request ended."""
        with self._lock:
            if self.active_faults > 0:
                self.active_faults -= 1

    # -- internals ---------------------------------------------------------------

    @staticmethod
    def _percentage(headers: Mapping[str, str], name: str, configured: int) -> int:
        numerator = _parse_uint(headers.get(name))
        if numerator is None:
            return configured
        return min(configured, numerator * (_MILLION // 100))

    def _delay(self, headers: Mapping[str, str], rng: random.Random) -> float | None:
        d = self.config.delay
        if d is None:
            return None
        if d.header_controlled:
            ms = _parse_uint(headers.get(DELAY_HEADER))
            if ms is None:
                return None
            duration = ms / 1000.0
            per_million = self._percentage(headers, DELAY_PERCENTAGE_HEADER, d.per_million)
        else:
            duration = d.fixed_delay if d.fixed_delay is not None else 0.0
            per_million = d.per_million
        if duration <= 0 or not _roll(rng, per_million):
            return None
        return duration

    def _abort(
        self, headers: Mapping[str, str], rng: random.Random
    ) -> tuple[int | None, int | None]:
        a = self.config.abort
        if a is None:
            return None, None
        if a.header_controlled:
            http = _parse_uint(headers.get(HTTP_ABORT_HEADER))
            if http is not None and not 200 <= http < 600:
                http = None
            grpc = _parse_uint(headers.get(GRPC_ABORT_HEADER))
            if grpc is not None and grpc > 16:
                grpc = None
            if http is None and grpc is None:
                return None, None
            per_million = self._percentage(headers, ABORT_PERCENTAGE_HEADER, a.per_million)
        else:
            http, grpc = a.http_status, a.grpc_status
            per_million = a.per_million
        if not _roll(rng, per_million):
            return None, None
        return http, grpc

    def __repr__(self) -> str:
        return (
            f"FaultInjector(delay={self.config.delay} abort={self.config.abort} "
            f"active={self.active_faults})"
        )


def _roll(rng: random.Random, per_million: int) -> bool:
    if per_million >= _MILLION:
        return True
    if per_million <= 0:
        return False
    return rng.randrange(_MILLION) < per_million


_cache: dict[int, tuple[FaultFilterConfig, FaultInjector]] = {}
_cache_lock = threading.Lock()
