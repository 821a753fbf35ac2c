"""One gRPC channel and one ADS stream to one xDS server.

The same transport carries an SDS server's ``StreamSecrets`` stream (same
messages, one type) when given ``method=SDS_METHOD``.

The stream is a plain (synchronous) grpcio bidirectional call: requests are
fed from a queue, and a reader thread hands every response and the end of
the stream to the xDS client's event loop with ``call_soon_threadsafe``. The
client never blocks its loop on the network.

Channel credentials follow the bootstrap (gRFC A27 ``insecure``; gRFC A65
``tls`` with CA, certificate and key files). The files are read when the
channel is made; :func:`tls_refresh_interval` tells the client how long they
may be used before a reconnect makes a new channel that reads them again
(``refresh_interval``, 600 s by default, as for A29's ``file_watcher``).
``google_default`` is refused with an error naming the server. A
``server_uri`` of ``unix:///path`` (istio-agent's ``unix:///etc/istio/proxy/XDS``)
or ``unix:path`` is a unix socket; grpc resolves it as written.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from proxyless.bootstrap import XdsServer

__all__ = [
    "ADS_METHOD",
    "DEFAULT_REFRESH_INTERVAL",
    "DELTA_ADS_METHOD",
    "SDS_METHOD",
    "AdsTransport",
    "StreamEnd",
    "channel_credentials",
    "failure_reason",
    "tls_refresh_interval",
]

log = logging.getLogger("proxyless.xds_client")

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#: Incremental ADS, for servers whose bootstrap entry lists the ``delta_xds`` feature.
DELTA_ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
#: The same State-of-the-World protocol for secrets only, from an SDS server.
SDS_METHOD = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"

# Generous message limit: a 10k-endpoint EDS response is several MB.
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # Keepalive as grpc-go's xDS client does it: every 5 minutes, so servers
    # with grpc's default ping enforcement (5 min) never answer "too many pings".
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # The stream's own backoff (proxyless.xds_client.backoff) paces reconnects;
    # keep the channel's connection backoff short so it does not add to it.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise OSError(f"cannot read the xDS server's {what} {path!r}: {exc.strerror}") from exc


#: How long ``tls`` files are used before being read again (A65; A29's default).
DEFAULT_REFRESH_INTERVAL = 600.0


def tls_refresh_interval(server: XdsServer) -> float | None:
    """Seconds after which a new channel to ``server`` must read its TLS files
    again; None for credentials without files."""
    creds = server.channel_creds
    if creds.type != "tls":
        return None
    text = creds.config.get("refresh_interval")
    # The loader checked the form ("600s", "0.5s").
    return float(text[:-1]) if isinstance(text, str) else DEFAULT_REFRESH_INTERVAL


def channel_credentials(server: XdsServer) -> grpc.ChannelCredentials | None:
    """grpc credentials for the server's chosen ``channel_creds`` (None: insecure)."""
    creds = server.channel_creds
    if creds.type == "insecure":
        return None
    if creds.type == "tls":
        cfg = creds.config
        ca = cfg.get("ca_certificate_file")
        cert = cfg.get("certificate_file")
        key = cfg.get("private_key_file")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(ca, "CA certificate file") if ca else None,
            private_key=_read(key, "private key file") if key else None,
            certificate_chain=_read(cert, "certificate file") if cert else None,
        )
    if creds.type == "google_default":
        raise ValueError(
            f"channel_creds type 'google_default' (xDS server {server.server_uri}) is not "
            "supported by proxyless's xDS client; list an 'insecure' or 'tls' entry "
            "before it in channel_creds"
        )
    raise ValueError(f"unsupported channel_creds type {creds.type!r} for {server.server_uri}")


class StreamEnd:
    """Why a stream ended: ``code``/``details`` from grpc, and whether any
    response had been received on it."""

    __slots__ = ("code", "details", "got_response", "stream_id")

    def __init__(self, stream_id: int, code: grpc.StatusCode, details: str, got_response: bool):
        self.stream_id = stream_id
        self.code = code
        self.details = details
        self.got_response = got_response

    def __repr__(self) -> str:
        return f"StreamEnd({self.code.name}: {self.details!r}, got_response={self.got_response})"


#: Words grpc's connection errors use when the TLS handshake fails.
_TLS_FAILURE_HINTS = ("ssl", "tls", "handshake", "certificate")


def failure_reason(server: XdsServer, end: StreamEnd) -> str:
    """Why a stream to ``server`` ended before any response, for watchers and
    logs. For ``tls`` credentials, a handshake failure also names the CA file
    the server's certificate was checked against (or the system roots), so a
    wrong CA is told apart from a server that is down."""
    reason = f"xDS server {server.server_uri} unreachable: {end.code.name}: {end.details}"
    creds = server.channel_creds
    if creds.type != "tls" or not any(h in end.details.lower() for h in _TLS_FAILURE_HINTS):
        return reason
    ca = creds.config.get("ca_certificate_file")
    roots = f"ca_certificate_file {ca!r}" if ca else "the system root certificates"
    return (
        f"{reason} (TLS handshake with xDS server {server.server_uri} failed; the "
        f"server's certificate is checked against {roots})"
    )


_CLOSE = object()


class AdsTransport:
    """Owns the channel to one xDS server and at most one live ADS stream."""

    def __init__(
        self,
        server: XdsServer,
        loop: asyncio.AbstractEventLoop,
        *,
        on_response: Callable[[int, Any], None],
        on_stream_end: Callable[[StreamEnd], None],
        on_ready: Callable[[bool], None],
        method: str | None = None,
    ) -> None:
        """``method`` defaults to ADS: delta when ``server.delta``, else State of the World."""
        self.server = server
        self._loop = loop
        self._on_response = on_response
        self._on_stream_end = on_stream_end
        self._on_ready = on_ready
        self._ids = itertools.count(1)
        self._queue: queue.SimpleQueue[Any] | None = None
        self._call: Any = None
        self._closed = False
        self.stream_id = 0
        creds = channel_credentials(server)
        if creds is None:
            self._channel = grpc.insecure_channel(server.server_uri, options=_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(server.server_uri, creds, options=_CHANNEL_OPTIONS)
        self._ready = False
        self._channel.subscribe(self._connectivity, try_to_connect=True)
        if method is None:
            method = DELTA_ADS_METHOD if server.delta else ADS_METHOD
        delta = method == DELTA_ADS_METHOD
        response_type = (
            discovery_pb2.DeltaDiscoveryResponse if delta else discovery_pb2.DiscoveryResponse
        )
        self._method = self._channel.stream_stream(
            method,
            request_serializer=_serialize,
            response_deserializer=response_type.FromString,
        )

    # -- connectivity -----------------------------------------------------------
    def _connectivity(self, state: grpc.ChannelConnectivity) -> None:
        ready = state is grpc.ChannelConnectivity.READY
        if ready != self._ready:
            self._ready = ready
            self._post(self._on_ready, ready)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if self._closed:
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed while shutting down
            pass

    # -- the stream ---------------------------------------------------------------
    def start_stream(self) -> int:
        """Open a new ADS stream (ending any previous one); returns its id."""
        self.cancel_stream()
        stream_id = next(self._ids)
        q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._queue = q
        self.stream_id = stream_id
        call = self._method(_requests(q), wait_for_ready=False)
        self._call = call
        threading.Thread(
            target=self._read,
            args=(stream_id, call),
            name=f"proxyless-ads-reader-{stream_id}",
            daemon=True,
        ).start()
        return stream_id

    def send(
        self, request: discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest
    ) -> None:
        if self._queue is not None:
            self._queue.put(request)

    def cancel_stream(self) -> None:
        if self._queue is not None:
            self._queue.put(_CLOSE)
            self._queue = None
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _read(self, stream_id: int, call: Any) -> None:
        got_response = False
        try:
            for response in call:
                got_response = True
                self._post(self._on_response, stream_id, response)
            code, details = call.code(), call.details() or ""
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
        except Exception as exc:  # a response that does not decode, or a bug
            log.warning("xDS stream to %s failed: %r", self.server.server_uri, exc)
            call.cancel()
            code, details = grpc.StatusCode.INTERNAL, f"stream failed: {exc!r}"
        self._post(self._on_stream_end, StreamEnd(stream_id, code, details or "", got_response))

    def close(self) -> None:
        # Closed first: the reader thread of the cancelled stream posts nothing more.
        self._closed = True
        self.cancel_stream()
        try:
            self._channel.unsubscribe(self._connectivity)
        finally:
            self._channel.close()


def _serialize(request: Any) -> bytes:
    data: bytes = request.SerializeToString()
    return data


def _requests(q: queue.SimpleQueue[Any]) -> Iterator[discovery_pb2.DiscoveryRequest]:
    while True:
        item = q.get()
        if item is _CLOSE:
            return
        yield item
