"""ORCA (gRFC A51) pieces free of I/O: the out-of-band interval a server
grants, the process-wide ServerMetrics, and how a report becomes an A58
weight (fake clock)."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2
from xds.data.orca.v3 import orca_load_report_pb2
from xds.service.orca.v3 import orca_pb2

from proxyless.grpc import ServerMetrics
from proxyless.grpc._orca import oob_interval
from proxyless.grpc._orca_client import feed
from proxyless.lb.wrr import EndpointWeight
from proxyless.testing import FakeClock


@pytest.mark.parametrize(
    ("asked", "minimum", "granted"),
    [
        pytest.param(None, 30.0, 30.0, id="nothing-asked-gets-the-minimum"),
        pytest.param(duration_pb2.Duration(seconds=60), 30.0, 60.0, id="longer-is-granted"),
        pytest.param(duration_pb2.Duration(seconds=1), 30.0, 30.0, id="shorter-is-raised"),
        pytest.param(duration_pb2.Duration(nanos=250_000_000), 0.1, 0.25, id="fractions"),
    ],
)
def test_oob_interval(asked: duration_pb2.Duration | None, minimum: float, granted: float) -> None:
    request = orca_pb2.OrcaLoadReportRequest()
    if asked is not None:
        request.report_interval.CopyFrom(asked)
    assert oob_interval(request.SerializeToString(), minimum) == pytest.approx(granted)


def test_server_metrics_keep_the_last_value_of_each_metric() -> None:
    metrics = ServerMetrics()
    metrics.set_cpu_utilization(0.5)
    metrics.set_qps(10.0)
    metrics.set_cpu_utilization(0.25)
    metrics.set_named_metric("queue", 4.0)
    report = metrics.report()
    assert (report.cpu_utilization, report.rps_fractional) == (0.25, 10.0)
    assert dict(report.named_metrics) == {"queue": 4.0}
    report.cpu_utilization = 1.0  # a copy
    assert metrics.report().cpu_utilization == 0.25
    with pytest.raises(ValueError, match="backend metric eps must be >= 0"):
        metrics.set_eps(-1.0)


@pytest.mark.parametrize(
    ("fields", "weight"),
    [
        pytest.param({"cpu_utilization": 0.5, "rps_fractional": 100.0}, 200.0, id="cpu"),
        pytest.param(
            {"cpu_utilization": 0.5, "application_utilization": 0.25, "rps_fractional": 100.0},
            400.0,
            id="application-utilization-wins",
        ),
        pytest.param({"cpu_utilization": 0.5, "rps": 50}, 100.0, id="integer-rps-fallback"),
        pytest.param(
            {"cpu_utilization": 0.5, "rps_fractional": 100.0, "eps": 50.0},
            100.0,
            id="errors-penalised",
        ),
        pytest.param({"rps_fractional": 100.0}, 0.0, id="no-utilization-no-weight"),
    ],
)
def test_a_report_becomes_a_weight(fields: dict[str, float], weight: float) -> None:
    clock = FakeClock(start=0.0)
    target = EndpointWeight(1.0, clock.monotonic)
    feed(target, orca_load_report_pb2.OrcaLoadReport(**fields))
    assert target.weight == pytest.approx(weight)
