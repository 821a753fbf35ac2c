"""The metric instruments proxyless records to, made on first use from the
meter provider in force (:func:`proxyless.observability.settings.meter_provider`).

Names and attributes follow the anchors, so dashboards built for them work:

gRPC clients (gRFC A66; retries and hedges per call, gRFC A96):

- ``grpc.client.attempt.started`` (counter; ``grpc.method``, ``grpc.target``)
- ``grpc.client.attempt.duration`` (histogram, s; + ``grpc.status``,
  ``grpc.lb.locality``, ``grpc.lb.backend_service``)
- ``grpc.client.call.duration`` (histogram, s; ``grpc.method``,
  ``grpc.target``, ``grpc.status``)
- ``grpc.client.call.retries`` and ``grpc.client.call.hedges`` (histograms,
  per call that made any; ``grpc.method``, ``grpc.target``)

``grpc.client.attempt.sent_total_compressed_message_size`` and its
``rcvd`` twin are not recorded: grpcio's Python API does not expose wire
sizes, and serialising a second time to measure would cost more than the
call.

gRPC servers made with :func:`proxyless.grpc.server` (gRFC A66):
``grpc.server.call.started`` and ``grpc.server.call.duration``.

httpx (OpenTelemetry HTTP client semantic conventions): one
``http.client.request.duration`` (histogram, s) per attempt, that is per
request sent, with ``http.request.method``, ``server.address``,
``server.port``, ``url.scheme``, ``http.response.status_code`` or
``error.type``; and ``proxyless.http.client.call.duration`` per request
the application made (retries included), with the same attributes and
``proxyless.cluster``.

The xDS client (gRFC A78), per Mesh (``grpc.target`` is the Mesh's node id):
``grpc.xds_client.connected``, ``grpc.xds_client.server_failure``,
``grpc.xds_client.resource_updates_valid`` / ``_invalid``,
``grpc.xds_client.resources`` (by ``grpc.xds.cache_state``).

What the anchors do not report in-process (``proxyless.*``):
``proxyless.outlier.ejections`` (``proxyless.cluster``,
``proxyless.outlier.reason``, ``proxyless.outlier.enforced``),
``proxyless.retry_budget.refusals``, ``proxyless.circuit_breaker.overflows``
(``proxyless.circuit_breaker.limit``), ``proxyless.retries``
(``proxyless.retry.reason``), ``proxyless.hedges``, and
``proxyless.certificate.expiry`` (seconds left, per certificate source).
"""

from __future__ import annotations

import threading
from typing import Any

from proxyless.observability import settings as _settings

__all__ = ["DURATION_BUCKETS", "Instruments", "get", "reset"]

#: Latency buckets of gRFC A66 (seconds).
DURATION_BUCKETS = (
    0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003,
    0.004, 0.005, 0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04,
    0.05, 0.065, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8,
    1, 2, 5, 10, 20, 50, 100,
)  # fmt: skip


class Instruments:
    """Every instrument, made from one meter provider."""

    def __init__(self, provider: Any) -> None:
        from proxyless import __version__

        meter = provider.get_meter("proxyless", __version__)
        self.provider = provider
        self.meter = meter

        def hist(name: str, unit: str, description: str) -> Any:
            try:
                return meter.create_histogram(
                    name,
                    unit=unit,
                    description=description,
                    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS)
                    if unit == "s"
                    else None,
                )
            except TypeError:  # an API without bucket advice
                return meter.create_histogram(name, unit=unit, description=description)

        c = meter.create_counter
        self.attempt_started = c(
            "grpc.client.attempt.started", unit="{attempt}", description="Attempts started."
        )
        self.attempt_duration = hist(
            "grpc.client.attempt.duration", "s", "Time from an attempt's start to its end."
        )
        self.call_duration = hist(
            "grpc.client.call.duration", "s", "Time from a call's start to its end."
        )
        self.call_retries = hist(
            "grpc.client.call.retries", "{retry}", "Retries of a call that made any."
        )
        self.call_hedges = hist(
            "grpc.client.call.hedges", "{hedge}", "Hedged attempts of a call that made any."
        )
        self.server_started = c(
            "grpc.server.call.started", unit="{call}", description="Calls received."
        )
        self.server_duration = hist(
            "grpc.server.call.duration", "s", "Time from a call's arrival to its end."
        )
        self.http_request_duration = hist(
            "http.client.request.duration", "s", "Duration of HTTP client requests sent."
        )
        self.http_call_duration = hist(
            "proxyless.http.client.call.duration",
            "s",
            "Duration of HTTP requests made by the application, retries included.",
        )
        self.ejections = c(
            "proxyless.outlier.ejections",
            unit="{ejection}",
            description="Outlier-detection ejections, enforced or skipped.",
        )
        self.budget_refusals = c(
            "proxyless.retry_budget.refusals",
            unit="{retry}",
            description="Retries refused by the cluster's retry budget.",
        )
        self.breaker_overflows = c(
            "proxyless.circuit_breaker.overflows",
            unit="{request}",
            description="Requests or retries refused by a circuit-breaker limit.",
        )
        self.retries = c("proxyless.retries", unit="{retry}", description="Retries made.")
        self.hedges = c("proxyless.hedges", unit="{attempt}", description="Hedged attempts made.")
        self.xds_server_failure = c(
            "grpc.xds_client.server_failure",
            unit="{failure}",
            description="xDS servers that went from working to failing.",
        )
        self.xds_updates_valid = c(
            "grpc.xds_client.resource_updates_valid",
            unit="{resource}",
            description="Resources received that were valid.",
        )
        self.xds_updates_invalid = c(
            "grpc.xds_client.resource_updates_invalid",
            unit="{resource}",
            description="Resources received that were NACKed.",
        )
        #: observable gauges register their callbacks here (see :func:`gauge`)
        self.gauges: dict[str, Any] = {}


_lock = threading.Lock()
_current: Instruments | None = None
_gauge_callbacks: dict[str, tuple[str, str, Any]] = {}


def get() -> Instruments | None:
    """The instruments of the meter provider in force; None without one."""
    provider = _settings.meter_provider()
    if provider is None:
        return None
    cur = _current
    if cur is not None and cur.provider is provider:
        return cur
    return _make(provider)


def _make(provider: Any) -> Instruments:
    global _current
    with _lock:
        cur = _current
        if cur is None or cur.provider is not provider:
            cur = Instruments(provider)
            for name, (unit, description, callback) in _gauge_callbacks.items():
                cur.gauges[name] = cur.meter.create_observable_gauge(
                    name, callbacks=[callback], unit=unit, description=description
                )
            _current = cur
        return cur


def gauge(name: str, unit: str, description: str, callback: Any) -> None:
    """Register an observable gauge, made with the instruments: at once if
    they exist, else by the next :func:`get` that makes them (so a gauge
    appears in a new meter provider once something calls :func:`get`);
    ``callback`` follows the OpenTelemetry API (``options -> Iterable[Observation]``)."""
    with _lock:
        _gauge_callbacks[name] = (unit, description, callback)
        cur = _current
    if cur is not None and name not in cur.gauges:
        cur.gauges[name] = cur.meter.create_observable_gauge(
            name, callbacks=[callback], unit=unit, description=description
        )


def reset() -> None:
    """Forget the instruments (the next :func:`get` remakes them)."""
    global _current
    with _lock:
        _current = None
