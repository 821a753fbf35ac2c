"""Deadlines on real gRPC calls (gRFC A31): the route's
``grpc_timeout_header_max`` (else its ``max_stream_duration``, else the
HttpConnectionManager's) caps the caller's deadline and never extends a
shorter one; ``grpc_timeout_header_max: 0`` means "the caller's deadline".

Each case sends to a backend that waits longer (or shorter) than the
deadline in force and checks the status only, never elapsed time."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import grpc
import pytest
from tests.e2e.grpc.conftest import SERVICE, TARGET, AnyMethodServer, Xds, bootstrap_for

import proxyless.grpc
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.resources import route

CAP = 0.2  # the short cap, seconds
LONG = 1.0  # backend wait well past CAP and past the short caller deadline

ROUTES = [
    route(prefix="/cap.Route/", cluster="c", max_stream_duration=CAP),
    route(prefix="/cap.Header/", cluster="c", max_stream_duration=30, grpc_timeout_header_max=CAP),
    route(prefix="/cap.Long/", cluster="c", max_stream_duration=30),
    route(prefix="/cap.LongHeader/", cluster="c", grpc_timeout_header_max=30),
    route(
        prefix="/cap.HeaderZero/", cluster="c", max_stream_duration=CAP, grpc_timeout_header_max=0
    ),
    route(prefix="/cap.Listener/", cluster="c"),
]


@pytest.fixture(scope="module")
def call() -> Iterator[Callable[[str, float | None, float], bytes]]:
    ads = AdsServer()
    ads.start()
    server = AnyMethodServer("c").start()
    mesh = Mesh(bootstrap_for(ads))
    try:
        xds = Xds(ads)
        xds.cluster("c", [server.address])
        # The listener's max_stream_duration applies where the route sets none.
        xds.service(SERVICE, ROUTES, max_stream_duration=CAP)
        ch = proxyless.grpc.channel(TARGET, mesh=mesh)
        ch.unary_unary("/cap.Long/Ready")(b"", timeout=10)

        def do(method: str, timeout: float | None, delay: float) -> bytes:
            request = f"sleep={delay}".encode() if delay else b""
            reply: bytes = ch.unary_unary(method)(request, timeout=timeout)
            return reply

        yield do
    finally:
        mesh.close()
        server.stop()
        ads.stop()


@pytest.mark.parametrize(
    ("method", "timeout", "delay"),
    [
        pytest.param("/cap.Route/M", 5.0, LONG, id="route-max-stream-duration-caps"),
        pytest.param("/cap.Route/M", None, LONG, id="route-cap-without-caller-deadline"),
        pytest.param("/cap.Header/M", 5.0, LONG, id="grpc-timeout-header-max-wins"),
        pytest.param("/cap.Listener/M", 5.0, LONG, id="listener-max-stream-duration-caps"),
        pytest.param("/cap.Listener/M", None, LONG, id="listener-cap-without-caller-deadline"),
        pytest.param("/cap.Long/M", CAP, LONG, id="longer-route-cap-keeps-caller-deadline"),
        pytest.param("/cap.LongHeader/M", CAP, LONG, id="longer-header-max-keeps-caller-deadline"),
    ],
)
def test_deadline_exceeded(
    call: Callable[[str, float | None, float], bytes],
    method: str,
    timeout: float | None,
    delay: float,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(method, timeout, delay)
    assert isinstance(info.value, grpc.Call)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED, info.value


@pytest.mark.parametrize(
    ("method", "timeout", "delay"),
    [
        pytest.param("/cap.Route/M", 5.0, 0.0, id="fast-call-under-cap"),
        pytest.param("/cap.Long/M", 5.0, 0.4, id="cap-above-backend-time"),
        pytest.param("/cap.HeaderZero/M", 5.0, 0.5, id="header-max-zero-uses-caller-deadline"),
    ],
)
def test_call_completes(
    call: Callable[[str, float | None, float], bytes],
    method: str,
    timeout: float | None,
    delay: float,
) -> None:
    assert json.loads(call(method, timeout, delay))["method"] == method
