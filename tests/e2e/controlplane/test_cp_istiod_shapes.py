"""proxyless consumes what istiod's gRPC generator sends and routes as istiod intends.

The resources come from :mod:`tests.e2e.controlplane.istiod_shapes` (what
istiod sends a proxyless gRPC node for a small mesh: reviews v1/v2/v3 with a
DestinationRule subset split and a header route, ratings with
``ISTIO_MUTUAL``), served by the test ADS server to ``proxyless.grpc.channel``
with real backends on 127.0.0.1 and, for mTLS, real DevCA certificates read
through a bootstrap ``file_watcher`` certificate provider named ``default``.
"""

from __future__ import annotations

import collections
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tests.e2e.controlplane.istiod_shapes import (
    cluster_name,
    istiod_cluster,
    istiod_listener,
    istiod_load_assignment,
    istiod_route,
    istiod_route_configuration,
)
from tests.e2e.grpc_tls.conftest import METHOD as WHO_METHOD
from tests.e2e.grpc_tls.conftest import TlsServer

import proxyless.grpc
from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.model import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
RATINGS_ID = "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
JASON = (("end-user", "jason"),)


@pytest.fixture
def ads() -> Iterator[AdsServer]:
    server = AdsServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
