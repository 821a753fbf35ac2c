"""SDS Secret parsing, CertificateValidationContext details and istiod's ISTIO_MUTUAL
clusters (gRFC A29, Envoy SDS, Istio's gRPC generator)."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2

from proxyless.errors import ResourceValidationError
from proxyless.resources.model import (
    CertificateProviderInstance,
    CertificateValidationContext,
    Cluster,
    DataSource,
    SanMatcher,
    Secret,
    StringMatcher,
    TlsCertificate,
    UpstreamTlsContext,
)
from proxyless.resources.parse.cluster import decode_cluster
from proxyless.resources.parse.secret import decode_secret, parse_secret


def _decode(msg: secret_pb2.Secret) -> Secret:
    result = decode_secret(msg.SerializeToString())
    assert result.ok, result.errors
    assert isinstance(result.value, Secret)
    return result.value


def _errors(msg: secret_pb2.Secret) -> tuple[str, ...]:
    result = decode_secret(msg.SerializeToString())
    assert result.value is None
    assert result.name == msg.name
    return result.errors


def test_tls_certificate_secret() -> None:
    msg = secret_pb2.Secret(
        name="default",
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string="CERT"),
            private_key=base_pb2.DataSource(inline_bytes=b"KEY"),
        ),
    )
    assert _decode(msg) == Secret(
        name="default",
        tls_certificate=TlsCertificate(DataSource(inline=b"CERT"), DataSource(inline=b"KEY")),
    )


def test_validation_context_secret() -> None:
    msg = secret_pb2.Secret(
        name="ROOTCA",
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(filename="/etc/ca.pem"),
            match_typed_subject_alt_names=[
                common_pb2.SubjectAltNameMatcher(
                    san_type=common_pb2.SubjectAltNameMatcher.URI,
                    matcher=string_pb2.StringMatcher(prefix="spiffe://cluster.local/"),
                )
            ],
            match_subject_alt_names=[string_pb2.StringMatcher(exact="svc.local")],
        ),
    )
    assert _decode(msg).validation_context == CertificateValidationContext(
        trusted_ca=DataSource(filename="/etc/ca.pem"),
        match_subject_alt_names=(
            SanMatcher("URI", StringMatcher("prefix", "spiffe://cluster.local/")),
            SanMatcher("ANY", StringMatcher("exact", "svc.local")),
        ),
    )


def test_system_root_certs() -> None:
    validation = common_pb2.CertificateValidationContext(
        system_root_certs=common_pb2.CertificateValidationContext.SystemRootCerts()
    )
    secret = _decode(secret_pb2.Secret(name="s", validation_context=validation))
    assert secret.validation_context is not None
    assert secret.validation_context.system_root_certs is True


@pytest.mark.parametrize(
    ("msg", "errors"),
    [
        pytest.param(
            secret_pb2.Secret(name="empty"),
            ("secret has neither tls_certificate nor validation_context",),
            id="no-type",
        ),
        pytest.param(
            secret_pb2.Secret(name="g", generic_secret=secret_pb2.GenericSecret()),
            (
                "generic_secret: unsupported secret type (tls_certificate or validation_context only)",
            ),
            id="generic-secret",
        ),
        pytest.param(
            secret_pb2.Secret(name="c", tls_certificate=common_pb2.TlsCertificate()),
            (
                "tls_certificate.certificate_chain: is required",
                "tls_certificate.private_key: is required",
            ),
            id="certificate-missing-parts",
        ),
        pytest.param(
            secret_pb2.Secret(
                name="e",
                tls_certificate=common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(environment_variable="CERT"),
                    private_key=base_pb2.DataSource(),
                ),
            ),
            (
                "tls_certificate.certificate_chain.environment_variable: unsupported data source",
                "tls_certificate.private_key: no data (filename, inline_bytes or inline_string)",
            ),
            id="bad-data-sources",
        ),
        pytest.param(
            secret_pb2.Secret(
                name="v",
                validation_context=common_pb2.CertificateValidationContext(
                    match_typed_subject_alt_names=[
                        common_pb2.SubjectAltNameMatcher(
                            matcher=string_pb2.StringMatcher(exact="x")
                        ),
                        common_pb2.SubjectAltNameMatcher(
                            san_type=common_pb2.SubjectAltNameMatcher.OTHER_NAME,
                            matcher=string_pb2.StringMatcher(exact="x"),
                        ),
                    ],
                    crl=base_pb2.DataSource(filename="/crl.pem"),
                ),
            ),
            (
                "validation_context.crl: is not supported",
                "validation_context.match_typed_subject_alt_names[0].san_type: "
                "must be EMAIL, DNS, URI, IP_ADDRESS or OTHER_NAME",
                "validation_context.match_typed_subject_alt_names[1].oid: is required for OTHER_NAME",
            ),
            id="validation-problems",
        ),
        pytest.param(
            secret_pb2.Secret(
                validation_context=common_pb2.CertificateValidationContext(
                    system_root_certs=common_pb2.CertificateValidationContext.SystemRootCerts()
                )
            ),
            ("name: must not be empty",),
            id="no-name",
        ),
    ],
)
def test_secret_errors(msg: secret_pb2.Secret, errors: tuple[str, ...]) -> None:
    assert _errors(msg) == errors


def test_ignored_secret_fields() -> None:
    msg = secret_pb2.Secret(
        name="default",
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(filename="/c.pem"),
            private_key=base_pb2.DataSource(filename="/k.pem"),
            password=base_pb2.DataSource(inline_string="pw"),
        ),
    )
    assert _decode(msg).ignored_fields == ("tls_certificate.password",)


def test_parse_secret() -> None:
    with pytest.raises(ResourceValidationError, match="neither tls_certificate"):
        parse_secret(secret_pb2.Secret(name="x"))


# --- istiod's ISTIO_MUTUAL clusters (pilot/pkg/networking/grpcgen) -------------------------

ISTIOD_CLUSTER = "outbound|9080|v1|reviews.default.svc.cluster.local"
SPIFFE_IDS = (
    "spiffe://cluster.local/ns/default/sa/reviews",
    "spiffe://cluster.local/ns/default/sa/reviews-v2",
)
_CommonTls = tls_pb2.CommonTlsContext
_TSOCKET = "transport_socket.typed_config.common_tls_context"


def _istiod_cluster(
    *,
    current: bool = True,
    deprecated: bool = True,
    identity: tuple[str, str] = ("default", "default"),
    old_identity: tuple[str, str] = ("default", "default"),
    ca: tuple[str, str] = ("default", "ROOTCA"),
    old_ca: tuple[str, str] = ("default", "ROOTCA"),
) -> cluster_pb2.Cluster:
    """An EDS cluster with ISTIO_MUTUAL TLS as istiod's gRPC generator builds it.

    ``current`` sets ``tls_certificate_provider_instance`` and
    ``default_validation_context.ca_certificate_provider_instance``;
    ``deprecated`` sets ``tls_certificate_certificate_provider_instance`` and
    ``combined_validation_context.validation_context_certificate_provider_instance``.
    Recent istiod sends both, older istiod only the deprecated ones.
    """
    default_context = common_pb2.CertificateValidationContext(
        match_subject_alt_names=[string_pb2.StringMatcher(exact=i) for i in SPIFFE_IDS]
    )
    combined = _CommonTls.CombinedCertificateValidationContext(
        default_validation_context=default_context
    )
    common = _CommonTls(combined_validation_context=combined)
    if current:
        common.tls_certificate_provider_instance.CopyFrom(
            common_pb2.CertificateProviderPluginInstance(
                instance_name=identity[0], certificate_name=identity[1]
            )
        )
        combined.default_validation_context.ca_certificate_provider_instance.CopyFrom(
            common_pb2.CertificateProviderPluginInstance(
                instance_name=ca[0], certificate_name=ca[1]
            )
        )
    if deprecated:
        common.tls_certificate_certificate_provider_instance.CopyFrom(
            _CommonTls.CertificateProviderInstance(
                instance_name=old_identity[0], certificate_name=old_identity[1]
            )
        )
        combined.validation_context_certificate_provider_instance.CopyFrom(
            _CommonTls.CertificateProviderInstance(
                instance_name=old_ca[0], certificate_name=old_ca[1]
            )
        )
    common.combined_validation_context.CopyFrom(combined)
    ads = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())
    tls_context = tls_pb2.UpstreamTlsContext(common_tls_context=common)
    return cluster_pb2.Cluster(
        name=ISTIOD_CLUSTER,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            service_name=ISTIOD_CLUSTER, eds_config=ads
        ),
        transport_socket=base_pb2.TransportSocket(
            name="envoy.transport_sockets.tls", typed_config=_pack(tls_context)
        ),
    )


def _pack(msg: tls_pb2.UpstreamTlsContext) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


ISTIO_MUTUAL = UpstreamTlsContext(
    identity=CertificateProviderInstance("default", "default"),
    validation=CertificateValidationContext(
        ca_certificate_provider=CertificateProviderInstance("default", "ROOTCA"),
        match_subject_alt_names=tuple(
            SanMatcher("ANY", StringMatcher("exact", i)) for i in SPIFFE_IDS
        ),
    ),
)


@pytest.mark.parametrize(
    "cluster",
    [
        pytest.param(_istiod_cluster(), id="both-generations"),
        pytest.param(_istiod_cluster(current=False), id="deprecated-only"),
        pytest.param(_istiod_cluster(deprecated=False), id="current-only"),
    ],
)
def test_istiod_istio_mutual_cluster_is_accepted(cluster: cluster_pb2.Cluster) -> None:
    result = decode_cluster(cluster.SerializeToString())
    assert result.ok, result.errors
    assert isinstance(result.value, Cluster)
    assert result.value.upstream_tls == ISTIO_MUTUAL


@pytest.mark.parametrize(
    ("cluster", "error"),
    [
        pytest.param(
            _istiod_cluster(old_identity=("other", "default")),
            f"{_TSOCKET}.tls_certificate_certificate_provider_instance: names instance 'other' "
            "certificate 'default' but tls_certificate_provider_instance names instance "
            "'default' certificate 'default'; when both generations are set they must agree",
            id="identity-instance-disagrees",
        ),
        pytest.param(
            _istiod_cluster(identity=("default", "workload")),
            f"{_TSOCKET}.tls_certificate_certificate_provider_instance: names instance 'default' "
            "certificate 'default' but tls_certificate_provider_instance names instance "
            "'default' certificate 'workload'; when both generations are set they must agree",
            id="identity-certificate-disagrees",
        ),
        pytest.param(
            _istiod_cluster(old_ca=("default", "OTHERCA")),
            f"{_TSOCKET}.combined_validation_context."
            "validation_context_certificate_provider_instance: names instance 'default' "
            "certificate 'OTHERCA' but default_validation_context."
            "ca_certificate_provider_instance names instance 'default' certificate 'ROOTCA'; "
            "when both generations are set they must agree",
            id="ca-certificate-disagrees",
        ),
        pytest.param(
            _istiod_cluster(ca=("spire", "ROOTCA")),
            f"{_TSOCKET}.combined_validation_context."
            "validation_context_certificate_provider_instance: names instance 'default' "
            "certificate 'ROOTCA' but default_validation_context."
            "ca_certificate_provider_instance names instance 'spire' certificate 'ROOTCA'; "
            "when both generations are set they must agree",
            id="ca-instance-disagrees",
        ),
    ],
)
def test_istiod_generations_that_disagree_are_nacked(
    cluster: cluster_pb2.Cluster, error: str
) -> None:
    result = decode_cluster(cluster.SerializeToString())
    assert result.value is None
    assert result.errors == (error,)


def test_two_kinds_of_client_certificate_are_still_nacked() -> None:
    cluster = _istiod_cluster()
    context = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(context)
    context.common_tls_context.tls_certificate_sds_secret_configs.add(name="default")
    cluster.transport_socket.typed_config.CopyFrom(_pack(context))
    result = decode_cluster(cluster.SerializeToString())
    assert result.errors == (
        f"{_TSOCKET}: more than one client certificate is configured; only one is supported",
    )


@pytest.mark.parametrize(
    ("legacy", "typed", "san", "expected"),
    [
        pytest.param(
            string_pb2.StringMatcher(exact=SPIFFE_IDS[0]),
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI,
                matcher=string_pb2.StringMatcher(exact=SPIFFE_IDS[0]),
            ),
            SPIFFE_IDS[0],
            True,
            id="istiod-spiffe-id",
        ),
        pytest.param(
            string_pb2.StringMatcher(exact=SPIFFE_IDS[0]),
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI,
                matcher=string_pb2.StringMatcher(exact=SPIFFE_IDS[0]),
            ),
            "spiffe://cluster.local/ns/default/sa/ratings",
            False,
            id="other-service-account",
        ),
        pytest.param(
            string_pb2.StringMatcher(
                safe_regex=regex_pb2.RegexMatcher(regex=r"spiffe://cluster\.local/ns/[^/]+/sa/r.*")
            ),
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI,
                matcher=string_pb2.StringMatcher(
                    safe_regex=regex_pb2.RegexMatcher(
                        regex=r"spiffe://cluster\.local/ns/[^/]+/sa/r.*"
                    )
                ),
            ),
            "spiffe://cluster.local/ns/prod/sa/reviews",
            True,
            id="regex",
        ),
    ],
)
def test_legacy_san_matchers_read_like_typed_uri_matchers(
    legacy: string_pb2.StringMatcher,
    typed: common_pb2.SubjectAltNameMatcher,
    san: str,
    expected: bool,
) -> None:
    """istiod's SPIFFE IDs in ``match_subject_alt_names`` match the peer's URI SAN
    exactly as the same matcher in ``match_typed_subject_alt_names`` (type URI) does;
    the legacy one also applies to DNS, email and IP SANs (gRFC A29)."""
    msg = secret_pb2.Secret(
        name="ROOTCA",
        validation_context=common_pb2.CertificateValidationContext(
            system_root_certs=common_pb2.CertificateValidationContext.SystemRootCerts(),
            match_subject_alt_names=[legacy],
            match_typed_subject_alt_names=[typed],
        ),
    )
    validation = _decode(msg).validation_context
    assert validation is not None
    typed_san, legacy_san = validation.match_subject_alt_names
    assert (legacy_san.san_type, typed_san.san_type) == ("ANY", "URI")
    assert legacy_san.matcher == typed_san.matcher
    assert legacy_san.matcher.matches(san) is typed_san.matcher.matches(san) is expected
