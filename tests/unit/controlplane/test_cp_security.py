"""The embedded control plane's SVIDs: identity per node, Secrets per node, renewal, files."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from proxyless.controlplane import ControlPlane
from proxyless.controlplane.cert_files import file_watcher_provider
from proxyless.controlplane.identity import NodeIdentity, node_identity, workload_identities
from proxyless.controlplane.istio.load import load_mesh
from proxyless.controlplane.model import SECRET_TYPE, NodeInfo
from proxyless.resources.parse import decode_secret
from proxyless.security.material import load_identity, load_trust
from proxyless.testing import FakeClock
from proxyless.testing.controlplane import make_node

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-1, namespace: shop}
spec: {address: 10.0.0.7, labels: {app: reviews}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: rate}
spec:
  hosts: [ratings.rate.svc.cluster.local]
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  endpoints:
  - {address: 10.0.0.9, serviceAccount: ratings}
  - {address: 10.0.0.10}
"""


def node(node_id: str = "n1", user_agent: str = "proxyless", **metadata: Any) -> NodeInfo:
    return NodeInfo.from_proto(
        make_node(node_id, metadata=metadata or None, user_agent_name=user_agent)
    )


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        pytest.param(
            node(SERVICE_ACCOUNT="checkout", NAMESPACE="shop"),
            NodeIdentity("shop", "checkout"),
            id="metadata",
        ),
        pytest.param(
            node(SERVICE_ACCOUNT="checkout", POD_NAMESPACE="pods"),
            NodeIdentity("pods", "checkout"),
            id="pod-namespace",
        ),
        pytest.param(
            node("sidecar~10.1.1.1~checkout-5d9.payments~payments.svc.cluster.local"),
            NodeIdentity("payments", "default"),
            id="istio-node-id-default-account",
        ),
        pytest.param(
            node("sidecar~10.0.0.7~reviews-1.shop~shop.svc.cluster.local"),
            NodeIdentity("shop", "reviews"),
            id="istio-node-id-ip-matches-workload-entry",
        ),
        pytest.param(
            node(INSTANCE_IPS="192.168.0.1,10.0.0.7"),
            NodeIdentity("shop", "reviews"),
            id="instance-ips-workload-entry",
        ),
        pytest.param(
            node(INSTANCE_IPS=["10.0.0.9"], NAMESPACE="default"),
            NodeIdentity("rate", "ratings"),
            id="instance-ips-service-entry-endpoint",
        ),
        pytest.param(
            node(INSTANCE_IPS="10.0.0.10"),
            NodeIdentity("default", "default"),
            id="endpoint-without-account",
        ),
        pytest.param(
            node(INSTANCE_IPS="10.0.0.7", SERVICE_ACCOUNT="other", NAMESPACE="shop"),
            NodeIdentity("shop", "other"),
            id="metadata-account-wins",
        ),
        pytest.param(node(), NodeIdentity("default", "default"), id="nothing-known"),
    ],
)
def test_node_identity(info: NodeInfo, expected: NodeIdentity) -> None:
    assert node_identity(info, load_mesh(MESH, "mesh.yaml")) == expected


def test_workload_identities_are_the_declared_service_accounts() -> None:
    mesh = load_mesh(MESH, "mesh.yaml")
    extra = NodeIdentity("ops", "cron")
    assert workload_identities(mesh, [extra]) == (
        NodeIdentity("ops", "cron"),
        NodeIdentity("rate", "ratings"),
        NodeIdentity("shop", "reviews"),
    )


def _secrets(cp: ControlPlane, info: NodeInfo) -> dict[str, secret_pb2.Secret]:
    resources = cp.snapshot_for(info).get(SECRET_TYPE)
    out = {}
    for name, res in resources.items():
        assert isinstance(res, secret_pb2.Secret)
        out[name] = res
    return out


def _identity(cp: ControlPlane, info: NodeInfo) -> tuple[str | None, bytes]:
    secrets = _secrets(cp, info)
    assert sorted(secrets) == ["ROOTCA", "default"]
    for secret in secrets.values():  # both parse as proxyless' client parses them
        assert decode_secret(secret.SerializeToString()).ok
    cert = secrets["default"].tls_certificate
    identity = load_identity(
        cert.certificate_chain.inline_bytes,
        cert.private_key.inline_bytes,
        source="default",
        now=cp.clock.time(),
    )
    roots = secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes
    assert roots == cp.ca.roots_pem
    load_trust(roots, source="ROOTCA")
    return identity.spiffe_id, cert.private_key.inline_bytes


def _wall() -> FakeClock:
    """A fake clock starting at the real date, so the certificates it dates load."""
    return FakeClock(start=0.0, wall_offset=float(int(time.time())))


@pytest.fixture
def cp() -> ControlPlane:
    return ControlPlane(MESH, trust_domain="example.org", clock=_wall())


@pytest.mark.parametrize(
    ("info", "spiffe"),
    [
        pytest.param(
            node(SERVICE_ACCOUNT="checkout", NAMESPACE="shop"),
            "spiffe://example.org/ns/shop/sa/checkout",
            id="metadata",
        ),
        pytest.param(
            node("sidecar~10.0.0.7~reviews-1.shop~shop.svc.cluster.local"),
            "spiffe://example.org/ns/shop/sa/reviews",
            id="workload-entry",
        ),
        pytest.param(node(), "spiffe://example.org/ns/default/sa/default", id="default"),
        pytest.param(
            node("envoy", user_agent="envoy", NAMESPACE="shop", SERVICE_ACCOUNT="gw"),
            "spiffe://example.org/ns/shop/sa/gw",
            id="envoy-node",
        ),
    ],
)
def test_each_node_gets_its_own_svid(cp: ControlPlane, info: NodeInfo, spiffe: str) -> None:
    got, _ = _identity(cp, info)
    assert got == spiffe


def test_a_node_never_receives_another_nodes_key() -> None:
    cp = ControlPlane(MESH, clock=_wall())
    same_identity = {"SERVICE_ACCOUNT": "reviews", "NAMESPACE": "shop"}
    a_id, a_key = _identity(cp, node("a", **same_identity))
    b_id, b_key = _identity(cp, node("b", **same_identity))
    assert a_id == b_id == "spiffe://cluster.local/ns/shop/sa/reviews"
    assert a_key != b_key
    again_id, again_key = _identity(cp, node("a", **same_identity))
    assert (again_id, again_key) == (a_id, a_key)  # a reconnecting node keeps its SVID


def test_svids_are_renewed_at_80_percent_of_their_lifetime() -> None:
    clock = _wall()
    cp = ControlPlane(MESH, clock=clock, certificate_ttl=100.0)
    info = node("a", SERVICE_ACCOUNT="reviews", NAMESPACE="shop")
    _, first_key = _identity(cp, info)
    (held,) = cp.svids.held().values()
    assert held.renew_at == held.issued_at + 80.0
    clock.advance(79.0)
    assert cp.renew_certificates() == 0
    assert _identity(cp, info)[1] == first_key
    clock.advance(1.0)
    assert cp.renew_certificates() == 1
    spiffe, second_key = _identity(cp, info)
    assert spiffe == "spiffe://cluster.local/ns/shop/sa/reviews"
    assert second_key != first_key
    (renewed,) = cp.svids.held().values()
    assert renewed.issued_at == held.issued_at + 80.0
    assert renewed.certificate.not_after > held.certificate.not_after


def test_svids_of_disconnected_nodes_are_forgotten() -> None:
    cp = ControlPlane(MESH, clock=_wall())
    _identity(cp, node("gone"))
    assert cp.svids.held()
    cp.forget_disconnected()  # the server has no open stream
    assert not cp.svids.held()


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ttl"):
        ControlPlane(MESH, certificate_ttl=0)


def test_ca_dir_files_load_and_are_rewritten_on_renewal(tmp_path: Path) -> None:
    clock = _wall()
    cp = ControlPlane(
        MESH,
        clock=clock,
        certificate_ttl=100.0,
        ca_dir=tmp_path,
        identities=(NodeIdentity("ops", "cron"),),
        renew_check_interval=0,
    )
    files = cp.certificate_files
    assert files is not None
    assert files.sync() == [
        NodeIdentity("ops", "cron"),
        NodeIdentity("rate", "ratings"),
        NodeIdentity("shop", "reviews"),
    ]
    config = file_watcher_provider(tmp_path, NodeIdentity("shop", "reviews"))["config"]
    key_file = Path(config["private_key_file"])
    assert key_file == tmp_path / "shop" / "reviews" / "key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    chain = Path(config["certificate_file"]).read_bytes()
    identity = load_identity(chain, key_file.read_bytes(), source="files", now=clock.time())
    assert identity.spiffe_id == "spiffe://cluster.local/ns/shop/sa/reviews"
    assert Path(config["ca_certificate_file"]).read_bytes() == cp.ca.roots_pem
    assert files.sync() == []  # nothing renewed, nothing rewritten
    clock.advance(81.0)
    assert cp.renew_certificates() == 3
    renewed = load_identity(
        Path(config["certificate_file"]).read_bytes(),
        key_file.read_bytes(),
        source="files",
        now=clock.time(),
    )
    assert renewed.spiffe_id == identity.spiffe_id
    assert renewed.not_after > identity.not_after
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not [p for p in key_file.parent.iterdir() if p.name.startswith(".")]


def test_a_node_whose_identity_changes_holds_only_the_new_svid() -> None:
    cp = ControlPlane(MESH, clock=_wall())
    _identity(cp, node("a", INSTANCE_IPS="10.0.0.7"))
    cp.update(MESH.replace("serviceAccount: reviews", "serviceAccount: reviews-v2"))
    spiffe, _ = _identity(cp, node("a", INSTANCE_IPS="10.0.0.7"))
    assert spiffe == "spiffe://cluster.local/ns/shop/sa/reviews-v2"
    assert list(cp.svids.held()) == [("a", spiffe)]


def test_bootstrap_names_the_file_watcher_provider(tmp_path: Path) -> None:
    cp = ControlPlane(MESH, ca_dir=tmp_path)
    bootstrap = cp.bootstrap("vm-1", certificates=NodeIdentity("shop", "reviews"))
    assert bootstrap["certificate_providers"] == {
        "default": {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": str(tmp_path / "shop/reviews/cert-chain.pem"),
                "private_key_file": str(tmp_path / "shop/reviews/key.pem"),
                "ca_certificate_file": str(tmp_path / "shop/reviews/root-cert.pem"),
                "refresh_interval": "60s",
            },
        }
    }
    with pytest.raises(ValueError, match="ca_dir"):
        ControlPlane(MESH).bootstrap(certificates=NodeIdentity("shop", "reviews"))
