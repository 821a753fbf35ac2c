"""Fixtures for the httpx transports against TLS clusters.

Everything is real and on 127.0.0.1: the ADS server of
``tests/e2e/conftest.py``, certificates minted by a
:class:`~proxyless.controlplane.ca.DevCA`, and :class:`TlsEcho`, a threaded
``http.server`` behind an ``ssl`` server context
(:func:`proxyless.security.server_context`) that requires a client
certificate, records the SNI and the client's certificate of every request,
and answers with JSON naming itself. Clusters carry inline data-source TLS
contexts (:func:`tls_cluster`).
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2
from tests.e2e.httpx.conftest import Service

from proxyless.controlplane.ca import DevCA, IssuedCertificate
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.security import load_identity, load_trust, peer_certificate, server_context
from proxyless.testing.resources import cluster

WEB = "spiffe://cluster.local/ns/default/sa/web"
REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"
RATINGS = "spiffe://cluster.local/ns/default/sa/ratings"
URL = "http://svc:8080"
CLUSTER = "c"


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:16]


def cert_fingerprint(issued: IssuedCertificate) -> str:
    """The fingerprint of ``issued``'s leaf (what :class:`TlsEcho` records)."""
    leaf = issued.chain_pem.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    return fingerprint(ssl.PEM_cert_to_DER_cert(leaf.decode()))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    context: ssl.SSLContext
    owner: TlsEcho

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs on the connection's own thread.
        request.settimeout(10)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self.owner.handshake_failures.append(str(exc))
            return
        der = tls.getpeercert(binary_form=True)
        self.owner.connections.append(fingerprint(der) if der else "")
        try:
            super().finish_request(tls, client_address)  # until the client closes
        finally:
            self.owner.closed.append(fingerprint(der) if der else "")
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class TlsEcho:
    """An HTTPS/1.1 server on 127.0.0.1 presenting ``issued`` and requiring a
    client certificate from ``client_ca`` (module docstring).

    ``requests``: one record per request (``backend``, ``path``, ``host``,
    ``client`` SPIFFE ID, ``client_cert`` fingerprint); ``connections``: the
    client certificate fingerprint of every connection; ``sni``: the server
    name of every handshake (None when the client sent none).
    """

    def __init__(self, name: str, issued: IssuedCertificate, client_ca: DevCA) -> None:
        self.name = name
        self.requests: list[dict[str, Any]] = []
        self.connections: list[str] = []
        self.closed: list[str] = []
        self.handshake_failures: list[str] = []
        self.sni: list[str | None] = []
        identity = load_identity(
            issued.chain_pem, issued.key_pem, source=f"{name} certificate", now=time.time()
        )
        trust = load_trust(client_ca.roots_pem, source="client CA")
        context = server_context(identity, trust, require_client_certificate=True)
        context.sni_callback = self._on_sni
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                der = self.connection.getpeercert(binary_form=True)
                record = {
                    "backend": owner.name,
                    "path": self.path,
                    "host": self.headers.get("host"),
                    "client": peer_certificate(der).spiffe_id if der else None,
                    "client_cert": fingerprint(der) if der else "",
                }
                owner.requests.append(record)
                data = json.dumps(record).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.context = context
        self._server.owner = self
        self.port = self._server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def _on_sni(self, sock: Any, server_name: str | None, context: Any) -> None:
        self.sni.append(server_name)

    def start(self) -> TlsEcho:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _pack(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def tls_cluster(
    name: str,
    client: IssuedCertificate | None,
    roots_pem: bytes,
    pinned: Sequence[str] = (),
    *,
    sni: str = "",
    sds_identity: str = "",
    proto: cluster_pb2.Cluster | None = None,
) -> cluster_pb2.Cluster:
    """An EDS cluster whose UpstreamTlsContext presents ``client`` (inline),
    or the SDS secret ``sds_identity``, trusts ``roots_pem`` and pins the
    URI SANs ``pinned``."""
    common = tls_pb2.CommonTlsContext()
    if client is not None:
        common.tls_certificates.add(
            certificate_chain=base_pb2.DataSource(inline_bytes=client.chain_pem),
            private_key=base_pb2.DataSource(inline_bytes=client.key_pem),
        )
    if sds_identity:
        sds = secret_pb2.SdsSecretConfig(name=sds_identity)
        sds.sds_config.ads.SetInParent()
        common.tls_certificate_sds_secret_configs.append(sds)
    validation = common.validation_context
    validation.trusted_ca.inline_bytes = roots_pem
    for spiffe_id in pinned:
        validation.match_typed_subject_alt_names.add(
            san_type=common_pb2.SubjectAltNameMatcher.URI,
            matcher=string_pb2.StringMatcher(exact=spiffe_id),
        )
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=sni)
    c = proto if proto is not None else cluster(name)
    c.transport_socket.CopyFrom(
        base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_pack(context))
    )
    return c


@pytest.fixture(scope="session")
def ca() -> DevCA:
    return DevCA("cluster.local")


@pytest.fixture(scope="session")
def other_ca() -> DevCA:
    return DevCA("cluster.local")


@pytest.fixture(scope="session")
def web(ca: DevCA) -> IssuedCertificate:
    """The client's SVID."""
    return ca.issue(WEB)


@pytest.fixture
def service(ads: AdsServer) -> Service:
    return Service(ads)


@pytest.fixture
def mesh(make_mesh: Callable[..., Mesh]) -> Mesh:
    return make_mesh(rng=random.Random(1234))


@pytest.fixture
def servers(ca: DevCA) -> Iterator[Callable[..., TlsEcho]]:
    """``servers(name, issued)``: a started :class:`TlsEcho` (client CA: ``ca``)."""
    started: list[TlsEcho] = []

    def start(name: str, issued: IssuedCertificate) -> TlsEcho:
        server = TlsEcho(name, issued, ca).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
