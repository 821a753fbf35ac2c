"""The server's grpc.Server surface: generated-style registration, streaming
calls through the RBAC check, listener names (gRFC A36), refusals."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from tests.e2e.conftest import bootstrap_for, wait_until
from tests.e2e.grpc_server.conftest import (
    TEMPLATE,
    disable,
    inbound_listener,
    principal_policy,
    publish,
)

import proxyless.grpc
from proxyless.controlplane.server import AdsServer
from proxyless.errors import BootstrapError
from proxyless.mesh import Mesh
from proxyless.testing.resources import LISTENER_URL

SERVICE = "test.Greeter"


class _Servicer:
    def Hello(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"hello " + request

    def Count(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(3):
            yield str(i).encode()


def add_GreeterServicer_to_server(servicer: _Servicer, server: Any) -> None:
    """What protoc's grpc plugin generates (grpcio >= 1.63)."""
    rpc_method_handlers = {
        "Hello": grpc.unary_unary_rpc_method_handler(servicer.Hello),
        "Count": grpc.unary_stream_rpc_method_handler(servicer.Count),
    }
    generic_handler = grpc.method_handlers_generic_handler(SERVICE, rpc_method_handlers)
    server.add_generic_rpc_handlers((generic_handler,))
    server.add_registered_method_handlers(SERVICE, rpc_method_handlers)


@pytest.fixture
def greeter(mesh: Mesh) -> Iterator[Callable[..., tuple[Any, int]]]:
    made: list[Any] = []

    def make(address: str = "127.0.0.1:0", **kw: Any) -> tuple[Any, int]:
        server = proxyless.grpc.server(futures.ThreadPoolExecutor(4), mesh=mesh, **kw)
        add_GreeterServicer_to_server(_Servicer(), server)
        port = server.add_port(address)
        server.start()
        made.append(server)
        return server, port

    yield make
    for server in made:
        server.stop(0).wait(5)


def test_generated_registration_and_streams_pass_the_rbac_check(
    ads: AdsServer, greeter: Callable[..., tuple[Any, int]]
) -> None:
    server, port = greeter()
    deny = {"default-no-count-0": principal_policy(path=f"/{SERVICE}/Count")}
    publish(ads, port, disable(deny=deny))
    wait_until(server.serving, what="the server to serve")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary(f"/{SERVICE}/Hello")(b"you", timeout=5) == b"hello you"
        with pytest.raises(grpc.RpcError) as info:
            list(ch.unary_stream(f"/{SERVICE}/Count")(b"", timeout=5))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "default-no-count-0" in info.value.details()  # type: ignore[attr-defined]


def test_listener_names_follow_the_template(greeter: Callable[..., tuple[Any, int]]) -> None:
    server, port = greeter("127.0.0.1:0")
    assert server.listener_names == [TEMPLATE % f"127.0.0.1:{port}"]
    server6, port6 = greeter("[::]:0")
    assert server6.listener_names == [TEMPLATE % f"[::]:{port6}"]


def test_a_listener_for_another_port_is_not_served(
    ads: AdsServer, greeter: Callable[..., tuple[Any, int]]
) -> None:
    errors: list[Exception | None] = []
    server, port = greeter(serving_status_callback=lambda a, s, e: errors.append(e))
    name = TEMPLATE % f"127.0.0.1:{port}"
    ads.set_resource(LISTENER_URL, name, inbound_listener(name, "127.0.0.1", port + 1, disable()))
    wait_until(lambda: bool(errors), what="the serving status callback")
    assert not server.serving()
    assert f"is for 127.0.0.1:{port + 1}" in str(errors[-1])


def test_add_secure_port_is_refused(greeter: Callable[..., tuple[Any, int]]) -> None:
    server, _ = greeter()
    with pytest.raises(TypeError, match="inbound Listener"):
        server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials())


def test_a_bootstrap_without_the_template_is_refused(ads: AdsServer) -> None:
    with Mesh(bootstrap_for(ads, "e2e-no-template")) as mesh:
        with pytest.raises(BootstrapError, match="server_listener_resource_name_template"):
            proxyless.grpc.server(futures.ThreadPoolExecutor(1), mesh=mesh)


def test_a_rejected_listener_serves_nothing_until_a_good_one_and_then_keeps_it(
    ads: AdsServer, greeter: Callable[..., tuple[Any, int]]
) -> None:
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    def bad() -> list[Any]:
        (chain,) = disable()
        hcm = hcm_pb2.HttpConnectionManager()
        chain.filters[0].typed_config.Unpack(hcm)
        hcm.xff_num_trusted_hops = 1  # gRFC A41: NACKed
        chain.filters[0].typed_config.Pack(hcm)
        return [chain]

    server, port = greeter()
    publish(ads, port, bad())
    wait_until(lambda: bool(ads.nacks()), what="the NACK")
    assert not server.serving()
    publish(ads, port, disable())
    wait_until(server.serving, what="the server to serve")
    nacks = len(ads.nacks())
    publish(ads, port, bad())
    wait_until(lambda: len(ads.nacks()) > nacks, what="the second NACK")
    assert server.serving()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary(f"/{SERVICE}/Hello")(b"again", timeout=5) == b"hello again"


def test_a_dual_stack_server_matches_ipv4_callers_as_ipv4(
    ads: AdsServer, greeter: Callable[..., tuple[Any, int]]
) -> None:
    from envoy.config.core.v3 import address_pb2
    from google.protobuf import wrappers_pb2

    server, port = greeter("[::]:0")
    (chain,) = disable()
    chain.filter_chain_match.source_prefix_ranges.append(
        address_pb2.CidrRange(
            address_prefix="127.0.0.0", prefix_len=wrappers_pb2.UInt32Value(value=8)
        )
    )
    name = TEMPLATE % f"[::]:{port}"
    ads.set_resource(LISTENER_URL, name, inbound_listener(name, "::", port, [chain]))
    wait_until(server.serving, what="the server to serve")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary(f"/{SERVICE}/Hello")(b"v4", timeout=5) == b"hello v4"


def test_internal_ports_live_in_a_private_directory_removed_at_stop(
    greeter: Callable[..., tuple[Any, int]],
) -> None:
    import os
    import stat

    server, _ = greeter()
    directory = server._core._dir
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    sockets = sorted(os.listdir(directory))
    assert sockets == ["mtls-0", "plain-0", "tls-0"]
    assert all(stat.S_ISSOCK(os.stat(os.path.join(directory, s)).st_mode) for s in sockets)
    server.stop(0).wait(5)
    assert not os.path.exists(directory)
