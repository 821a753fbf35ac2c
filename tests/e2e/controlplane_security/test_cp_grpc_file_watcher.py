"""grpcio's native xDS client, certificates from --ca-dir files, on a cluster in istiod's gRPC shape.

The control plane gives grpcio (a gRFC A29 client) ISTIO_MUTUAL clusters
naming certificate-provider instance ``default`` in both field generations,
as istiod's gRPC generator does; grpcio's bootstrap maps ``default`` to a
``file_watcher`` over the files the control plane wrote. The backend is a
plain grpcio TLS server presenting an SVID from the same CA and requiring a
client certificate: a call succeeds only over mTLS with the SAN check passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from proxyless.controlplane import ControlPlane, NodeIdentity

pytestmark = pytest.mark.timeout(90)

HOST = "reviews.default.svc.cluster.local"
METHOD = "/proxyless.test.Echo/Echo"
CLIENT = """
import json, sys, grpc, grpc.experimental
creds = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
channel = grpc.secure_channel(sys.argv[1], creds)
echo = channel.unary_unary(sys.argv[2])
try:
    reply = echo(b"hi", timeout=15)
    print(json.dumps({"reply": reply.decode()}))
except grpc.RpcError as exc:
    print(json.dumps({"error": exc.code().name + ": " + str(exc.details())}))
"""


def _mesh(port: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [{HOST}]
  ports: [{{number: 9080, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {port}}}, serviceAccount: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
"""


def _tls_server(base: Path) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"served over mTLS")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("proxyless.test.Echo", {"Echo": handler}),)
    )
    credentials = grpc.ssl_server_credentials(
        [((base / "key.pem").read_bytes(), (base / "cert-chain.pem").read_bytes())],
        root_certificates=(base / "root-cert.pem").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def _call(cp: ControlPlane, tmp_path: Path) -> dict[str, str]:
    bootstrap = cp.bootstrap(
        "grpc-checkout",
        metadata={"SERVICE_ACCOUNT": "checkout"},
        certificates=NodeIdentity("default", "checkout"),
    )
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, f"xds:///{HOST}:9080", METHOD],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(path)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("presented", "ok"),
    [
        pytest.param("reviews", True, id="pinned-identity"),
        pytest.param("impostor", False, id="impostor-refused"),
    ],
)
def test_grpcio_calls_over_mtls_with_ca_dir_files(tmp_path: Path, presented: str, ok: bool) -> None:
    ca_dir = tmp_path / "certs"
    identities = (NodeIdentity("default", "checkout"), NodeIdentity("default", "impostor"))
    with ControlPlane(_mesh(1), ca_dir=ca_dir, identities=identities) as cp:
        server, port = _tls_server(ca_dir / "default" / presented)
        try:
            cp.update(_mesh(port))
            result = _call(cp, tmp_path)
        finally:
            server.stop(None)
        assert cp.server.nacks() == []
    if ok:
        assert result == {"reply": "served over mTLS"}
    else:
        assert "SANs from certificate did not match" in result.get("error", ""), result
