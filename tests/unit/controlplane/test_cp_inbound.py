"""Inbound Listeners: PeerAuthentication precedence, the Listener shape per mTLS mode,
which workload a node is, and the certificate-delivery rule.

Written from Istio's documented semantics (PeerAuthentication reference:
workload > namespace > mesh, UNSET inherits, PERMISSIVE by default,
port-level overrides) and the shape istiod's gRPC generator sends (gRFC A36).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from proxyless.controlplane.istio.cert_delivery import PROVIDER, SDS, certificate_delivery
from proxyless.controlplane.istio.inbound import InboundNode, inbound_node
from proxyless.controlplane.istio.load import load_text
from proxyless.controlplane.istio.model import MeshConfig
from proxyless.controlplane.istio.peer_authn import workload_mtls
from proxyless.controlplane.istio.translate import ENVOY, NodeProfile, Translator, node_profile
from proxyless.controlplane.model import CLUSTER_TYPE, LISTENER_TYPE, NodeInfo
from proxyless.testing.controlplane import make_node

SE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "ServiceEntry",
    "metadata": {"name": "reviews", "namespace": "default"},
    "spec": {
        "hosts": ["reviews.default.svc.cluster.local"],
        "ports": [
            {"number": 9080, "name": "grpc", "protocol": "GRPC", "targetPort": 50051},
            {"number": 9443, "name": "admin", "protocol": "HTTP"},
        ],
        "endpoints": [
            {"address": "10.0.0.1", "labels": {"app": "reviews", "version": "v1"}},
            {"address": "10.0.0.2", "labels": {"app": "reviews"}, "ports": {"grpc": 50052}},
        ],
    },
}


def pa(
    mode: str | None,
    *,
    namespace: str = "default",
    name: str = "pa",
    selector: dict[str, str] | None = None,
    ports: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if ports is not None:
        spec["portLevelMtls"] = {p: {"mode": m} for p, m in ports.items()}
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def load(*docs: dict[str, Any]) -> MeshConfig:
    result = load_text("\n---\n".join(json.dumps(d) for d in docs))
    assert result.errors == [], result.errors
    return result.mesh


APP = {"app": "reviews"}
MESH = "istio-system"


@pytest.mark.parametrize(
    ("policies", "expected", "port_8080"),
    [
        pytest.param([], "PERMISSIVE", "PERMISSIVE", id="default-permissive"),
        pytest.param([pa("STRICT", namespace=MESH)], "STRICT", "STRICT", id="mesh"),
        pytest.param([pa("UNSET", namespace=MESH)], "PERMISSIVE", "PERMISSIVE", id="mesh-unset"),
        pytest.param(
            [pa("STRICT", namespace=MESH), pa("DISABLE")], "DISABLE", "DISABLE", id="ns-over-mesh"
        ),
        pytest.param(
            [pa("STRICT", namespace=MESH), pa("UNSET")], "STRICT", "STRICT", id="ns-unset-inherits"
        ),
        pytest.param(
            [pa("STRICT", namespace=MESH), pa(None)], "STRICT", "STRICT", id="ns-no-mtls-inherits"
        ),
        pytest.param(
            [pa("DISABLE", namespace=MESH), pa("PERMISSIVE"), pa("STRICT", name="w", selector=APP)],
            "STRICT",
            "STRICT",
            id="workload-over-ns",
        ),
        pytest.param(
            [pa("DISABLE"), pa("STRICT", name="w", selector={"app": "ratings"})],
            "DISABLE",
            "DISABLE",
            id="selector-not-matching",
        ),
        pytest.param(
            [pa("DISABLE"), pa("UNSET", name="w", selector=APP)],
            "DISABLE",
            "DISABLE",
            id="workload-unset-inherits",
        ),
        pytest.param(
            [pa("STRICT", name="w", selector=APP, ports={"8080": "DISABLE"})],
            "STRICT",
            "DISABLE",
            id="port-level",
        ),
        pytest.param(
            [pa("STRICT"), pa("UNSET", name="w", selector=APP, ports={"8080": "PERMISSIVE"})],
            "STRICT",
            "PERMISSIVE",
            id="port-level-on-inheriting-workload",
        ),
        pytest.param(
            [pa("STRICT"), pa("UNSET", name="w", selector=APP, ports={"8080": "UNSET"})],
            "STRICT",
            "STRICT",
            id="port-level-unset-inherits",
        ),
        pytest.param(
            [pa("STRICT", name="first"), pa("DISABLE", name="second")],
            "STRICT",
            "STRICT",
            id="first-of-a-level-wins",
        ),
        pytest.param([pa("STRICT", namespace="other")], "PERMISSIVE", "PERMISSIVE", id="other-ns"),
        pytest.param(
            [pa("STRICT", namespace=MESH, selector=APP)],
            "PERMISSIVE",
            "PERMISSIVE",
            id="root-ns-selector-is-not-mesh-wide",
        ),
    ],
)
def test_peer_authentication_precedence(
    policies: list[dict[str, Any]], expected: str, port_8080: str
) -> None:
    mtls = workload_mtls(load(*policies), "default", APP)
    assert mtls.mode == expected
    assert mtls.for_port(8080) == port_8080
    assert mtls.for_port(9090) == expected


# --- the Listener shape -----------------------------------------------------------------

SDS_TLS = {
    "commonTlsContext": {
        "tlsCertificateSdsSecretConfigs": [
            {"name": "default", "sdsConfig": {"ads": {}, "resourceApiVersion": "V3"}}
        ],
        "validationContextSdsSecretConfig": {
            "name": "ROOTCA",
            "sdsConfig": {"ads": {}, "resourceApiVersion": "V3"},
        },
    },
    "requireClientCertificate": True,
}
PROVIDER_TLS = {
    "commonTlsContext": {
        "tlsCertificateProviderInstance": {"instanceName": "default", "certificateName": "default"},
        "tlsCertificateCertificateProviderInstance": {
            "instanceName": "default",
            "certificateName": "default",
        },
        "combinedValidationContext": {
            "defaultValidationContext": {
                "caCertificateProviderInstance": {
                    "instanceName": "default",
                    "certificateName": "ROOTCA",
                }
            },
            "validationContextCertificateProviderInstance": {
                "instanceName": "default",
                "certificateName": "ROOTCA",
            },
        },
    },
    "requireClientCertificate": True,
}


def chains(listener: Any, expected_tls: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(name, transport_protocol, has TLS) of each chain; checks the TLS context it carries."""
    out = []
    for chain in listener.filter_chains:
        has_tls = chain.HasField("transport_socket")
        if has_tls:
            assert chain.transport_socket.name == "envoy.transport_sockets.tls"
            ctx = tls_pb2.DownstreamTlsContext()
            assert chain.transport_socket.typed_config.Unpack(ctx)
            assert json_format.MessageToDict(ctx) == expected_tls
        out.append((chain.name, chain.filter_chain_match.transport_protocol, has_tls))
    return out


def grpc_listeners(mesh: MeshConfig, ips: tuple[str, ...], delivery: str = SDS) -> dict[str, Any]:
    profile = NodeProfile(inbound=InboundNode(instance_ips=ips, delivery=delivery))
    snapshot = Translator(mesh).snapshot(profile)
    return {
        name: listener
        for name, listener in snapshot.get(LISTENER_TYPE).items()
        if name.startswith("xds.istio.io/grpc/lds/inbound/")
    }


PREFIX = "xds.istio.io/grpc/lds/inbound/"


def test_listener_names_and_addresses() -> None:
    found = grpc_listeners(load(SE), ("10.0.0.1",))
    # 9080 -> targetPort 50051, 9443 -> 9443 (no targetPort)
    assert sorted(found) == sorted(
        f"{PREFIX}{host}:{port}"
        for host in ("10.0.0.1", "0.0.0.0", "[::]")
        for port in (50051, 9443)
    )
    listener = found[f"{PREFIX}[::]:50051"]
    assert listener.address.socket_address.address == "::"
    assert listener.address.socket_address.port_value == 50051
    assert len(listener.listener_filters) == 0  # gRPC NACKs listener filters (A36)
    # the endpoint's own port name mapping wins over targetPort
    assert f"{PREFIX}10.0.0.2:50052" in grpc_listeners(load(SE), ("10.0.0.2",))


def test_no_inbound_without_matching_instance_ip() -> None:
    assert grpc_listeners(load(SE), ()) == {}
    assert grpc_listeners(load(SE), ("10.9.9.9",)) == {}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        pytest.param("STRICT", [("inbound-mtls", "", True)], id="strict"),
        pytest.param(
            "PERMISSIVE",
            [("inbound-mtls", "tls", True), ("inbound-plaintext", "raw_buffer", False)],
            id="permissive",
        ),
        pytest.param("DISABLE", [("inbound-plaintext", "", False)], id="disable"),
    ],
)
@pytest.mark.parametrize(
    ("delivery", "tls"),
    [pytest.param(SDS, SDS_TLS, id="sds"), pytest.param(PROVIDER, PROVIDER_TLS, id="provider")],
)
def test_filter_chains_per_mode(
    mode: str, expected: list[tuple[str, str, bool]], delivery: str, tls: dict[str, Any]
) -> None:
    mesh = load(SE, pa(mode, namespace=MESH))
    listener = grpc_listeners(mesh, ("10.0.0.1",), delivery)[f"{PREFIX}10.0.0.1:50051"]
    assert chains(listener, tls) == expected


def test_port_level_mode_reaches_the_port_listener() -> None:
    mesh = load(SE, pa("STRICT", name="w", selector=APP, ports={"9443": "DISABLE"}))
    found = grpc_listeners(mesh, ("10.0.0.1",))
    assert chains(found[f"{PREFIX}10.0.0.1:50051"], SDS_TLS) == [("inbound-mtls", "", True)]
    assert chains(found[f"{PREFIX}10.0.0.1:9443"], SDS_TLS) == [("inbound-plaintext", "", False)]


def test_hcm_is_a_server_route_with_rbac_then_router() -> None:
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"selector": {"matchLabels": APP}, "rules": [{}]},
    }
    found = grpc_listeners(load(SE, policy), ("10.0.0.1",))
    hcm = hcm_pb2.HttpConnectionManager()
    found[f"{PREFIX}10.0.0.1:50051"].filter_chains[0].filters[0].typed_config.Unpack(hcm)
    as_dict = json_format.MessageToDict(hcm.route_config)
    assert as_dict == {
        "name": "inbound",
        "virtualHosts": [
            {
                "name": "inbound|http",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "nonForwardingAction": {}}],
            }
        ],
    }
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
    ]


def test_node_labels_select_policies_over_endpoint_labels() -> None:
    mesh = load(SE, pa("STRICT", name="w", selector={"tier": "gold"}))
    plain = grpc_listeners(mesh, ("10.0.0.1",))
    assert chains(plain[f"{PREFIX}10.0.0.1:9443"], SDS_TLS)[0][1] == "tls"  # PERMISSIVE
    profile = NodeProfile(
        labels=(("tier", "gold"),), inbound=InboundNode(instance_ips=("10.0.0.1",))
    )
    listener = Translator(mesh).listeners(profile)[f"{PREFIX}10.0.0.1:9443"]
    assert chains(listener, SDS_TLS) == [("inbound-mtls", "", True)]


# --- Envoy ------------------------------------------------------------------------------


def test_envoy_inbound_listener_and_cluster() -> None:
    mesh = load(SE, pa("PERMISSIVE", namespace=MESH))
    profile = NodeProfile(
        kind=ENVOY,
        listener_address="127.0.0.2",
        inbound=InboundNode(instance_ips=("10.0.0.1",), inbound_ports=((50051, 19080),)),
    )
    snapshot = Translator(mesh).snapshot(profile)
    listener = snapshot.get(LISTENER_TYPE)["inbound|50051"]
    assert isinstance(listener, listener_pb2.Listener)
    assert listener.address.socket_address.address == "127.0.0.2"
    assert listener.address.socket_address.port_value == 50051
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    assert chains(listener, SDS_TLS) == [
        ("inbound-mtls", "tls", True),
        ("inbound-plaintext", "raw_buffer", False),
    ]
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert hcm.route_config.virtual_hosts[0].routes[0].route.cluster == "inbound|50051||"
    cluster = snapshot.get(CLUSTER_TYPE)["inbound|50051||"]
    cla = cluster.load_assignment  # type: ignore[union-attr]
    address = cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", 19080)


def test_envoy_without_inbound_ports_gets_no_inbound() -> None:
    profile = NodeProfile(kind=ENVOY, inbound=InboundNode(instance_ips=("10.0.0.1",)))
    snapshot = Translator(load(SE)).snapshot(profile)
    assert not any(n.startswith("inbound|") for n in snapshot.get(LISTENER_TYPE))
    assert not any(n.startswith("inbound|") for n in snapshot.get(CLUSTER_TYPE))


# --- node metadata ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        pytest.param("envoy", SDS, id="envoy"),
        pytest.param("proxyless", SDS, id="proxyless"),
        pytest.param("gRPC Python", PROVIDER, id="grpcio"),
        pytest.param("", PROVIDER, id="unknown"),
    ],
)
def test_certificate_delivery_rule(user_agent: str, expected: str) -> None:
    assert certificate_delivery(user_agent) == expected


@pytest.mark.parametrize(
    ("metadata", "ips", "ports"),
    [
        pytest.param({"INSTANCE_IPS": "10.0.0.1,fe80::1"}, ("10.0.0.1", "fe80::1"), (), id="csv"),
        pytest.param({"INSTANCE_IPS": ["10.0.0.1", "nope"]}, ("10.0.0.1",), (), id="list-bad"),
        pytest.param(
            {"PROXYLESS_INBOUND_PORTS": {"9080": 19080, "x": 1}},
            (),
            ((9080, 19080),),
            id="inbound-ports",
        ),
        pytest.param({}, (), (), id="none"),
    ],
)
def test_inbound_node_metadata(
    metadata: dict[str, Any], ips: tuple[str, ...], ports: tuple[tuple[int, int], ...]
) -> None:
    info = NodeInfo.from_proto(make_node("n", metadata=metadata, user_agent_name="proxyless"))
    node = inbound_node(info)
    assert (node.instance_ips, node.inbound_ports, node.delivery) == (ips, ports, SDS)
    assert node_profile(info).inbound == node


def test_proxyless_ipv6_instance_ip_listener_name() -> None:
    se = json.loads(json.dumps(SE))
    se["spec"]["endpoints"] = [{"address": "fe80::1", "labels": APP}]
    found = grpc_listeners(load(se), ("fe80::1",))
    assert f"{PREFIX}[fe80::1]:50051" in found
    assert found[f"{PREFIX}[fe80::1]:50051"].address.socket_address.address == "fe80::1"


@pytest.mark.parametrize(
    ("delivery", "expected"),
    [
        pytest.param(PROVIDER, [("inbound-mtls", "", True)], id="grpc-upgraded-to-strict"),
        pytest.param(
            SDS,
            [("inbound-mtls", "tls", True), ("inbound-plaintext", "raw_buffer", False)],
            id="proxyless-keeps-permissive",
        ),
    ],
)
def test_tls_mode_label_makes_permissive_strict_for_grpc(
    delivery: str, expected: list[tuple[str, str, bool]]
) -> None:
    """istiod: a gRPC server whose clients use mTLS automatically gets STRICT for PERMISSIVE."""
    se = json.loads(json.dumps(SE))
    se["spec"]["endpoints"][0]["labels"]["security.istio.io/tlsMode"] = "istio"
    listener = grpc_listeners(load(se), ("10.0.0.1",), delivery)[f"{PREFIX}10.0.0.1:50051"]
    tls = PROVIDER_TLS if delivery == PROVIDER else SDS_TLS
    assert chains(listener, tls) == expected
