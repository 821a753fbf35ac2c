"""Envoy's two statistical outlier algorithms over one interval's counts (gRFC A50).

* **Success rate**: among endpoints with at least ``success_rate_request_volume``
  calls in the interval, when at least ``success_rate_minimum_hosts``
  qualify, an endpoint whose success rate is below
  ``mean - success_rate_stdev_factor / 1000 * stdev`` is an outlier.
* **Failure percentage**: among endpoints with at least
  ``failure_percentage_request_volume`` calls, when at least
  ``failure_percentage_minimum_hosts`` qualify, an endpoint whose failure
  percentage is at least ``failure_percentage_threshold`` is an outlier.

Ejected endpoints and endpoints without calls take no part; when no endpoint
failed in the interval neither algorithm runs. The counts are the inactive
buckets of :class:`~proxyless.resilience.outlier_state.EndpointOutlierState`,
external or local origin. :func:`scan_rates` only reads them and returns the
outliers, in order, with the reason; enforcing, counting and logging are the
detector's (:mod:`proxyless.resilience.outlier`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxyless.resources.model import OutlierDetection

if TYPE_CHECKING:  # no runtime import: proxyless.lb may import this package
    from proxyless.lb.state import EndpointState

__all__ = ["RateScan", "scan_rates"]


@dataclass(frozen=True, slots=True)
class RateScan:
    """What the two algorithms found in one interval."""

    #: endpoints that failed with fewer calls than the algorithm's request volume
    success_rate_low_volume: int
    failure_percentage_low_volume: int
    #: endpoints with enough calls for the algorithm
    success_rate_hosts: int
    failure_percentage_hosts: int
    #: ``(mean, stdev, threshold)`` when success rate ran (enough endpoints), else None
    success_rate: tuple[float, float, float] | None
    success_rate_outliers: tuple[tuple[EndpointState, str], ...]
    failure_percentage_ran: bool
    failure_percentage_outliers: tuple[tuple[EndpointState, str], ...]


def scan_rates(
    endpoints: Iterable[EndpointState], owner: object, config: OutlierDetection, *, local: bool
) -> RateScan | None:
    """Run both algorithms over the endpoints whose state ``owner`` keeps;
    None when no endpoint failed in the interval."""
    sr_volume = config.success_rate_request_volume
    fp_volume = config.failure_percentage_request_volume
    sr_hosts: list[tuple[EndpointState, float]] = []
    fp_hosts: list[tuple[EndpointState, float]] = []
    sr_low = fp_low = 0
    any_failure = False
    for es in endpoints:
        state = es.outlier
        if es.ejected or state is None or state.owner is not owner:
            continue
        bucket = state.inactive
        total = bucket.local_total if local else bucket.ext_total
        if total <= 0:
            continue
        ok = bucket.local_ok if local else bucket.ext_ok
        failed = total - ok
        if failed:
            any_failure = True
        rate = ok * 100.0 / total
        if total >= sr_volume:
            sr_hosts.append((es, rate))
        elif failed:
            sr_low += 1
        if total >= fp_volume:
            fp_hosts.append((es, rate))
        elif failed:
            fp_low += 1
    if not any_failure:
        return None
    success_rate = None
    sr_outliers: list[tuple[EndpointState, str]] = []
    if sr_hosts and len(sr_hosts) >= config.success_rate_minimum_hosts:
        rates = [rate for _, rate in sr_hosts]
        mean = sum(rates) / len(rates)
        stdev = math.sqrt(sum((r - mean) ** 2 for r in rates) / len(rates))
        threshold = mean - (config.success_rate_stdev_factor / 1000.0) * stdev
        success_rate = (mean, stdev, threshold)
        for es, rate in sr_hosts:
            if rate < threshold:
                detail = f": success rate {rate:.1f}% < threshold {threshold:.1f}%"
                sr_outliers.append((es, detail))
    fp_ran = bool(fp_hosts) and len(fp_hosts) >= config.failure_percentage_minimum_hosts
    fp_outliers: list[tuple[EndpointState, str]] = []
    if fp_ran:
        limit = config.failure_percentage_threshold
        for es, rate in fp_hosts:
            failure = 100.0 - rate
            if failure >= limit:
                fp_outliers.append((es, f": failure percentage {failure:.1f}% >= {limit}%"))
    return RateScan(
        success_rate_low_volume=sr_low,
        failure_percentage_low_volume=fp_low,
        success_rate_hosts=len(sr_hosts),
        failure_percentage_hosts=len(fp_hosts),
        success_rate=success_rate,
        success_rate_outliers=tuple(sr_outliers),
        failure_percentage_ran=fp_ran,
        failure_percentage_outliers=tuple(fp_outliers),
    )
