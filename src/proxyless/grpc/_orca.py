"""ORCA load reports (gRFC A51), the server's side.

Per request: :func:`backend_metrics` gives a handler the recorder of its
call; each setter writes the call's ``xds.data.orca.v3.OrcaLoadReport``
into its trailing metadata under ``endpoint-load-metrics-bin`` (A51's key),
merged with what the handler set there already, and the same bytes under
``proxyless-endpoint-load-metrics-bin`` (:data:`MIRROR_KEY`): grpcio's
client consumes A51's key inside C-core and never shows it to Python (its
trailing metadata comes without it, though the server sent it), so a
proxyless client reads the mirror. gRPC clients in other languages and
Envoy read A51's key as usual. A server sends the report on every call
whose handler recorded a value, and nothing otherwise: A51 has no per-call
request from the client, and a handler that records nothing pays nothing.
Trailing metadata the handler sets *after* recording replaces the report,
as ``set_trailing_metadata`` replaces all trailers.

Out of band: :func:`orca_service` is the ``xds.service.orca.v3.OpenRcaService``
a server adds to its handlers. ``StreamCoreMetrics`` sends the process-wide
:class:`ServerMetrics` at once and then every ``report_interval`` the client
asked for, but never more often than ``min_interval`` (30 s by default, as
grpc-go's and grpc-java's services do; a client asking for less, or for
nothing, gets ``min_interval``). The stream ends when the client cancels it
or the server stops. :func:`aio_orca_service` is the same for ``grpc.aio``
servers.

The client's side (reading reports into weighted round robin's weights) is
:mod:`proxyless.grpc._orca_client`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from xds.data.orca.v3 import orca_load_report_pb2
from xds.service.orca.v3 import orca_pb2

__all__ = [
    "DEFAULT_MIN_INTERVAL",
    "MIRROR_KEY",
    "OOB_METHOD",
    "ORCA_KEY",
    "BackendMetrics",
    "ServerMetrics",
    "aio_orca_service",
    "backend_metrics",
    "oob_interval",
    "orca_service",
]

#: The trailing metadata key of a per-request ORCA report (gRFC A51).
ORCA_KEY = "endpoint-load-metrics-bin"
#: The same report under a key grpcio's client shows to Python (module docstring).
MIRROR_KEY = "proxyless-endpoint-load-metrics-bin"
#: The out-of-band reporting method (gRFC A51).
OOB_METHOD = "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics"
DEFAULT_MIN_INTERVAL = 30.0

_KEYS = (ORCA_KEY, MIRROR_KEY)
_Report = orca_load_report_pb2.OrcaLoadReport


class BackendMetrics:
    """The backend metric recorder of one server call (module docstring).

    Utilizations are fractions (``cpu_utilization`` may exceed 1 on
    several cores, as A51 allows); qps and eps are per second. A negative or
    NaN value is refused with :class:`ValueError` naming the metric.
    """

    __slots__ = ("_context",)

    def __init__(self, context: Any) -> None:
        self._context = context

    def set_cpu_utilization(self, value: float) -> None:
        self._set("cpu_utilization", value)

    def set_application_utilization(self, value: float) -> None:
        self._set("application_utilization", value)

    def set_memory_utilization(self, value: float) -> None:
        self._set("mem_utilization", value)

    def set_qps(self, value: float) -> None:
        self._set("rps_fractional", value)

    def set_eps(self, value: float) -> None:
        self._set("eps", value)

    def set_named_metric(self, name: str, value: float) -> None:
        """A value of ``named_metrics`` (A51's custom metrics)."""
        checked = _checked(f"named metric {name!r}", value)
        self._change(lambda report: report.named_metrics.__setitem__(name, checked))

    def report(self) -> orca_load_report_pb2.OrcaLoadReport:
        """The report recorded so far (a copy)."""
        return self._report()

    def _set(self, field: str, value: float) -> None:
        checked = _checked(field, value)
        self._change(lambda report: setattr(report, field, checked))

    def _change(self, change: Any) -> None:
        report = self._report()
        change(report)
        self._store(report)

    def _report(self) -> Any:
        for key, value in self._context.trailing_metadata() or ():
            if key == ORCA_KEY:
                return _Report.FromString(value)
        return _Report()

    def _store(self, report: Any) -> None:
        others = [kv for kv in self._context.trailing_metadata() or () if kv[0] not in _KEYS]
        data = report.SerializeToString()
        self._context.set_trailing_metadata((*others, (ORCA_KEY, data), (MIRROR_KEY, data)))


def _checked(what: str, value: float) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError(f"backend metric {what} must be >= 0, got {value!r}")
    return number


def backend_metrics(context: Any) -> BackendMetrics:
    """The ORCA recorder of the call ``context`` (a ``grpc.ServicerContext``
    or ``grpc.aio.ServicerContext``) serves: ``backend_metrics(context).set_cpu_utilization(0.7)``."""
    return BackendMetrics(context)


class ServerMetrics(BackendMetrics):
    """The process-wide load of a server, sent on out-of-band streams
    (:func:`orca_service`): the setters of :class:`BackendMetrics`, kept
    here rather than in a call's trailers. Safe to use from any thread."""

    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        super().__init__(None)
        self._lock = threading.Lock()
        self._value = _Report()

    def _change(self, change: Any) -> None:
        with self._lock:
            change(self._value)

    def _report(self) -> Any:
        copy = _Report()
        with self._lock:
            copy.CopyFrom(self._value)
        return copy

    def __repr__(self) -> str:
        return f"ServerMetrics({self._report()})"


def oob_interval(request: bytes, min_interval: float) -> float:
    """The seconds between reports for a ``StreamCoreMetrics`` request:
    what the client asked for, but at least ``min_interval``."""
    asked = orca_pb2.OrcaLoadReportRequest.FromString(request).report_interval
    return max(float(asked.seconds + asked.nanos / 1e9), min_interval)


def orca_service(
    metrics: ServerMetrics, *, min_interval: float = DEFAULT_MIN_INTERVAL
) -> grpc.GenericRpcHandler[Any, Any]:
    """The ORCA service of a sync server, reporting ``metrics`` (module docstring)."""

    def stream(request: bytes, context: Any) -> Iterator[bytes]:
        interval = oob_interval(request, min_interval)
        done = threading.Event()
        context.add_callback(done.set)
        while context.is_active():
            yield metrics.report().SerializeToString()
            if done.wait(interval):
                return

    return _service(grpc.unary_stream_rpc_method_handler(stream))


def aio_orca_service(
    metrics: ServerMetrics, *, min_interval: float = DEFAULT_MIN_INTERVAL
) -> grpc.GenericRpcHandler[Any, Any]:
    """The ORCA service of a ``grpc.aio`` server, reporting ``metrics``."""

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        interval = oob_interval(request, min_interval)
        while not context.done():
            yield metrics.report().SerializeToString()
            await asyncio.sleep(interval)

    return _service(grpc.unary_stream_rpc_method_handler(stream))


def _service(method: Any) -> grpc.GenericRpcHandler[Any, Any]:
    return grpc.method_handlers_generic_handler(
        "xds.service.orca.v3.OpenRcaService", {"StreamCoreMetrics": method}
    )
