"""SDS: where an SdsSecretConfig is fetched from (parse, with NACKs at the
field), and what a Secret delivers (material or an error naming it)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from envoy.config.core.v3 import config_source_pb2

from proxyless.controlplane.ca import DevCA
from proxyless.errors import (
    CertificateError,
    ControlPlaneUnreachable,
    CredentialsNotReady,
    ResourceDoesNotExist,
    ResourceNacked,
)
from proxyless.resources.model.security import SdsSecretConfig, SdsServer, Secret
from proxyless.resources.parse.cluster import decode_cluster
from proxyless.resources.parse.secret import parse_secret
from proxyless.security.credentials import Material
from proxyless.security.material import Identity, TrustBundle
from proxyless.security.providers import ExpiryLog
from proxyless.security.sds import _SecretWatcher, secret_material
from proxyless.testing.resources import (
    certificate_secret,
    cluster,
    sds_config,
    trust_secret,
    upstream_tls,
)

WEB = "spiffe://cluster.local/ns/default/sa/web"


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA()


def _decode(source: config_source_pb2.ConfigSource) -> tuple[Any, str]:
    c = cluster("c", tls=upstream_tls(identity_secret="default", trust_secret="ROOTCA", sds=source))
    result = decode_cluster(c.SerializeToString())
    return result.value, "; ".join(result.errors)


@pytest.mark.parametrize(
    ("source", "server"),
    [
        pytest.param(sds_config(), None, id="ads"),
        pytest.param(
            sds_config("unix:/var/run/secrets/workload-spiffe-uds/socket"),
            SdsServer(target="unix:/var/run/secrets/workload-spiffe-uds/socket"),
            id="google-grpc-unix",
        ),
        pytest.param(
            sds_config(cluster="sds-grpc"), SdsServer(cluster="sds-grpc"), id="envoy-grpc"
        ),
    ],
)
def test_where_an_sds_secret_is_fetched_from(
    source: config_source_pb2.ConfigSource, server: SdsServer | None
) -> None:
    value, errors = _decode(source)
    assert not errors
    tls = value.upstream_tls
    assert tls.identity == SdsSecretConfig("default", server)
    assert tls.validation_sds == SdsSecretConfig("ROOTCA", server)


def _grpc(**changes: Any) -> config_source_pb2.ConfigSource:
    source = sds_config("unix:/tmp/sds.sock")
    api = source.api_config_source
    for key, value in changes.items():
        if key == "api_type":
            api.api_type = value
        elif key == "second_service":
            api.grpc_services.add().google_grpc.target_uri = "unix:/tmp/other.sock"
        elif key == "ssl":
            api.grpc_services[0].google_grpc.channel_credentials.ssl_credentials.SetInParent()
        elif key == "metadata":
            api.grpc_services[0].initial_metadata.add(key="a", value="b")
        elif key == "no_target":
            api.grpc_services[0].google_grpc.target_uri = ""
    return source


def _path_source() -> config_source_pb2.ConfigSource:
    source = config_source_pb2.ConfigSource()
    source.path_config_source.path = "/etc/sds.yaml"
    return source


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            _grpc(api_type=config_source_pb2.ApiConfigSource.REST),
            "api_config_source.api_type: must be GRPC",
            id="rest",
        ),
        pytest.param(
            _grpc(api_type=config_source_pb2.ApiConfigSource.DELTA_GRPC),
            "got DELTA_GRPC",
            id="delta",
        ),
        pytest.param(
            _grpc(second_service=True), "grpc_services: must name exactly one", id="two-services"
        ),
        pytest.param(
            _grpc(ssl=True), "channel_credentials.ssl_credentials: is not supported", id="tls"
        ),
        pytest.param(_grpc(metadata=True), "initial_metadata: is not supported", id="metadata"),
        pytest.param(_grpc(no_target=True), "target_uri: must not be empty", id="no-target"),
        pytest.param(_path_source(), "config source must be ads or self", id="file"),
    ],
)
def test_unsupported_sds_sources_are_nacked_at_their_field(
    source: config_source_pb2.ConfigSource, expected: str
) -> None:
    _, errors = _decode(source)
    assert expected in errors
    assert "tls_certificate_sds_secret_configs[0].sds_config" in errors


# -- what a Secret delivers ---------------------------------------------------------------


def _secret(msg: Any) -> Secret:
    return parse_secret(msg)


def test_a_certificate_secret_is_an_identity_and_a_validation_secret_a_trust_bundle(
    ca: DevCA,
) -> None:
    svid = ca.issue(WEB)
    ident = secret_material(
        _secret(certificate_secret("default", svid.chain_pem, svid.key_pem)),
        identity=True,
        now=time.time(),
    )
    assert isinstance(ident, Identity) and ident.spiffe_id == WEB
    assert ident.source == "SDS secret 'default'"
    trust = secret_material(_secret(trust_secret("ROOTCA", ca.roots_pem)), identity=False, now=0)
    assert isinstance(trust, TrustBundle) and trust.source == "SDS secret 'ROOTCA'"


@pytest.mark.parametrize(
    ("make", "identity", "expected"),
    [
        pytest.param(
            lambda ca: trust_secret("default", ca.roots_pem),
            True,
            "holds a validation context",
            id="trust-where-identity-expected",
        ),
        pytest.param(
            lambda ca: certificate_secret("ROOTCA", ca.issue(WEB).chain_pem, ca.issue(WEB).key_pem),
            False,
            "holds a tls_certificate",
            id="identity-where-trust-expected",
        ),
        pytest.param(
            lambda ca: certificate_secret(
                "default", ca.issue(WEB).chain_pem, ca.issue(WEB).key_pem
            ),
            True,
            "does not match the certificate",
            id="key-not-matching",
        ),
    ],
)
def test_a_wrong_secret_is_an_error_naming_it(
    ca: DevCA, make: Any, identity: bool, expected: str
) -> None:
    with pytest.raises(CertificateError, match=expected) as err:
        secret_material(_secret(make(ca)), identity=identity, now=time.time())
    assert "SDS secret" in str(err.value)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        pytest.param(ResourceDoesNotExist("SDS 'x' does not exist"), CredentialsNotReady, id="dne"),
        pytest.param(ControlPlaneUnreachable("unreachable"), CredentialsNotReady, id="unreachable"),
        pytest.param(ResourceNacked("SDS 'x' was NACKed: bad"), CertificateError, id="nack"),
    ],
)
def test_resource_errors_name_the_secret_and_ambient_errors_keep_it(
    error: Exception, kind: type[Exception]
) -> None:
    got: list[Material] = []
    watcher = _SecretWatcher(
        "x", "the ADS stream", identity=True, deliver=got.append, now=time.time, expiry=ExpiryLog()
    )
    watcher.on_ambient_error(error)
    assert got == []
    watcher.on_resource_error(error)
    assert len(got) == 1 and type(got[0]) is kind
    assert "SDS secret 'x' (the ADS stream)" in str(got[0])
