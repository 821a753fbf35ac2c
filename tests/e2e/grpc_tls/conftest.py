"""Fixtures for gRPC channels to TLS clusters: real grpcio TLS servers
(``grpc.ssl_server_credentials`` with DevCA certificates and
``require_client_auth=True``), a plaintext one, and clusters whose
``UpstreamTlsContext`` carries inline certificates, published on the real
ADS server of ``tests/e2e/conftest.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from proxyless.controlplane.ca import DevCA, IssuedCertificate
from proxyless.controlplane.server import AdsServer
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

SERVICE = "reviews:9080"
TARGET = f"xds:///{SERVICE}"
METHOD = "/test.Echo/Who"
REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"
RATINGS = "spiffe://cluster.local/ns/default/sa/ratings"
CLIENT = "spiffe://cluster.local/ns/default/sa/productpage"
CLUSTER = "outbound|9080||reviews"
AGGREGATE = "reviews-aggregate"


class TlsServer:
    """A grpcio server answering ``METHOD`` with JSON naming itself and the
    caller's certificate SANs (from ``context.auth_context()``); with
    ``cert`` None it serves plaintext. ``calls`` counts RPCs it handled
    and ``peers`` lists the SANs of each caller."""

    def __init__(
        self, name: str, cert: IssuedCertificate | None, client_roots: bytes | None
    ) -> None:
        self.name = name
        self.calls = 0
        self.peers: list[tuple[str, ...]] = []
        #: the PEM of each caller's client certificate
        self.certs: list[bytes] = []
        self.insecure_calls = 0
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.method_handlers_generic_handler(
            "test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(self._who)}
        )
        self._server.add_generic_rpc_handlers((handler,))
        if cert is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            creds = grpc.ssl_server_credentials(
                [(cert.key_pem, cert.chain_pem)],
                root_certificates=client_roots,
                require_client_auth=True,
            )
            self.port = self._server.add_secure_port("127.0.0.1:0", creds)
        self.address = f"127.0.0.1:{self.port}"
        self._server.start()

    def _who(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        auth = context.auth_context()
        sans = tuple(v.decode() for v in auth.get("x509_subject_alternative_name", ()))
        with self._lock:
            self.calls += 1
            self.peers.append(sans)
            self.certs.append(b"".join(auth.get("x509_pem_cert", ())))
            if auth.get("transport_security_type") != [b"ssl"]:
                self.insecure_calls += 1
        return json.dumps({"server": self.name, "peer": list(sans)}).encode()

    def stop(self) -> None:
        self._server.stop(0)


@pytest.fixture
def ca() -> DevCA:
    return DevCA("cluster.local")


@pytest.fixture
def servers() -> Iterator[Callable[..., TlsServer]]:
    started: list[TlsServer] = []

    def start(
        name: str, cert: IssuedCertificate | None, client_roots: bytes | None = None
    ) -> TlsServer:
        server = TlsServer(name, cert, client_roots)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def tls_context(
    client: IssuedCertificate | None,
    roots: bytes,
    *,
    pin: Sequence[str] = (REVIEWS,),
    sds_identity: str | None = None,
) -> tls_pb2.UpstreamTlsContext:
    """An UpstreamTlsContext: inline client certificate (or an SDS secret
    reference), inline trusted CA, URI SAN matchers ``pin``, ALPN h2."""
    common = tls_pb2.CommonTlsContext(alpn_protocols=["h2"])
    if client is not None:
        common.tls_certificates.add(
            certificate_chain=base_pb2.DataSource(inline_bytes=client.chain_pem),
            private_key=base_pb2.DataSource(inline_bytes=client.key_pem),
        )
    if sds_identity is not None:
        sds = common.tls_certificate_sds_secret_configs.add(name=sds_identity)
        sds.sds_config.ads.SetInParent()
    validation = common.validation_context
    validation.trusted_ca.inline_bytes = roots
    for spiffe_id in pin:
        validation.match_typed_subject_alt_names.add(
            san_type=common_pb2.SubjectAltNameMatcher.URI,
            matcher=string_pb2.StringMatcher(exact=spiffe_id),
        )
    return tls_pb2.UpstreamTlsContext(common_tls_context=common)


class Xds:
    """Publishes ``SERVICE`` -> one cluster ``CLUSTER`` (TLS or not) -> endpoints."""

    def __init__(self, ads: AdsServer) -> None:
        self.ads = ads

    def publish(
        self,
        addresses: Sequence[str],
        context: tls_pb2.UpstreamTlsContext | None,
        *,
        aggregate: bool = False,
    ) -> None:
        """With ``aggregate``, the route points at an aggregate cluster
        ``AGGREGATE`` whose only child is ``CLUSTER``."""
        c = cluster(CLUSTER)
        if context is not None:
            c.transport_socket.name = "envoy.transport_sockets.tls"
            c.transport_socket.typed_config.Pack(context)
        self.ads.set_resources(ENDPOINT_URL, {CLUSTER: endpoints(CLUSTER, list(addresses))})
        clusters = {CLUSTER: c}
        if aggregate:
            clusters[AGGREGATE] = cluster(AGGREGATE, aggregate=[CLUSTER])
        self.ads.set_resources(CLUSTER_URL, clusters)
        rc = "reviews-routes"
        target = AGGREGATE if aggregate else CLUSTER
        self.ads.set_resources(
            ROUTE_URL, {rc: route_config(rc, [SERVICE], [route(prefix="/", cluster=target)])}
        )
        self.ads.set_resources(LISTENER_URL, {SERVICE: listener(SERVICE, rc)})


@pytest.fixture
def xds(ads: AdsServer) -> Xds:
    return Xds(ads)


def reply(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(data)
    return out
