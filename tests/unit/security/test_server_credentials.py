"""ServerCredentials: a DownstreamTlsContext resolved into ServerTls, fail closed."""

from __future__ import annotations

import pytest

from proxyless.controlplane.ca import DevCA
from proxyless.errors import CertificateError, CredentialsNotReady
from proxyless.resources.model.security import (
    CertificateProviderInstance,
    CertificateValidationContext,
    DataSource,
    TlsCertificate,
)
from proxyless.resources.model.server_listener import DownstreamTlsContext
from proxyless.security.credentials import SecretSources
from proxyless.security.server_credentials import ServerCredentials

CA = DevCA()
CERT = CA.issue("spiffe://cluster.local/ns/default/sa/reviews")
INLINE = TlsCertificate(DataSource(inline=CERT.chain_pem), DataSource(inline=CERT.key_pem))
TRUST = CertificateValidationContext(trusted_ca=DataSource(inline=CA.roots_pem))


def test_mtls_context_resolves_identity_and_trust() -> None:
    ctx = DownstreamTlsContext(INLINE, validation=TRUST, require_client_certificate=True)
    tls = ServerCredentials("listener l", ctx, SecretSources()).current()
    assert tls.identity.spiffe_id == "spiffe://cluster.local/ns/default/sa/reviews"
    assert tls.trust is not None and tls.require_client_certificate


def test_tls_without_validation_has_no_trust() -> None:
    tls = ServerCredentials("l", DownstreamTlsContext(INLINE), SecretSources()).current()
    assert tls.trust is None and not tls.require_client_certificate


def test_a_provider_instance_nothing_serves_fails_closed_naming_it() -> None:
    ctx = DownstreamTlsContext(CertificateProviderInstance("default", "default"), validation=TRUST)
    creds = ServerCredentials("listener l", ctx, SecretSources())
    with pytest.raises(CredentialsNotReady, match="certificate-provider instance 'default'"):
        creds.current()


def test_a_bad_key_fails_closed() -> None:
    other = CA.issue("spiffe://cluster.local/ns/default/sa/other")
    bad = TlsCertificate(DataSource(inline=CERT.chain_pem), DataSource(inline=other.key_pem))
    creds = ServerCredentials("listener l", DownstreamTlsContext(bad), SecretSources())
    with pytest.raises(CertificateError):
        creds.current()
