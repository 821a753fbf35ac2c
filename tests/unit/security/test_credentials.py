"""ClusterCredentials: resolving an UpstreamTlsContext, failing closed,
rotation through a source handler."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxyless.controlplane.ca import DevCA
from proxyless.errors import CertificateError, CredentialsNotReady, IdentityMismatch
from proxyless.resources.model.matchers import StringMatcher
from proxyless.resources.model.security import (
    CertificateProviderInstance,
    CertificateValidationContext,
    DataSource,
    SanMatcher,
    SdsSecretConfig,
    TlsCertificate,
    UpstreamTlsContext,
)
from proxyless.security import load_identity
from proxyless.security.credentials import ClusterCredentials, SecretSources

WEB = "spiffe://cluster.local/ns/default/sa/web"
REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA()


def _uri(value: str) -> SanMatcher:
    return SanMatcher("URI", StringMatcher("exact", value))


def _static(ca: DevCA, *, matchers: tuple[SanMatcher, ...] = ()) -> UpstreamTlsContext:
    svid = ca.issue(WEB)
    return UpstreamTlsContext(
        sni="reviews.default.svc",
        identity=TlsCertificate(DataSource(inline=svid.chain_pem), DataSource(inline=svid.key_pem)),
        validation=CertificateValidationContext(
            trusted_ca=DataSource(inline=ca.roots_pem), match_subject_alt_names=matchers
        ),
        alpn_protocols=("h2",),
    )


def test_static_material_is_ready_at_once(ca: DevCA) -> None:
    creds = ClusterCredentials("outbound|9080||reviews", _static(ca), SecretSources())
    tls = creds.current()
    assert tls.identity is not None and tls.identity.spiffe_id == WEB
    assert tls.sni == "reviews.default.svc" and tls.alpn == ("h2",) and tls.version == 1
    assert tls.context() is tls.context()  # made once


def test_files_are_read_and_a_missing_file_is_named(ca: DevCA, tmp_path: Path) -> None:
    svid = ca.issue(WEB)
    (tmp_path / "cert.pem").write_bytes(svid.chain_pem)
    (tmp_path / "key.pem").write_bytes(svid.key_pem)
    (tmp_path / "ca.pem").write_bytes(ca.roots_pem)
    ctx = UpstreamTlsContext(
        identity=TlsCertificate(
            DataSource(filename=str(tmp_path / "cert.pem")),
            DataSource(filename=str(tmp_path / "key.pem")),
        ),
        validation=CertificateValidationContext(
            trusted_ca=DataSource(filename=str(tmp_path / "ca.pem"))
        ),
    )
    assert ClusterCredentials("c", ctx, SecretSources()).current().identity is not None
    missing = UpstreamTlsContext(
        validation=CertificateValidationContext(
            trusted_ca=DataSource(filename=str(tmp_path / "nope.pem"))
        )
    )
    with pytest.raises(CertificateError, match=r"nope\.pem: cannot read the trusted CA"):
        ClusterCredentials("c", missing, SecretSources()).wait(0.01)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        pytest.param(
            UpstreamTlsContext(identity=SdsSecretConfig("default"), validation_sds_secret="ROOTCA"),
            "SDS secret 'default' cannot be served",
            id="sds-without-source",
        ),
        pytest.param(
            UpstreamTlsContext(
                identity=CertificateProviderInstance("default", "default"),
                validation=CertificateValidationContext(
                    ca_certificate_provider=CertificateProviderInstance("default", "ROOTCA")
                ),
            ),
            "certificate-provider instance 'default' certificate 'default' cannot be served",
            id="provider-without-source",
        ),
        pytest.param(
            UpstreamTlsContext(),
            "names no trust",
            id="no-trust-refuses",
        ),
    ],
)
def test_unservable_references_fail_closed(context: UpstreamTlsContext, message: str) -> None:
    creds = ClusterCredentials("outbound|9080||reviews", context, SecretSources())
    with pytest.raises((CredentialsNotReady, CertificateError)) as info:
        creds.current()
    assert "outbound|9080||reviews" in str(info.value) and message in str(info.value)


class _Handler:
    """A source handler the test feeds by hand."""

    def __init__(self) -> None:
        self.deliver: Callable[[Any], None] | None = None
        self.unsubscribed = 0

    def __call__(self, ref: Any, deliver: Callable[[Any], None]) -> Callable[[], None]:
        self.deliver = deliver

        def stop() -> None:
            self.unsubscribed += 1

        return stop


def test_sds_material_waits_then_rotates(ca: DevCA) -> None:
    sources = SecretSources()
    ident, trust = _Handler(), _Handler()
    sources.sds_identity = ident
    sources.sds_trust = trust
    creds = ClusterCredentials(
        "c",
        UpstreamTlsContext(
            identity=SdsSecretConfig("default"),
            validation_sds_secret="ROOTCA",
            validation=CertificateValidationContext(match_subject_alt_names=(_uri(REVIEWS),)),
        ),
        sources,
    )
    with pytest.raises(
        CredentialsNotReady, match="waiting for SDS secret 'default' and the trust bundle"
    ):
        creds.current()
    seen: list[int] = []
    creds.on_change(lambda tls: seen.append(tls.version))
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(creds.wait(5)))
    waiter.start()
    from proxyless.security import load_trust

    assert ident.deliver is not None and trust.deliver is not None
    svid = ca.issue(WEB)
    ident.deliver(
        load_identity(svid.chain_pem, svid.key_pem, source="SDS default", now=time.time())
    )
    trust.deliver(load_trust(ca.roots_pem, source="SDS ROOTCA"))
    waiter.join(5)
    assert got and got[0].version == 1 and got[0].matchers == (_uri(REVIEWS),)
    # a bad rotation keeps the last good material
    ident.deliver(CertificateError("SDS default: the certificate expired"))
    assert creds.current().version == 1
    renewed = ca.issue(WEB)
    ident.deliver(
        load_identity(renewed.chain_pem, renewed.key_pem, source="SDS default", now=time.time())
    )
    assert creds.current().version == 2 and seen == [1, 2]
    creds.close()
    assert ident.unsubscribed == 1 and trust.unsubscribed == 1


def test_verify_names_cluster_endpoint_and_identities(ca: DevCA) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    tls = ClusterCredentials("c", _static(ca, matchers=(_uri(REVIEWS),)), SecretSources()).current()
    impostor = ca.issue("spiffe://cluster.local/ns/default/sa/ratings")
    der = x509.load_pem_x509_certificates(impostor.chain_pem)[0].public_bytes(
        serialization.Encoding.DER
    )
    with pytest.raises(IdentityMismatch) as info:
        tls.verify(der, "10.0.0.7:9080")
    assert str(info.value) == (
        "cluster 'c' endpoint 10.0.0.7:9080: the peer presented "
        "spiffe://cluster.local/ns/default/sa/ratings, expected URI exact "
        "'spiffe://cluster.local/ns/default/sa/reviews'"
    )
    with pytest.raises(CertificateError, match="presented no certificate"):
        tls.verify(None, "10.0.0.7:9080")


def test_update_switches_context(ca: DevCA) -> None:
    creds = ClusterCredentials("c", _static(ca), SecretSources())
    first = creds.current()
    creds.update(_static(ca, matchers=(_uri(REVIEWS),)))
    assert creds.current().version == first.version + 1
    assert creds.current().matchers == (_uri(REVIEWS),)
