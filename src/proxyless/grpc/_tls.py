"""gRPC channels to TLS clusters: what a call does about the cluster's
credentials, and how a failed connection explains itself.

A cluster whose ``transport_socket`` is TLS (its
:class:`~proxyless.runtime.cluster.ClusterRuntime` has ``tls``) is reached
only through connections made with the cluster's current
:class:`~proxyless.security.credentials.ClientTls` and verified against its
SAN matchers (gRFC A29), made by local forwarders (:mod:`._tls_forward`,
:mod:`._tls_relay`). The rules:

- **xDS security wins.** For a TLS cluster the channel's ``credentials=``
  argument is not used (as with gRPC's ``XdsCredentials``, whose fallback
  credentials apply only where xDS asks for no security); for plaintext
  clusters it applies as before.
- **Fail closed.** A call routed to a TLS cluster whose credentials are not
  ready waits for them within its deadline (:func:`pending`), then fails
  with UNAVAILABLE naming the cluster and the missing secret or file. No
  path ever falls back to a plaintext connection.
- **Say why.** When an attempt fails because its connection could not be
  made (handshake, chain, or identity), the error the caller sees is
  UNAVAILABLE with the forwarder's last failure
  (:func:`explain_failure`): the cluster, the endpoint, the expected and
  the presented identities. Its details start with ``failed to connect``,
  so retries and outlier detection count it as a connect failure. A call
  made with ``wait_for_ready`` that ran out of time while grpcio kept
  reconnecting keeps DEADLINE_EXCEEDED, with the last failure appended.
  Sync ``future()`` and server-streaming calls, and grpc.aio server
  streams, report it the same way; client and bidirectional streams report
  grpcio's own connection error (the forwarder logs the failure).
"""

from __future__ import annotations

from typing import Any

import grpc

from proxyless.grpc._errors import XdsRpcError
from proxyless.runtime.call import Call
from proxyless.security.credentials import ClusterCredentials

__all__ = ["explain_failure", "pending"]


def pending(call: Call) -> ClusterCredentials | None:
    """The credentials ``call`` must wait for before its first attempt, if
    its cluster is a TLS cluster whose credentials are not ready yet."""
    cluster = call.cluster
    if cluster is None:
        return None
    creds = cluster.tls
    if creds is None or creds._current is not None:
        return None
    return creds


def explain_failure(pooled: Any, err: grpc.RpcError) -> grpc.RpcError:
    """``err`` as the caller should see it: for a TLS endpoint whose last
    connection failed its handshake or identity check, UNAVAILABLE with
    that failure's text (see the module docstring)."""
    fwd = getattr(pooled, "forwarder", None)
    if fwd is None:
        return err
    failure = fwd.last_error
    code = getattr(err, "code", None)
    if failure is None or not callable(code):
        return err
    status = code()
    if status is grpc.StatusCode.UNAVAILABLE:
        details = f"failed to connect to {fwd.endpoint}: {failure}"
    elif status is grpc.StatusCode.DEADLINE_EXCEEDED:
        # wait_for_ready: grpcio kept reconnecting until the deadline.
        details = f"{err.details()} (last connection attempt: {failure})"
    else:
        return err
    out = XdsRpcError(status, details, failure)
    out.__cause__ = err
    return out
