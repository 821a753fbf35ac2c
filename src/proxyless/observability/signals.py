"""The mesh signals: what outlier detection, retry budgets, circuit breakers
and certificates did, as OpenTelemetry metrics none of the anchors report
in-process.

Every recording function starts with ``instruments.get()`` and returns at
once when no meter provider is in force, and is called only where the event
happens (an ejection decided or skipped, a retry refused, a limit reached),
never on a call's success path:

- :func:`ejection` — ``proxyless.outlier.ejections`` (counter) with
  ``proxyless.cluster``, ``proxyless.outlier.reason`` (the detector's
  ejection type: ``consecutive_5xx``, ``consecutive_gateway_failure``,
  ``consecutive_local_origin_failure``, ``success_rate``,
  ``failure_percentage``, ``local_origin_success_rate``,
  ``local_origin_failure_percentage``) and ``proxyless.outlier.enforced``.
  As in Envoy's ``outlier_detection.ejections_detected_*`` /
  ``ejections_enforced_*`` statistics, every detected outlier counts once:
  enforced when it was ejected, not enforced when the ``enforcing_*`` roll
  or ``max_ejection_percent`` kept it in (Envoy "Outlier detection"
  statistics).
- :func:`budget_refusal` — ``proxyless.retry_budget.refusals`` (counter,
  ``proxyless.cluster``): a retry or hedged attempt the cluster's retry
  budget refused (Envoy ``upstream_rq_retry_overflow`` with a budget).
- :func:`breaker_overflow` — ``proxyless.circuit_breaker.overflows``
  (counter, ``proxyless.cluster``, ``proxyless.circuit_breaker.limit`` =
  ``max_requests``, ``max_pending_requests``, ``max_connections`` or
  ``max_retries``). A refused retry is counted once: under the budget when
  the cluster has one (every cluster does unless the control plane set
  ``max_retries`` alone), else here as ``max_retries``; the two together
  are Envoy's ``upstream_rq_retry_overflow``.
- ``proxyless.certificate.expiry`` (observable gauge, seconds, negative once
  expired): per certificate source in use by a live
  :class:`~proxyless.security.credentials.ClusterCredentials` (clusters and
  xDS-enabled servers), with ``proxyless.certificate.source``
  (``sds:<secret>``, ``certificate_provider:<instance>``, ``file:<path>`` or
  ``inline``) and ``proxyless.spiffe_id`` (empty when the leaf has none).
  Credentials register with :func:`track_credentials` and leave with
  :func:`untrack_credentials`; one source shared by several clusters is one
  series (the earliest expiry when they hold different leaves, mid-rotation).

This module imports nothing from the layers it serves (they import it), so
credentials are typed by the one method the gauge reads.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, Observation

from proxyless.observability import instruments

__all__ = [
    "CERTIFICATE_EXPIRY",
    "CertificateHolder",
    "breaker_overflow",
    "budget_refusal",
    "ejection",
    "expiry_by_source",
    "track_credentials",
    "untrack_credentials",
]

#: The observable gauge of seconds left on each certificate source's leaf.
CERTIFICATE_EXPIRY = "proxyless.certificate.expiry"


class CertificateHolder(Protocol):
    """What the expiry gauge reads from a credentials object."""

    def certificate_expiry(self) -> tuple[str, str, float] | None:
        """``(source, SPIFFE ID or "", seconds until the leaf expires)`` of
        the identity in use, or None when there is none."""
        ...


def ejection(cluster: str, reason: str, enforced: bool) -> None:
    """An outlier was detected in ``cluster``: ejected (``enforced``) or kept in."""
    inst = instruments.get()
    if inst is None:
        return
    inst.ejections.add(
        1,
        {
            "proxyless.cluster": cluster,
            "proxyless.outlier.reason": reason,
            "proxyless.outlier.enforced": enforced,
        },
    )


def budget_refusal(cluster: str) -> None:
    """``cluster``'s retry budget refused a retry."""
    inst = instruments.get()
    if inst is None:
        return
    inst.budget_refusals.add(1, {"proxyless.cluster": cluster})


def breaker_overflow(cluster: str, limit: str) -> None:
    """A request, connection or retry of ``cluster`` was refused by ``limit``."""
    inst = instruments.get()
    if inst is None:
        return
    inst.breaker_overflows.add(
        1, {"proxyless.cluster": cluster, "proxyless.circuit_breaker.limit": limit}
    )


# -- certificate expiry ---------------------------------------------------------------

_holders: weakref.WeakSet[Any] = weakref.WeakSet()
_holders_lock = threading.Lock()


def track_credentials(holder: CertificateHolder) -> None:
    """Report ``holder``'s certificate in the expiry gauge until it is
    untracked or garbage-collected."""
    with _holders_lock:
        _holders.add(holder)
    instruments.get()  # make the gauge now if a meter provider is in force


def untrack_credentials(holder: CertificateHolder) -> None:
    with _holders_lock:
        _holders.discard(holder)


def expiry_by_source(
    entries: Iterable[tuple[str, str, float] | None],
) -> dict[tuple[str, str], float]:
    """Seconds left per ``(source, SPIFFE ID)``: the smallest when several
    holders report the same pair; None entries (no identity) are skipped."""
    out: dict[tuple[str, str], float] = {}
    for entry in entries:
        if entry is None:
            continue
        source, spiffe_id, left = entry
        key = (source, spiffe_id)
        if key not in out or left < out[key]:
            out[key] = left
    return out


def _readings() -> list[tuple[str, str, float] | None]:
    with _holders_lock:
        holders = list(_holders)
    readings: list[tuple[str, str, float] | None] = []
    for holder in holders:
        try:
            readings.append(holder.certificate_expiry())
        except Exception:  # a holder closing meanwhile: skip it this time
            continue
    return readings


def _observe_expiry(options: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(left, {"proxyless.certificate.source": source, "proxyless.spiffe_id": sid})
        for (source, sid), left in sorted(expiry_by_source(_readings()).items())
    ]


instruments.gauge(
    CERTIFICATE_EXPIRY,
    "s",
    "Seconds until the leaf certificate of each certificate source in use expires.",
    _observe_expiry,
)
