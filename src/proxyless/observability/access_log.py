"""Access logs: one JSON line per call, through stdlib ``logging``.

Off by default; turn on with ``proxyless.observability.configure(access_log=True)``
or ``PROXYLESS_ACCESS_LOG=1``, and sample with ``access_log_sample`` /
``PROXYLESS_ACCESS_LOG_SAMPLE`` (a rate between 0 and 1, decided per call).
Lines go to the logger ``proxyless.access`` at INFO; the application
chooses handlers and where they go (``logging.basicConfig`` shows them).

The fields follow Envoy's default access-log format, as JSON keys:

``start_time``  (RFC 3339, UTC, milliseconds), ``protocol`` (``grpc`` or
``http``), ``method`` (the HTTP method, or ``POST`` for gRPC), ``path``
(the gRPC method path or the URL path), ``authority``, ``status`` (the
gRPC status name or the HTTP status; ``0`` when no answer came, as Envoy
prints), ``grpc_status`` (gRPC), ``response_flags`` (Envoy's flags, ``-``
for none: :mod:`proxyless.observability.flags`), ``duration_ms``,
``upstream_host`` (the last attempt's endpoint), ``upstream_cluster``,
``route_name``, ``attempts``, ``request_id`` (``x-request-id``),
``trace_id`` (W3C, when the call is traced), and ``error`` (the message
of the error the call ended with, if any).
"""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any

from proxyless.observability import settings as _settings

__all__ = ["LOGGER", "emit", "record"]

LOGGER = logging.getLogger("proxyless.access")

_rng = random.Random()


def record(tel: Any, status: str | int | None, error: BaseException | None, flags: str,
           elapsed: float, trace_id: str) -> dict[str, Any]:  # fmt: skip
    """The access-log record of a finished call (``tel``: its
    :class:`~proxyless.observability.telemetry.CallTelemetry`)."""
    started = tel.started_wall
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
    grpc = tel.grpc
    out: dict[str, Any] = {
        "start_time": f"{stamp}.{int(started * 1000) % 1000:03d}Z",
        "protocol": "grpc" if grpc else "http",
        "method": "POST" if grpc else tel.method,
        "path": tel.method if grpc else tel.path,
        "authority": tel.authority,
        "status": status if status is not None else 0,
        "response_flags": flags,
        "duration_ms": round(elapsed * 1000, 3),
        "upstream_host": tel.endpoint or "-",
        "upstream_cluster": tel.cluster or "-",
        "route_name": tel.route or "-",
        "attempts": tel.attempts,
        "request_id": tel.request_id or "-",
        "trace_id": trace_id or "-",
    }
    if grpc:
        out["grpc_status"] = status if status is not None else "UNAVAILABLE"
    if error is not None:
        out["error"] = str(error)
    return out


def emit(tel: Any, status: str | int | None, error: BaseException | None, flags: str,
         elapsed: float, trace_id: str) -> None:  # fmt: skip
    """Log the call's line, if sampled and the logger is enabled for INFO."""
    rate = _settings.settings.access_log_sample
    if rate < 1.0 and _rng.random() >= rate:
        return
    if not LOGGER.isEnabledFor(logging.INFO):
        return
    line = json.dumps(record(tel, status, error, flags, elapsed, trace_id), separators=(",", ":"))
    LOGGER.info(line)
