"""Kubernetes Services, EndpointSlices, Endpoints and Pods read as services of the mesh."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from proxyless.controlplane.istio.kubernetes import port_protocol
from proxyless.controlplane.istio.load import load_mesh, load_text
from proxyless.controlplane.istio.translate import NodeProfile, Translator
from proxyless.controlplane.model import ENDPOINT_TYPE


@pytest.mark.parametrize(
    ("name", "app_protocol", "l4", "expected"),
    [
        pytest.param("http", "", "TCP", "HTTP", id="name-http"),
        pytest.param("grpc-api", "", "TCP", "GRPC", id="name-prefix-grpc"),
        pytest.param("grpc-web", "", "TCP", "GRPC-WEB", id="name-grpc-web"),
        pytest.param("http2-x", "", "TCP", "HTTP2", id="name-http2"),
        pytest.param("tcp-db", "", "TCP", "TCP", id="name-tcp"),
        pytest.param("web", "grpc", "TCP", "GRPC", id="app-protocol-wins"),
        pytest.param("web", "kubernetes.io/h2c", "TCP", "HTTP2", id="app-protocol-h2c"),
        pytest.param("dns", "", "UDP", "UDP", id="udp"),
        pytest.param("", "", "TCP", "HTTP", id="unnamed-sniffed-as-http"),
    ],
)
def test_port_protocol(name: str, app_protocol: str, l4: str, expected: str) -> None:
    assert port_protocol(name, app_protocol, l4) == expected


def _service(name: str, ports: str, extra: str = "", meta: str = "") -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop{meta}}}\n"
        f"spec:\n  ports: {ports}\n{extra}"
    )


PODS = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: cart-1, namespace: shop, labels: {app: cart, version: v1}}
  spec:
    serviceAccountName: cart
    containers: [{name: c, ports: [{name: api, containerPort: 7070}]}]
  status: {podIP: 10.1.0.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: cart-2, namespace: shop, labels: {app: cart, version: v2}}
  spec:
    containers: [{name: c, ports: [{name: api, containerPort: 7071}]}]
  status: {podIP: 10.1.0.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: other, namespace: shop, labels: {app: other}}
  status: {podIP: 10.1.0.3}
"""


def _entries(text: str) -> dict[str, Any]:
    mesh = load_mesh(text, "dump.yaml")
    return {e.hosts[0]: e for e in mesh.service_entries}


def test_selector_picks_pods_when_no_endpoints_are_dumped() -> None:
    svc = _service(
        "cart",
        "[{name: grpc, port: 80, targetPort: api}]",
        "  selector: {app: cart}\n",
    )
    entry = _entries(svc + "---\n" + PODS)["cart.shop.svc.cluster.local"]
    got = [
        (e.address, dict(e.ports), e.labels["version"], e.service_account) for e in entry.endpoints
    ]
    assert got == [
        ("10.1.0.1", {"grpc": 7070}, "v1", "cart"),
        ("10.1.0.2", {"grpc": 7071}, "v2", ""),
    ]
    assert entry.ports[0].protocol == "GRPC"


ENDPOINTS = """
apiVersion: v1
kind: Endpoints
metadata: {name: cart, namespace: shop}
subsets:
- addresses:
  - {ip: 10.1.0.2, targetRef: {kind: Pod, name: cart-2, namespace: shop}}
  notReadyAddresses:
  - {ip: 10.1.0.9}
  ports: [{name: grpc, port: 7071}]
"""


def test_endpoints_objects_give_addresses_and_pods_give_labels() -> None:
    svc = _service(
        "cart", "[{name: grpc, port: 80, targetPort: 7071}]", "  selector: {app: cart}\n"
    )
    entry = _entries("---\n".join([svc, ENDPOINTS, PODS]))["cart.shop.svc.cluster.local"]
    assert [(e.address, e.ports["grpc"], e.labels["version"]) for e in entry.endpoints] == [
        ("10.1.0.2", 7071, "v2")
    ]


def test_subsets_select_pod_labels_in_the_translation() -> None:
    svc = _service("cart", "[{name: grpc, port: 80, targetPort: api}]", "  selector: {app: cart}\n")
    rule = (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: cart, namespace: shop}\n"
        "spec:\n  host: cart\n  subsets: [{name: v2, labels: {version: v2}}]\n"
    )
    mesh = load_mesh("---\n".join([svc, PODS, rule]), "dump.yaml")
    out = Translator(mesh).snapshot(NodeProfile(namespace="shop")).get(ENDPOINT_TYPE)
    cla = out["outbound|80|v2|cart.shop.svc.cluster.local"]
    assert [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for e in cla.endpoints[0].lb_endpoints
    ] == [("10.1.0.2", 7071)]


def test_external_name_service_is_resolved_by_dns() -> None:
    svc = _service(
        "payments",
        "[{name: https, port: 443}]",
        "  type: ExternalName\n  externalName: api.payments.example\n",
    )
    mesh = load_mesh(svc, "dump.yaml")
    cluster = Translator(mesh).clusters()["outbound|443||payments.shop.svc.cluster.local"]
    assert isinstance(cluster, cluster_pb2.Cluster)
    assert cluster.type == cluster_pb2.Cluster.STRICT_DNS
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert address.socket_address.address == "api.payments.example"


def test_export_to_annotation() -> None:
    svc = _service(
        "cart",
        "[{name: grpc, port: 80}]",
        meta=", annotations: {networking.istio.io/exportTo: '., ops'}",
    )
    assert _entries(svc)["cart.shop.svc.cluster.local"].export_to == (".", "ops")


def test_kubernetes_service_wins_over_a_service_entry_of_its_namespace() -> None:
    svc = _service("cart", "[{name: grpc, port: 80}]")
    entry = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: cart-se, namespace: shop}\n"
        "spec:\n  hosts: [cart.shop.svc.cluster.local]\n"
        "  ports: [{number: 81, name: http}]\n  endpoints: [{address: 10.9.9.9}]\n"
    )
    result = load_text("---\n".join([svc, entry]), "dump.yaml")
    assert result.ok, result.errors
    assert any("ServiceEntry is ignored there" in w.message for w in result.warnings)
    clusters = Translator(result.mesh).clusters()
    assert "outbound|80||cart.shop.svc.cluster.local" in clusters
    assert "outbound|81||cart.shop.svc.cluster.local" not in clusters


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        pytest.param(
            _service("cart", "[{name: grpc, port: http}]"),
            "spec.ports[0].port",
            "must be an integer",
            id="port-not-a-number",
        ),
        pytest.param(
            "apiVersion: v2\nkind: Service\nmetadata: {name: x}\nspec: {}\n",
            "apiVersion",
            "Service needs one of v1",
            id="api-version",
        ),
        pytest.param(
            "apiVersion: v1\nkind: Pod\nmetadata: {namespace: shop}\n",
            "metadata.name",
            "is required",
            id="no-name",
        ),
    ],
)
def test_kubernetes_errors_name_the_field(text: str, path: str, message: str) -> None:
    result = load_text(text, "dump.yaml")
    assert any(i.path == path and message in i.message for i in result.errors), result.issues


def test_slice_without_service_name_is_a_warning() -> None:
    text = (
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        "metadata: {name: orphan-x, namespace: shop}\naddressType: IPv4\nendpoints: []\n"
    )
    result = load_text(text, "dump.yaml")
    assert result.ok
    assert [w.path for w in result.warnings] == ["metadata.labels.kubernetes.io/service-name"]
