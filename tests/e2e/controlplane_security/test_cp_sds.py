"""The embedded control plane's SVIDs over real ADS streams, a real Mesh, and the CLI's --ca-dir."""

from __future__ import annotations

import os
import queue
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from proxyless.controlplane import ControlPlane
from proxyless.controlplane.model import SECRET_TYPE
from proxyless.mesh import Mesh
from proxyless.resources.model.security import SdsSecretConfig, Secret
from proxyless.resources.types import CLUSTER, SECRET
from proxyless.security.material import load_identity
from proxyless.testing import FakeClock
from proxyless.testing.controlplane import RawAdsStream, make_node

HOST = "reviews.default.svc.cluster.local"
CLUSTER_NAME = f"outbound|9080||{HOST}"
MESH = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [{HOST}]
  ports: [{{number: 9080, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: 7001}}, serviceAccount: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
"""


class Collect:
    """A resource watcher putting every delivered value on a queue."""

    def __init__(self) -> None:
        self.values: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def on_changed(self, value: Any) -> None:
        self.values.put(value)

    def on_resource_error(self, error: Exception) -> None:
        self.values.put(error)

    def on_ambient_error(self, error: Exception) -> None:
        pass

    def next(self, timeout: float = 10.0) -> Any:
        return self.values.get(timeout=timeout)


def _wall() -> FakeClock:
    return FakeClock(start=0.0, wall_offset=float(int(time.time())))


def test_a_mesh_node_receives_its_secrets_over_ads_and_their_renewal() -> None:
    clock = _wall()
    with ControlPlane(MESH, clock=clock, certificate_ttl=100.0, renew_check_interval=0) as cp:
        bootstrap = cp.bootstrap("checkout-1", metadata={"SERVICE_ACCOUNT": "checkout"})
        with Mesh(bootstrap) as mesh:
            default, root, cluster = Collect(), Collect(), Collect()
            mesh.xds_client.watch(SECRET, "default", default)
            mesh.xds_client.watch(SECRET, "ROOTCA", root)
            mesh.xds_client.watch(CLUSTER, CLUSTER_NAME, cluster)
            first = default.next()
            assert isinstance(first, Secret) and first.tls_certificate is not None
            chain = first.tls_certificate.certificate_chain.inline
            key = first.tls_certificate.private_key.inline
            assert chain is not None and key is not None
            identity = load_identity(chain, key, source="default", now=clock.time())
            assert identity.spiffe_id == "spiffe://cluster.local/ns/default/sa/checkout"
            trust = root.next()
            assert isinstance(trust, Secret) and trust.validation_context is not None
            assert trust.validation_context.trusted_ca is not None
            assert trust.validation_context.trusted_ca.inline == cp.ca.roots_pem
            tls = cluster.next().upstream_tls
            assert tls.identity == SdsSecretConfig("default")
            assert tls.validation_sds_secret == "ROOTCA"
            assert [m.matcher.value for m in tls.validation.match_subject_alt_names] == [
                "spiffe://cluster.local/ns/default/sa/reviews"
            ]
            before = cp.server.version(SECRET_TYPE)
            clock.advance(81.0)
            assert cp.renew_certificates() == 1
            assert cp.server.version(SECRET_TYPE) != before
            second = default.next()
            assert second.tls_certificate.private_key.inline != key
            renewed = load_identity(
                second.tls_certificate.certificate_chain.inline,
                second.tls_certificate.private_key.inline,
                source="default",
                now=clock.time(),
            )
            assert renewed.spiffe_id == identity.spiffe_id
            assert renewed.not_after > identity.not_after


def _subscribe(stream: RawAdsStream, node_id: str, account: str) -> list[secret_pb2.Secret]:
    node = make_node(
        node_id,
        metadata={"SERVICE_ACCOUNT": account, "NAMESPACE": "default"},
        user_agent_name="proxyless",
    )
    if stream.delta:
        stream.delta_request(SECRET_TYPE, ["default", "ROOTCA"], node=node)
        packed = [r.resource for r in stream.recv().resources]
    else:
        stream.request(SECRET_TYPE, ["default", "ROOTCA"], node=node)
        packed = list(stream.recv().resources)
    out = []
    for item in packed:
        secret = secret_pb2.Secret()
        assert item.Unpack(secret)
        out.append(secret)
    return out


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_each_stream_gets_only_its_own_nodes_key(delta: bool) -> None:
    with ControlPlane(MESH) as cp:
        with RawAdsStream(cp.target, delta=delta) as a, RawAdsStream(cp.target, delta=delta) as b:
            secrets_a = _subscribe(a, "node-a", "reviews")
            secrets_b = _subscribe(b, "node-b", "ratings")
            assert sorted(s.name for s in secrets_a) == ["ROOTCA", "default"]
            keys = {}
            for name, secrets in (("a", secrets_a), ("b", secrets_b)):
                (default,) = [s for s in secrets if s.name == "default"]
                cert = default.tls_certificate
                identity = load_identity(
                    cert.certificate_chain.inline_bytes,
                    cert.private_key.inline_bytes,
                    source=name,
                    now=time.time(),
                )
                keys[name] = (identity.spiffe_id, cert.private_key.inline_bytes)
            assert keys["a"][0] == "spiffe://cluster.local/ns/default/sa/reviews"
            assert keys["b"][0] == "spiffe://cluster.local/ns/default/sa/ratings"
            assert keys["a"][1] != keys["b"][1]
            sent_to_a = b"".join(s.SerializeToString() for s in secrets_a)
            assert keys["b"][1] not in sent_to_a
            assert sorted(cp.server.node_ids()) == ["node-a", "node-b"]


def test_cli_ca_dir_writes_files_a_file_watcher_reads(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH)
    ca_dir = tmp_path / "certs"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxyless.cli",
            "control-plane",
            "--config",
            str(config),
            "--port",
            "0",
            "--ca-dir",
            str(ca_dir),
            "--identity",
            "ops/cron",
            "--trust-domain",
            "example.org",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"writing workload certificates for 2 identities under {ca_dir}" in line, line
        assert "serving" in process.stdout.readline()
        for ns, sa in (("default", "reviews"), ("ops", "cron")):
            base = ca_dir / ns / sa
            key = base / "key.pem"
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
            identity = load_identity(
                (base / "cert-chain.pem").read_bytes(),
                key.read_bytes(),
                source=str(base),
                now=time.time(),
            )
            assert identity.spiffe_id == f"spiffe://example.org/ns/{ns}/sa/{sa}"
            assert (base / "root-cert.pem").read_bytes() in identity.chain_pem
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_refuses_a_bad_identity(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxyless.cli",
            "control-plane",
            "--config",
            str(config),
            "--port",
            "0",
            "--ca-dir",
            str(tmp_path),
            "--identity",
            "cron",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "--identity must be namespace/service-account, got 'cron'" in done.stderr
