"""The embedded control plane's inbound Listeners served by ``proxyless.grpc.server``.

A ServiceEntry endpoint on the server's port, PeerAuthentication PERMISSIVE
and an AuthorizationPolicy allowing only ``sa/frontend``, translated by the
embedded control plane. The server is a proxyless node: its certificate and
trust bundle come over SDS on the ADS stream (``default``, ``ROOTCA``). The
server presents its SVID; an mTLS caller (HTTP/2 over Python's ``ssl``,
since the SVID has only a URI SAN, which a stock grpcio client cannot check)
with the allowed identity is served and named by ``peer_identity``; another
identity and a plaintext caller are refused with PERMISSION_DENIED.
"""

from __future__ import annotations

import io
import socket
import ssl
import struct
from concurrent import futures
from pathlib import Path

import grpc
import httpx
from tests.e2e.conftest import wait_until
from tests.e2e.grpc_server.conftest import TEMPLATE, WHO_HANDLER

import proxyless.grpc
from proxyless.controlplane import ControlPlane
from proxyless.controlplane.ca import DevCA
from proxyless.mesh import Mesh
from proxyless.security.peer import peer_certificate

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
INTRUDER = "spiffe://cluster.local/ns/default/sa/intruder"
ECHO = "spiffe://cluster.local/ns/default/sa/echo"


def _mesh(port: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.default.svc.cluster.local]
  ports: [{{number: {port}, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, labels: {{app: echo}}, serviceAccount: echo}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: PERMISSIVE}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: frontend-only, namespace: default}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/frontend]}}}}]
    to: [{{operation: {{paths: [/test.Identity/*]}}}}]
"""


def _context(ca: DevCA, spiffe_id: str, tmp: Path) -> ssl.SSLContext:
    issued = ca.issue(spiffe_id)
    chain, key = tmp / f"{spiffe_id.rsplit('/', 1)[1]}.pem", tmp / "key.pem"
    chain.write_bytes(issued.chain_pem)
    key.write_bytes(issued.key_pem)
    ctx = ssl.create_default_context(cadata=ca.roots_pem.decode())
    ctx.check_hostname = False  # a SPIFFE SVID has no DNS name; its URI is checked below
    ctx.load_cert_chain(chain, key)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _grpc_over_h2(port: int, ctx: ssl.SSLContext) -> tuple[str, str]:
    """One unary call to /test.Identity/Who: (grpc-status, reply)."""
    with httpx.Client(http2=True, verify=ctx, timeout=5) as client:
        response = client.post(
            f"https://127.0.0.1:{port}/test.Identity/Who",
            content=b"\x00" + struct.pack(">I", 0),
            headers={"content-type": "application/grpc", "te": "trailers"},
        )
    assert response.http_version == "HTTP/2"
    body = response.content
    status = response.headers.get("grpc-status", "0" if body else "?")
    return status, body[5:].decode()


def _handshake_identity(port: int, ctx: ssl.SSLContext) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with ctx.wrap_socket(raw) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return None if der is None else peer_certificate(der).spiffe_id


def test_control_plane_permissive_listener_with_rbac(tmp_path: Path) -> None:
    with ControlPlane("", stderr=io.StringIO()) as cp:
        bootstrap = cp.bootstrap(
            "echo-1",
            metadata={
                "INSTANCE_IPS": "127.0.0.1",
                "LABELS": {"app": "echo"},
                "SERVICE_ACCOUNT": "echo",
            },
        )
        bootstrap["server_listener_resource_name_template"] = TEMPLATE
        with Mesh(bootstrap) as server_mesh:
            server = proxyless.grpc.server(
                futures.ThreadPoolExecutor(4), mesh=server_mesh, handlers=[WHO_HANDLER]
            )
            # Bind first: the ServiceEntry names the server's port.
            port = server.add_port("127.0.0.1:0")
            server.start()
            try:
                cp.update(_mesh(port))
                allowed = _context(cp.ca, FRONTEND, tmp_path)
                wait_until(
                    lambda: _handshake_identity(port, allowed) == ECHO,
                    what="the server to present its SVID from SDS",
                )
                assert _grpc_over_h2(port, allowed) == ("0", FRONTEND)
                status, _ = _grpc_over_h2(port, _context(cp.ca, INTRUDER, tmp_path))
                assert status == str(grpc.StatusCode.PERMISSION_DENIED.value[0])
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    try:
                        channel.unary_unary("/test.Identity/Who")(b"", timeout=5)
                        raise AssertionError("a plaintext caller was served")
                    except grpc.RpcError as exc:
                        code = exc.code()  # type: ignore[attr-defined]
                        assert code == grpc.StatusCode.PERMISSION_DENIED
            finally:
                server.stop(0).wait(5)
