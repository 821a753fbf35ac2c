"""Mesh TLS for the httpx transports: what both network backends share.

A cluster with an ``UpstreamTlsContext`` (its
:class:`~proxyless.runtime.cluster.ClusterRuntime` has ``tls``) is reached
over TLS only, with the cluster's current
:class:`~proxyless.security.credentials.ClientTls` (gRFC A29; Envoy
``UpstreamTlsContext``):

- the ``ssl.SSLContext`` of :meth:`ClientTls.context` — client certificate,
  trust bundle, TLS 1.2 or later — with the ALPN list of the cluster's
  protocol (``h2`` for an ``http2_protocol_options`` cluster, else
  ``http/1.1``, what Envoy sets when the context names none);
- SNI: the context's ``sni``; when it is empty no SNI is sent, as Envoy
  does without ``auto_sni`` (``UpstreamTlsContext.sni``);
- the peer's SANs checked against the cluster's SAN matchers
  (:meth:`ClientTls.verify`) after the handshake and before the request is
  written: a peer that fails it is disconnected without a byte of the
  request (:mod:`proxyless.httpx._async_tls`).

Until the cluster's credentials are ready a request waits, bounded by its
route timeout and httpx's connect timeout (:func:`wait_credentials`,
:func:`wait_credentials_async`), then fails naming the cluster and what is
missing. A handshake or identity failure is a connect failure (Envoy's
``connect-failure`` retry condition, a local-origin failure for outlier
detection) whose error names the cluster, the endpoint and the identities.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, Final

import httpcore

from proxyless.errors import (
    CertificateError,
    ClusterNotAvailable,
    ProxylessError,
    SecurityError,
)
from proxyless.httpx._errors import mesh_error
from proxyless.httpx._upstream import Routed
from proxyless.runtime.cluster import ClusterRuntime
from proxyless.security import describe_matchers
from proxyless.security.credentials import ClientTls, ClusterCredentials

__all__ = [
    "CREDENTIALS_WAIT",
    "DECOY_CONTEXT",
    "TlsRefused",
    "alpn_for",
    "client_tls",
    "handshake_failure",
    "pending_credentials",
    "verify_peer",
    "wait_credentials",
    "wait_credentials_async",
]

#: The longest wait for a TLS cluster's credentials when neither the route
#: nor httpx sets a timeout.
CREDENTIALS_WAIT: Final = 20.0
#: How often an async wait for credentials looks for a failure (publications wake it at once).
_POLL: Final = 0.05

_H2: Final = ("h2",)
_HTTP1: Final = ("http/1.1",)


def _decoy() -> ssl.SSLContext:
    # httpcore sets the ALPN list of the pool's context on every connection;
    # the mesh backends never use it (they use the cluster's context), and a
    # connection that somehow did would verify against no roots: it fails.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


#: The ``ssl_context`` handed to httpcore's pools of mesh TLS endpoints.
DECOY_CONTEXT: Final = _decoy()


class TlsRefused(httpcore.ConnectError):
    """httpcore's connect error for a TLS peer refused by the mesh; the
    reason is ``proxyless_error`` (httpx maps it to ``httpx.ConnectError``)."""

    def __init__(self, error: SecurityError) -> None:
        super().__init__(str(error))
        self.proxyless_error = error


def alpn_for(http2: bool) -> tuple[str, ...]:
    """The ALPN list of a cluster's connections."""
    return _H2 if http2 else _HTTP1


def _expected(tls: ClientTls) -> str:
    if tls.matchers:
        return describe_matchers(tls.matchers)
    return "any certificate the cluster's trust bundle verifies"


def handshake_failure(tls: ClientTls, endpoint: str, exc: BaseException) -> SecurityError:
    """The error for a TLS handshake with ``endpoint`` that failed with ``exc``."""
    where = f"cluster {tls.cluster!r} endpoint {endpoint}"
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        why = cause.verify_message or cause.reason or str(cause)
        return CertificateError(
            f"{where}: the server's certificate does not verify against the cluster's "
            f"trust bundle ({why}); expected {_expected(tls)}"
        )
    reason = getattr(cause, "reason", None) or str(cause or exc) or type(exc).__name__
    return SecurityError(
        f"{where}: TLS handshake failed ({reason}): the endpoint does not serve TLS, or "
        f"refused the client certificate; expected {_expected(tls)}"
    )


def verify_peer(tls: ClientTls, stream: Any, endpoint: str) -> None:
    """Check the peer of the TLS ``stream`` (an httpcore network stream);
    raises the :class:`~proxyless.errors.SecurityError` that refuses it."""
    ssl_object = stream.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(True) if ssl_object is not None else None
    tls.verify(der, endpoint)


def _pending_child(r: Routed, aggregate: ClusterRuntime) -> ClusterCredentials | None:
    """The credentials of a leaf of ``aggregate`` still on their way, if any."""
    registry = r.call._rt.mesh.clusters
    for name in aggregate.config.children:
        leaf = registry.get(name)
        creds = leaf.tls if leaf is not None else None
        if creds is None or creds.failure is not None:
            continue
        try:
            creds.current()
        except SecurityError:
            return creds
    return None


def pending_credentials(r: Routed) -> tuple[ClusterCredentials, float] | None:
    """The credentials ``r``'s cluster still waits for, and how long the
    request may wait for them (its route timeout and httpx's connect
    timeout); None when there is nothing to wait for."""
    cluster = r.call.cluster
    creds = cluster.tls if cluster is not None else None
    if creds is None and cluster is not None and cluster.config.children:
        creds = _pending_child(r, cluster)  # an aggregate: its TLS leaves' credentials
    if creds is None:
        return None
    try:
        creds.current()
        return None
    except SecurityError:
        if creds.failure is not None:
            return None  # failed: waiting will not help
    limits = [CREDENTIALS_WAIT]
    remaining = r.call.remaining()
    if remaining is not None:
        limits.append(remaining)
    user = r.request.extensions.get("timeout")
    connect = user.get("connect") if isinstance(user, dict) else None
    if connect is not None:
        limits.append(connect)
    return creds, max(0.0, min(limits))


def client_tls(r: Routed, cluster: ClusterRuntime) -> ClientTls:
    """The credentials of an attempt of ``r`` to the TLS ``cluster``, or the
    request's error naming the cluster and what is missing."""
    creds = cluster.tls
    if creds is None:  # a TLS cluster always has credentials; never plaintext
        err: ProxylessError = ClusterNotAvailable(
            f"cluster {cluster.name!r} requires TLS but has no credentials"
        )
        raise mesh_error(err, r.request, "upstream")
    try:
        return creds.current()
    except SecurityError as exc:
        raise mesh_error(exc, r.request, "upstream") from None


def wait_credentials(creds: ClusterCredentials, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``creds`` to be ready (or to fail)."""
    try:
        creds.wait(timeout)
    except SecurityError:
        pass  # the caller reads current() and reports


async def wait_credentials_async(creds: ClusterCredentials, timeout: float) -> None:
    """:func:`wait_credentials` without blocking the event loop: woken by
    the credentials' publication, or by a failure seen within 50 ms."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()

    def published(_: ClientTls) -> None:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:
            pass  # the loop closed meanwhile

    remove = creds.on_change(published)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                creds.current()
                return
            except SecurityError:
                if creds.failure is not None:
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(event.wait(), min(remaining, _POLL))
            except asyncio.TimeoutError:  # TimeoutError from Python 3.11 on
                pass
    finally:
        remove()
