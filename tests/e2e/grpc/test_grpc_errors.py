"""Calls that cannot be routed fail with UNAVAILABLE (never NOT_FOUND, gRFC
A54/A88), details naming the target and where it broke (authority, route,
cluster), and the typed error of :mod:`proxyless.errors` attached as
``err.proxyless_error``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from tests.e2e.grpc.conftest import SERVICE, TARGET, Xds, call_until, wait_until

import proxyless.grpc
from proxyless import errors
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing import FakeClock
from proxyless.testing.backends import ECHO_METHOD, EchoServer
from proxyless.testing.resources import CLUSTER_URL, route

SERVER_STREAM = "/proxyless.test.Echo/ServerStream"
CLIENT_STREAM = "/proxyless.test.Echo/ClientStream"
BIDI_STREAM = "/proxyless.test.Echo/BidiStream"


def _no_vhost(xds: Xds, addr: str) -> None:
    xds.cluster("c", [addr])
    xds.service(SERVICE, [route(prefix="/", cluster="c")], domains=["other.example", "*.internal"])


def _no_route(xds: Xds, addr: str) -> None:
    xds.cluster("c", [addr])
    xds.service(SERVICE, [route(path="/only.This/Method", cluster="c")])


def _non_forwarding(xds: Xds, addr: str) -> None:
    xds.cluster("c", [addr])
    xds.service(SERVICE, [route(prefix="/", non_forwarding=True, name="server-only")])


def _nacked_cluster(xds: Xds, addr: str) -> None:
    bad = cluster_pb2.Cluster(name="c", type=cluster_pb2.Cluster.STRICT_DNS)
    xds.cluster("c", [addr], proto=bad)
    xds.service(SERVICE, [route(prefix="/", cluster="c")])


def _empty_eds(xds: Xds, addr: str) -> None:
    xds.cluster("c", [])
    xds.service(SERVICE, [route(prefix="/", cluster="c")])


def _all_unhealthy(xds: Xds, addr: str) -> None:
    xds.cluster("c", [addr], health={addr: "UNHEALTHY"})
    xds.service(SERVICE, [route(prefix="/", cluster="c")])


CASES = [
    pytest.param(
        _no_vhost,
        "envoy",
        errors.NoMatchingVirtualHost,
        ["svc:80", "other.example"],
        id="no-virtual-host",
    ),
    pytest.param(
        _no_route,
        "envoy",
        errors.NoMatchingRoute,
        ["/proxyless.test.Echo/Echo", "svc:80"],
        id="no-route",
    ),
    pytest.param(
        _non_forwarding,
        "envoy",
        errors.NonForwardingRoute,
        ["server-only"],
        id="non-forwarding-route",
    ),
    pytest.param(
        _nacked_cluster,
        "envoy",
        errors.ClusterNotAvailable,
        ["'c'", "STRICT_DNS"],
        id="nacked-cluster",
    ),
    pytest.param(
        _empty_eds,
        "envoy",
        errors.NoHealthyEndpoints,
        ["'c'"],
        id="no-endpoints",
    ),
    pytest.param(
        _all_unhealthy,
        "grpc",
        errors.NoHealthyEndpoints,
        ["'c'"],
        id="no-healthy-endpoint-grpc-mode",
    ),
]


def _expect_unavailable(
    call: Callable[..., bytes], error_type: type[errors.ProxylessError], texts: list[str]
) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(b"x", timeout=10)
    err = info.value
    assert isinstance(err, grpc.Call)
    assert err.code() is grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
    details = err.details() or ""
    assert TARGET in details, details
    for text in texts:
        assert text in details, (text, details)
    typed = getattr(err, "proxyless_error", None)
    assert isinstance(typed, error_type), (type(typed), details)
    return err


@pytest.mark.parametrize(("setup", "mode", "error_type", "texts"), CASES)
def test_unroutable_call_fails_unavailable(
    setup: Callable[[Xds, str], None],
    mode: str,
    error_type: type[errors.ProxylessError],
    texts: list[str],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
    backends: Callable[..., list[EchoServer]],
) -> None:
    (backend,) = backends("a")
    setup(xds, backend.address)
    mesh = make_mesh(priority_mode=mode)
    call = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(ECHO_METHOD)
    _expect_unavailable(call, error_type, texts)
    assert backend.calls == 0


def test_cluster_removed_from_cds(
    xds: Xds, mesh: Mesh, backends: Callable[..., list[EchoServer]], echo: Callable[..., bytes]
) -> None:
    (a,) = backends("a")
    xds.simple(SERVICE, [a], cluster_name="gone")
    call_until(echo, "a")
    xds.remove_cluster("gone")

    def failing() -> bool:
        try:
            echo(b"x", timeout=5)
        except grpc.RpcError:
            return True
        return False

    wait_until(failing, what="calls to fail once the cluster left CDS")
    _expect_unavailable(echo, errors.ClusterNotAvailable, ["'gone'"])


def test_cluster_that_never_existed(
    xds: Xds,
    ads: AdsServer,
    make_mesh: Callable[..., Mesh],
    backends: Callable[..., list[EchoServer]],
) -> None:
    """The route names a cluster the server does not have: once the
    does-not-exist timer fires (fake clock), calls fail naming it."""
    clock = FakeClock()
    mesh = make_mesh(clock=clock)
    xds.service(SERVICE, [route(prefix="/", cluster="ghost")])
    call = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(ECHO_METHOD)
    mesh.target(TARGET)  # subscribe now, before the first call
    ads.wait_for(lambda r: r.type_url == CLUSTER_URL and "ghost" in r.resource_names, timeout=10)
    wait_until(lambda: clock.pending() > 0, what="the CDS does-not-exist timer")
    clock.advance(60)
    _expect_unavailable(call, errors.ClusterNotAvailable, ["'ghost'"])


@pytest.fixture
def no_route_channel(xds: Xds, mesh: Mesh, backends: Callable[..., list[EchoServer]]) -> Any:
    (backend,) = backends("a")
    _no_route(xds, backend.address)
    channel = proxyless.grpc.channel(TARGET, mesh=mesh)
    # The first call waits for the config and fails as a plain call.
    with pytest.raises(grpc.RpcError):
        channel.unary_unary(ECHO_METHOD)(b"x", timeout=10)
    return channel


def test_unroutable_future_fails_through_the_future(no_route_channel: Any) -> None:
    """``future()`` reports a failed RPC through the returned future, as
    grpc's UnaryUnaryMultiCallable.future and StreamUnaryMultiCallable.future
    document; it does not raise."""
    for future in (
        no_route_channel.unary_unary(ECHO_METHOD).future(b"x", timeout=5),
        no_route_channel.stream_unary(CLIENT_STREAM).future(iter([b"x"]), timeout=5),
    ):
        exc = future.exception(timeout=5)
        assert isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call), exc
        assert exc.code() is grpc.StatusCode.UNAVAILABLE
        assert isinstance(getattr(exc, "proxyless_error", None), errors.NoMatchingRoute)
        assert future.code() is grpc.StatusCode.UNAVAILABLE


def test_unroutable_stream_fails_when_read(no_route_channel: Any) -> None:
    """Response-streaming calls return their call object; the failure comes
    out of the iterator, as with grpc's own channels."""
    for responses in (
        no_route_channel.unary_stream(SERVER_STREAM)(b"3", timeout=5),
        no_route_channel.stream_stream(BIDI_STREAM)(iter([b"x"]), timeout=5),
    ):
        with pytest.raises(grpc.RpcError) as info:
            next(responses)
        assert isinstance(info.value, grpc.Call)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert responses.code() is grpc.StatusCode.UNAVAILABLE
