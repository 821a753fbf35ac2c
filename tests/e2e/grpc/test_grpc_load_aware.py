"""Load-aware balancing of real gRPC calls: with one loaded or slow endpoint
of three, client_side_weighted_round_robin (gRFC A58, weights from the ORCA
reports the servers' ``backend_metrics`` put in each response) and peak EWMA
(latency measured on the data path) send it clearly less than round robin's
third. Real servers on 127.0.0.1, a real ADS server; thresholds generous,
loops bounded in count and time."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from tests.e2e.grpc.conftest import SERVICE, TARGET, Xds, wait_until

import proxyless.grpc
from proxyless.grpc._orca import MIRROR_KEY, ORCA_KEY
from proxyless.mesh import Mesh
from proxyless.testing.lb_policies import cluster_with_policy, peak_ewma, weighted_round_robin
from proxyless.testing.resources import cluster, route

METHOD = "/test.Load/Call"
CALLS = 300


class LoadServer:
    """Answers every unary call with its name after ``delay`` seconds and,
    when ``utilization`` is set, an ORCA report (cpu ``utilization``, qps 100)."""

    def __init__(self, name: str, delay: float = 0.0, utilization: float | None = None) -> None:
        self.name = name
        self.delay = delay
        self.utilization = utilization
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.unary_unary_rpc_method_handler(self._reply)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Load", {"Call": handler}),)
        )
        self.address = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def _reply(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if self.delay:
            time.sleep(self.delay)
        if self.utilization is not None:
            metrics = proxyless.grpc.backend_metrics(context)
            metrics.set_cpu_utilization(self.utilization)
            metrics.set_qps(100.0)
        return self.name.encode()

    def stop(self) -> None:
        self._server.stop(0).wait()


@pytest.fixture
def load_servers() -> Iterator[Callable[..., LoadServer]]:
    started: list[LoadServer] = []

    def start(name: str, **kw: Any) -> LoadServer:
        started.append(LoadServer(name, **kw))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def _publish(xds: Xds, servers: list[LoadServer], policy: Any) -> None:
    proto = cluster_with_policy(cluster("c"), policy) if policy is not None else None
    xds.cluster("c", [s.address for s in servers], proto=proto)
    xds.service(SERVICE, [route(prefix="/", cluster="c")])


def _shares(call: Callable[..., bytes], count: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + 30
    for _ in range(count):
        counts[call(b"x", timeout=5).decode()] += 1
        if time.monotonic() > deadline:
            break
    return counts


def test_backend_metrics_reach_the_client_in_trailing_metadata(
    load_servers: Callable[..., LoadServer],
) -> None:
    from xds.data.orca.v3 import orca_load_report_pb2

    server = load_servers("a", utilization=0.25)
    with grpc.insecure_channel(server.address) as channel:
        _, call = channel.unary_unary(METHOD).with_call(b"x", timeout=5)
        trailers = dict(call.trailing_metadata())
    # grpcio's client keeps A51's key to itself; the mirror carries the same report
    assert ORCA_KEY not in trailers
    report = orca_load_report_pb2.OrcaLoadReport.FromString(trailers[MIRROR_KEY])
    assert (report.cpu_utilization, report.rps_fractional) == (0.25, 100.0)
    silent = load_servers("b")
    with grpc.insecure_channel(silent.address) as channel:
        _, call = channel.unary_unary(METHOD).with_call(b"x", timeout=5)
        assert MIRROR_KEY not in dict(call.trailing_metadata() or ())


def test_the_server_sends_a51s_key_on_the_wire(load_servers: Callable[..., LoadServer]) -> None:
    """Read with a bare HTTP/2 client: the response trailers carry the report
    under ``endpoint-load-metrics-bin`` (base64, as binary metadata is sent)."""
    import base64
    import socket

    import h2.config
    import h2.connection
    import h2.events
    from xds.data.orca.v3 import orca_load_report_pb2

    server = load_servers("a", utilization=0.5)
    host, port = server.address.rsplit(":", 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", METHOD),
            (":authority", "a"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
    )
    conn.send_data(1, b"\x00\x00\x00\x00\x01x", end_stream=True)
    trailers: dict[bytes, bytes] = {}
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        for _ in range(50):  # bounded: a handful of frames
            data = sock.recv(65535)
            if not data:
                break
            events = conn.receive_data(data)
            sock.sendall(conn.data_to_send())
            for event in events:
                if isinstance(event, h2.events.TrailersReceived):
                    trailers = dict(event.headers)
            if trailers:
                break
    raw = trailers[ORCA_KEY.encode()]
    report = orca_load_report_pb2.OrcaLoadReport.FromString(base64.b64decode(raw + b"=="))
    assert report.cpu_utilization == 0.5


def test_weighted_round_robin_sends_less_to_the_endpoint_reporting_more_load(
    xds: Xds, mesh: Mesh, load_servers: Callable[..., LoadServer]
) -> None:
    servers = [
        load_servers("a", utilization=0.2),
        load_servers("b", utilization=0.2),
        load_servers("loaded", utilization=0.8),
    ]
    _publish(xds, servers, weighted_round_robin(blackout_period=0, weight_update_period=0.1))
    call = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(METHOD)
    call(b"warm-up", timeout=10)

    def weights_known() -> bool:
        _shares(call, 15)
        lb = mesh.clusters.get("c")
        return lb is not None and all(e.orca and e.orca.weight > 0 for e in lb.endpoints())

    wait_until(weights_known, what="every endpoint's ORCA weight")
    time.sleep(0.15)  # one weight_update_period, so the next pick reschedules
    counts = _shares(call, CALLS)
    # weights 500 : 500 : 125, so the loaded endpoint's share is 1/9 (round robin: 1/3)
    assert counts["loaded"] < 0.2 * CALLS, counts
    assert counts["a"] > 0.3 * CALLS and counts["b"] > 0.3 * CALLS, counts


def test_peak_ewma_sends_less_to_the_slow_endpoint(
    xds: Xds, mesh: Mesh, load_servers: Callable[..., LoadServer]
) -> None:
    servers = [
        load_servers("a"),
        load_servers("b"),
        load_servers("slow", delay=0.030),
    ]
    # a short decay, so that the first calls' peaks (connections being made)
    # are forgotten within the warm-up
    _publish(xds, servers, peak_ewma(decay="0.25s", default_rtt="0.005s"))
    call = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(METHOD)
    call(b"warm-up", timeout=10)
    _shares(call, 30)
    wait_until(lambda: mesh.clusters.get("c") is not None, what="cluster c")
    lb = mesh.clusters.get("c")
    assert lb is not None and lb.lb.latency is not None
    counts = _shares(call, CALLS)
    assert counts["slow"] < 0.15 * CALLS, counts
    assert counts["a"] + counts["b"] + counts["slow"] == CALLS


def test_round_robin_measures_nothing(
    xds: Xds, mesh: Mesh, load_servers: Callable[..., LoadServer]
) -> None:
    servers = [load_servers("a", utilization=0.5), load_servers("b")]
    _publish(xds, servers, None)
    call = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(METHOD)
    counts = _shares(call, 20)
    assert counts == {"a": 10, "b": 10}, counts
    lb = mesh.clusters.get("c")
    assert lb is not None and lb.lb.latency is None
    assert all(e.orca is None and e.rtt is None for e in lb.endpoints())


def test_aio_calls_feed_the_weights_too(
    xds: Xds, mesh: Mesh, load_servers: Callable[..., LoadServer]
) -> None:
    import asyncio

    import proxyless.grpc.aio

    servers = [load_servers("a", utilization=0.2), load_servers("b", utilization=0.8)]
    _publish(xds, servers, weighted_round_robin(blackout_period=0))

    async def main() -> None:
        call = proxyless.grpc.aio.channel(TARGET, mesh=mesh).unary_unary(METHOD)
        for _ in range(20):
            await call(b"x", timeout=5)

    asyncio.run(main())
    lb = mesh.clusters.get("c")
    assert lb is not None
    weights = {e.address: e.orca.weight for e in lb.endpoints()}
    assert weights == {servers[0].address: 500.0, servers[1].address: 125.0}, weights
