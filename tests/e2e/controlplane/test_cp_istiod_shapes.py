"""proxyless consumes what istiod's gRPC generator sends and routes as istiod intends.

The resources come from :mod:`tests.e2e.controlplane.istiod_shapes` (what
istiod sends a proxyless gRPC node for a small mesh: reviews v1/v2/v3 with a
DestinationRule subset split and a header route, ratings with
``ISTIO_MUTUAL``) and, for xDS servers, the inbound Listeners of
``tests/e2e/grpc_server/conftest.py`` (STRICT with RBAC), served by the test
ADS server (the ``ads`` fixture) to ``proxyless.grpc.channel``, the httpx
transport and ``proxyless.grpc.server`` with real backends on 127.0.0.1 and,
for mTLS, real DevCA certificates read through bootstrap ``file_watcher``
certificate providers named ``default``, as istio-agent writes them.
"""

from __future__ import annotations

import collections
import json
import random
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from tests.e2e.conftest import close_endpoint_pools, wait_until
from tests.e2e.controlplane.http_backend import HttpBackend
from tests.e2e.controlplane.istiod_shapes import (
    cluster_name,
    istiod_cluster,
    istiod_listener,
    istiod_load_assignment,
    istiod_route,
    istiod_route_configuration,
)
from tests.e2e.grpc_server.conftest import (
    CLIENT_ID,
    SERVER_ID,
    TEMPLATE,
    WHO_HANDLER,
    inbound_chain,
    istiod_downstream_tls,
    principal_policy,
    publish,
)
from tests.e2e.grpc_server.conftest import METHOD as SERVER_WHO_METHOD
from tests.e2e.grpc_tls.conftest import METHOD as WHO_METHOD
from tests.e2e.grpc_tls.conftest import TlsServer

import proxyless.grpc
import proxyless.httpx
from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.model import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
RATINGS_ID = "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"
JASON = (("end-user", "jason"),)


@pytest.fixture(autouse=True)
def _empty_pools() -> Iterator[None]:
    """Channels to this test's backends do not outlive it."""
    yield
    close_endpoint_pools()


@pytest.fixture
def reviews() -> Iterator[dict[str, EchoServer]]:
    servers = {v: EchoServer(f"reviews-{v}").start() for v in ("v1", "v2", "v3")}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop(0)


def _port(server: EchoServer) -> int:
    return int(server.address.rsplit(":", 1)[1])


def _serve_reviews(ads: AdsServer, reviews: dict[str, EchoServer]) -> None:
    for name in (f"{REVIEWS}:9080", "reviews:9080"):
        ads.set_resource(LISTENER_TYPE, name, istiod_listener(name, REVIEWS, 9080, "10.96.112.40"))
    routes = [
        istiod_route("jason", REVIEWS, 9080, [("v2", 100)], header=("end-user", "jason")),
        istiod_route("default", REVIEWS, 9080, [("v1", 80), ("v3", 20)]),
    ]
    config = istiod_route_configuration(REVIEWS, 9080, "10.96.112.40", routes)
    ads.set_resource(ROUTE_TYPE, config.name, config)
    every = [("127.0.0.1", _port(s), {"app": "reviews", "version": v}) for v, s in reviews.items()]
    for subset in ("", "v1", "v2", "v3"):
        name = cluster_name(9080, subset, REVIEWS)
        ads.set_resource(CLUSTER_TYPE, name, istiod_cluster(name))
        chosen = [b for b in every if not subset or b[2]["version"] == subset]
        ads.set_resource(ENDPOINT_TYPE, name, istiod_load_assignment(name, chosen))


def _bootstrap(ads: AdsServer, **extra: Any) -> dict[str, Any]:
    return {
        "xds_servers": [
            {
                "server_uri": ads.target,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {
            "id": "sidecar~10.1.0.9~productpage-v1-abc.default~default.svc.cluster.local",
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"},
        },
        **extra,
    }


def test_subset_split_and_header_route(ads: AdsServer, reviews: dict[str, EchoServer]) -> None:
    _serve_reviews(ads, reviews)
    mesh = Mesh(_bootstrap(ads), rng=random.Random(5))
    try:
        echo = proxyless.grpc.channel(f"xds:///{REVIEWS}:9080", mesh=mesh).unary_unary(ECHO_METHOD)
        echo(b"warmup", timeout=10, wait_for_ready=True)
        counts = collections.Counter(
            decode_reply(echo(b"x", timeout=10))["backend"] for _ in range(400)
        )
        assert set(counts) == {"reviews-v1", "reviews-v3"}, counts
        assert 12 <= 100 * counts["reviews-v3"] / 400 <= 28, counts
        jason = collections.Counter(
            decode_reply(echo(b"x", timeout=10, metadata=JASON))["backend"] for _ in range(20)
        )
        assert jason == {"reviews-v2": 20}
        # the short name istiod also answers (a listener per requested name, same route)
        short = proxyless.grpc.channel("xds:///reviews:9080", mesh=mesh).unary_unary(ECHO_METHOD)
        assert decode_reply(short(b"x", timeout=10, metadata=JASON))["backend"] == "reviews-v2"
    finally:
        mesh.close()
    assert ads.nacks() == []


def test_istio_mutual_with_certificate_provider_instances(ads: AdsServer, tmp_path: Path) -> None:
    ca = DevCA("cluster.local")
    server = TlsServer("ratings", ca.issue(RATINGS_ID), ca.roots_pem)
    client = ca.issue(CLIENT_ID)
    files = {
        "certificate_file": tmp_path / "cert-chain.pem",
        "private_key_file": tmp_path / "key.pem",
        "ca_certificate_file": tmp_path / "root-cert.pem",
    }
    files["certificate_file"].write_bytes(client.chain_pem)
    files["private_key_file"].write_bytes(client.key_pem)
    files["ca_certificate_file"].write_bytes(ca.roots_pem)
    providers = {
        "default": {
            "plugin_name": "file_watcher",
            "config": {**{k: str(v) for k, v in files.items()}, "refresh_interval": "600s"},
        }
    }
    name = f"{RATINGS}:9080"
    ads.set_resource(LISTENER_TYPE, name, istiod_listener(name, RATINGS, 9080, "10.96.40.7"))
    config = istiod_route_configuration(
        RATINGS, 9080, "10.96.40.7", [istiod_route("default", RATINGS, 9080, [("", 100)])]
    )
    ads.set_resource(ROUTE_TYPE, config.name, config)
    cluster = cluster_name(9080, "", RATINGS)
    ads.set_resource(CLUSTER_TYPE, cluster, istiod_cluster(cluster, istio_mutual_sans=[RATINGS_ID]))
    ads.set_resource(
        ENDPOINT_TYPE,
        cluster,
        istiod_load_assignment(cluster, [("127.0.0.1", server.port, {"app": "ratings"})]),
    )
    mesh = Mesh(_bootstrap(ads, certificate_providers=providers))
    try:
        who = proxyless.grpc.channel(f"xds:///{name}", mesh=mesh).unary_unary(WHO_METHOD)
        for _ in range(3):
            reply = json.loads(who(b"x", timeout=10, wait_for_ready=True))
            assert reply == {"server": "ratings", "peer": [CLIENT_ID]}
        assert server.insecure_calls == 0
        # a server with another identity of the same CA is refused: the SAN matcher holds
        impostor = TlsServer(
            "impostor", ca.issue(RATINGS_ID.replace("ratings", "reviews")), ca.roots_pem
        )
        try:
            ads.set_resource(
                ENDPOINT_TYPE,
                cluster,
                istiod_load_assignment(cluster, [("127.0.0.1", impostor.port, {"app": "ratings"})]),
            )
            with pytest.raises(grpc.RpcError):
                for _ in range(200):  # bounded: until the new endpoint is used
                    who(b"x", timeout=3)
            assert impostor.calls == 0
        finally:
            impostor.stop()
    finally:
        mesh.close()
        server.stop()
    assert ads.nacks() == []


def _providers(directory: Path, ca: DevCA, spiffe_id: str) -> dict[str, Any]:
    """istio-agent's files for ``spiffe_id`` and the bootstrap entry that reads them."""
    directory.mkdir()
    issued = ca.issue(spiffe_id)
    files = {
        "certificate_file": directory / "cert-chain.pem",
        "private_key_file": directory / "key.pem",
        "ca_certificate_file": directory / "root-cert.pem",
    }
    files["certificate_file"].write_bytes(issued.chain_pem)
    files["private_key_file"].write_bytes(issued.key_pem)
    files["ca_certificate_file"].write_bytes(ca.roots_pem)
    config = {**{k: str(v) for k, v in files.items()}, "refresh_interval": "600s"}
    return {"default": {"plugin_name": "file_watcher", "config": config}}


def test_istio_mutual_client_to_strict_server_with_rbac(ads: AdsServer, tmp_path: Path) -> None:
    """Outbound and inbound as istiod shapes them, from one ADS server: productpage and
    ratings call reviews over mTLS; reviews' RBAC allows only productpage."""
    ca = DevCA("cluster.local")
    server_mesh = Mesh(
        _bootstrap(
            ads,
            certificate_providers=_providers(tmp_path / "reviews", ca, SERVER_ID),
            server_listener_resource_name_template=TEMPLATE,
        )
    )
    server = proxyless.grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), mesh=server_mesh, handlers=[WHO_HANDLER]
    )
    port = server.add_port("127.0.0.1:0")
    server.start()
    clients = {
        name: Mesh(_bootstrap(ads, certificate_providers=_providers(tmp_path / name, ca, sid)))
        for name, sid in (("productpage", CLIENT_ID), ("ratings", RATINGS_ID))
    }
    try:
        allow = {"default-reviews-viewer-0": principal_policy(CLIENT_ID)}
        publish(ads, port, [inbound_chain("mtls", istiod_downstream_tls(), allow=allow)])
        name = f"{REVIEWS}:9080"
        ads.set_resource(LISTENER_TYPE, name, istiod_listener(name, REVIEWS, 9080, "10.96.112.40"))
        config = istiod_route_configuration(
            REVIEWS, 9080, "10.96.112.40", [istiod_route("default", REVIEWS, 9080, [("", 100)])]
        )
        ads.set_resource(ROUTE_TYPE, config.name, config)
        cluster = cluster_name(9080, "", REVIEWS)
        ads.set_resource(
            CLUSTER_TYPE, cluster, istiod_cluster(cluster, istio_mutual_sans=[SERVER_ID])
        )
        ads.set_resource(
            ENDPOINT_TYPE,
            cluster,
            istiod_load_assignment(cluster, [("127.0.0.1", port, {"app": "reviews"})]),
        )
        wait_until(server.serving, what="reviews to serve its inbound listener")
        who = proxyless.grpc.channel(f"xds:///{name}", mesh=clients["productpage"])
        call = who.unary_unary(SERVER_WHO_METHOD)
        assert call(b"", timeout=10, wait_for_ready=True) == CLIENT_ID.encode()
        denied = proxyless.grpc.channel(f"xds:///{name}", mesh=clients["ratings"])
        with pytest.raises(grpc.RpcError) as caught:
            denied.unary_unary(SERVER_WHO_METHOD)(b"", timeout=10, wait_for_ready=True)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        for mesh in clients.values():
            mesh.close()
        server.stop(0).wait(5)
        server_mesh.close()
    assert ads.nacks() == []


def test_httpx_transport_follows_istiod_routes(ads: AdsServer) -> None:
    """The same shapes for an HTTP service drive the httpx transport (jason -> v2, else v1)."""
    backends = {v: HttpBackend(f"web-{v}") for v in ("v1", "v2")}
    host = "web.default.svc.cluster.local"
    try:
        name = f"{host}:8000"
        ads.set_resource(LISTENER_TYPE, name, istiod_listener(name, host, 8000, "10.96.7.7"))
        routes = [
            istiod_route("jason", host, 8000, [("v2", 100)], header=("end-user", "jason")),
            istiod_route("default", host, 8000, [("v1", 100)]),
        ]
        config = istiod_route_configuration(host, 8000, "10.96.7.7", routes)
        ads.set_resource(ROUTE_TYPE, config.name, config)
        for subset, backend in backends.items():
            cluster = cluster_name(8000, subset, host)
            ads.set_resource(CLUSTER_TYPE, cluster, istiod_cluster(cluster))
            ads.set_resource(
                ENDPOINT_TYPE,
                cluster,
                istiod_load_assignment(cluster, [("127.0.0.1", backend.port, {"version": subset})]),
            )
        mesh = Mesh(_bootstrap(ads))
        try:
            transport = proxyless.httpx.Transport(mesh=mesh)
            with httpx.Client(transport=transport, timeout=10) as web:
                for user, expected in (("jason", "web-v2"), ("mary", "web-v1")):
                    for _ in range(5):
                        reply = web.get(f"http://{name}/get", headers={"end-user": user})
                        assert reply.json()["backend"] == expected
        finally:
            mesh.close()
    finally:
        for backend in backends.values():
            backend.stop()
    assert ads.nacks() == []
