"""A development certificate authority that mints SPIFFE SVIDs.

**Development-only trust.** The CA's key lives only in the control plane's
process memory (``--ca-dir`` receives workload certificates and the root,
never the CA's key), nothing protects or audits it, and every workload that can reach the control plane
and claim a node identity receives a certificate for it. Use it on a laptop
and in tests; in production, certificates come from Istio's CA through
istio-agent, from SPIRE, or from your own PKI.

What it issues matches what Istio's CA and SPIRE issue to workloads: an
X.509-SVID whose only SAN is the SPIFFE ID
``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``, an empty
subject, ECDSA P-256 keys, ``digitalSignature``/``keyEncipherment`` usage
and both ``serverAuth`` and ``clientAuth`` extended usage, valid for
``ttl`` (one hour by default) from a few minutes in the past (clock skew).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DevCA", "IssuedCertificate", "spiffe_id"]

_SKEW = _dt.timedelta(minutes=5)


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """Istio's SPIFFE ID form: ``spiffe://td/ns/<namespace>/sa/<service account>``."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate chain (leaf, then the CA) and its key, PEM."""

    chain_pem: bytes
    key_pem: bytes
    not_after: float


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


class DevCA:
    """A self-signed root for ``trust_domain`` (see the module docstring)."""

    def __init__(
        self, trust_domain: str = "cluster.local", *, now: _dt.datetime | None = None
    ) -> None:
        self.trust_domain = trust_domain
        start = (now or _dt.datetime.now(_dt.timezone.utc)) - _SKEW
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"proxyless development CA ({trust_domain})"
                ),
            ]
        )
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + _dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.roots_pem = self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        spiffe_id: str,
        *,
        dns: tuple[str, ...] = (),
        ttl: _dt.timedelta = _dt.timedelta(hours=1),
        now: _dt.datetime | None = None,
    ) -> IssuedCertificate:
        """An SVID for ``spiffe_id`` (plus ``dns`` SANs if given)."""
        start = (now or _dt.datetime.now(_dt.timezone.utc)) - _SKEW
        end = start + _SKEW + ttl
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        sans += [x509.DNSName(d) for d in dns]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.roots_pem
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return IssuedCertificate(chain_pem=chain, key_pem=key_pem, not_after=end.timestamp())

    def __repr__(self) -> str:
        return f"DevCA({self.trust_domain!r})"
