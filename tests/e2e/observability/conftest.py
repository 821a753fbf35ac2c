"""Fixtures of the observability tests: the OpenTelemetry SDK with in-memory
exporters, and a two-hop mesh on 127.0.0.1.

The SDK's providers are given to proxyless with
``proxyless.observability.configure`` (the global providers can be set
once per process, and other tests share it); the propagator is the global
one, set per test and restored.

``chain`` builds: a client -> service ``a.test:80`` (a proxyless
xDS-enabled gRPC server whose handler calls ``b.test`` through a proxyless
httpx client) -> service ``b.test:80`` (an HTTP echo server). Every
resource goes through one real ADS server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from tests.e2e.conftest import bootstrap_for, wait_until
from tests.e2e.grpc_server.conftest import TEMPLATE, disable, inbound_listener
from tests.e2e.httpx.conftest import HttpEcho

import proxyless.grpc
import proxyless.httpx
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.observability import settings
from proxyless.testing.resources import (
    CLUSTER_URL,
    ENDPOINT_URL,
    LISTENER_URL,
    ROUTE_URL,
    cluster,
    endpoints,
    listener,
    route,
    route_config,
)

A_METHOD = "/test.A/Call"


@dataclass
class Otel:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name == name]

    def metrics(self) -> dict[str, list[Any]]:
        """Metric name -> its data points."""
        out: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out.setdefault(m.name, []).extend(m.data.data_points)
        return out


DEFAULT_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    settings.configure(tracer_provider=tp, meter_provider=mp)
    try:
        yield Otel(spans, reader, tp, mp)
    finally:
        settings.configure(tracer_provider=None, meter_provider=None, access_log=False)
        propagate.set_global_textmap(DEFAULT_PROPAGATOR)
        tp.shutdown()
        mp.shutdown()


class Publisher:
    """Publishes services one resource at a time on an ADS server."""

    def __init__(self, ads: AdsServer) -> None:
        self.ads = ads

    def service(self, name: str, addresses: list[str], **route_kw: Any) -> None:
        rc, cl = f"{name}-routes", f"{name}-cluster"
        host = name.split(":")[0]
        self.ads.set_resource(ENDPOINT_URL, cl, endpoints(cl, addresses))
        self.ads.set_resource(CLUSTER_URL, cl, cluster(cl))
        self.ads.set_resource(
            ROUTE_URL,
            rc,
            route_config(rc, sorted({name, host}), [route(prefix="/", cluster=cl, **route_kw)]),
        )
        self.ads.set_resource(LISTENER_URL, name, listener(name, rc))

    def inbound(self, port: int) -> None:
        name = TEMPLATE % f"127.0.0.1:{port}"
        self.ads.set_resource(
            LISTENER_URL, name, inbound_listener(name, "127.0.0.1", port, disable())
        )


@pytest.fixture
def publisher(ads: AdsServer) -> Publisher:
    return Publisher(ads)


@pytest.fixture
def mesh(ads: AdsServer) -> Iterator[Mesh]:
    m = Mesh(
        bootstrap_for(ads, "e2e-observability", server_listener_resource_name_template=TEMPLATE)
    )
    yield m
    m.close()
    from tests.e2e.conftest import close_endpoint_pools

    close_endpoint_pools()


@dataclass
class Chain:
    b: HttpEcho
    a_port: int
    channel: grpc.Channel
    http: httpx.Client

    def call(
        self, path: str = "/hop", metadata: Any = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Call A, which calls B at ``path``; B's record of the request."""
        fn = self.channel.unary_unary(A_METHOD)
        reply: dict[str, Any] = json.loads(fn(path.encode(), timeout=timeout, metadata=metadata))
        return reply


@pytest.fixture
def chain(mesh: Mesh, publisher: Publisher) -> Iterator[Callable[..., Chain]]:
    made: list[Any] = []

    def make(**b_route: Any) -> Chain:
        b = HttpEcho("b").start()
        made.append(b.stop)
        publisher.service("b.test", [b.address], **b_route)
        http = httpx.Client(
            transport=proxyless.httpx.Transport(mesh=mesh, hosts=["b.test"]), timeout=10.0
        )
        made.append(http.close)

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            response = http.get(f"http://b.test{request.decode()}")
            return response.content

        handler = grpc.method_handlers_generic_handler(
            "test.A", {"Call": grpc.unary_unary_rpc_method_handler(handle)}
        )
        server = proxyless.grpc.server(futures.ThreadPoolExecutor(4), mesh=mesh, handlers=[handler])
        port = server.add_port("127.0.0.1:0")
        publisher.inbound(port)
        server.start()
        made.append(lambda: server.stop(0).wait(5))
        wait_until(lambda: server.serving(port), what="A's inbound listener")
        publisher.service("a.test:80", [f"127.0.0.1:{port}"])
        ch = proxyless.grpc.channel("xds:///a.test:80", mesh=mesh)
        made.append(ch.close)
        return Chain(b, port, ch, http)

    yield make
    for fn in reversed(made):
        fn()


def header(record: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in record["headers"] if k == name]
