"""Trace propagation and spans across two hops (issue: observability).

client --gRPC--> A (proxyless server; handler calls B with proxyless httpx)
--HTTP--> B (echo). One trace id end to end, parent/child links right,
the backend sees the expected headers, in W3C and in B3 mode; a retried
call shows one call span and N attempt spans.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry import propagate, trace
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.sdk.trace import ReadableSpan
from tests.e2e.httpx.conftest import retry_policy

import proxyless.grpc.aio
import proxyless.httpx
from proxyless.mesh import Mesh
from proxyless.observability import settings

from .conftest import A_METHOD, Chain, HttpEcho, Otel, Publisher, header

pytestmark = pytest.mark.timeout(60)


def _one(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def _parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


def test_one_trace_from_client_through_a_to_b_in_w3c_mode(
    otel: Otel, chain: Callable[..., Chain]
) -> None:
    c = chain()
    root_tracer = otel.tracer_provider.get_tracer("test")
    with root_tracer.start_as_current_span("root") as root:
        record = c.call()
    trace_id = root.get_span_context().trace_id

    sent = _one(otel.named("Sent.test.A/Call"))
    attempt = _one(otel.named("Attempt.test.A/Call"))
    recv = _one(otel.named("Recv.test.A/Call"))
    get = _one(otel.named("GET"))
    get_attempt = _one(otel.named("Attempt GET"))
    for span in (sent, attempt, recv, get, get_attempt):
        assert span.context.trace_id == trace_id, span.name
    assert _parent_of(sent) == root.get_span_context().span_id
    assert _parent_of(attempt) == sent.context.span_id
    assert _parent_of(recv) == attempt.context.span_id
    assert _parent_of(get) == recv.context.span_id
    assert _parent_of(get_attempt) == get.context.span_id
    assert sent.kind == trace.SpanKind.CLIENT and recv.kind == trace.SpanKind.SERVER
    assert sent.attributes["rpc.system"] == "grpc"
    assert sent.attributes["rpc.grpc.status_code"] == 0
    assert attempt.attributes["proxyless.cluster"] == "a.test:80-cluster"
    assert attempt.attributes["server.port"] == c.a_port
    assert get.attributes["http.response.status_code"] == 200
    assert get_attempt.attributes["server.port"] == c.b.port

    # B received the context of A's attempt span, and the request id the
    # client generated, passed on by A's handler.
    (traceparent,) = header(record, "traceparent")
    _, tid, parent, _ = traceparent.split("-")
    assert int(tid, 16) == trace_id
    assert int(parent, 16) == get_attempt.context.span_id
    (rid,) = header(record, "x-request-id")
    assert sent.attributes["proxyless.request_id"] == rid
    assert get.attributes["proxyless.request_id"] == rid


@pytest.mark.parametrize("propagator", ["b3multi", "b3single"])
def test_one_trace_in_b3_mode(otel: Otel, chain: Callable[..., Chain], propagator: str) -> None:
    propagate.set_global_textmap(B3MultiFormat() if propagator == "b3multi" else B3SingleFormat())
    c = chain()
    with otel.tracer_provider.get_tracer("test").start_as_current_span("root") as root:
        record = c.call()
    trace_id = root.get_span_context().trace_id
    get_attempt = _one(otel.named("Attempt GET"))
    recv = _one(otel.named("Recv.test.A/Call"))
    assert recv.context.trace_id == trace_id
    assert header(record, "traceparent") == []
    if propagator == "b3multi":
        assert header(record, "x-b3-traceid") == [f"{trace_id:032x}"]
        assert header(record, "x-b3-spanid") == [f"{get_attempt.context.span_id:016x}"]
    else:
        (b3,) = header(record, "b3")
        tid, sid = b3.split("-")[:2]
        assert int(tid, 16) == trace_id and int(sid, 16) == get_attempt.context.span_id


def test_context_and_request_id_pass_through_without_an_sdk(
    otel: Otel, chain: Callable[..., Chain]
) -> None:
    """No tracer provider: no span is made, but a context the client sends
    reaches B through A unchanged, and so does the request id."""
    settings.configure(tracer_provider=None, meter_provider=None)
    c = chain()
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    record = c.call(metadata=[("traceparent", incoming), ("x-request-id", "req-1")])
    assert otel.finished() == []
    assert header(record, "traceparent") == [incoming]
    assert header(record, "x-request-id") == ["req-1"]


def test_a_request_id_is_generated_once_per_call() -> None:
    ids = {settings.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    sample = next(iter(ids))
    assert len(sample) == 36 and sample[14] == "4" and sample[19] in "89ab"


def test_a_retried_call_shows_one_call_span_and_one_span_per_attempt(
    otel: Otel, chain: Callable[..., Chain]
) -> None:
    c = chain(retry_policy=retry_policy("5xx", num_retries=2))
    c.b.fail_next(2, 503)
    record = c.call()
    assert record["backend"] == "b"
    get = _one(otel.named("GET"))
    attempts = sorted(otel.named("Attempt GET"), key=lambda s: s.attributes["proxyless.attempt"])
    assert [s.attributes["proxyless.attempt"] for s in attempts] == [1, 2, 3]
    assert all(_parent_of(s) == get.context.span_id for s in attempts)
    assert [s.attributes.get("http.response.status_code") for s in attempts] == [503, 503, 200]
    assert attempts[1].attributes["proxyless.retry_reason"] == "error_status"
    assert get.attributes["proxyless.attempts"] == 3
    # each attempt carried its own span's context
    sent = [header(r, "traceparent")[0].split("-")[2] for r in c.b.requests]
    assert [int(p, 16) for p in sent] == [s.context.span_id for s in attempts]


def test_one_trace_through_grpc_aio_and_the_async_httpx_transport(
    otel: Otel, mesh: Mesh, publisher: Publisher
) -> None:
    """The same two hops with grpc.aio on both sides of A and httpx's
    AsyncTransport in A's handler; a server-streaming call too."""
    b = HttpEcho("b").start()
    publisher.service("b.test", [b.address])

    async def scenario() -> tuple[dict[str, Any], int, list[bytes]]:
        http = httpx.AsyncClient(
            transport=proxyless.httpx.AsyncTransport(mesh=mesh, hosts=["b.test"]), timeout=10.0
        )

        async def handle(request: bytes, context: Any) -> bytes:
            response = await http.get(f"http://b.test{request.decode()}")
            return response.content

        async def count(request: bytes, context: Any) -> Any:
            for i in range(3):
                yield str(i).encode()

        handler = grpc.method_handlers_generic_handler(
            "test.A",
            {
                "Call": grpc.unary_unary_rpc_method_handler(handle),
                "Count": grpc.unary_stream_rpc_method_handler(count),
            },
        )
        server = proxyless.grpc.aio.server(mesh=mesh, handlers=[handler])
        port = server.add_port("127.0.0.1:0")
        publisher.inbound(port)
        await server.start()
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while not server.serving(port):
                assert asyncio.get_running_loop().time() < deadline, "A never served"
                await asyncio.sleep(0.01)
            publisher.service("a.test:80", [f"127.0.0.1:{port}"])
            async with proxyless.grpc.aio.channel("xds:///a.test:80", mesh=mesh) as ch:
                tracer = otel.tracer_provider.get_tracer("test")
                with tracer.start_as_current_span("root"):
                    raw = await ch.unary_unary(A_METHOD)(b"/aio", timeout=10)
                    items = [m async for m in ch.unary_stream("/test.A/Count")(b"", timeout=10)]
            return json.loads(raw), port, items
        finally:
            await http.aclose()
            await server.stop(0)

    try:
        record, _port, items = asyncio.run(scenario())
    finally:
        b.stop()
    assert items == [b"0", b"1", b"2"]
    (root,) = otel.named("root")
    trace_id = root.context.trace_id
    sent = _one(otel.named("Sent.test.A/Call"))
    recv = _one(otel.named("Recv.test.A/Call"))
    get_attempt = _one(otel.named("Attempt GET"))
    assert _parent_of(sent) == root.context.span_id
    assert _parent_of(recv) == _one(otel.named("Attempt.test.A/Call")).context.span_id
    assert _parent_of(_one(otel.named("GET"))) == recv.context.span_id
    for span in (sent, recv, get_attempt):
        assert span.context.trace_id == trace_id
    (traceparent,) = header(record, "traceparent")
    assert int(traceparent.split("-")[2], 16) == get_attempt.context.span_id
    stream = _one(otel.named("Sent.test.A/Count"))
    assert stream.attributes["rpc.grpc.status_code"] == 0
    assert _one(otel.named("Recv.test.A/Count")).context.trace_id == trace_id
