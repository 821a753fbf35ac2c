"""Where a TLS cluster's certificates come from, end to end against the real
embedded ADS server: SDS secrets on the ADS stream, SDS from a separate
server on a unix socket, and bootstrap ``file_watcher`` files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.service.discovery.v3 import discovery_pb2
from tests.e2e.conftest import PUSH_WAIT, SERVICE, bootstrap_for, wait_until

from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.server import AdsServer
from proxyless.errors import CertificateError, CredentialsNotReady
from proxyless.mesh import Mesh
from proxyless.security.credentials import ClusterCredentials
from proxyless.testing import FakeClock
from proxyless.testing.resources import (
    CLUSTER_URL,
    ENDPOINT_URL,
    LISTENER_URL,
    SECRET_URL,
    certificate_secret,
    cluster,
    endpoints,
    listener,
    route,
    route_config,
    sds_config,
    trust_secret,
    upstream_tls,
)

WEB = "spiffe://cluster.local/ns/default/sa/web"
WEB2 = "spiffe://cluster.local/ns/default/sa/web-renewed"
REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA()


def serve_cluster(ads: AdsServer, tls: Any) -> None:
    """``svc:80`` routes to cluster ``c`` whose transport socket is ``tls``."""
    ads.set_resources(
        LISTENER_URL,
        {SERVICE: listener(SERVICE, inline=route_config("r", SERVICE, [route(cluster="c")]))},
    )
    ads.set_resources(CLUSTER_URL, {"c": cluster("c", tls=tls)})
    ads.set_resources(ENDPOINT_URL, {"c": endpoints("c", ["127.0.0.1:1"])})


def credentials(mesh: Mesh) -> ClusterCredentials:
    """The credentials of cluster ``c`` once the Mesh follows ``svc:80``."""
    mesh.config(SERVICE)
    wait_until(lambda: mesh.clusters.get("c") is not None, what="cluster c")
    runtime = mesh.clusters.get("c")
    assert runtime is not None and runtime.tls is not None
    return runtime.tls


def rotated(creds: ClusterCredentials, version: int, spiffe_id: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            tls = creds.current()
        except CredentialsNotReady:
            return False
        return (
            tls.version > version
            and tls.identity is not None
            and tls.identity.spiffe_id == spiffe_id
        )

    return check


# -- SDS on the ADS stream ------------------------------------------------------------------


def test_sds_secrets_on_the_ads_stream_and_their_rotation(
    ads: AdsServer, make_mesh: Callable[..., Mesh], ca: DevCA
) -> None:
    svid = ca.issue(WEB)
    ads.set_resources(
        SECRET_URL,
        {
            "default": certificate_secret("default", svid.chain_pem, svid.key_pem),
            "ROOTCA": trust_secret("ROOTCA", ca.roots_pem),
        },
    )
    serve_cluster(
        ads, upstream_tls(identity_secret="default", trust_secret="ROOTCA", san_uris=[REVIEWS])
    )
    creds = credentials(make_mesh())
    tls = creds.wait(5)
    assert tls.identity is not None and tls.identity.spiffe_id == WEB
    assert tls.identity.source == "SDS secret 'default'"
    assert tls.trust.source == "SDS secret 'ROOTCA'"

    renewed = ca.issue(WEB2)
    ads.set_resource(
        SECRET_URL, "default", certificate_secret("default", renewed.chain_pem, renewed.key_pem)
    )
    wait_until(rotated(creds, tls.version, WEB2), what="the renewed SDS certificate")


def test_a_secret_that_never_arrives_names_it(
    ads: AdsServer, make_mesh: Callable[..., Mesh], ca: DevCA
) -> None:
    svid = ca.issue(WEB)
    ads.set_resources(
        SECRET_URL, {"default": certificate_secret("default", svid.chain_pem, svid.key_pem)}
    )
    serve_cluster(ads, upstream_tls(identity_secret="default", trust_secret="ROOTCA"))
    creds = credentials(make_mesh(does_not_exist_timeout=0.5))
    with pytest.raises(CredentialsNotReady, match=r"SDS secret 'ROOTCA'.*does not exist"):
        creds.wait(PUSH_WAIT)


# -- SDS from a separate server on a unix socket -----------------------------------------------


@pytest.fixture
def sds_server(tmp_path: Path) -> Iterator[AdsServer]:
    server = AdsServer(f"unix:{tmp_path}/sds.sock")
    server.start()
    yield server
    server.stop()


def test_sds_from_a_separate_server_on_a_unix_socket(
    ads: AdsServer, sds_server: AdsServer, make_mesh: Callable[..., Mesh], ca: DevCA
) -> None:
    svid = ca.issue(WEB)
    sds_server.set_resources(
        SECRET_URL,
        {
            "default": certificate_secret("default", svid.chain_pem, svid.key_pem),
            "ROOTCA": trust_secret("ROOTCA", ca.roots_pem),
        },
    )
    source = sds_config(sds_server.target)
    serve_cluster(ads, upstream_tls(identity_secret="default", trust_secret="ROOTCA", sds=source))
    mesh = make_mesh()
    creds = credentials(mesh)
    tls = creds.wait(5)
    assert tls.identity is not None and tls.identity.spiffe_id == WEB

    # StreamSecrets carries this process's node; the ADS stream never asked for a Secret.
    first = sds_server.wait_for(lambda r: r.type_url == SECRET_URL)
    assert first.node.id == mesh.bootstrap.node.id
    assert not [r for r in ads.requests if r.type_url == SECRET_URL]

    renewed = ca.issue(WEB2)
    sds_server.set_resource(
        SECRET_URL, "default", certificate_secret("default", renewed.chain_pem, renewed.key_pem)
    )
    wait_until(rotated(creds, tls.version, WEB2), what="the renewed certificate from SDS")
    sds_server.wait_for(lambda r: r.type_url == SECRET_URL and r.version_info == "2")


def test_a_secret_missing_from_the_separate_server_names_it(
    ads: AdsServer, sds_server: AdsServer, make_mesh: Callable[..., Mesh], ca: DevCA
) -> None:
    sds_server.set_resources(SECRET_URL, {"ROOTCA": trust_secret("ROOTCA", ca.roots_pem)})
    source = sds_config(sds_server.target)
    serve_cluster(ads, upstream_tls(identity_secret="default", trust_secret="ROOTCA", sds=source))
    creds = credentials(make_mesh(does_not_exist_timeout=0.5))
    with pytest.raises(CredentialsNotReady, match="SDS secret 'default'") as err:
        creds.wait(PUSH_WAIT)
    assert sds_server.target in str(err.value)


def test_an_envoy_grpc_cluster_is_mapped_to_its_sds_server(
    ads: AdsServer, sds_server: AdsServer, make_mesh: Callable[..., Mesh], ca: DevCA
) -> None:
    svid = ca.issue(WEB)
    sds_server.set_resources(
        SECRET_URL,
        {
            "default": certificate_secret("default", svid.chain_pem, svid.key_pem),
            "ROOTCA": trust_secret("ROOTCA", ca.roots_pem),
        },
    )
    source = sds_config(cluster="sds-grpc")
    serve_cluster(ads, upstream_tls(identity_secret="default", trust_secret="ROOTCA", sds=source))
    undefined = make_mesh()
    with pytest.raises(CredentialsNotReady, match="envoy_grpc cluster 'sds-grpc'"):
        credentials(undefined).wait(5)
    mesh = make_mesh()
    mesh.sds.define_cluster("sds-grpc", sds_server.target)
    tls = credentials(mesh).wait(5)
    assert tls.identity is not None and tls.identity.spiffe_id == WEB


# -- bootstrap file_watcher ---------------------------------------------------------------------


def test_a_file_watcher_instance_rotates_when_its_files_are_rewritten(
    ads: AdsServer, ca: DevCA, tmp_path: Path
) -> None:
    cert, key, roots = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    svid = ca.issue(WEB)
    cert.write_bytes(svid.chain_pem)
    key.write_bytes(svid.key_pem)
    roots.write_bytes(ca.roots_pem)
    providers = {
        "default": {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": str(cert),
                "private_key_file": str(key),
                "ca_certificate_file": str(roots),
                "refresh_interval": "60s",
            },
        }
    }
    serve_cluster(ads, upstream_tls(provider_instance="default", san_uris=[REVIEWS]))
    clock = FakeClock()
    with Mesh(
        bootstrap_for(ads, "e2e-files", certificate_providers=providers), clock=clock
    ) as mesh:
        creds = credentials(mesh)
        tls = creds.wait(5)
        assert tls.identity is not None and tls.identity.spiffe_id == WEB
        assert str(cert) in tls.identity.source and tls.trust.source == str(roots)

        renewed = ca.issue(WEB2)
        cert.write_bytes(renewed.chain_pem)
        key.write_bytes(renewed.key_pem)

        def refreshed() -> bool:
            clock.advance(60)  # the refresh timer fires on the Mesh's loop
            return rotated(creds, tls.version, WEB2)()

        wait_until(refreshed, what="the rewritten certificate files")


def test_an_unknown_provider_instance_is_named(
    ads: AdsServer, make_mesh: Callable[..., Mesh]
) -> None:
    serve_cluster(ads, upstream_tls(provider_instance="spire"))
    creds = credentials(make_mesh())
    with pytest.raises(CertificateError, match="instance 'spire' is not in the bootstrap"):
        creds.wait(5)


def test_the_sds_server_also_answers_delta_secrets(sds_server: AdsServer, ca: DevCA) -> None:
    sds_server.set_resources(SECRET_URL, {"ROOTCA": trust_secret("ROOTCA", ca.roots_pem)})
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=SECRET_URL, resource_names_subscribe=["ROOTCA", "missing"]
    )
    request.node.id = "delta-client"
    with grpc.insecure_channel(sds_server.target) as channel:
        call = channel.stream_stream(
            "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets",
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
        )
        response = next(iter(call(iter([request]), timeout=5)))
    assert [r.name for r in response.resources] == ["ROOTCA"]
    assert list(response.removed_resources) == ["missing"]


def _istiod_grpc_tls(destination: str) -> tls_pb2.UpstreamTlsContext:
    """An ISTIO_MUTUAL cluster's TLS context as istiod's gRPC generator sends it:
    both generations of provider fields, the destination's SPIFFE ID as a
    legacy exact SAN matcher."""
    deprecated = tls_pb2.CommonTlsContext.CertificateProviderInstance
    common = tls_pb2.CommonTlsContext(
        tls_certificate_provider_instance=common_pb2.CertificateProviderPluginInstance(
            instance_name="default", certificate_name="default"
        ),
        tls_certificate_certificate_provider_instance=deprecated(
            instance_name="default", certificate_name="default"
        ),
    )
    combined = common.combined_validation_context
    combined.default_validation_context.ca_certificate_provider_instance.instance_name = "default"
    combined.default_validation_context.ca_certificate_provider_instance.certificate_name = "ROOTCA"
    combined.default_validation_context.match_subject_alt_names.add(exact=destination)
    combined.validation_context_certificate_provider_instance.CopyFrom(
        deprecated(instance_name="default", certificate_name="ROOTCA")
    )
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni="outbound_.9080_._.reviews")


def test_clusters_shaped_as_istiod_sends_them_share_one_file_watcher(
    ads: AdsServer, ca: DevCA, tmp_path: Path
) -> None:
    svid = ca.issue(WEB)
    (tmp_path / "cert.pem").write_bytes(svid.chain_pem)
    (tmp_path / "key.pem").write_bytes(svid.key_pem)
    (tmp_path / "root.pem").write_bytes(ca.roots_pem)
    providers = {
        "default": {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": str(tmp_path / "cert.pem"),
                "private_key_file": str(tmp_path / "key.pem"),
                "ca_certificate_file": str(tmp_path / "root.pem"),
                "refresh_interval": "60s",
            },
        }
    }
    ads.set_resources(
        LISTENER_URL,
        {
            SERVICE: listener(
                SERVICE,
                inline=route_config(
                    "r", SERVICE, [route(prefix="/a", cluster="c"), route(cluster="d")]
                ),
            )
        },
    )
    ads.set_resources(
        CLUSTER_URL,
        {
            "c": cluster("c", tls=_istiod_grpc_tls(REVIEWS)),
            "d": cluster("d", tls=_istiod_grpc_tls(REVIEWS)),
        },
    )
    ads.set_resources(ENDPOINT_URL, {n: endpoints(n, ["127.0.0.1:1"]) for n in ("c", "d")})
    clock = FakeClock()
    bootstrap = bootstrap_for(ads, "e2e-istiod", certificate_providers=providers)
    with Mesh(bootstrap, clock=clock) as mesh:
        mesh.config(SERVICE)
        wait_until(
            lambda: all(mesh.clusters.get(n) is not None for n in ("c", "d")),
            what="clusters c and d",
        )
        tls = {}
        for name in ("c", "d"):
            runtime = mesh.clusters.get(name)
            assert runtime is not None and runtime.tls is not None
            tls[name] = runtime.tls.wait(5)
        assert not ads.nacks()
        for current in tls.values():
            assert current.identity is not None and current.identity.spiffe_id == WEB
            assert [m.matcher.value for m in current.matchers] == [REVIEWS]
        watcher = mesh.certificate_providers.instance("default")
        wait_until(lambda: watcher.refreshing, what="the refresh timer")
        before = watcher.reads
        clock.advance(60)
        wait_until(lambda: watcher.reads > before, what="a refresh")
        assert watcher.reads == before + 1, "one read of the files for both clusters"


def test_an_unreachable_sds_server_is_named(
    ads: AdsServer, make_mesh: Callable[..., Mesh], tmp_path: Path
) -> None:
    target = f"unix:{tmp_path}/nobody-listens.sock"
    source = sds_config(target)
    serve_cluster(ads, upstream_tls(identity_secret="default", trust_secret="ROOTCA", sds=source))
    creds = credentials(make_mesh())
    with pytest.raises(CredentialsNotReady, match="SDS secret") as err:
        creds.wait(PUSH_WAIT)
    assert target in str(err.value)
