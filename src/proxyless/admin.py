"""The opt-in admin endpoints: CSDS over gRPC, JSON over HTTP.

``proxyless.admin.serve(port)`` starts a gRPC server on ``127.0.0.1`` that
serves ``envoy.service.status.v3.ClientStatusDiscoveryService`` (gRFC A40),
so ``grpcdebug <host:port> xds status`` / ``xds config`` and
``proxyless status <host:port>`` read this process's xDS client.
``add_admin_services(server)`` adds the same service to a gRPC server the
application already runs, as gRPC's own admin interface does (gRFC A38).

``proxyless.admin.serve_http(port)`` is for applications without a gRPC
server (httpx only): ``GET /config_dump`` returns the node, the xDS servers
and every resource's status as JSON; ``GET /clusters`` each cluster's
endpoints (health, ejection, requests in flight), circuit breaker and retry
budget usage, and TLS state.

Both listen on loopback unless told otherwise; they expose configuration
(never keys), so do not bind them where untrusted callers can reach them.
Without ``meshes`` they report the process-wide :meth:`Mesh.default`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from envoy.service.status.v3 import csds_pb2_grpc

from proxyless.mesh import Mesh
from proxyless.observability.csds import CsdsServicer
from proxyless.observability.dump import clusters, config_dump

__all__ = ["AdminServer", "add_admin_services", "serve", "serve_http"]


def _meshes(meshes: Sequence[Mesh] | None) -> Callable[[], Sequence[Mesh]]:
    if meshes is not None:
        fixed = list(meshes)
        return lambda: fixed
    return lambda: [Mesh.default()]


def add_admin_services(server: Any, meshes: Sequence[Mesh] | None = None) -> None:
    """Add CSDS to a ``grpc.server`` the application runs."""
    csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
        CsdsServicer(_meshes(meshes)), server
    )


class AdminServer:
    """A running admin endpoint: ``port``, ``target`` and :meth:`stop`."""

    def __init__(self, port: int, host: str, stop: Callable[[], None]) -> None:
        self.port = port
        self.host = host
        self._stop = stop

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        self._stop()

    def __enter__(self) -> AdminServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"AdminServer({self.target})"


def serve(
    port: int = 0, *, host: str = "127.0.0.1", meshes: Sequence[Mesh] | None = None
) -> AdminServer:
    """Serve CSDS on ``host:port`` (0 picks a port); see the module docstring."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="proxyless-admin")
    )
    add_admin_services(server, meshes)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"proxyless admin: cannot listen on {host}:{port}")
    server.start()

    def stop() -> None:
        server.stop(None)

    return AdminServer(bound, host, stop)


def serve_http(
    port: int = 0, *, host: str = "127.0.0.1", meshes: Sequence[Mesh] | None = None
) -> AdminServer:
    """Serve ``/config_dump`` and ``/clusters`` as JSON (see the module docstring)."""
    get_meshes = _meshes(meshes)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/config_dump":
                body: Any = [config_dump(m) for m in get_meshes() if not m.closed]
            elif path == "/clusters":
                body = [
                    {"node": m.bootstrap.node.id, "clusters": clusters(m)}
                    for m in get_meshes()
                    if not m.closed
                ]
            else:
                self.send_error(404, "try /config_dump or /clusters")
                return
            data = json.dumps(body, indent=2, default=str).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="proxyless-admin-http", daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)

    return AdminServer(httpd.server_address[1], host, stop)
