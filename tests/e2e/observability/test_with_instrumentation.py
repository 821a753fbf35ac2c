"""proxyless next to OpenTelemetry's own httpx and gRPC instrumentation:
plain clients and channels are traced by the instrumentation, proxyless
ones by proxyless, and no call is traced twice (docs/observability.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

import proxyless.httpx
from proxyless.mesh import Mesh

from .conftest import HttpEcho, Otel, Publisher, header

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def httpx_instrumented(otel: Otel) -> Iterator[None]:
    inst = HTTPXClientInstrumentor()
    inst.instrument(tracer_provider=otel.tracer_provider)
    try:
        yield
    finally:
        inst.uninstrument()


def test_httpx_instrumentation_traces_plain_clients_and_not_proxyless_attempts(
    otel: Otel, httpx_instrumented: None, mesh: Mesh, publisher: Publisher
) -> None:
    b = HttpEcho("b").start()
    try:
        publisher.service("b.test", [b.address])
        with httpx.Client(
            transport=proxyless.httpx.Transport(mesh=mesh, hosts=["b.test"]), timeout=10
        ) as mesh_client:
            record = mesh_client.get("http://b.test/mesh").json()
        with httpx.Client(timeout=10) as plain:
            plain.get(f"http://{b.address}/plain")
    finally:
        b.stop()
    ours = [s for s in otel.finished() if s.instrumentation_scope.name == "proxyless"]
    theirs = [s for s in otel.finished() if s.instrumentation_scope.name != "proxyless"]
    assert sorted(s.name for s in ours) == ["Attempt GET", "GET"]
    assert len(theirs) == 1  # the plain client's request only
    (attempt,) = [s for s in ours if s.name == "Attempt GET"]
    (traceparent,) = header(record, "traceparent")
    assert int(traceparent.split("-")[2], 16) == attempt.context.span_id


_GRPC_SCRIPT = r"""
import json, sys
import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient

spans = InMemorySpanExporter()
tp = TracerProvider()
tp.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tp)  # the instrumentation traces to the global provider
GrpcInstrumentorClient().instrument()

import proxyless.grpc
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply
from proxyless.testing.resources import (
    CLUSTER_URL, ENDPOINT_URL, LISTENER_URL, ROUTE_URL,
    cluster, endpoints, listener, route, route_config,
)

ads = AdsServer(); ads.start()
b = EchoServer("b").start()
ads.set_resource(ENDPOINT_URL, "c", endpoints("c", [b.address]))
ads.set_resource(CLUSTER_URL, "c", cluster("c"))
ads.set_resource(ROUTE_URL, "r", route_config("r", ["svc:80"], [route(prefix="/", cluster="c")]))
ads.set_resource(LISTENER_URL, "svc:80", listener("svc:80", "r"))
mesh = Mesh({"xds_servers": [{"server_uri": ads.target, "channel_creds": [{"type": "insecure"}]}],
             "node": {"id": "instrumented"}})
ch = proxyless.grpc.channel("xds:///svc:80", mesh=mesh)
with tp.get_tracer("test").start_as_current_span("root"):
    meta = decode_reply(ch.unary_unary(ECHO_METHOD)(b"x", timeout=10))["metadata"]
    plain = grpc.insecure_channel(b.address)
    plain.unary_unary(ECHO_METHOD)(b"x", timeout=10)
out = [{"name": s.name, "scope": s.instrumentation_scope.name, "span_id": s.context.span_id,
        "kind": s.kind.name} for s in spans.get_finished_spans()]
print(json.dumps({"spans": out, "traceparent": meta.get("traceparent")}))
mesh.close(); b.stop(0); ads.stop()
"""


def test_grpc_instrumentation_traces_plain_channels_and_not_proxyless_attempts() -> None:
    """In a process of its own: the instrumentation needs the global tracer
    provider, which a process can set only once."""
    done = subprocess.run(
        [sys.executable, "-c", _GRPC_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    ours = [s for s in got["spans"] if s["scope"] == "proxyless"]
    theirs = [s for s in got["spans"] if s["scope"] != "proxyless" and s["name"] != "root"]
    assert sorted(s["name"] for s in ours) == [
        "Attempt.proxyless.test.Echo/Echo",
        "Sent.proxyless.test.Echo/Echo",
    ]
    assert [s["name"] for s in theirs] == ["/proxyless.test.Echo/Echo"]  # the plain channel only
    (attempt,) = [s for s in ours if s["name"].startswith("Attempt.")]
    assert int(got["traceparent"].split("-")[2], 16) == attempt["span_id"]
