"""TLS material, SAN matching (gRFC A29) and SSL contexts, with real
certificates from the development CA."""

from __future__ import annotations

import datetime as dt
import ssl
import time

import pytest

from proxyless.controlplane.ca import DevCA
from proxyless.errors import CertificateError, IdentityMismatch
from proxyless.resources.model.matchers import StringMatcher
from proxyless.resources.model.security import SanMatcher
from proxyless.resources.parse.regex import compile_re2
from proxyless.security import (
    PeerCertificate,
    check_sans,
    client_context,
    load_identity,
    load_trust,
    server_context,
)
from proxyless.security.material import trust_domain
from proxyless.security.peer import peer_certificate

REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA()


def test_identity_of_an_svid(ca: DevCA) -> None:
    svid = ca.issue(REVIEWS)
    ident = load_identity(svid.chain_pem, svid.key_pem, source="test", now=time.time())
    assert ident.spiffe_id == REVIEWS
    assert 3500 < ident.expires_in(time.time()) <= 3600


@pytest.mark.parametrize(
    ("case", "message"),
    [
        pytest.param("empty-chain", "the certificate chain is empty", id="empty-chain"),
        pytest.param("garbage-chain", "is not PEM certificates", id="garbage-chain"),
        pytest.param("empty-key", "the private key is empty", id="empty-key"),
        pytest.param("garbage-key", "the private key does not load", id="garbage-key"),
        pytest.param("other-key", "does not match the certificate", id="key-mismatch"),
        pytest.param("expired", "the certificate expired at", id="expired"),
        pytest.param("future", "is not valid before", id="not-yet-valid"),
    ],
)
def test_bad_identities_name_the_source(ca: DevCA, case: str, message: str) -> None:
    svid = ca.issue(REVIEWS)
    other = ca.issue(REVIEWS)
    chain, key, now = svid.chain_pem, svid.key_pem, time.time()
    if case == "empty-chain":
        chain = b""
    elif case == "garbage-chain":
        chain = b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
    elif case == "empty-key":
        key = b" "
    elif case == "garbage-key":
        key = b"not a key"
    elif case == "other-key":
        key = other.key_pem
    elif case == "expired":
        now += 2 * 3600
    elif case == "future":
        now -= 3600
    with pytest.raises(CertificateError) as info:
        load_identity(chain, key, source="/etc/certs/cert-chain.pem", now=now)
    assert str(info.value).startswith("/etc/certs/cert-chain.pem: ")
    assert message in str(info.value)


def test_trust_bundle_checks_and_maps_domains(ca: DevCA) -> None:
    other = DevCA("other.example")
    bundle = load_trust(
        b"",
        source="map.json",
        spiffe_bundles={"Cluster.Local": ca.roots_pem, "other.example": other.roots_pem},
    )
    assert bundle.roots_for(REVIEWS) == ca.roots_pem
    assert bundle.roots_for("spiffe://other.example/x") == other.roots_pem
    with pytest.raises(CertificateError, match=r"no trust bundle for trust domain 'nope\.example'"):
        bundle.roots_for("spiffe://nope.example/x")
    with pytest.raises(CertificateError, match="ROOTCA: the trust bundle is empty"):
        load_trust(b"", source="ROOTCA")
    assert trust_domain("spiffe://TD.example/a") == "td.example"
    assert trust_domain("https://x") is None


def _m(san_type: str, kind: str, value: str, ignore_case: bool = False) -> SanMatcher:
    regex = compile_re2(value) if kind == "safe_regex" else None
    return SanMatcher(san_type, StringMatcher(kind, value, ignore_case, regex))  # type: ignore[arg-type]


PEER = PeerCertificate(
    spiffe_id=REVIEWS,
    dns=("*.reviews.svc", "reviews.default"),
    uri=(REVIEWS,),
    email=("ops@example.com",),
    ip=("2001:db8::1", "10.0.0.7"),
)


@pytest.mark.parametrize(
    ("matchers", "ok"),
    [
        pytest.param((), True, id="no-matchers-accept"),
        pytest.param((_m("URI", "exact", REVIEWS),), True, id="uri-exact"),
        pytest.param((_m("URI", "exact", REVIEWS + "x"),), False, id="uri-exact-other"),
        pytest.param(
            (_m("URI", "prefix", "spiffe://cluster.local/ns/default/"),), True, id="uri-prefix"
        ),
        pytest.param((_m("URI", "suffix", "/sa/ratings"),), False, id="uri-suffix-other"),
        pytest.param((_m("URI", "contains", "/ns/default/"),), True, id="uri-contains"),
        pytest.param(
            (_m("URI", "safe_regex", r"spiffe://cluster\.local/ns/[a-z]+/sa/reviews"),),
            True,
            id="uri-regex",
        ),
        pytest.param((_m("URI", "exact", REVIEWS.upper(), True),), True, id="uri-ignore-case"),
        pytest.param((_m("URI", "exact", REVIEWS.upper()),), False, id="uri-case-sensitive"),
        pytest.param((_m("DNS", "exact", "v1.reviews.svc"),), True, id="dns-wildcard-san"),
        pytest.param((_m("DNS", "exact", "a.v1.reviews.svc"),), False, id="dns-wildcard-one-label"),
        pytest.param((_m("DNS", "exact", "reviews.svc"),), False, id="dns-wildcard-not-bare"),
        pytest.param((_m("DNS", "exact", REVIEWS),), False, id="dns-not-uri"),
        pytest.param((_m("EMAIL", "exact", "ops@example.com"),), True, id="email"),
        pytest.param((_m("IP_ADDRESS", "exact", "2001:DB8:0:0::1"),), True, id="ip-canonical"),
        pytest.param((_m("ANY", "exact", "10.0.0.7"),), True, id="legacy-any-ip"),
        pytest.param((_m("ANY", "exact", REVIEWS),), True, id="legacy-any-uri"),
        pytest.param(
            (_m("URI", "exact", "x"), _m("DNS", "exact", "reviews.default")), True, id="any-of"
        ),
    ],
)
def test_san_matching(matchers: tuple[SanMatcher, ...], ok: bool) -> None:
    if ok:
        check_sans(PEER, matchers)
    else:
        with pytest.raises(IdentityMismatch) as info:
            check_sans(PEER, matchers, where="cluster 'c' endpoint 1.2.3.4:80")
        assert str(info.value).startswith(
            f"cluster 'c' endpoint 1.2.3.4:80: the peer presented {REVIEWS}, expected "
        )


def test_no_san_fails_naming_the_subject() -> None:
    with pytest.raises(IdentityMismatch, match=r"presented no SAN \(subject <empty>\)"):
        check_sans(PeerCertificate(spiffe_id=None), (_m("URI", "exact", REVIEWS),))


def test_peer_certificate_reads_an_svid(ca: DevCA) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    svid = ca.issue(REVIEWS, dns=("reviews.default.svc",))
    leaf = x509.load_pem_x509_certificates(svid.chain_pem)[0]
    peer = peer_certificate(leaf.public_bytes(serialization.Encoding.DER))
    assert peer.spiffe_id == REVIEWS and peer.dns == ("reviews.default.svc",)
    with pytest.raises(CertificateError):
        peer_certificate(b"junk")


def test_contexts_handshake_in_memory(ca: DevCA) -> None:
    """A client and a server context complete mutual TLS over memory BIOs."""
    now = time.time()
    server_svid, client_svid = (
        ca.issue(REVIEWS),
        ca.issue("spiffe://cluster.local/ns/default/sa/web"),
    )
    trust = load_trust(ca.roots_pem, source="ROOTCA")
    sctx = server_context(
        load_identity(server_svid.chain_pem, server_svid.key_pem, source="s", now=now),
        trust,
        require_client_certificate=True,
        alpn=("h2",),
    )
    cctx = client_context(
        load_identity(client_svid.chain_pem, client_svid.key_pem, source="c", now=now),
        trust,
        alpn=("h2",),
    )
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = cctx.wrap_bio(c_in, c_out, server_side=False)
    server = sctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = client.getpeercert(binary_form=True)
    assert der is not None and peer_certificate(der).spiffe_id == REVIEWS
    sder = server.getpeercert(binary_form=True)
    assert sder is not None and peer_certificate(sder).spiffe_id.endswith("/sa/web")  # type: ignore[union-attr]
    assert client.selected_alpn_protocol() == "h2"


def test_server_context_needs_trust_to_require_client_certs(ca: DevCA) -> None:
    svid = ca.issue(REVIEWS)
    ident = load_identity(svid.chain_pem, svid.key_pem, source="default", now=time.time())
    with pytest.raises(CertificateError, match="no trust bundle"):
        server_context(ident, None, require_client_certificate=True)


def test_dev_ca_svid_lifetime(ca: DevCA) -> None:
    svid = ca.issue(REVIEWS, ttl=dt.timedelta(minutes=10))
    assert 0 < svid.not_after - time.time() <= 600 + 1
