"""Outlier detection per cluster, with Envoy's semantics.

Implements Envoy's outlier detection (``outlier_detection.proto``; the
"Outlier detection" architecture doc; ``outlier_detection_impl.cc``), which
includes gRFC A50's success-rate and failure-percentage algorithms and adds
consecutive-error ejection:

* **Request path** (:meth:`OutlierDetector.record`, :meth:`record_success`):
  O(1) updates of per-endpoint counters hung on ``EndpointState.outlier``.
  Call counts go to the endpoint's *active* bucket (grpc-go ``callcounter``
  style, no lock); consecutive ``5xx`` / gateway / local-origin failures are
  counted and, when one reaches its threshold, the endpoint is ejected at
  once, as Envoy does, subject to ``max_ejection_percent`` and the
  ``enforcing_*`` roll. Only that rare path takes the detector's lock.
* **Sweep** (:meth:`OutlierDetector.sweep`, every ``interval`` on the Mesh
  thread with an injected clock): un-ejects endpoints whose ejection time
  has passed, swaps active and inactive buckets, runs success rate
  (``mean - stdev_factor / 1000 * stdev`` over endpoints with at least
  ``request_volume`` calls, when at least ``minimum_hosts`` qualify) and
  failure percentage (``failure% >= threshold``), for external and, with
  ``split_external_local_origin_errors``, local-origin results, then lowers
  the ejection multiplier of endpoints healthy for an interval.
* **Ejection time**: ``min(base_ejection_time * multiplier,
  max(base_ejection_time, max_ejection_time)) + jitter`` where the multiplier
  grows by one per ejection (while ``multiplier * base < max + base``) and
  the jitter is drawn once per ejection from ``[0, max_ejection_time_jitter]``.
* **max_ejection_percent** is checked before each ejection as
  ``100 * (ejected + 1) <= max_ejection_percent * endpoints``, and one
  endpoint may always be ejected when none is (Envoy's documented "at least
  one host", gRPC's behaviour), unless ``max_ejection_percent`` is 0 and
  ``always_eject_one_host`` is false.
* **Enforcement**: a detected outlier is ejected when an integer drawn from
  ``[0, 100)`` is below the ``enforcing_*`` percentage.

Pickers learn of ejections through ``EndpointState.ejected``. What happens
when every endpoint is ejected or unhealthy (panic routing) is the load
balancer's decision. How outcomes count (the gRPC status mapping) and the
per-endpoint counters are in :mod:`proxyless.resilience.outlier_state`.
Every ejection, un-ejection and skipped ejection is logged on
``proxyless.resilience.outlier`` and counted in :attr:`OutlierDetector.stats`
(Envoy ``outlier_detection.*`` names).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, final

from proxyless.observability import signals
from proxyless.resilience.outcome import Outcome
from proxyless.resilience.outlier_rates import scan_rates
from proxyless.resilience.outlier_state import (
    ENFORCING_FIELDS,
    EXT_5XX,
    EXT_GATEWAY,
    IGNORED,
    LOCAL_CONNECT,
    SUCCESS,
    EjectionType,
    EndpointOutlierState,
    classify,
    new_stats,
)
from proxyless.resources.model import OutlierDetection

if TYPE_CHECKING:  # no runtime import: proxyless.lb may import this package
    from proxyless.clock import Clock
    from proxyless.lb.state import EndpointState

__all__ = ["OutlierDetector"]

_log = logging.getLogger("proxyless.resilience.outlier")


@final
class OutlierDetector:
    """Outlier detection for one cluster (see the module docstring).

    The owner (the cluster's load-balancing state) calls
    :meth:`set_endpoints` with every endpoint of the cluster, all
    priorities, whenever EDS changes; :meth:`record` / :meth:`record_success`
    once per attempt; :meth:`sweep` every :meth:`next_sweep_in` seconds on
    the Mesh thread; :meth:`update_config` on a CDS update and :meth:`close`
    when the cluster or its outlier detection goes away.

    ``on_change`` is called, without the detector's lock held, after any
    ejection or un-ejection (once per :meth:`sweep`), on the thread that
    caused it: the owner passes ``ClusterLoadBalancer.refresh_health`` so the
    pickers are rebuilt at once.
    """

    __slots__ = (
        "_c5xx",
        "_cgw",
        "_clocal",
        "_clock",
        "_config",
        "_ejected",
        "_endpoints",
        "_last_sweep",
        "_lock",
        "_rng",
        "_split",
        "cluster",
        "on_change",
        "stats",
    )

    def __init__(
        self,
        cluster: str,
        config: OutlierDetection,
        clock: Clock,
        rng: random.Random,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.on_change = on_change
        self._clock = clock
        self._rng = rng
        self._lock = threading.Lock()
        self._endpoints: dict[tuple[str, int], EndpointState] = {}
        self._ejected = 0
        self._last_sweep = clock.monotonic()
        self.stats = new_stats()
        self._config = config
        self._split = config.split_external_local_origin_errors
        self._c5xx = config.consecutive_5xx
        self._cgw = config.consecutive_gateway_failure
        self._clocal = config.consecutive_local_origin_failure

    # -- configuration and membership ------------------------------------------

    @property
    def config(self) -> OutlierDetection:
        return self._config

    def update_config(self, config: OutlierDetection) -> None:
        """Take a new config keeping every counter, ejection and multiplier (gRFC A50).

        The Mesh re-arms its timer with :meth:`next_sweep_in`, which measures
        the new ``interval`` from the last sweep.
        """
        with self._lock:
            self._config = config
            self._split = config.split_external_local_origin_errors
            self._c5xx = config.consecutive_5xx
            self._cgw = config.consecutive_gateway_failure
            self._clocal = config.consecutive_local_origin_failure

    def set_endpoints(self, endpoints: Iterable[EndpointState]) -> None:
        """Make ``endpoints`` the cluster's endpoint set.

        New endpoints get fresh state; kept ones (same ``EndpointState``
        object) keep theirs; removed ones are detached and, if ejected, no
        longer count against ``max_ejection_percent``.
        """
        with self._lock:
            fresh: dict[tuple[str, int], EndpointState] = {}
            for es in endpoints:
                state = es.outlier
                if not isinstance(state, EndpointOutlierState) or state.owner is not self:
                    es.ejected = False  # a flag left by another detector is not ours
                    es.outlier = EndpointOutlierState(self)
                fresh[es.key] = es
            for key, old in self._endpoints.items():
                if fresh.get(key) is not old:
                    self._detach(old)
            self._endpoints = fresh
            self.stats["ejections_active"] = self._ejected

    def close(self) -> None:
        """Un-eject and detach every endpoint (outlier detection removed, gRFC A50)."""
        with self._lock:
            changed = self._ejected > 0
            for es in self._endpoints.values():
                if es.ejected:
                    _log.info(
                        "cluster %r: endpoint %s un-ejected (outlier detection removed)",
                        self.cluster,
                        es.address,
                    )
                self._detach(es)
            self._endpoints = {}
            self.stats["ejections_active"] = self._ejected
        if changed:
            self._notify()

    def _detach(self, es: EndpointState) -> None:
        state = es.outlier
        if isinstance(state, EndpointOutlierState) and state.owner is self:
            if es.ejected:
                self._ejected -= 1
                es.ejected = False
            es.outlier = None

    @property
    def endpoints(self) -> tuple[EndpointState, ...]:
        return tuple(self._endpoints.values())

    @property
    def ejected_count(self) -> int:
        return self._ejected

    # -- request path ---------------------------------------------------------------

    def record_success(self, es: EndpointState) -> None:
        """Fast path of :meth:`record` for a successful attempt."""
        state = es.outlier
        if state is None or state.owner is not self:
            return
        bucket = state.active
        bucket.ext_total += 1
        bucket.ext_ok += 1
        if state.consecutive_5xx:
            state.consecutive_5xx = 0
        if state.consecutive_gateway:
            state.consecutive_gateway = 0
        if self._split:
            bucket.local_total += 1
            bucket.local_ok += 1
            if state.consecutive_local:
                state.consecutive_local = 0

    def record(self, es: EndpointState, outcome: Outcome) -> None:
        """Count one attempt's outcome against ``es``; may eject it at once."""
        state = es.outlier
        if state is None or state.owner is not self:
            return
        cls = classify(outcome)
        if cls == SUCCESS:
            self.record_success(es)
            return
        if cls == IGNORED:
            return
        bucket = state.active
        if self._split:
            bucket.local_total += 1
            if cls >= LOCAL_CONNECT:
                state.consecutive_local += 1
                threshold = self._clocal
                if threshold > 0 and state.consecutive_local >= threshold:
                    self._on_consecutive(es, state, "consecutive_local_origin_failure")
                return
            bucket.local_ok += 1  # the connection worked; the answer was an error
            state.consecutive_local = 0
            gateway = cls == EXT_GATEWAY
        else:
            gateway = cls != EXT_5XX  # local failures count as 503 / 504
        bucket.ext_total += 1
        if gateway:
            state.consecutive_gateway += 1
            threshold = self._cgw
            if threshold > 0 and state.consecutive_gateway >= threshold:
                self._on_consecutive(es, state, "consecutive_gateway_failure")
        else:
            state.consecutive_gateway = 0
        state.consecutive_5xx += 1
        threshold = self._c5xx
        if threshold > 0 and state.consecutive_5xx >= threshold:
            self._on_consecutive(es, state, "consecutive_5xx")

    def _on_consecutive(
        self, es: EndpointState, state: EndpointOutlierState, kind: EjectionType
    ) -> None:
        if es.ejected:
            return  # counters restart when it comes back
        now = self._clock.monotonic()
        with self._lock:
            if es.ejected or state.owner is not self:
                return
            self.stats[f"ejections_detected_{kind}"] += 1
            changed = self._try_eject(es, state, kind, now, "")
            # Envoy restarts the counter after a detection, ejected or not.
            if kind == "consecutive_5xx":
                state.consecutive_5xx = 0
            elif kind == "consecutive_gateway_failure":
                state.consecutive_gateway = 0
            else:
                state.consecutive_local = 0
        if changed:
            self._notify()

    def _notify(self) -> None:
        callback = self.on_change
        if callback is not None:
            callback()

    # -- ejection -------------------------------------------------------------------

    def _enforcing(self, kind: EjectionType) -> int:
        enforcing: int = getattr(self._config, ENFORCING_FIELDS[kind])
        return enforcing

    def _ejection_allowed(self) -> bool:
        c = self._config
        total = len(self._endpoints)
        ejected = self._ejected
        if 100 * (ejected + 1) <= c.max_ejection_percent * total:
            return True
        return ejected == 0 and (c.max_ejection_percent > 0 or c.always_eject_one_host)

    def _try_eject(
        self,
        es: EndpointState,
        state: EndpointOutlierState,
        kind: EjectionType,
        now: float,
        detail: str,
    ) -> bool:
        """Eject ``es`` if the percentage cap and the enforcement roll allow (lock held)."""
        c = self._config
        stats = self.stats
        if not self._ejection_allowed():
            stats["ejections_overflow"] += 1
            signals.ejection(self.cluster, kind, enforced=False)
            _log.info(
                "cluster %r: endpoint %s not ejected (%s%s): max_ejection_percent=%d%% "
                "reached with %d of %d endpoints ejected",
                self.cluster,
                es.address,
                kind,
                detail,
                c.max_ejection_percent,
                self._ejected,
                len(self._endpoints),
            )
            return False
        enforcing = self._enforcing(kind)
        if enforcing < 100 and (enforcing <= 0 or self._rng.randrange(100) >= enforcing):
            stats["ejections_skipped_enforcement"] += 1
            signals.ejection(self.cluster, kind, enforced=False)
            _log.log(
                logging.INFO if enforcing > 0 else logging.DEBUG,
                "cluster %r: endpoint %s not ejected (%s%s): enforcement roll lost "
                "(enforcing %d%%)",
                self.cluster,
                es.address,
                kind,
                detail,
                enforcing,
            )
            return False
        es.ejected = True
        self._ejected += 1
        state.ejected_at = now
        state.ejection_type = kind
        state.num_ejections += 1
        max_jitter = c.max_ejection_time_jitter
        state.jitter = self._rng.random() * max_jitter if max_jitter > 0 else 0.0
        base = c.base_ejection_time
        cap = max(base, c.max_ejection_time)
        if base <= 0:
            state.multiplier = 1
        elif state.multiplier * base < cap + base:
            state.multiplier += 1
        stats["ejections_total"] += 1
        stats["ejections_enforced_total"] += 1
        stats[f"ejections_enforced_{kind}"] += 1
        signals.ejection(self.cluster, kind, enforced=True)
        stats["ejections_active"] = self._ejected
        _log.info(
            "cluster %r: endpoint %s ejected (%s%s) for %.3gs (ejection %d, multiplier %d); "
            "%d of %d endpoints ejected",
            self.cluster,
            es.address,
            kind,
            detail,
            self._ejection_time(state),
            state.num_ejections,
            state.multiplier,
            self._ejected,
            len(self._endpoints),
        )
        return True

    def _ejection_time(self, state: EndpointOutlierState) -> float:
        c = self._config
        base = c.base_ejection_time
        return min(base * state.multiplier, max(base, c.max_ejection_time)) + state.jitter

    def _uneject(self, es: EndpointState, state: EndpointOutlierState, now: float) -> None:
        es.ejected = False
        self._ejected -= 1
        state.unejected_at = now
        # Envoy resets every consecutive counter so a few new errors do not
        # re-eject at once.
        state.consecutive_5xx = 0
        state.consecutive_gateway = 0
        state.consecutive_local = 0
        self.stats["unejections_total"] += 1
        self.stats["ejections_active"] = self._ejected
        ejected_for = now - state.ejected_at if state.ejected_at is not None else 0.0
        _log.info(
            "cluster %r: endpoint %s un-ejected after %.3gs (was %s)",
            self.cluster,
            es.address,
            ejected_for,
            state.ejection_type,
        )

    # -- the interval timer ------------------------------------------------------

    def next_sweep_in(self, now: float) -> float:
        """Seconds until the next :meth:`sweep` is due (``interval`` after the last one)."""
        return max(0.0, self._last_sweep + max(self._config.interval, 0.001) - now)

    def sweep(self, now: float) -> None:
        """The interval timer's work (module docstring); ``now`` is monotonic seconds."""
        with self._lock:
            before = self.stats["ejections_enforced_total"] + self.stats["unejections_total"]
            self._last_sweep = now
            c = self._config
            for es in self._endpoints.values():
                state: EndpointOutlierState = es.outlier
                if state is None or state.owner is not self:
                    continue  # adopted by another detector meanwhile
                if (
                    es.ejected
                    and state.ejected_at is not None
                    and now - state.ejected_at >= self._ejection_time(state)
                ):
                    self._uneject(es, state, now)
                spent = state.inactive
                spent.clear()
                state.inactive = state.active
                state.active = spent
            self._rate_pass(now, local=False)
            if c.split_external_local_origin_errors:
                self._rate_pass(now, local=True)
            for es in self._endpoints.values():
                state = es.outlier
                if (
                    state is not None
                    and state.owner is self
                    and not es.ejected
                    and state.multiplier > 0
                    and state.unejected_at is not None
                    and now - state.unejected_at >= c.interval
                ):
                    state.multiplier -= 1
            changed = (
                self.stats["ejections_enforced_total"] + self.stats["unejections_total"] != before
            )
        if changed:
            self._notify()

    def _rate_pass(self, now: float, local: bool) -> None:
        """Success rate and failure percentage over the inactive buckets (lock held)."""
        c = self._config
        scan = scan_rates(self._endpoints.values(), self, c, local=local)
        if scan is None:
            return
        stats = self.stats
        prefix = "local_origin_" if local else ""
        stats[f"{prefix}success_rate_skipped_request_volume"] += scan.success_rate_low_volume
        stats[f"{prefix}failure_percentage_skipped_request_volume"] += (
            scan.failure_percentage_low_volume
        )
        sr_kind: EjectionType = "local_origin_success_rate" if local else "success_rate"
        fp_kind: EjectionType = "local_origin_failure_percentage" if local else "failure_percentage"
        if scan.success_rate is not None:
            mean, stdev, threshold = scan.success_rate
            _log.debug(
                "cluster %r: %ssuccess rate mean %.2f%% stdev %.2f threshold %.2f%% over %d",
                self.cluster,
                prefix,
                mean,
                stdev,
                threshold,
                scan.success_rate_hosts,
            )
            self._eject_outliers(scan.success_rate_outliers, sr_kind, now)
        else:
            stats[f"{prefix}success_rate_skipped_minimum_hosts"] += 1
            _log.debug(
                "cluster %r: %ssuccess rate skipped: %d endpoints with >= %d requests, %d needed",
                self.cluster,
                prefix,
                scan.success_rate_hosts,
                c.success_rate_request_volume,
                c.success_rate_minimum_hosts,
            )
        if scan.failure_percentage_ran:
            self._eject_outliers(scan.failure_percentage_outliers, fp_kind, now)
        else:
            stats[f"{prefix}failure_percentage_skipped_minimum_hosts"] += 1
            _log.debug(
                "cluster %r: %sfailure percentage skipped: %d endpoints with >= %d requests, "
                "%d needed",
                self.cluster,
                prefix,
                scan.failure_percentage_hosts,
                c.failure_percentage_request_volume,
                c.failure_percentage_minimum_hosts,
            )

    def _eject_outliers(
        self, outliers: Iterable[tuple[EndpointState, str]], kind: EjectionType, now: float
    ) -> None:
        for es, detail in outliers:
            if not es.ejected:
                self.stats[f"ejections_detected_{kind}"] += 1
                self._try_eject(es, es.outlier, kind, now, detail)

    def __repr__(self) -> str:
        return (
            f"OutlierDetector({self.cluster!r} endpoints={len(self._endpoints)} "
            f"ejected={self._ejected})"
        )
