"""DNS ServiceEntries and a Kubernetes dump, served by the embedded control plane.

Real gRPC and HTTP backends on 127.0.0.1, reached through proxyless' gRPC
channel and httpx transport: a ``resolution: DNS`` ServiceEntry whose
endpoint is ``localhost`` (the client resolves it: STRICT_DNS), a
``DNS_ROUND_ROBIN`` one without endpoints (its host ``localhost`` is resolved:
LOGICAL_DNS), and ``kubectl get -o yaml`` output (Services, EndpointSlices,
Endpoints, Pods) with a delegate VirtualService, Gateways and an ingress-only
VirtualService in the same file.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from typing import Any

import httpx
import pytest

import proxyless.grpc
import proxyless.httpx
from proxyless.controlplane import ControlPlane
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply

DUMP = Path(__file__).parent / "data" / "kubectl_get_bookinfo.yaml"


class _HttpBackend:
    """An HTTP server on 127.0.0.1 answering ``{"backend": name}``."""

    def __init__(self, name: str) -> None:
        backend = name

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"backend": backend, "host": self.headers["host"]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def grpc_backends() -> Iterator[dict[str, EchoServer]]:
    servers = {name: EchoServer(name).start() for name in ("dns", "v1", "v2")}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop(0)


@pytest.fixture
def http_backend() -> Iterator[_HttpBackend]:
    backend = _HttpBackend("web")
    try:
        yield backend
    finally:
        backend.stop()


def _port(server: EchoServer) -> int:
    return int(server.address.rpartition(":")[2])


def _mesh(cp: ControlPlane, namespace: str = "default") -> Mesh:
    return Mesh(cp.bootstrap(f"dns-k8s-{namespace}", namespace=namespace))


DNS_MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo-dns, namespace: default}
spec:
  hosts: [echo.dns.internal]
  location: MESH_EXTERNAL
  ports: [{number: 9000, name: grpc, protocol: GRPC}]
  resolution: DNS
  endpoints: [{address: localhost, ports: {grpc: $GRPC_PORT}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: localhost-rr, namespace: default}
spec:
  hosts: [localhost]
  ports: [{number: $GRPC_PORT, name: grpc, protocol: GRPC}]
  resolution: DNS_ROUND_ROBIN
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web-dns, namespace: default}
spec:
  hosts: [web.dns.internal]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: DNS
  endpoints: [{address: localhost, ports: {http: $HTTP_PORT}}]
"""


def test_dns_service_entries_route_to_a_backend_named_localhost(
    grpc_backends: dict[str, EchoServer], http_backend: _HttpBackend
) -> None:
    text = Template(DNS_MESH).substitute(
        GRPC_PORT=_port(grpc_backends["dns"]), HTTP_PORT=http_backend.port
    )
    with ControlPlane(text, stderr=io.StringIO()) as cp:
        mesh = _mesh(cp)
        try:
            strict = proxyless.grpc.channel("xds:///echo.dns.internal:9000", mesh=mesh)
            reply = strict.unary_unary(ECHO_METHOD)(b"x", timeout=10, wait_for_ready=True)
            assert decode_reply(reply)["backend"] == "dns"
            cluster = mesh.clusters.get("outbound|9000||echo.dns.internal")
            assert cluster is not None

            target = f"xds:///localhost:{_port(grpc_backends['dns'])}"
            logical = proxyless.grpc.channel(target, mesh=mesh)
            reply = logical.unary_unary(ECHO_METHOD)(b"x", timeout=10, wait_for_ready=True)
            assert decode_reply(reply)["backend"] == "dns"

            with httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh), timeout=10) as web:
                answer = web.get("http://web.dns.internal:8080/hello").json()
            assert answer["backend"] == "web"
            assert cp.server.nacks() == []
        finally:
            mesh.close()


ISTIO_FOR_DUMP = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    delegate: {name: reviews-jason}
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-jason, namespace: bookinfo}
spec:
  http:
  - route: [{destination: {host: reviews, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {exact: /productpage}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
"""


def test_kubernetes_dump_with_delegate_and_gateways_routes(
    grpc_backends: dict[str, EchoServer], http_backend: _HttpBackend
) -> None:
    dump = Template(DUMP.read_text()).substitute(
        REVIEWS_V1_PORT=_port(grpc_backends["v1"]),
        REVIEWS_V2_PORT=_port(grpc_backends["v2"]),
        RATINGS_PORT=http_backend.port,
    )
    with ControlPlane(dump + ISTIO_FOR_DUMP, stderr=io.StringIO()) as cp:
        skipped = [str(w) for w in cp.mesh.warnings if w.severity == "info"]
        assert any("Gateway/bookinfo-gateway" in s for s in skipped), skipped
        assert any("VirtualService/bookinfo" in s for s in skipped), skipped
        mesh = _mesh(cp, "bookinfo")
        try:
            echo = proxyless.grpc.channel("xds:///reviews:9080", mesh=mesh).unary_unary(ECHO_METHOD)
            echo(b"warmup", timeout=10, wait_for_ready=True)
            plain = {decode_reply(echo(b"x", timeout=10))["backend"] for _ in range(20)}
            jason = {
                decode_reply(echo(b"x", timeout=10, metadata=[("end-user", "jason")]))["backend"]
                for _ in range(20)
            }
            assert (plain, jason) == ({"v1"}, {"v2"})
            with httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh), timeout=10) as web:
                answer = web.get("http://ratings.bookinfo.svc.cluster.local:9080/ratings/0")
            assert answer.json()["backend"] == "web"
            assert cp.server.nacks() == []
        finally:
            mesh.close()
