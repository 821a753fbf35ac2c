# Generated from src/proxyless/httpx/_async_tls.py by tools/unasync.py: do not edit.
# Edit the source, then run `python tools/unasync.py`;
# `python tools/unasync.py --check` fails while this file is out of date.
"""The network backend of a mesh TLS endpoint: TLS with the cluster's
credentials, and the peer's identity checked before the first request byte.

httpcore connects through a network backend (``connect_tcp``, then
``start_tls`` for an ``https`` origin). :class:`MeshTlsBackend` wraps
httpcore's own backend for one :class:`~proxyless.security.credentials.ClientTls`:
``start_tls`` uses the cluster's context and SNI (not httpcore's), and on
return the peer's leaf certificate has passed the cluster's SAN matchers
(:func:`proxyless.httpx._tls.verify_peer`), else the connection is closed
and the attempt fails with a ``httpcore.ConnectError``
(:class:`~proxyless.httpx._tls.TlsRefused`) carrying the
:class:`~proxyless.errors.SecurityError` that names the cluster, the
endpoint and the identities. Until ``start_tls`` succeeds the connection
refuses to carry bytes, so a TLS cluster never gets plaintext.

:func:`tls_transport` makes the ``httpx.HTTPTransport`` of one
endpoint pool of a TLS cluster, at one credentials version (see
:mod:`proxyless.httpx._pool` for rotation). The module is written once,
for asyncio; ``_sync_tls.py`` is generated from it by ``tools/unasync.py``.
"""

from __future__ import annotations

import contextlib
import inspect
import ssl
import typing

import httpcore
import httpx

from proxyless.errors import SecurityError
from proxyless.httpx._tls import (
    DECOY_CONTEXT,
    TlsRefused,
    alpn_for,
    handshake_failure,
    verify_peer,
)
from proxyless.security.credentials import ClientTls

__all__ = ["EndpointTransport", "MeshTlsBackend", "PlaintextGuard", "tls_transport"]

#: httpx's own ``handle_request``, even when an instrumentation wrapped it.
_PLAIN_HANDLE = inspect.unwrap(httpx.HTTPTransport.handle_request)


class EndpointTransport(httpx.HTTPTransport):
    """The transport of an endpoint pool. Its requests are attempts of
    calls proxyless traces itself, so it calls httpx's own
    ``handle_request``: OpenTelemetry's httpx instrumentation, which
    wraps that method on ``httpx.HTTPTransport``, does not trace them
    a second time (docs/observability.md)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response: httpx.Response = _PLAIN_HANDLE(self, request)
        return response


class MeshTlsBackend(httpcore.NetworkBackend):
    """httpcore's backend, with TLS as ``tls`` says (module docstring)."""

    def __init__(self, tls: ClientTls, http2: bool) -> None:
        self.tls = tls
        self.context = tls.context(alpn_for(http2))
        self.sni = tls.sni or None
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return PlaintextGuard(stream, self, f"{host}:{port}")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class PlaintextGuard(httpcore.NetworkStream):
    """A TCP connection to a mesh TLS endpoint before its handshake: it
    carries no bytes; :meth:`start_tls` returns the verified TLS stream."""

    def __init__(
        self, stream: httpcore.NetworkStream, backend: MeshTlsBackend, endpoint: str
    ) -> None:
        self._stream = stream
        self._backend = backend
        self._endpoint = endpoint

    def _refuse(self) -> httpcore.ConnectError:
        return httpcore.ConnectError(
            f"cluster {self._backend.tls.cluster!r} endpoint {self._endpoint}: refusing to "
            "send plaintext to a TLS cluster"
        )

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        raise self._refuse()

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        raise self._refuse()

    def close(self) -> None:
        self._stream.close()

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        backend = self._backend
        try:
            stream = self._stream.start_tls(backend.context, backend.sni, timeout)
        except httpcore.ConnectError as exc:
            with contextlib.suppress(Exception):
                self._stream.close()
            error = handshake_failure(backend.tls, self._endpoint, exc)
            error.__cause__ = exc
            raise TlsRefused(error) from error
        try:
            verify_peer(backend.tls, stream, self._endpoint)
        except SecurityError as error:
            with contextlib.suppress(Exception):
                stream.close()
            raise TlsRefused(error) from error
        return stream


def tls_transport(tls: ClientTls, http2: bool, limits: httpx.Limits) -> httpx.HTTPTransport:
    """The httpx transport of one endpoint pool of a TLS cluster."""
    endpoint = EndpointTransport
    transport = endpoint(verify=DECOY_CONTEXT, http1=not http2, http2=http2, limits=limits)
    # httpx makes its connection pool without a network_backend parameter:
    # the pool is replaced by the same one, connecting through the mesh backend.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=DECOY_CONTEXT,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=not http2,
        http2=http2,
        network_backend=MeshTlsBackend(tls, http2),
    )
    return transport
