"""An HTTP/2 TLS cluster: the transports offer ALPN ``h2`` and speak HTTP/2
over mTLS. The peer is a real gRPC server with TLS credentials that require
a client certificate (gRPC servers refuse a handshake that does not
negotiate ``h2``); the test sends a gRPC unary call as an HTTP/2 POST.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import pytest
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from tests.e2e.httpx.conftest import Service
from tests.e2e.httpx_tls.conftest import CLUSTER, RATINGS, REVIEWS, URL, tls_cluster

import proxyless.httpx
from proxyless.controlplane.ca import DevCA, IssuedCertificate
from proxyless.errors import IdentityMismatch
from proxyless.mesh import Mesh
from proxyless.testing.resources import route


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def _grpc_server(issued: IssuedCertificate, ca: DevCA) -> tuple[grpc.Server, str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
            ),
        )
    )
    creds = grpc.ssl_server_credentials(
        [(issued.key_pem, issued.chain_pem)],
        root_certificates=ca.roots_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def grpc_servers() -> Iterator[Any]:
    started: list[grpc.Server] = []

    def start(issued: IssuedCertificate, ca: DevCA) -> str:
        server, address = _grpc_server(issued, ca)
        started.append(server)
        return address

    yield start
    for server in started:
        server.stop(None)


def _h2_cluster(web: IssuedCertificate, ca: DevCA) -> Any:
    proto = tls_cluster(CLUSTER, web, ca.roots_pem, [REVIEWS])
    options = hpo.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.SetInParent()
    proto.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Pack(options)
    return proto


def _post(kind: str, mesh: Mesh, payload: bytes) -> httpx.Response:
    frame = b"\x00" + struct.pack(">I", len(payload)) + payload
    kw: dict[str, Any] = {
        "content": frame,
        "headers": {"content-type": "application/grpc", "te": "trailers"},
        "timeout": 10.0,
    }
    if kind == "sync":
        with httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh)) as client:
            response = client.post(URL + "/test.Echo/Echo", **kw)
            response.read()
            return response

    async def main() -> httpx.Response:
        transport = proxyless.httpx.AsyncTransport(mesh=mesh)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.post(URL + "/test.Echo/Echo", **kw)
            await response.aread()
            return response

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_http2_tls_cluster_speaks_h2_over_mtls(
    kind: str,
    mesh: Mesh,
    service: Service,
    grpc_servers: Any,
    ca: DevCA,
    web: IssuedCertificate,
) -> None:
    address = grpc_servers(ca.issue(REVIEWS), ca)
    service.cluster(CLUSTER, [address], _h2_cluster(web, ca))
    service.routes_for("svc:8080", [route(prefix="/", cluster=CLUSTER)])
    response = _post(kind, mesh, b"over h2 and mTLS")
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    assert response.content[5:] == b"over h2 and mTLS"


def test_http2_tls_cluster_refuses_another_identity(
    mesh: Mesh, service: Service, grpc_servers: Any, ca: DevCA, web: IssuedCertificate
) -> None:
    address = grpc_servers(ca.issue(RATINGS), ca)
    service.cluster(CLUSTER, [address], _h2_cluster(web, ca))
    service.routes_for("svc:8080", [route(prefix="/", cluster=CLUSTER)])
    with pytest.raises(proxyless.httpx.MeshConnectError) as info:
        _post("sync", mesh, b"secret")
    assert isinstance(info.value.proxyless_error, IdentityMismatch)
