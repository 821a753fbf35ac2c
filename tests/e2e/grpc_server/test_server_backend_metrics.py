"""``proxyless.grpc.backend_metrics`` on the xDS-enabled servers, sync and
aio: the handler's ORCA report (gRFC A51) reaches the client in trailing
metadata, merged with the handler's own trailers; nothing is sent by a
handler that records nothing; a bad value is refused naming the metric."""

from __future__ import annotations

import asyncio
import time
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest
from tests.e2e.grpc_server.conftest import disable, publish
from xds.data.orca.v3 import orca_load_report_pb2

import proxyless.grpc
import proxyless.grpc.aio
from proxyless.controlplane.server import AdsServer
from proxyless.grpc._orca import MIRROR_KEY
from proxyless.mesh import Mesh

METHOD = "/test.Metrics/Call"


def _record(request: bytes, context: Any) -> bytes:
    context.set_trailing_metadata((("x-handler", "kept"),))
    if request == b"record":
        metrics = proxyless.grpc.backend_metrics(context)
        metrics.set_cpu_utilization(0.5)
        metrics.set_application_utilization(0.25)
        metrics.set_memory_utilization(0.125)
        metrics.set_qps(40.0)
        metrics.set_eps(2.0)
        metrics.set_named_metric("queue", 7.0)
        metrics.set_cpu_utilization(0.75)  # a second value replaces the first
    if request == b"bad":
        try:
            proxyless.grpc.backend_metrics(context).set_qps(-1.0)
        except ValueError as exc:
            return str(exc).encode()
    return b"ok"


async def _record_aio(request: bytes, context: Any) -> bytes:
    return _record(request, context)


def _handlers(fn: Any) -> list[Any]:
    return [
        grpc.method_handlers_generic_handler(
            "test.Metrics", {"Call": grpc.unary_unary_rpc_method_handler(fn)}
        )
    ]


def _check(trailers: dict[str, Any]) -> None:
    report = orca_load_report_pb2.OrcaLoadReport.FromString(trailers[MIRROR_KEY])
    assert report.cpu_utilization == 0.75
    assert report.application_utilization == 0.25
    assert report.mem_utilization == 0.125
    assert (report.rps_fractional, report.eps) == (40.0, 2.0)
    assert dict(report.named_metrics) == {"queue": 7.0}
    assert trailers["x-handler"] == "kept"


def _wait_serving(server: Any) -> None:
    deadline = time.monotonic() + 10
    while not server.serving():
        assert time.monotonic() < deadline, "the server never started serving"
        time.sleep(0.01)


def test_sync_server(ads: AdsServer, mesh: Mesh) -> None:
    server = proxyless.grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), mesh=mesh, handlers=_handlers(_record)
    )
    port = server.add_port("127.0.0.1:0")
    server.start()
    try:
        publish(ads, port, disable())
        _wait_serving(server)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(METHOD)
            _, recorded = call.with_call(b"record", timeout=5)
            _check(dict(recorded.trailing_metadata()))
            _, silent = call.with_call(b"nothing", timeout=5)
            assert dict(silent.trailing_metadata()) == {"x-handler": "kept"}
            refused = call(b"bad", timeout=5).decode()
            assert refused == "backend metric rps_fractional must be >= 0, got -1.0"
    finally:
        server.stop(0).wait(5)


def test_aio_server(ads: AdsServer, mesh: Mesh) -> None:
    async def main() -> None:
        server = proxyless.grpc.aio.server(mesh=mesh, handlers=_handlers(_record_aio))
        port = server.add_port("127.0.0.1:0")
        await server.start()
        try:
            publish(ads, port, disable())
            for _ in range(500):
                if server.serving():
                    break
                await asyncio.sleep(0.01)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary(METHOD)(b"record", timeout=5)
                await call
                _check(dict(await call.trailing_metadata()))
        finally:
            await server.stop(0)

    asyncio.run(main())


@pytest.mark.parametrize("value", [-0.5, float("nan")], ids=["negative", "nan"])
def test_bad_values_are_refused_before_anything_is_sent(value: float) -> None:
    class Context:
        def trailing_metadata(self) -> tuple[()]:
            return ()

        def set_trailing_metadata(self, md: Any) -> None:
            raise AssertionError("nothing may be set")

    with pytest.raises(ValueError, match="backend metric cpu_utilization must be >= 0"):
        proxyless.grpc.backend_metrics(Context()).set_cpu_utilization(value)


def test_aio_server_orca_service_streams_server_metrics(ads: AdsServer, mesh: Mesh) -> None:
    from proxyless.grpc._orca import OOB_METHOD

    metrics = proxyless.grpc.ServerMetrics()
    metrics.set_application_utilization(0.3)

    async def main() -> None:
        server = proxyless.grpc.aio.server(
            mesh=mesh,
            handlers=[proxyless.grpc.aio.orca_service(metrics, min_interval=0.01)],
        )
        port = server.add_port("127.0.0.1:0")
        await server.start()
        try:
            publish(ads, port, disable())
            for _ in range(500):
                if server.serving():
                    break
                await asyncio.sleep(0.01)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_stream(OOB_METHOD)(b"", timeout=5)
                seen = []
                async for raw in call:
                    seen.append(orca_load_report_pb2.OrcaLoadReport.FromString(raw))
                    metrics.set_application_utilization(0.6)
                    if len(seen) == 2:
                        call.cancel()
                        break
            assert [r.application_utilization for r in seen] == [0.3, 0.6]
        finally:
            await server.stop(0)

    asyncio.run(main())
