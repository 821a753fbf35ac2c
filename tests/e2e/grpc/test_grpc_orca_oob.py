"""Out-of-band ORCA reports (gRFC A51 ``StreamCoreMetrics``) feeding
client_side_weighted_round_robin with ``enable_oob_load_report`` (gRFC A58):
servers report process-wide load through ``proxyless.grpc.orca_service``,
nothing per call, and the loaded endpoint gets clearly less traffic; a
server without the service leaves the policy round robin. Sync and aio
channels; real servers on 127.0.0.1, a real ADS server; bounded loops."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from tests.e2e.grpc.conftest import SERVICE, TARGET, Xds, wait_until

import proxyless.grpc
import proxyless.grpc.aio
from proxyless.mesh import Mesh
from proxyless.testing.lb_policies import cluster_with_policy, weighted_round_robin
from proxyless.testing.resources import cluster, route

METHOD = "/test.Oob/Call"
CALLS = 300


class OobServer:
    """Answers every unary call with its name; with ``utilization`` it also
    serves the ORCA service reporting cpu ``utilization`` at qps 100."""

    def __init__(self, name: str, utilization: float | None) -> None:
        self.name = name
        self.metrics = proxyless.grpc.ServerMetrics()
        handlers = [
            grpc.method_handlers_generic_handler(
                "test.Oob", {"Call": grpc.unary_unary_rpc_method_handler(self._reply)}
            )
        ]
        if utilization is not None:
            self.metrics.set_cpu_utilization(utilization)
            self.metrics.set_qps(100.0)
            handlers.append(proxyless.grpc.orca_service(self.metrics, min_interval=0.05))
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers(handlers)
        self.address = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def _reply(self, request: bytes, context: Any) -> bytes:
        return self.name.encode()

    def stop(self) -> None:
        self._server.stop(0).wait()


@pytest.fixture
def oob_servers() -> Iterator[Callable[..., OobServer]]:
    started: list[OobServer] = []

    def start(name: str, utilization: float | None = None) -> OobServer:
        started.append(OobServer(name, utilization))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def _publish(xds: Xds, servers: list[OobServer]) -> None:
    policy = weighted_round_robin(
        blackout_period=0, weight_update_period=0.1, oob_reporting_period=0.1
    )
    xds.cluster("c", [s.address for s in servers], proto=cluster_with_policy(cluster("c"), policy))
    xds.service(SERVICE, [route(prefix="/", cluster="c")])


def _weights(mesh: Mesh) -> dict[str, float]:
    lb = mesh.clusters.get("c")
    return {} if lb is None else {e.address: e.orca.weight for e in lb.endpoints() if e.orca}


def test_oob_reports_weigh_the_endpoints(
    xds: Xds, mesh: Mesh, oob_servers: Callable[..., OobServer]
) -> None:
    servers = [oob_servers("a", 0.2), oob_servers("b", 0.2), oob_servers("loaded", 0.8)]
    _publish(xds, servers)
    call = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(METHOD)

    def all_weighed() -> bool:
        for _ in range(6):
            call(b"x", timeout=5)
        return sorted(_weights(mesh).values()) == [125.0, 500.0, 500.0]

    wait_until(all_weighed, what="weights from the ORCA streams")
    time.sleep(0.15)  # one weight_update_period
    counts: Counter[str] = Counter(call(b"x", timeout=5).decode() for _ in range(CALLS))
    assert counts["loaded"] < 0.2 * CALLS, counts
    # the servers' load changes: the weights follow within a few periods
    servers[2].metrics.set_cpu_utilization(0.2)
    wait_until(lambda: _weights(mesh)[servers[2].address] == 500.0, what="the new weight")


def test_a_server_without_the_service_leaves_round_robin(
    xds: Xds, mesh: Mesh, oob_servers: Callable[..., OobServer]
) -> None:
    servers = [oob_servers("a"), oob_servers("b")]
    _publish(xds, servers)
    call = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(METHOD)
    counts: Counter[str] = Counter(call(b"x", timeout=5).decode() for _ in range(40))
    assert counts == {"a": 20, "b": 20}, counts
    assert set(_weights(mesh).values()) == {0.0}


def test_aio_channel_starts_the_streams_on_its_loop(
    xds: Xds, mesh: Mesh, oob_servers: Callable[..., OobServer]
) -> None:
    servers = [oob_servers("a", 0.2), oob_servers("b", 0.8)]
    _publish(xds, servers)

    async def main() -> None:
        call = proxyless.grpc.aio.channel(TARGET, mesh=mesh).unary_unary(METHOD)
        deadline = time.monotonic() + 10
        while sorted(_weights(mesh).values()) != [125.0, 500.0]:
            assert time.monotonic() < deadline, _weights(mesh)
            await call(b"x", timeout=5)
            await asyncio.sleep(0.02)

    asyncio.run(main())


def test_the_service_streams_the_current_metrics(oob_servers: Callable[..., OobServer]) -> None:
    from xds.data.orca.v3 import orca_load_report_pb2
    from xds.service.orca.v3 import orca_pb2

    from proxyless.grpc._orca import OOB_METHOD

    server = oob_servers("a", 0.5)
    request = orca_pb2.OrcaLoadReportRequest()  # no interval: the server's minimum
    with grpc.insecure_channel(server.address) as channel:
        stream = channel.unary_stream(OOB_METHOD)(request.SerializeToString(), timeout=5)
        first = orca_load_report_pb2.OrcaLoadReport.FromString(next(stream))
        server.metrics.set_named_metric("queue", 3.0)
        second = orca_load_report_pb2.OrcaLoadReport.FromString(next(stream))
        stream.cancel()
    assert (first.cpu_utilization, first.rps_fractional) == (0.5, 100.0)
    assert dict(second.named_metrics) == {"queue": 3.0}
