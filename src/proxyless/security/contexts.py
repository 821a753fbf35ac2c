"""``ssl.SSLContext`` objects built from TLS material, for connections that
Python's ``ssl`` (OpenSSL) makes: the httpx transports, and TLS that the
gRPC channels terminate in process.

A client context verifies the peer's chain against the trust bundle
(``CERT_REQUIRED``) but not a host name: the peer's identity is checked
against the cluster's SAN matchers after the handshake and before the first
application byte (:func:`proxyless.security.peer.check_sans`), since mesh
certificates (Istio, SPIRE) carry a SPIFFE ID as their only SAN. TLS 1.2 is
the minimum. The private key never touches the file system: it is handed to
OpenSSL through an anonymous in-memory file where the platform has one.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator, Sequence

from proxyless.errors import CertificateError
from proxyless.security.material import Identity, TrustBundle

__all__ = ["client_context", "server_context"]


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read ``data`` from, gone afterwards."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None:
        fd = memfd("proxyless-pem", 0)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as tmp:  # pragma: no cover - non-Linux
        path = os.path.join(tmp, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        yield path


def _load_identity(ctx: ssl.SSLContext, identity: Identity) -> None:
    try:
        with _pem_file(identity.chain_pem) as chain, _pem_file(identity.key_pem) as key:
            ctx.load_cert_chain(chain, key)
    except ssl.SSLError as exc:
        raise CertificateError(f"{identity.source}: OpenSSL refused the identity ({exc})") from None


def _load_trust(ctx: ssl.SSLContext, trust: TrustBundle) -> None:
    pems = [trust.roots_pem, *trust.spiffe_bundles.values()]
    try:
        for pem in pems:
            if pem:
                ctx.load_verify_locations(cadata=pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise CertificateError(
            f"{trust.source}: OpenSSL refused the trust bundle ({exc})"
        ) from None


def client_context(
    identity: Identity | None, trust: TrustBundle, alpn: Sequence[str] = ()
) -> ssl.SSLContext:
    """A client context presenting ``identity`` (if any) and verifying the
    server's chain against ``trust`` (see the module docstring)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_trust(ctx, trust)
    if identity is not None:
        _load_identity(ctx, identity)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def server_context(
    identity: Identity,
    trust: TrustBundle | None,
    *,
    require_client_certificate: bool,
    alpn: Sequence[str] = (),
) -> ssl.SSLContext:
    """A server context presenting ``identity``; with ``trust`` it verifies
    client certificates (required when ``require_client_certificate``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(ctx, identity)
    if trust is not None:
        _load_trust(ctx, trust)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    elif require_client_certificate:
        raise CertificateError(
            f"{identity.source}: client certificates are required but no trust bundle is configured"
        )
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx
