"""ORCA load reports (gRFC A51) into weighted round robin's weights (gRFC A58).

An endpoint of a ``client_side_weighted_round_robin`` cluster has an
:class:`~proxyless.lb.wrr.EndpointWeight` (:attr:`EndpointState.orca`); the
attempt executors call in here only for such endpoints.

Per request (the default): a blocking unary-response attempt is made with
``with_call`` so that its trailers can be read, and the report found there,
on success or on error, goes to the weight (:func:`start_reporting`); a
``grpc.aio`` unary attempt's trailers are read when it succeeds
(:func:`read_aio_report`). The report is looked for under A51's key and
under proxyless' mirror (:data:`~proxyless.grpc._orca.MIRROR_KEY`), which is
the one grpcio lets Python see: reports of servers that send only A51's key
(grpc-go, grpc-java, C-core servers) do not reach a grpcio client this way;
out-of-band reporting does. Response-streaming calls do not read reports.

Out of band (``enable_oob_load_report``): per-request reports are not read
(A58). The first attempt that finds no stream running starts one
``StreamCoreMetrics`` stream for the endpoint on the connection the attempt
uses, asking for a report every ``oob_reporting_period``
(:func:`ensure_stream`). A sync channel's stream is read by a daemon thread
(``proxyless-orca-oob``), an aio channel's by a task on its loop; it ends
when the weight stops it (the endpoint left, the policy changed), when the
connection closes or when the server ends it. A new stream is started by a
later attempt, no sooner than ``max(oob_reporting_period, 1 s)`` after the
last one started, so a server without the service (UNIMPLEMENTED) costs one
failed stream per period.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError
from xds.data.orca.v3 import orca_load_report_pb2
from xds.service.orca.v3 import orca_pb2

from proxyless.grpc._orca import MIRROR_KEY, OOB_METHOD, ORCA_KEY
from proxyless.lb.state import EndpointState

__all__ = ["ensure_stream", "feed", "read_aio_report", "read_report", "start_reporting"]

#: The shortest time between two stream starts for one endpoint (seconds).
MIN_RESTART = 1.0

_Report = orca_load_report_pb2.OrcaLoadReport
_LOCK = threading.Lock()


def feed(weight: Any, report: Any) -> None:
    """One report into an endpoint's weight (A58: utilization is
    ``application_utilization`` when set, else ``cpu_utilization``)."""
    utilization = report.application_utilization or report.cpu_utilization
    qps = report.rps_fractional or float(report.rps)
    weight.report(qps, report.eps, utilization)


def read_report(endpoint: EndpointState, trailing: Any) -> None:
    """Give the ORCA report in ``trailing`` (if any) to ``endpoint``'s weight."""
    weight = endpoint.orca
    if weight is None or weight.oob_period is not None or not trailing:
        return
    for key, value in trailing:
        if key == MIRROR_KEY or key == ORCA_KEY:
            try:
                report = _Report.FromString(value)
            except DecodeError:
                return  # a bad report is no report (A58: nothing is done)
            feed(weight, report)
            return


def start_reporting(inv: Any, attempt: Any, request: Any) -> Any:
    """``inv.start`` for an attempt on a weighted round robin endpoint
    (see the module docstring)."""
    endpoint = attempt.endpoint
    weight = endpoint.orca
    if weight is not None and weight.oob_period is not None:
        ensure_stream(endpoint, attempt.conn.channel)
        return inv.start(attempt.conn, attempt.timeout, request=request)
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


async def read_aio_report(endpoint: EndpointState, call: Any, channel: Any) -> None:
    """After a successful ``grpc.aio`` unary attempt on ``channel``: its
    report, or the endpoint's out-of-band stream."""
    weight = endpoint.orca
    if weight is not None and weight.oob_period is not None:
        ensure_stream(endpoint, channel)
        return
    read_report(endpoint, await call.trailing_metadata())


class _Stream:
    """One endpoint's out-of-band stream, as its weight holds it."""

    __slots__ = ("call", "ended", "started")

    def __init__(self, call: Any, started: float) -> None:
        self.call = call
        self.started = started
        self.ended = False

    def cancel(self) -> None:
        self.call.cancel()


def ensure_stream(endpoint: EndpointState, channel: Any) -> None:
    """Start ``endpoint``'s out-of-band stream on ``channel`` (sync or aio)
    unless one runs or the last one started less than a period ago."""
    weight = endpoint.orca
    if weight is None or weight.oob_period is None:
        return
    running = weight.stream
    now = time.monotonic()
    if running is not None and (
        not running.ended or now - running.started < max(weight.oob_period, MIN_RESTART)
    ):
        return
    with _LOCK:
        if weight.stream is not running:
            return  # another attempt started one meanwhile
        interval = duration_pb2.Duration()
        interval.FromNanoseconds(round(weight.oob_period * 1e9))
        request = orca_pb2.OrcaLoadReportRequest(report_interval=interval)
        stream = _Stream(channel.unary_stream(OOB_METHOD)(request.SerializeToString()), now)
        weight.stream = stream
    if isinstance(channel, grpc.aio.Channel):
        asyncio.get_running_loop().create_task(_read_aio(endpoint, weight, stream))
    else:
        threading.Thread(
            target=_read, args=(endpoint, weight, stream), name="proxyless-orca-oob", daemon=True
        ).start()


def _read(endpoint: EndpointState, weight: Any, stream: _Stream) -> None:
    try:
        for raw in stream.call:
            if endpoint.orca is not weight or weight.stream is not stream:
                stream.cancel()
                break
            feed(weight, _Report.FromString(raw))
    except grpc.RpcError:
        pass  # cancelled, connection closed, or no ORCA service: a later attempt retries
    finally:
        stream.ended = True


async def _read_aio(endpoint: EndpointState, weight: Any, stream: _Stream) -> None:
    try:
        async for raw in stream.call:
            if endpoint.orca is not weight or weight.stream is not stream:
                stream.cancel()
                break
            feed(weight, _Report.FromString(raw))
    except grpc.RpcError:
        pass
    finally:
        stream.ended = True
