"""The TLS relay without sockets: the client TlsRelay against a server
``ssl.SSLObject`` on memory BIOs, with DevCA certificates. The SAN check
comes before the first application byte; failures name the cluster, the
endpoint and the identities; back-pressure stops reading a side."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import pytest

from proxyless.controlplane.ca import DevCA
from proxyless.errors import CertificateError, IdentityMismatch
from proxyless.grpc._tls_relay import HIGH_WATER, TlsRelay
from proxyless.resources.model.matchers import StringMatcher
from proxyless.resources.model.security import (
    CertificateValidationContext,
    DataSource,
    SanMatcher,
    TlsCertificate,
    UpstreamTlsContext,
)
from proxyless.security import load_identity, load_trust, server_context
from proxyless.security.credentials import ClientTls, ClusterCredentials, SecretSources

CLIENT = "spiffe://cluster.local/ns/default/sa/productpage"
REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"
RATINGS = "spiffe://cluster.local/ns/default/sa/ratings"
ENDPOINT = "10.0.0.7:9080"
CLUSTER = "outbound|9080||reviews"


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA()


def _client_tls(ca: DevCA, pin: str = REVIEWS) -> ClientTls:
    svid = ca.issue(CLIENT)
    ctx = UpstreamTlsContext(
        identity=TlsCertificate(DataSource(inline=svid.chain_pem), DataSource(inline=svid.key_pem)),
        validation=CertificateValidationContext(
            trusted_ca=DataSource(inline=ca.roots_pem),
            match_subject_alt_names=(SanMatcher("URI", StringMatcher("exact", pin)),),
        ),
        alpn_protocols=("h2",),
    )
    return ClusterCredentials(CLUSTER, ctx, SecretSources()).current()


class Server:
    """A TLS server on memory BIOs presenting ``spiffe_id`` from ``issuer``."""

    def __init__(self, issuer: DevCA, spiffe_id: str, client_roots: bytes) -> None:
        svid = issuer.issue(spiffe_id)
        ident = load_identity(svid.chain_pem, svid.key_pem, source="server", now=time.time())
        trust = load_trust(client_roots, source="client roots")
        ctx = server_context(ident, trust, require_client_certificate=True, alpn=("h2",))
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.plaintext = bytearray()

    def feed(self, data: bytes) -> bytes:
        """Ciphertext from the client in; ciphertext for the client out."""
        self.incoming.write(data)
        try:
            self.obj.do_handshake()
            while True:
                self.plaintext += self.obj.read(65536)
        except ssl.SSLError:  # want-read, close_notify, or the client's alert
            pass
        return self.outgoing.read()

    def send(self, data: bytes) -> bytes:
        self.obj.write(data)
        return self.outgoing.read()


def _pump(relay: TlsRelay, server: Server, rounds: int = 10) -> None:
    for _ in range(rounds):
        out = relay.take_upstream()
        if not out:
            return
        back = server.feed(out)
        if back:
            relay.from_upstream(back)


def test_verified_then_relayed_both_ways(ca: DevCA) -> None:
    relay = TlsRelay(_client_tls(ca), ENDPOINT)
    server = Server(ca, REVIEWS, ca.roots_pem)
    relay.from_local(b"PRI * HTTP/2.0")  # before the handshake: held, not sent
    assert not relay.verified and b"PRI" not in relay.to_upstream
    _pump(relay, server)
    assert relay.verified and relay.error is None
    assert relay.peer is not None and relay.peer.spiffe_id == REVIEWS
    assert bytes(server.plaintext) == b"PRI * HTTP/2.0"
    relay.from_upstream(server.send(b"SETTINGS"))
    assert relay.take_local() == b"SETTINGS"
    relay.from_local(b"more")
    _pump(relay, server)
    assert bytes(server.plaintext).endswith(b"more")


def _split_whole(data: bytes) -> list[bytes]:
    return [data]


def _split_bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def _split_mid_record(data: bytes) -> list[bytes]:
    return [data[: len(data) // 2 + 3], data[len(data) // 2 + 3 :]]


@pytest.mark.parametrize(
    ("messages", "split"),
    [
        pytest.param([b"one"], _split_whole, id="one-record"),
        pytest.param([b"a" * 100, b"b" * 200, b"c" * 300], _split_whole, id="records-in-one-read"),
        pytest.param([b"a" * 100, b"b" * 200], _split_bytewise, id="byte-by-byte"),
        pytest.param([b"x" * 5000, b"y" * 7], _split_mid_record, id="split-mid-record"),
        pytest.param([bytes(range(256)) * 300], _split_whole, id="several-full-records"),
    ],
)
def test_every_plaintext_byte_reaches_grpcio_however_ciphertext_arrives(
    ca: DevCA, messages: list[bytes], split: Callable[[bytes], list[bytes]]
) -> None:
    relay = TlsRelay(_client_tls(ca), ENDPOINT)
    server = Server(ca, REVIEWS, ca.roots_pem)
    _pump(relay, server)
    assert relay.verified
    ciphertext = b"".join(server.send(m) for m in messages)
    for chunk in split(ciphertext):
        relay.from_upstream(memoryview(bytearray(chunk)))  # as the forwarder passes them
    assert relay.take_local() == b"".join(messages)
    assert relay.error is None and not relay.closed


@pytest.mark.parametrize(
    ("issuer", "presented", "error", "words"),
    [
        pytest.param(
            "same", RATINGS, IdentityMismatch, (CLUSTER, ENDPOINT, REVIEWS, RATINGS), id="impostor"
        ),
        pytest.param(
            "other",
            REVIEWS,
            CertificateError,
            (CLUSTER, ENDPOINT, "does not verify against the cluster's trust bundle"),
            id="other-ca",
        ),
    ],
)
def test_a_failed_check_sends_no_application_byte(
    ca: DevCA, issuer: str, presented: str, error: type[Exception], words: tuple[str, ...]
) -> None:
    relay = TlsRelay(_client_tls(ca), ENDPOINT)
    server = Server(ca if issuer == "same" else DevCA(), presented, ca.roots_pem)
    relay.from_local(b"secret request")
    _pump(relay, server)
    assert relay.closed and not relay.verified
    assert isinstance(relay.error, error)
    for word in words:
        assert word in str(relay.error)
    assert b"secret" not in server.plaintext
    relay.from_local(b"late bytes")  # ignored once closed
    assert b"late" not in relay.to_upstream


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        pytest.param(b"", "closed the connection during the TLS handshake", id="closed"),
        pytest.param(
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x00" + b"\x00" * 18,
            "TLS handshake failed",
            id="plaintext-http2",
        ),
    ],
)
def test_a_server_not_speaking_tls_is_refused(ca: DevCA, reply: bytes, words: str) -> None:
    relay = TlsRelay(_client_tls(ca), ENDPOINT)
    assert relay.take_upstream()  # the ClientHello
    relay.from_local(b"PRI * HTTP/2.0")
    relay.from_upstream(reply)
    assert relay.closed and isinstance(relay.error, CertificateError)
    assert words in str(relay.error) and CLUSTER in str(relay.error)
    assert relay.take_local() == b""


def test_back_pressure_stops_reading_a_side(ca: DevCA) -> None:
    relay = TlsRelay(_client_tls(ca), ENDPOINT)
    server = Server(ca, REVIEWS, ca.roots_pem)
    _pump(relay, server)
    assert relay.wants_local() and relay.wants_upstream()
    relay.from_local(b"x" * HIGH_WATER)
    assert not relay.wants_local()  # the endpoint's side must drain first
    relay.take_upstream()
    assert relay.wants_local()
    relay.to_local += b"y" * HIGH_WATER
    assert not relay.wants_upstream()


def test_closing_either_side_closes_the_relay(ca: DevCA) -> None:
    relay = TlsRelay(_client_tls(ca), ENDPOINT)
    server = Server(ca, REVIEWS, ca.roots_pem)
    _pump(relay, server)
    relay.from_local(b"")
    assert relay.closed and relay.error is None
    relay = TlsRelay(_client_tls(ca), ENDPOINT)
    server = Server(ca, REVIEWS, ca.roots_pem)
    _pump(relay, server)
    relay.from_upstream(b"")
    assert relay.closed and relay.error is None
