"""DestinationRule ISTIO_MUTUAL -> mTLS clusters, per node kind, against fixtures in istiod's shape."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from proxyless.controlplane.istio.load import load_mesh
from proxyless.controlplane.istio.translate import NodeProfile, Translator, node_profile
from proxyless.controlplane.istio.upstream_tls import (
    STYLE_ENVOY,
    STYLE_PROVIDER,
    STYLE_SDS,
    system_ca_bundle,
)
from proxyless.controlplane.model import CLUSTER_TYPE, NodeInfo
from proxyless.resources.model.security import SdsSecretConfig
from proxyless.resources.parse import decode_cluster
from proxyless.testing.controlplane import make_node

HOST = "reviews.default.svc.cluster.local"
MESH = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [{HOST}]
  ports: [{{number: 9080, name: grpc, protocol: GRPC}}, {{number: 8080, name: http, protocol: HTTP}}]
  subjectAltNames: [spiffe://cluster.local/ns/legacy/sa/reviews]
  endpoints:
  - {{address: 10.0.0.1, labels: {{version: v1}}, serviceAccount: reviews}}
  - {{address: 10.0.0.2, labels: {{version: v2}}, serviceAccount: reviews-v2}}
  - {{address: 10.0.0.3, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL}}
    portLevelSettings:
    - port: {{number: 8080}}
      tls: {{mode: DISABLE}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - name: v2
    labels: {{version: v2}}
    trafficPolicy:
      tls:
        mode: ISTIO_MUTUAL
        sni: v2.reviews
        subjectAltNames: [spiffe://cluster.local/ns/default/sa/reviews-v2]
"""

ACCOUNTS = [
    "spiffe://cluster.local/ns/default/sa/reviews",
    "spiffe://cluster.local/ns/default/sa/reviews-v2",
    "spiffe://cluster.local/ns/legacy/sa/reviews",
]
V2_ACCOUNTS = ["spiffe://cluster.local/ns/default/sa/reviews-v2"]
ADS = {"ads": {}, "resourceApiVersion": "V3"}


# --- fixtures in istiod's shape (JSON of UpstreamTlsContext) -----------------------------------
def envoy_fixture(sans: list[str], sni: str, alpn: list[str]) -> dict[str, Any]:
    """pilot/pkg/networking/core cluster_tls.go ISTIO_MUTUAL, SDS over ADS."""
    return {
        "commonTlsContext": {
            "tlsParams": {
                "tlsMinimumProtocolVersion": "TLSv1_2",
                "tlsMaximumProtocolVersion": "TLSv1_3",
            },
            "alpnProtocols": alpn,
            "tlsCertificateSdsSecretConfigs": [{"name": "default", "sdsConfig": ADS}],
            "combinedValidationContext": {
                "defaultValidationContext": {"matchSubjectAltNames": [{"exact": s} for s in sans]},
                "validationContextSdsSecretConfig": {"name": "ROOTCA", "sdsConfig": ADS},
            },
        },
        "sni": sni,
    }


def sds_fixture(sans: list[str], sni: str = "") -> dict[str, Any]:
    """Envoy's shape without Istio's SNI (only an explicit ``tls.sni``), ALPN
    and TLS parameters."""
    out = envoy_fixture(sans, sni, [])
    del out["commonTlsContext"]["tlsParams"]
    del out["commonTlsContext"]["alpnProtocols"]
    if not sni:
        del out["sni"]
    return out


def grpcgen_fixture(sans: list[str]) -> dict[str, Any]:
    """pilot/pkg/networking/grpcgen buildCommonTLSContext: both field generations."""
    cert = {"instanceName": "default", "certificateName": "default"}
    root = {"instanceName": "default", "certificateName": "ROOTCA"}
    return {
        "commonTlsContext": {
            "tlsCertificateProviderInstance": cert,
            "tlsCertificateCertificateProviderInstance": cert,
            "combinedValidationContext": {
                "defaultValidationContext": {
                    "matchSubjectAltNames": [{"exact": s} for s in sans],
                    "caCertificateProviderInstance": root,
                },
                "validationContextCertificateProviderInstance": root,
            },
        }
    }


def sni(port: int, subset: str = "") -> str:
    return f"outbound_.{port}_.{subset}_.{HOST}"


H2 = ["istio-peer-exchange", "istio", "h2"]
H1 = ["istio-peer-exchange", "istio"]
EXPECTED: dict[str, dict[str, dict[str, Any] | None]] = {
    STYLE_ENVOY: {
        f"outbound|9080||{HOST}": envoy_fixture(ACCOUNTS, sni(9080), H2),
        f"outbound|9080|v1|{HOST}": envoy_fixture(ACCOUNTS, sni(9080, "v1"), H2),
        f"outbound|9080|v2|{HOST}": envoy_fixture(V2_ACCOUNTS, "v2.reviews", H2),
        f"outbound|8080||{HOST}": None,
        f"outbound|8080|v1|{HOST}": None,
        f"outbound|8080|v2|{HOST}": envoy_fixture(V2_ACCOUNTS, "v2.reviews", H1),
    },
    STYLE_SDS: {
        f"outbound|9080||{HOST}": sds_fixture(ACCOUNTS),
        f"outbound|9080|v1|{HOST}": sds_fixture(ACCOUNTS),
        f"outbound|9080|v2|{HOST}": sds_fixture(V2_ACCOUNTS, "v2.reviews"),
        f"outbound|8080||{HOST}": None,
        f"outbound|8080|v1|{HOST}": None,
        f"outbound|8080|v2|{HOST}": sds_fixture(V2_ACCOUNTS, "v2.reviews"),
    },
    STYLE_PROVIDER: {
        f"outbound|9080||{HOST}": grpcgen_fixture(ACCOUNTS),
        f"outbound|9080|v1|{HOST}": grpcgen_fixture(ACCOUNTS),
        f"outbound|9080|v2|{HOST}": grpcgen_fixture(V2_ACCOUNTS),
        f"outbound|8080||{HOST}": None,
        f"outbound|8080|v1|{HOST}": None,
        f"outbound|8080|v2|{HOST}": grpcgen_fixture(V2_ACCOUNTS),
    },
}


def _tls_of(cluster: cluster_pb2.Cluster) -> dict[str, Any] | None:
    if not cluster.HasField("transport_socket"):
        return None
    assert cluster.transport_socket.name == "envoy.transport_sockets.tls"
    context = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(context)
    return json_format.MessageToDict(context)


@pytest.mark.parametrize("style", [STYLE_ENVOY, STYLE_SDS, STYLE_PROVIDER])
def test_istio_mutual_clusters_match_istiods_shape(style: str) -> None:
    translator = Translator(load_mesh(MESH, "mesh.yaml"))
    clusters = translator.snapshot(NodeProfile(certificates=style)).get(CLUSTER_TYPE)
    got = {}
    for name, cluster in clusters.items():
        assert isinstance(cluster, cluster_pb2.Cluster)
        got[name] = _tls_of(cluster)
    assert got == EXPECTED[style]


@pytest.mark.parametrize("style", [STYLE_SDS, STYLE_PROVIDER])
def test_proxyless_clients_accept_the_clusters(style: str) -> None:
    translator = Translator(load_mesh(MESH, "mesh.yaml"))
    for name, cluster in translator.clusters(NodeProfile(certificates=style)).items():
        result = decode_cluster(cluster.SerializeToString())
        assert result.ok, (name, result.errors)
        tls = result.value.upstream_tls  # type: ignore[union-attr]
        if EXPECTED[style][name] is None:
            assert tls is None
            continue
        assert tls is not None
        if style == STYLE_SDS:
            assert tls.identity == SdsSecretConfig("default")
            assert tls.validation_sds_secret == "ROOTCA"
        assert tls.validation is not None
        assert [m.matcher.value for m in tls.validation.match_subject_alt_names] == (
            V2_ACCOUNTS if "|v2|" in name else ACCOUNTS
        )


def test_trust_domain_names_the_service_accounts() -> None:
    translator = Translator(load_mesh(MESH, "mesh.yaml"), trust_domain="example.org")
    cluster = translator.clusters(NodeProfile(certificates=STYLE_PROVIDER))[
        f"outbound|9080||{HOST}"
    ]
    assert isinstance(cluster, cluster_pb2.Cluster)
    tls = _tls_of(cluster)
    assert tls is not None
    matchers = tls["commonTlsContext"]["combinedValidationContext"]["defaultValidationContext"][
        "matchSubjectAltNames"
    ]
    assert [m["exact"] for m in matchers] == [
        "spiffe://cluster.local/ns/legacy/sa/reviews",  # ServiceEntry subjectAltNames, as written
        "spiffe://example.org/ns/default/sa/reviews",
        "spiffe://example.org/ns/default/sa/reviews-v2",
    ]


def test_disable_and_no_rule_stay_plaintext() -> None:
    mesh = load_mesh(MESH.replace("mode: ISTIO_MUTUAL", "mode: DISABLE"), "mesh.yaml")
    for style in (STYLE_ENVOY, STYLE_SDS, STYLE_PROVIDER):
        for cluster in Translator(mesh).clusters(NodeProfile(certificates=style)).values():
            assert isinstance(cluster, cluster_pb2.Cluster)
            assert not cluster.HasField("transport_socket")


@pytest.mark.parametrize(
    ("user_agent", "metadata", "style"),
    [
        pytest.param("envoy", {}, STYLE_ENVOY, id="envoy"),
        pytest.param("proxyless", {}, STYLE_SDS, id="proxyless"),
        pytest.param("proxyless", {"GENERATOR": "grpc"}, STYLE_SDS, id="proxyless-grpc-generator"),
        pytest.param("gRPC Python", {"GENERATOR": "grpc"}, STYLE_PROVIDER, id="grpcio"),
        pytest.param("grpc-go", {}, STYLE_PROVIDER, id="grpc-go"),
        # One rule for inbound and outbound (cert_delivery): an Envoy reads SDS,
        # never gRPC certificate-provider instances, whatever its GENERATOR.
        pytest.param("envoy", {"GENERATOR": "grpc"}, STYLE_SDS, id="envoy-as-grpc"),
    ],
)
def test_node_kind_decides_where_certificates_come_from(
    user_agent: str, metadata: dict[str, Any], style: str
) -> None:
    info = NodeInfo.from_proto(make_node(metadata=metadata or None, user_agent_name=user_agent))
    assert node_profile(info).certificates == style


def test_analyze_warns_when_istio_mutual_pins_no_identity() -> None:
    from proxyless.controlplane.istio.analyze import analyze_mesh

    unpinned = MESH.replace(
        "  subjectAltNames: [spiffe://cluster.local/ns/legacy/sa/reviews]\n", ""
    )
    unpinned = unpinned.replace(", serviceAccount: reviews-v2", "").replace(
        ", serviceAccount: reviews", ""
    )
    issues = [str(i) for i in analyze_mesh(load_mesh(unpinned, "mesh.yaml"), file="mesh.yaml")]
    assert any("pin no identity" in i and "DestinationRule/reviews" in i for i in issues), issues
    assert not [
        i for i in analyze_mesh(load_mesh(MESH, "mesh.yaml")) if "pin no identity" in i.message
    ]


# --- SIMPLE / MUTUAL with PEM files ---------------------------------------------------------
EXTERNAL = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bank}
spec:
  hosts: [api.bank.example]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: grpc, protocol: GRPC}]
  endpoints: [{address: 192.0.2.10}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bank}
spec:
  host: api.bank.example
  trafficPolicy:
    tls: TLS
"""
MUTUAL = (
    "{mode: MUTUAL, clientCertificate: /certs/client.pem, privateKey: /certs/key.pem, "
    "caCertificates: /certs/ca.pem, sni: bank, subjectAltNames: [api.bank.example]}"
)


def _external_tls(tls: str, style: str) -> dict[str, Any] | None:
    mesh = load_mesh(EXTERNAL.replace("tls: TLS", f"tls: {tls}"), "mesh.yaml")
    cluster = Translator(mesh).clusters(NodeProfile(certificates=style))[
        "outbound|443||api.bank.example"
    ]
    assert isinstance(cluster, cluster_pb2.Cluster)
    if style != STYLE_ENVOY:
        result = decode_cluster(cluster.SerializeToString())
        assert result.ok, result.errors
    return _tls_of(cluster)


@pytest.mark.parametrize(
    ("tls", "style", "expected"),
    [
        pytest.param(
            "{mode: SIMPLE}",
            STYLE_PROVIDER,
            {
                "commonTlsContext": {
                    "validationContext": {
                        "systemRootCerts": {},
                        "matchSubjectAltNames": [{"exact": "api.bank.example"}],
                    },
                },
                "sni": "api.bank.example",
            },
            id="simple-system-roots-grpc",
        ),
        pytest.param(
            "{mode: SIMPLE, caCertificates: /certs/ca.pem}",
            STYLE_SDS,
            {
                "commonTlsContext": {
                    "validationContext": {
                        "trustedCa": {"filename": "/certs/ca.pem"},
                        "matchSubjectAltNames": [{"exact": "api.bank.example"}],
                    },
                },
                "sni": "api.bank.example",
            },
            id="simple-ca-file-proxyless",
        ),
        pytest.param(
            MUTUAL,
            STYLE_SDS,
            {
                "commonTlsContext": {
                    "tlsCertificates": [
                        {
                            "certificateChain": {"filename": "/certs/client.pem"},
                            "privateKey": {"filename": "/certs/key.pem"},
                        }
                    ],
                    "validationContext": {
                        "trustedCa": {"filename": "/certs/ca.pem"},
                        "matchSubjectAltNames": [{"exact": "api.bank.example"}],
                    },
                },
                "sni": "bank",
            },
            id="mutual-files-proxyless",
        ),
    ],
)
def test_simple_and_mutual_use_pem_files(tls: str, style: str, expected: dict[str, Any]) -> None:
    assert _external_tls(tls, style) == expected


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        pytest.param(
            "{mode: MUTUAL, caCertificates: /ca.pem}",
            "MUTUAL needs clientCertificate and privateKey",
            id="mutual-without-files",
        ),
        pytest.param(
            "{mode: SIMPLE, credentialName: bank-ca}",
            "Kubernetes Secrets are not available",
            id="credential-name",
        ),
    ],
)
def test_tls_that_cannot_be_honoured_is_refused(tls: str, message: str) -> None:
    from proxyless.controlplane.istio.load import load_text

    result = load_text(EXTERNAL.replace("tls: TLS", f"tls: {tls}"), "mesh.yaml")
    assert not result.ok
    assert any(message in i.message for i in result.errors), [str(i) for i in result.errors]


def test_simple_without_ca_gives_envoy_the_system_bundle_file() -> None:
    bundle = system_ca_bundle()
    validation = {"matchSubjectAltNames": [{"exact": "api.bank.example"}]}
    validation.update({"trustedCa": {"filename": bundle}} if bundle else {"systemRootCerts": {}})
    assert _external_tls("{mode: SIMPLE}", STYLE_ENVOY) == {
        "commonTlsContext": {
            "tlsParams": {
                "tlsMinimumProtocolVersion": "TLSv1_2",
                "tlsMaximumProtocolVersion": "TLSv1_3",
            },
            "alpnProtocols": ["h2"],
            "validationContext": validation,
        },
        "sni": "api.bank.example",
    }
