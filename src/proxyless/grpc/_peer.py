"""The caller's verified identity, from a servicer context's auth context.

grpcio fills a call's ``auth_context()`` after a TLS handshake it verified
itself: ``transport_security_type`` is ``ssl`` and ``x509_pem_cert`` holds
the client's leaf certificate (present only when the client sent one and it
chained to the server's trust bundle). :func:`peer_identity` reads the
SPIFFE ID (the one ``spiffe://`` URI SAN) from it; a plaintext caller, or a
TLS caller without certificate, has none. Parsed certificates are cached
by their PEM bytes, so repeated calls on a connection cost a dict lookup.
"""

from __future__ import annotations

import ssl
from typing import Any

from proxyless.security.peer import PeerCertificate, peer_certificate

__all__ = ["peer_identity", "peer_of_context"]

_CACHE: dict[bytes, PeerCertificate] = {}
_CACHE_MAX = 1024


def peer_of_context(context: Any) -> PeerCertificate | None:
    """The verified client certificate of a call (sync or aio context), or None."""
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert")
    if not pems:
        return None
    pem: bytes = pems[0]
    peer = _CACHE.get(pem)
    if peer is None:
        peer = peer_certificate(ssl.PEM_cert_to_DER_cert(pem.decode("ascii")))
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[pem] = peer
    return peer


def peer_identity(context: Any) -> str | None:
    """The caller's verified SPIFFE ID, or None for a plaintext caller (or
    one whose certificate has no SPIFFE ID). Works with
    ``grpc.ServicerContext`` and ``grpc.aio.ServicerContext``."""
    peer = peer_of_context(context)
    return None if peer is None else peer.spiffe_id
