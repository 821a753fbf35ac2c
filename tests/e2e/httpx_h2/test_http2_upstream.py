"""A cluster that speaks HTTP/2: the httpx transport sends plain-text HTTP/2
with prior knowledge, as Envoy does to an ``http2_protocol_options`` cluster.

The peer is a real gRPC server (an HTTP/2-only server): the test sends a
gRPC unary call as a plain HTTP/2 POST and reads the framed reply.
"""

from __future__ import annotations

import json
import struct

import httpx
import pytest
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

import proxyless.httpx
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import EchoServer
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


@pytest.fixture
def h2_mesh():
    backend = EchoServer("h2-backend").start()
    ads = AdsServer()
    ads.start()
    c = cluster("grpc-backend")
    options = hpo.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.SetInParent()
    c.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Pack(options)
    ads.set_resources(LISTENER_URL, {"echo:8080": listener("echo:8080", "r")})
    ads.set_resources(
        ROUTE_URL, {"r": route_config("r", "echo:8080", [route(cluster="grpc-backend")])}
    )
    ads.set_resources(CLUSTER_URL, {"grpc-backend": c})
    ads.set_resources(ENDPOINT_URL, {"grpc-backend": endpoints("grpc-backend", [backend.address])})
    mesh = Mesh(
        {
            "xds_servers": [{"server_uri": ads.target, "channel_creds": [{"type": "insecure"}]}],
            "node": {"id": "h2"},
        }
    )
    yield mesh, backend
    mesh.close()
    ads.stop()
    backend.stop()


def _grpc_frame(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def test_http2_cluster_is_reached_over_http2(h2_mesh):
    mesh, backend = h2_mesh
    with httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh)) as client:
        response = client.post(
            "http://echo:8080/proxyless.test.Echo/Echo",
            content=_grpc_frame(b"over h2"),
            headers={"content-type": "application/grpc", "te": "trailers"},
            timeout=5,
        )
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    body = response.content
    assert body[0] == 0
    (length,) = struct.unpack(">I", body[1:5])
    reply = json.loads(body[5 : 5 + length])
    assert reply["backend"] == "h2-backend" and reply["echo"] == "over h2"
    assert backend.calls == 1
