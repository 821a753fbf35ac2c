"""grpcio's own xDS-enabled server takes the inbound Listener the control plane sends.

The server is grpcio's (``grpc.server(..., xds=True)`` with
``xds_server_credentials``), bootstrapped as istio-agent would bootstrap it:
``server_listener_resource_name_template`` ``xds.istio.io/grpc/lds/inbound/%s``
and a ``file_watcher`` certificate provider named ``default`` holding an SVID
from the development CA. It is not a proxyless node, so it receives
certificate-provider references (both field generations, as istiod sends
them). Checked: STRICT serves mTLS only, RBAC (gRFC A41) allows the
principal the AuthorizationPolicy names and refuses another with
PERMISSION_DENIED, DISABLE serves plaintext, PERMISSIVE is accepted and
served in plaintext (gRPC does not match ``transport_protocol: "tls"``), and
no Listener is NACKed.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from proxyless.controlplane import ControlPlane
from proxyless.controlplane.ca import DevCA
from proxyless.testing.controlplane import free_port

pytestmark = [pytest.mark.timeout(90)]

SCRIPT = str(Path(__file__).with_name("cp_inbound_grpc_server.py"))
ECHO = "/proxyless.test.Echo/Echo"
FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
INTRUDER = "spiffe://cluster.local/ns/default/sa/intruder"


def _mesh(port: int, mode: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.default.svc.cluster.local]
  ports: [{{number: {port}, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, labels: {{app: echo}}}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: {mode}}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: frontend-only, namespace: default}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/frontend]}}}}]
    to: [{{operation: {{methods: [POST], paths: [/proxyless.test.Echo/*]}}}}]
"""


class _Server:
    def __init__(self, cp: ControlPlane, port: int, ca: DevCA, tmp: Path) -> None:
        issued = ca.issue("spiffe://cluster.local/ns/default/sa/echo", dns=("localhost",))
        (tmp / "cert.pem").write_bytes(issued.chain_pem)
        (tmp / "key.pem").write_bytes(issued.key_pem)
        (tmp / "root.pem").write_bytes(ca.roots_pem)
        bootstrap = cp.bootstrap(
            "echo-server", metadata={"INSTANCE_IPS": "127.0.0.1", "LABELS": {"app": "echo"}}
        )
        bootstrap["server_listener_resource_name_template"] = "xds.istio.io/grpc/lds/inbound/%s"
        bootstrap["certificate_providers"] = {
            "default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": str(tmp / "cert.pem"),
                    "private_key_file": str(tmp / "key.pem"),
                    "ca_certificate_file": str(tmp / "root.pem"),
                    "refresh_interval": "1s",
                },
            }
        }
        path = tmp / "bootstrap.json"
        path.write_text(json.dumps(bootstrap))
        self.process = subprocess.Popen(
            [sys.executable, SCRIPT, str(port)],
            env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(path)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == b"started"

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def ca() -> DevCA:
    return DevCA("cluster.local")


@contextmanager
def _serve(mode: str, ca: DevCA, tmp: Path) -> Iterator[tuple[ControlPlane, int]]:
    port = free_port()
    with ControlPlane(_mesh(port, mode), stderr=io.StringIO()) as cp:
        server = _Server(cp, port, ca, tmp)
        try:
            yield cp, port
        finally:
            server.stop()


def _call(port: int, credentials: grpc.ChannelCredentials | None, timeout: float = 10) -> str:
    target = f"127.0.0.1:{port}"
    if credentials is None:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(
            target, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
        )
    with channel:
        reply = channel.unary_unary(ECHO)(b"", timeout=timeout, wait_for_ready=True)
    return bytes(reply).decode()


def _mtls(ca: DevCA, spiffe_id: str) -> grpc.ChannelCredentials:
    issued = ca.issue(spiffe_id)
    return grpc.ssl_channel_credentials(
        root_certificates=ca.roots_pem,
        private_key=issued.key_pem,
        certificate_chain=issued.chain_pem,
    )


def test_strict_serves_mtls_and_enforces_rbac(ca: DevCA, tmp_path: Path) -> None:
    with _serve("STRICT", ca, tmp_path) as (cp, port):
        assert _call(port, _mtls(ca, FRONTEND), timeout=30) == FRONTEND
        with pytest.raises(grpc.RpcError) as denied:
            _call(port, _mtls(ca, INTRUDER))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as plaintext:
            _call(port, None, timeout=2)
        assert plaintext.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        assert cp.server.nacks() == []


@pytest.mark.parametrize("mode", ["DISABLE", "PERMISSIVE"])
def test_plaintext_modes(mode: str, ca: DevCA, tmp_path: Path) -> None:
    with _serve(mode, ca, tmp_path) as (cp, port):
        # plaintext callers have no principal: the ALLOW policy refuses them
        with pytest.raises(grpc.RpcError) as denied:
            _call(port, None, timeout=30)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert cp.server.nacks() == []
