"""The peer's certificate, and whether its subject alternative names satisfy
a TLS context's SAN matchers (gRFC A29; Envoy ``match_typed_subject_alt_names``).

The rules:

- An empty matcher list accepts any peer whose chain verified.
- A peer without a leaf certificate, or without SANs, fails.
- A typed matcher (DNS, URI, EMAIL, IP_ADDRESS, OTHER_NAME) is checked
  against the SANs of its type; the legacy ``match_subject_alt_names``
  (``"ANY"``) against DNS, URI, email and IP SANs alike.
- Matching follows ``StringMatcher`` (exact, prefix, suffix, contains,
  ``safe_regex`` through RE2, ``ignore_case``). An exact DNS matcher also
  accepts a wildcard DNS SAN covering it (``*.example.com`` covers
  ``a.example.com`` but not ``a.b.example.com`` nor ``example.com``). IP
  SANs are compared in canonical form (IPv6 compressed, lower case).
- The peer passes when any matcher accepts any of its SANs.

A failure is an :class:`~proxyless.errors.IdentityMismatch` naming what was
expected and what the peer presented (its SPIFFE ID when it has one).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cryptography import x509

from proxyless.errors import CertificateError, IdentityMismatch
from proxyless.resources.model.security import SanMatcher
from proxyless.security.material import spiffe_id_of

__all__ = ["PeerCertificate", "check_sans", "describe_matchers", "peer_certificate"]


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The SANs of a peer's leaf certificate, by type."""

    spiffe_id: str | None
    dns: tuple[str, ...] = ()
    uri: tuple[str, ...] = ()
    email: tuple[str, ...] = ()
    ip: tuple[str, ...] = ()
    subject: str = ""

    def describe(self) -> str:
        """What the peer presented, for error messages."""
        if self.spiffe_id:
            return self.spiffe_id
        sans = [*self.uri, *self.dns, *self.email, *self.ip]
        if sans:
            return "SANs " + ", ".join(sans)
        return f"no SAN (subject {self.subject or '<empty>'})"


def _canonical_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return text


def peer_certificate(der: bytes) -> PeerCertificate:
    """Read the SANs of a DER leaf certificate (as ``getpeercert(True)`` gives)."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateError(f"the peer's certificate does not parse ({exc})") from None
    subject = cert.subject.rfc4514_string()
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return PeerCertificate(spiffe_id=None, subject=subject)
    san = ext.value
    return PeerCertificate(
        spiffe_id=spiffe_id_of(cert),
        dns=tuple(str(v) for v in san.get_values_for_type(x509.DNSName)),
        uri=tuple(str(v) for v in san.get_values_for_type(x509.UniformResourceIdentifier)),
        email=tuple(str(v) for v in san.get_values_for_type(x509.RFC822Name)),
        ip=tuple(str(v) for v in san.get_values_for_type(x509.IPAddress)),
        subject=subject,
    )


def _dns_matches(matcher: SanMatcher, san: str) -> bool:
    m = matcher.matcher
    if m.matches(san):
        return True
    if m.kind != "exact" or not san.startswith("*."):
        return False
    # A wildcard SAN covers exactly one leftmost label.
    name = m.value.lower()
    suffix = san[1:].lower()
    head, dot, _ = name.partition(".")
    return bool(head) and bool(dot) and name.endswith(suffix) and "." not in name[: -len(suffix)]


def _matches(matcher: SanMatcher, peer: PeerCertificate) -> bool:
    kind = matcher.san_type
    m = matcher.matcher
    if kind in ("DNS", "ANY") and any(_dns_matches(matcher, s) for s in peer.dns):
        return True
    if kind in ("URI", "ANY") and any(m.matches(s) for s in peer.uri):
        return True
    if kind in ("EMAIL", "ANY") and any(m.matches(s) for s in peer.email):
        return True
    if kind in ("IP_ADDRESS", "ANY"):
        want = _canonical_ip(m.value) if m.kind == "exact" else None
        for ip in peer.ip:
            if m.matches(ip) or (want is not None and _canonical_ip(ip) == want):
                return True
    return False


def describe_matchers(matchers: tuple[SanMatcher, ...]) -> str:
    """The expected identities in words, e.g. ``URI exact spiffe://td/ns/a/sa/b``."""
    parts = []
    for sm in matchers:
        m = sm.matcher
        kind = "any SAN" if sm.san_type == "ANY" else sm.san_type
        parts.append(f"{kind} {m.kind} {m.value!r}{' (ignore case)' if m.ignore_case else ''}")
    return " or ".join(parts)


def check_sans(peer: PeerCertificate, matchers: tuple[SanMatcher, ...], where: str = "") -> None:
    """Raise :class:`IdentityMismatch` unless ``peer`` satisfies ``matchers``
    (see the module docstring); ``where`` prefixes the message (the cluster
    and endpoint)."""
    if not matchers:
        return
    if any(_matches(sm, peer) for sm in matchers):
        return
    prefix = f"{where}: " if where else ""
    raise IdentityMismatch(
        f"{prefix}the peer presented {peer.describe()}, expected {describe_matchers(matchers)}"
    )
