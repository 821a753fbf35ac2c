"""SDS Secret parsing and CertificateValidationContext details (gRFC A29, Envoy SDS)."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.type.matcher.v3 import string_pb2

from proxyless.errors import ResourceValidationError
from proxyless.resources.model import (
    CertificateValidationContext,
    DataSource,
    SanMatcher,
    Secret,
    StringMatcher,
    TlsCertificate,
)
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
