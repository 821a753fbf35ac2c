"""ORCA per-request load reports (gRFC A51), both ends.

Server side: :func:`backend_metrics` gives a handler the recorder of its
call; each setter writes the call's ``xds.data.orca.v3.OrcaLoadReport``
into its trailing metadata under ``endpoint-load-metrics-bin`` (A51's key),
merged with what the handler set there already, and the same bytes under
``proxyless-endpoint-load-metrics-bin`` (:data:`MIRROR_KEY`): grpcio's
client consumes A51's key inside C-core and never shows it to Python (its
trailing metadata comes without it, though the server sent it), so a
proxyless client reads the mirror. gRPC clients in other languages and
Envoy read A51's key as usual. A server sends the report
on every call whose handler recorded a value, and nothing otherwise: A51
has no per-call request from the client, and a handler that records nothing
pays nothing. Trailing metadata the handler sets *after* recording replaces
the report, as ``set_trailing_metadata`` replaces all trailers.

Client side: when an endpoint belongs to a weighted round robin cluster
(gRFC A58; its :attr:`~proxyless.lb.state.EndpointState.orca` is set), a
blocking unary attempt on it is made with ``with_call`` so that its
trailers can be read, and the report found there, on success or on error,
goes to the endpoint's weight (:func:`start_reporting`); a ``grpc.aio``
unary attempt's trailers are read when it succeeds (:func:`read_aio_report`). The report is
looked for under both keys; reports of servers that send only A51's key
(grpc-go, grpc-java, C-core servers) do not reach a grpcio client, whose
weights then stay unknown and whose picks stay round robin (A58's rule for
fewer than two weights). Response-streaming
calls do not read reports.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import DecodeError
from xds.data.orca.v3 import orca_load_report_pb2

from proxyless.lb.state import EndpointState

__all__ = [
    "MIRROR_KEY",
    "ORCA_KEY",
    "BackendMetrics",
    "backend_metrics",
    "read_aio_report",
    "read_report",
    "start_reporting",
]

#: The trailing metadata key of a per-request ORCA report (gRFC A51).
ORCA_KEY = "endpoint-load-metrics-bin"
#: The same report under a key grpcio's client shows to Python (module docstring).
MIRROR_KEY = "proxyless-endpoint-load-metrics-bin"
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
        report = self._report()
        report.named_metrics[name] = _checked(f"named metric {name!r}", value)
        self._store(report)

    def report(self) -> orca_load_report_pb2.OrcaLoadReport:
        """The report recorded so far (a copy)."""
        return self._report()

    def _set(self, field: str, value: float) -> None:
        report = self._report()
        setattr(report, field, _checked(field, value))
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


def read_report(endpoint: EndpointState, trailing: Any) -> None:
    """Give the ORCA report in ``trailing`` (if any) to ``endpoint``'s weight."""
    weight = endpoint.orca
    if weight is None or not trailing:
        return
    for key, value in trailing:
        if key == MIRROR_KEY or key == ORCA_KEY:
            try:
                report = _Report.FromString(value)
            except DecodeError:
                return  # a bad report is no report (A58: nothing is done)
            utilization = report.application_utilization or report.cpu_utilization
            qps = report.rps_fractional or float(report.rps)
            weight.report(qps, report.eps, utilization)
            return


async def read_aio_report(endpoint: EndpointState, call: Any) -> None:
    """:func:`read_report` for a finished ``grpc.aio`` unary call."""
    read_report(endpoint, await call.trailing_metadata())


def start_reporting(inv: Any, attempt: Any, request: Any) -> Any:
    """``inv.start`` for an attempt whose endpoint wants ORCA reports: unary
    calls go through ``with_call`` and their trailers are read."""
    endpoint = attempt.endpoint
    kind = inv.kind
    try:
        if kind == "unary_unary" or kind == "stream_unary":
            response, call = inv.start(
                attempt.conn, attempt.timeout, request=request, attr="with_call"
            )
            read_report(endpoint, call.trailing_metadata())
            return response
        result = inv.start(attempt.conn, attempt.timeout, request=request)
        if kind.endswith("_with_call"):
            read_report(endpoint, result[1].trailing_metadata())
        return result
    except grpc.RpcError as err:
        trailing = getattr(err, "trailing_metadata", None)
        if trailing is not None:
            read_report(endpoint, trailing())
        raise
