"""One endpoint connection of a TLS cluster, without I/O: the TLS client
handshake, the SPIFFE check, then bytes relayed both ways.

grpcio speaks plaintext HTTP/2 to a local forwarder (:mod:`._tls_forward`);
for each connection grpcio makes, the forwarder opens a TCP connection to
the endpoint and drives one :class:`TlsRelay` between the two. The relay
owns an ``ssl.SSLObject`` on memory BIOs made from the cluster's
:class:`~proxyless.security.credentials.ClientTls` (client certificate,
trust bundle, SNI, ALPN ``h2``), so OpenSSL verifies the chain; the
server's SANs are then checked against the cluster's SAN matchers
(:meth:`ClientTls.verify <proxyless.security.credentials.ClientTls.verify>`,
gRFC A29) **before** one byte from grpcio is encrypted and sent. Until
then grpcio's bytes wait in memory; a failed handshake or check ends the
relay with the error naming the cluster, the endpoint and the identities,
and nothing is ever sent in plaintext.

The I/O side feeds bytes in (:meth:`TlsRelay.from_upstream`,
:meth:`TlsRelay.from_local`), takes bytes out (:meth:`TlsRelay.take_upstream`,
:meth:`TlsRelay.take_local`), and asks what to wait for
(:meth:`TlsRelay.wants_upstream`, :meth:`TlsRelay.wants_local`): each side
is read only while the other side's outgoing buffer is below
:data:`HIGH_WATER` (back-pressure; HTTP/2 flow control bounds the rest).
"""

from __future__ import annotations

import ssl

from proxyless.errors import CertificateError, SecurityError
from proxyless.security.credentials import ClientTls
from proxyless.security.peer import PeerCertificate

__all__ = ["HIGH_WATER", "READ_SIZE", "TlsRelay"]

#: Bytes read per socket call, and the plaintext read per ``SSLObject.read``.
READ_SIZE = 256 * 1024
#: A side stops being read while the other side has this much still to send.
HIGH_WATER = 1024 * 1024

_HANDSHAKING, _OPEN, _CLOSED = 0, 1, 2


class TlsRelay:
    """See the module docstring. ``endpoint`` is ``host:port`` for messages."""

    __slots__ = (
        "_in",
        "_local_eof",
        "_obj",
        "_out",
        "_pending_local",
        "_state",
        "_tls",
        "endpoint",
        "error",
        "peer",
        "to_local",
        "to_upstream",
    )

    def __init__(self, tls: ClientTls, endpoint: str, alpn: tuple[str, ...] = ("h2",)) -> None:
        self._tls = tls
        self.endpoint = endpoint
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        host = tls.sni or None
        self._obj = tls.context(alpn).wrap_bio(
            self._in, self._out, server_side=False, server_hostname=host
        )
        self._state = _HANDSHAKING
        #: the error that ended the relay (handshake, identity, or TLS), if any
        self.error: SecurityError | None = None
        #: the verified server certificate, once the handshake is done
        self.peer: PeerCertificate | None = None
        #: ciphertext for the endpoint, plaintext for grpcio
        self.to_upstream = bytearray()
        self.to_local = bytearray()
        #: grpcio's bytes received before the server's identity was verified
        self._pending_local = bytearray()
        self._local_eof = False
        self._handshake()

    # -- state ---------------------------------------------------------------------------
    @property
    def verified(self) -> bool:
        """The handshake is done and the server's identity checked."""
        return self._state == _OPEN

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    def wants_upstream(self) -> bool:
        """Read the endpoint's socket now?"""
        return self._state != _CLOSED and len(self.to_local) < HIGH_WATER

    def wants_local(self) -> bool:
        """Read grpcio's socket now? (Before the server is verified, what
        grpcio sends waits here, bounded, and is never sent in the clear.)"""
        return (
            self._state != _CLOSED and len(self.to_upstream) + len(self._pending_local) < HIGH_WATER
        )

    # -- bytes in ------------------------------------------------------------------------
    def from_upstream(self, data: bytes | memoryview) -> None:
        """Ciphertext from the endpoint (``b""``: it closed the connection)."""
        if self._state == _CLOSED:
            return
        if not data:
            if self._state == _HANDSHAKING:
                self._fail(
                    CertificateError(
                        f"{self._where()}: the endpoint closed the connection during the TLS "
                        "handshake (is it serving TLS? did it refuse our client certificate?)"
                    )
                )
            else:
                self._state = _CLOSED
            return
        self._in.write(data)
        if self._state == _HANDSHAKING:
            self._handshake()
        if self._state == _OPEN:
            self._read_plaintext()

    def from_local(self, data: bytes | memoryview) -> None:
        """Plaintext from grpcio (``b""``: grpcio closed its connection)."""
        if self._state == _CLOSED:
            return
        if not data:
            self._local_eof = True
            if self._state == _OPEN:
                self._close_tls()
            return
        if self._state != _OPEN:
            self._pending_local += data
            return
        self._write(data)

    # -- bytes out -----------------------------------------------------------------------
    def take_upstream(self) -> bytes:
        data = bytes(self.to_upstream)
        self.to_upstream.clear()
        return data

    def take_local(self) -> bytes:
        data = bytes(self.to_local)
        self.to_local.clear()
        return data

    # -- internals -----------------------------------------------------------------------
    def _where(self) -> str:
        return f"cluster {self._tls.cluster!r} endpoint {self.endpoint}"

    def _flush(self) -> None:
        if self._out.pending:
            self.to_upstream += self._out.read()

    def _handshake(self) -> None:
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLCertVerificationError as exc:
            self._flush()
            self._fail(
                CertificateError(
                    f"{self._where()}: the endpoint's certificate chain does not verify "
                    f"against the cluster's trust bundle ({exc.verify_message})"
                )
            )
            return
        except ssl.SSLError as exc:
            self._flush()
            self._fail(
                CertificateError(f"{self._where()}: TLS handshake failed ({_ssl_reason(exc)})")
            )
            return
        self._flush()
        try:
            self.peer = self._tls.verify(self._obj.getpeercert(binary_form=True), self.endpoint)
        except SecurityError as exc:
            self._fail(exc)
            return
        self._state = _OPEN
        if self._pending_local:
            pending = bytes(self._pending_local)
            self._pending_local.clear()
            self._write(pending)
        if self._local_eof:
            self._close_tls()

    def _read_plaintext(self) -> None:
        # Read what the ciphertext in hand can give (plaintext is never
        # longer), one record per read, and stop when nothing is left in the
        # BIO nor decrypted in OpenSSL: no oversized buffers, and no extra
        # read ending in ``SSLWantReadError`` on every crossing. (Python's
        # ssl never turns read-ahead on, so OpenSSL keeps no undecrypted
        # record of its own once the BIO is empty.)
        obj, bio = self._obj, self._in
        while True:
            size = min(READ_SIZE, bio.pending + obj.pending()) or READ_SIZE
            try:
                chunk = obj.read(size)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._state = _CLOSED
                break
            except ssl.SSLError as exc:
                self._fail(CertificateError(f"{self._where()}: TLS error ({_ssl_reason(exc)})"))
                break
            if not chunk:
                self._state = _CLOSED
                break
            self.to_local += chunk
            if not bio.pending and not obj.pending():
                break
        self._flush()  # post-handshake messages (key updates) the read produced

    def _write(self, data: bytes | memoryview) -> None:
        try:
            self._obj.write(data)
        except ssl.SSLError as exc:
            self._fail(CertificateError(f"{self._where()}: TLS error ({_ssl_reason(exc)})"))
            return
        self._flush()

    def _close_tls(self) -> None:
        try:
            self._obj.unwrap()
        except ssl.SSLError:
            pass
        self._flush()
        self._state = _CLOSED

    def _fail(self, error: SecurityError) -> None:
        self.error = error
        self._state = _CLOSED
        self._pending_local.clear()
        self.to_local.clear()

    def __repr__(self) -> str:
        state = ("handshaking", "open", "closed")[self._state]
        return f"<TlsRelay {self._where()} {state}>"


def _ssl_reason(exc: ssl.SSLError) -> str:
    verify = getattr(exc, "verify_message", None)
    reason = exc.reason or exc.strerror or str(exc)
    if verify:
        return f"{reason}: {verify}"
    return str(reason)
