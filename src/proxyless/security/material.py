"""TLS material: a workload's identity (certificate chain and key) and the
trust bundle it verifies peers with, parsed once into immutable values.

Certificate sources (bootstrap ``certificate_providers`` such as
``file_watcher``, gRFC A29/A65; SDS secrets; inline or file data sources of
an ``UpstreamTlsContext``) all produce these objects, and rotation swaps
one for another; nothing holding an old one is disturbed.

- :class:`Identity` checks, when it is made, that the chain parses, that the
  private key belongs to the leaf certificate and that the leaf is within
  its validity period; its SPIFFE ID is the leaf's one ``spiffe://`` URI SAN
  (gRFC A87; ``None`` when it has none).
- :class:`TrustBundle` holds PEM roots, and optionally a SPIFFE trust-bundle
  map (trust domain -> roots, gRFC A87).

Every failure is a :class:`~proxyless.errors.CertificateError` naming the
source (a file path, an SDS secret name or a provider instance) and what
is wrong with it. Material is kept in memory only.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from proxyless.errors import CertificateError

__all__ = [
    "Identity",
    "TrustBundle",
    "load_identity",
    "load_trust",
    "spiffe_id_of",
    "trust_domain",
]

_NO_BUNDLES: Mapping[str, bytes] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Identity:
    """A certificate chain (leaf first) and its private key, both PEM.

    ``not_before``/``not_after`` are the leaf's validity in seconds since the
    epoch; ``source`` says where it came from (for messages and logs).
    """

    chain_pem: bytes
    key_pem: bytes
    spiffe_id: str | None
    not_before: float
    not_after: float
    source: str

    def expires_in(self, now: float) -> float:
        """Seconds until the leaf expires (negative once it has)."""
        return self.not_after - now

    def __repr__(self) -> str:
        who = self.spiffe_id or "no SPIFFE ID"
        return f"Identity({who}, from {self.source})"


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """PEM root certificates, and a SPIFFE trust-bundle map when the source
    gave one (trust domain -> PEM roots)."""

    roots_pem: bytes
    source: str
    spiffe_bundles: Mapping[str, bytes] = field(default_factory=lambda: _NO_BUNDLES)

    def roots_for(self, spiffe_id: str | None) -> bytes:
        """The roots that verify a peer with ``spiffe_id`` (gRFC A87: the
        bundle of its trust domain when a map is configured)."""
        if self.spiffe_bundles and spiffe_id is not None:
            domain = trust_domain(spiffe_id)
            bundle = self.spiffe_bundles.get(domain) if domain else None
            if bundle is None:
                raise CertificateError(
                    f"{self.source}: no trust bundle for trust domain {domain!r} (peer {spiffe_id})"
                )
            return bundle
        return self.roots_pem

    def __repr__(self) -> str:
        domains = f", domains={sorted(self.spiffe_bundles)}" if self.spiffe_bundles else ""
        return f"TrustBundle(from {self.source}{domains})"


def trust_domain(spiffe_id: str) -> str | None:
    """The trust domain of ``spiffe://domain/path``, or None if not a SPIFFE ID."""
    if not spiffe_id.startswith("spiffe://"):
        return None
    rest = spiffe_id[len("spiffe://") :]
    domain = rest.split("/", 1)[0]
    return domain.lower() or None


def spiffe_id_of(cert: x509.Certificate) -> str | None:
    """The leaf's SPIFFE ID: its one ``spiffe://`` URI SAN (gRFC A87).
    None when it has no URI SAN; several URI SANs make no SPIFFE ID."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = ext.value.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        return None
    return str(uris[0])


def _certificates(pem: bytes, source: str, what: str) -> list[x509.Certificate]:
    if not pem or not pem.strip():
        raise CertificateError(f"{source}: the {what} is empty")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateError(f"{source}: the {what} is not PEM certificates ({exc})") from None
    return certs


def _epoch(moment: _dt.datetime) -> float:
    return (
        moment.replace(tzinfo=_dt.timezone.utc).timestamp()
        if moment.tzinfo is None
        else moment.timestamp()
    )


def load_identity(chain_pem: bytes, key_pem: bytes, *, source: str, now: float) -> Identity:
    """Parse and check a certificate chain and its key (see the module
    docstring); ``now`` is seconds since the epoch."""
    chain = _certificates(chain_pem, source, "certificate chain")
    leaf = chain[0]
    if not key_pem or not key_pem.strip():
        raise CertificateError(f"{source}: the private key is empty")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{source}: the private key does not load ({exc})") from None
    if not isinstance(
        key,
        (
            rsa.RSAPrivateKey,
            ec.EllipticCurvePrivateKey,
            ed25519.Ed25519PrivateKey,
            ed448.Ed448PrivateKey,
        ),
    ):
        raise CertificateError(f"{source}: unsupported private key type {type(key).__name__}")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != leaf.public_key().public_bytes(der, public):
        raise CertificateError(
            f"{source}: the private key does not match the certificate "
            f"(subject {leaf.subject.rfc4514_string() or '<empty>'})"
        )
    not_before = _epoch(leaf.not_valid_before_utc)
    not_after = _epoch(leaf.not_valid_after_utc)
    if now >= not_after:
        stamp = leaf.not_valid_after_utc.isoformat()
        raise CertificateError(f"{source}: the certificate expired at {stamp}")
    if now < not_before:
        stamp = leaf.not_valid_before_utc.isoformat()
        raise CertificateError(f"{source}: the certificate is not valid before {stamp}")
    return Identity(
        chain_pem=chain_pem,
        key_pem=key_pem,
        spiffe_id=spiffe_id_of(leaf),
        not_before=not_before,
        not_after=not_after,
        source=source,
    )


def load_trust(
    roots_pem: bytes, *, source: str, spiffe_bundles: Mapping[str, bytes] | None = None
) -> TrustBundle:
    """Parse and check PEM roots (and per-trust-domain bundles, if given)."""
    if roots_pem:
        _certificates(roots_pem, source, "trust bundle")
    elif not spiffe_bundles:
        raise CertificateError(f"{source}: the trust bundle is empty")
    bundles: dict[str, bytes] = {}
    for domain, pem in (spiffe_bundles or {}).items():
        _certificates(pem, f"{source} (trust domain {domain!r})", "trust bundle")
        bundles[domain.lower()] = pem
    return TrustBundle(
        roots_pem=roots_pem,
        source=source,
        spiffe_bundles=MappingProxyType(bundles) if bundles else _NO_BUNDLES,
    )
