"""A hostile header or path against a backtracking-prone route regex, end to end.

Envoy's ``safe_regex`` is RE2 so that matching caller-controlled text is
linear in its length. The route below guards one subset with the header
matcher ``(a+)+$`` and one with the path regex ``/x/(a+)+$``: a backtracking
engine never finishes on ``aaa…a!`` (40 characters already take longer than
any deadline, and it holds the GIL meanwhile). Served by the embedded
control plane from Istio YAML, a gRPC call through ``proxyless.grpc.channel``
and a request through ``proxyless.httpx.Transport`` carrying that text must
be routed (to the fallback subset) within the call's deadline.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import httpx
import pytest

import proxyless
import proxyless.grpc
import proxyless.httpx
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply
from proxyless.testing.controlplane import running_control_plane

HOST = "guarded.default.svc.cluster.local"
GRPC_TARGET = "xds:///guarded:9080"
HTTP_URL = "http://guarded:8080"
DEADLINE = 2.0
# Long enough that a backtracking engine never finishes, short enough for
# gRPC's default 8 KiB metadata limit on the backend.
HOSTILE = "a" * 4000 + "!"

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: guarded, namespace: default}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 9080, name: grpc, protocol: GRPC}}
  - {{number: 8080, name: http, protocol: HTTP}}
  endpoints:
  - address: 127.0.0.1
    ports: {{grpc: {grpc_matched}, http: {http_matched}}}
    labels: {{version: matched}}
  - address: 127.0.0.1
    ports: {{grpc: {grpc_fallback}, http: {http_fallback}}}
    labels: {{version: fallback}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: guarded, namespace: default}}
spec:
  hosts: [guarded]
  http:
  - name: by-header
    match:
    - headers:
        x-user: {{regex: "(a+)+$"}}
    route:
    - destination: {{host: guarded, subset: matched}}
  - name: by-path
    match:
    - uri: {{regex: "/x/(a+)+$"}}
    route:
    - destination: {{host: guarded, subset: matched}}
  - name: everyone-else
    route:
    - destination: {{host: guarded, subset: fallback}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: guarded, namespace: default}}
spec:
  host: guarded
  subsets:
  - {{name: matched, labels: {{version: matched}}}}
  - {{name: fallback, labels: {{version: fallback}}}}
"""


class _NamedHttpServer:
    """An HTTP/1.1 server on 127.0.0.1 answering every GET with its name."""

    def __init__(self, name: str) -> None:
        body = json.dumps({"backend": name}).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def mesh() -> Iterator[proxyless.Mesh]:
    grpc_servers = {name: EchoServer(name).start() for name in ("matched", "fallback")}
    http_servers = {name: _NamedHttpServer(name) for name in ("matched", "fallback")}
    config = MESH.format(
        host=HOST,
        grpc_matched=grpc_servers["matched"].port,
        grpc_fallback=grpc_servers["fallback"].port,
        http_matched=http_servers["matched"].port,
        http_fallback=http_servers["fallback"].port,
    )
    try:
        with running_control_plane(config) as control_plane:
            client = proxyless.Mesh(control_plane.bootstrap(node_id="routing-regex"))
            try:
                yield client
            finally:
                client.close()
    finally:
        for server in grpc_servers.values():
            server.stop(0)
        for http_server in http_servers.values():
            http_server.stop()


def _grpc_backend(call: Callable[..., bytes], user: str) -> str:
    try:
        reply = call(b"x", timeout=DEADLINE, metadata=[("x-user", user)])
    except grpc.RpcError as exc:
        return f"error: {exc.details()}"  # type: ignore[attr-defined]
    name: str = decode_reply(reply)["backend"]
    return name


def test_grpc_hostile_header_is_routed_within_the_deadline(mesh: proxyless.Mesh) -> None:
    channel = proxyless.grpc.channel(GRPC_TARGET, mesh=mesh)
    try:
        call = channel.unary_unary(ECHO_METHOD)
        # The first call waits for the config (listener, routes, clusters, endpoints).
        assert _grpc_backend(call, "aaaa") == "matched"
        assert _grpc_backend(call, HOSTILE) == "fallback"
        assert _grpc_backend(call, "a" * 4000) == "matched"
    finally:
        channel.close()


def test_httpx_hostile_header_and_path_are_routed_within_the_deadline(
    mesh: proxyless.Mesh,
) -> None:
    with httpx.Client(transport=proxyless.httpx.Transport(mesh), timeout=DEADLINE) as client:

        def backend(path: str, user: str) -> str:
            response = client.get(f"{HTTP_URL}{path}", headers={"x-user": user})
            assert response.status_code == 200, response.text
            name: str = response.json()["backend"]
            return name

        assert backend("/", "aaaa") == "matched"
        assert backend("/", HOSTILE) == "fallback"
        assert backend("/x/" + "a" * 4000, "-") == "matched"
        assert backend("/x/" + HOSTILE, "-") == "fallback"
