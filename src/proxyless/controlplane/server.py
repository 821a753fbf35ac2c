"""An Aggregated Discovery Service (ADS) server on grpc.

Serves ``envoy.service.discovery.v3.AggregatedDiscoveryService`` with both
variants of the protocol described in Envoy's xDS protocol document
(api-docs/xds_protocol.rst): ``StreamAggregatedResources`` (State of the
World) and ``DeltaAggregatedResources`` (incremental xDS). What a stream
subscribed to and when it gets a response follow the rules written down in
:mod:`proxyless.controlplane.ads_stream`; this module owns the resources, the
gRPC server, one reader thread per stream and the records.

Resources are either static (:meth:`AdsServer.set_resources`, the same for
every node) or computed per node by a ``snapshot_fn`` (the Istio translation
gives proxyless and Envoy nodes different listeners); static entries override
snapshot entries of the same type and name. A snapshot is per node, so it
may hold resources only that node may see (its SDS Secrets): a view is
computed for the node of each stream and never shared with another node.
After any change a stream gets a push only for a type whose subscribed
resources changed.

The same streams are served as ``envoy.service.secret.v3.SecretDiscoveryService``
(``StreamSecrets``, ``DeltaSecrets``) for clients that fetch ``Secret``
resources from a separate SDS server. ``address`` may be ``unix:/path`` to
listen on a unix socket, as SDS servers and istio-agent do;
``server_credentials`` (``grpc.ssl_server_credentials``) serve over TLS, for
clients whose bootstrap gives ``tls`` channel credentials (gRFC A65).

Every request received is recorded in :attr:`AdsServer.requests` and every
response sent in :attr:`AdsServer.responses`, so tests can wait for ACKs and
NACKs (:meth:`AdsServer.wait_for`).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.load_stats.v3 import lrs_pb2
from google.protobuf.message import Message

from proxyless.controlplane.ads_stream import AdsStream, Reply, View, encode
from proxyless.controlplane.model import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    NodeInfo,
    ReceivedRequest,
    Resource,
    SentResponse,
    Snapshot,
)

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "SECRET_TYPE",
    "AdsServer",
    "NodeInfo",
    "ReceivedRequest",
    "SentResponse",
    "Snapshot",
]

_log = logging.getLogger(__name__)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
#: The same streams for secrets only (Envoy SDS; istio-agent and SPIRE agent serve it).
SDS_SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"
#: Load reports (LRS) are received on the same port.
LRS_SERVICE = "envoy.service.load_stats.v3.LoadReportingService"


@dataclass(frozen=True, slots=True)
class _Abort:
    code: grpc.StatusCode
    message: str


_END = object()


class AdsServer:
    """A State-of-the-World and Delta ADS server on ``address:port``."""

    def __init__(
        self,
        address: str = "127.0.0.1",
        port: int = 0,
        *,
        snapshot_fn: Callable[[NodeInfo], Snapshot] | None = None,
        max_workers: int = 64,
        max_records: int | None = None,
        server_credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        """``max_records`` caps :attr:`requests` and :attr:`responses` (oldest dropped) for
        long-running servers; None (the default, for tests) keeps everything."""
        self.address = address
        self._max_records = max_records
        self.port = port
        self._snapshot_fn = snapshot_fn
        self._credentials = server_credentials
        self._max_workers = max_workers
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._static: View = {}
        self._versions: dict[str, int] = {}
        self._streams: dict[int, AdsStream] = {}
        self._stream_ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self._server: grpc.Server | None = None
        self.requests: list[ReceivedRequest] = []
        self.responses: list[SentResponse] = []
        self.streams_opened = 0
        #: load reports received (LRS), oldest first
        self.load_reports: list[lrs_pb2.LoadStatsRequest] = []
        #: what LRS clients are asked for: cluster names (None: every
        #: cluster, ``send_all_clusters``), the interval, per-endpoint stats
        self.lrs_clusters: list[str] | None = None
        self.lrs_interval = 10.0
        self.lrs_endpoint_granularity = False

    # lifecycle ---------------------------------------------------------------
    @property
    def target(self) -> str:
        if self.address.startswith("unix:"):
            return self.address
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def node_ids(self) -> list[str]:
        """The node ids of the open streams that have identified themselves."""
        with self._lock:
            return sorted({s.info.id for s in self._streams.values() if s.info is not None})

    def start(self) -> int:
        """Bind and serve; returns the bound port."""
        if self._server is not None:
            raise RuntimeError("AdsServer already started")
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="proxyless-ads"
            ),
            options=[
                # without this a second server silently shares the port with the first
                ("grpc.so_reuseport", 0),
                # clients of long-lived ADS streams ping (Envoy, gRPC, istio-agent);
                # accept pings every 10 s without data instead of answering GOAWAY
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.http2.max_ping_strikes", 0),
            ],
        )
        handlers = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._serve_sotw,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._serve_delta,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString,
            ),
        }
        sds_handlers = {
            "StreamSecrets": handlers["StreamAggregatedResources"],
            "DeltaSecrets": handlers["DeltaAggregatedResources"],
        }
        lrs_handlers = {
            "StreamLoadStats": grpc.stream_stream_rpc_method_handler(
                self._serve_lrs,
                request_deserializer=lrs_pb2.LoadStatsRequest.FromString,
                response_serializer=lrs_pb2.LoadStatsResponse.SerializeToString,
            )
        }
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(ADS_SERVICE, handlers),
                grpc.method_handlers_generic_handler(SDS_SERVICE, sds_handlers),
                grpc.method_handlers_generic_handler(LRS_SERVICE, lrs_handlers),
            )
        )
        unix = self.address.startswith("unix:")
        host = f"[{self.address}]" if ":" in self.address and not unix else self.address
        where = self.address if unix else f"{host}:{self.port}"
        try:
            if self._credentials is None:
                bound = server.add_insecure_port(where)
            else:
                bound = server.add_secure_port(where, self._credentials)
        except RuntimeError:
            bound = 0
        if bound == 0:
            server.stop(None)
            raise OSError(f"ADS server could not bind {where} (address in use?)")
        self.port = 0 if unix else bound
        server.start()
        self._server = server
        tls = "" if self._credentials is None else " (TLS)"
        _log.info("ADS server listening on %s%s", self.target, tls)
        return bound

    def stop(self, grace: float | None = 0) -> None:
        """Close every stream and stop serving."""
        server, self._server = self._server, None
        with self._lock:
            for stream in list(self._streams.values()):
                self._close_stream(stream, _END)
        if server is not None:
            server.stop(grace).wait()

    def __enter__(self) -> AdsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def disconnect_all(self) -> None:
        """Abort every open stream with UNAVAILABLE; the server keeps serving."""
        with self._lock:
            for stream in list(self._streams.values()):
                self._close_stream(
                    stream, _Abort(grpc.StatusCode.UNAVAILABLE, "ADS stream closed by the server")
                )

    # resources -----------------------------------------------------------------
    def version(self, type_url: str) -> str:
        """The current version of ``type_url`` ("0" before any resource)."""
        with self._lock:
            return self._version(type_url)

    def set_resources(self, type_url: str, resources: Mapping[str, Resource]) -> None:
        """Replace every static resource of ``type_url`` and push the changes."""
        encoded = {name: encode(type_url, res) for name, res in resources.items()}
        with self._lock:
            self._static[type_url] = encoded
            self._update(bump={type_url})

    def set_resource(self, type_url: str, name: str, resource: Resource | None) -> None:
        """Add, replace or (with None) remove one static resource."""
        with self._lock:
            current = dict(self._static.get(type_url, {}))
            if resource is None:
                current.pop(name, None)
            else:
                current[name] = encode(type_url, resource)
            self._static[type_url] = current
            self._update(bump={type_url})

    def refresh(self) -> None:
        """Recompute every node's snapshot (call after the snapshot_fn's input changed)."""
        with self._lock:
            self._update(bump=set())

    def _view_for(self, info: NodeInfo, cache: dict[bytes, View] | None = None) -> View:
        key = info.proto.SerializeToString(deterministic=True)
        if cache is not None and key in cache:
            return cache[key]
        view: View = {}
        if self._snapshot_fn is not None:
            snapshot = self._snapshot_fn(info)
            for type_url, resources in snapshot.resources.items():
                view[type_url] = {n: encode(type_url, r) for n, r in resources.items()}
        for type_url, static in self._static.items():
            view.setdefault(type_url, {}).update(static)
        if cache is not None:
            cache[key] = view
        return view

    def _update(self, bump: set[str]) -> None:
        cache: dict[bytes, View] = {}
        changed = set(bump)
        new_views: dict[int, View] = {}
        for stream in self._streams.values():
            if stream.info is None or stream.closed:
                continue
            new = self._view_for(stream.info, cache)
            new_views[stream.id] = new
            for type_url in set(new) | set(stream.view):
                old_versions = {n: e.version for n, e in stream.view.get(type_url, {}).items()}
                new_versions = {n: e.version for n, e in new.get(type_url, {}).items()}
                if old_versions != new_versions:
                    changed.add(type_url)
        for type_url in changed:
            self._versions[type_url] = self._versions.get(type_url, 0) + 1
        for stream_id, view in new_views.items():
            stream = self._streams[stream_id]
            stream.view = view
            for type_url in changed:
                self._send(stream, stream.push(type_url, self._version(type_url), self._next_nonce))

    # observation -------------------------------------------------------------
    def wait_for(
        self,
        predicate: Callable[[ReceivedRequest], bool],
        timeout: float = 5.0,
        *,
        since: int = 0,
    ) -> ReceivedRequest:
        """The first request (from index ``since`` of :attr:`requests`) matching ``predicate``."""
        checked = since
        with self._cond:

            def find() -> ReceivedRequest | None:
                nonlocal checked
                while checked < len(self.requests):
                    request = self.requests[checked]
                    checked += 1
                    if predicate(request):
                        return request
                return None

            found: list[ReceivedRequest] = []

            def ready() -> bool:
                hit = find()
                if hit is not None:
                    found.append(hit)
                return bool(found)

            if self._cond.wait_for(ready, timeout):
                return found[0]
            recent = "\n  ".join(repr(r) for r in self.requests[-8:]) or "(none)"
            raise TimeoutError(
                f"no matching xDS request within {timeout}s on {self.target}; "
                f"last requests:\n  {recent}"
            )

    def nacks(self) -> list[ReceivedRequest]:
        with self._lock:
            return [r for r in self.requests if r.error_detail is not None]

    # streams -------------------------------------------------------------------
    def _serve_lrs(
        self, requests: Iterator[lrs_pb2.LoadStatsRequest], context: grpc.ServicerContext
    ) -> Iterator[lrs_pb2.LoadStatsResponse]:
        """LRS: ask for the configured clusters once the client has said who
        it is, then keep every report (:attr:`load_reports`)."""
        first = next(requests, None)
        if first is None:
            return
        answer = lrs_pb2.LoadStatsResponse(
            send_all_clusters=self.lrs_clusters is None,
            clusters=list(self.lrs_clusters or ()),
            report_endpoint_granularity=self.lrs_endpoint_granularity,
        )
        answer.load_reporting_interval.FromNanoseconds(int(self.lrs_interval * 1e9))
        yield answer
        for report in requests:
            with self._lock:
                self.load_reports.append(report)
                if self._max_records is not None and len(self.load_reports) > self._max_records:
                    del self.load_reports[0]
            for stats in report.cluster_stats:
                _log.debug(
                    "load report from %s for %s: %d issued",
                    first.node.id,
                    stats.cluster_name,
                    sum(u.total_issued_requests for u in stats.upstream_locality_stats),
                )

    def _serve_sotw(
        self, requests: Iterator[discovery_pb2.DiscoveryRequest], context: grpc.ServicerContext
    ) -> Iterator[discovery_pb2.DiscoveryResponse]:
        return self._serve(requests, context, delta=False)

    def _serve_delta(
        self,
        requests: Iterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[discovery_pb2.DeltaDiscoveryResponse]:
        return self._serve(requests, context, delta=True)

    def _serve(
        self, requests: Iterator[Message], context: grpc.ServicerContext, *, delta: bool
    ) -> Iterator[Message]:
        with self._lock:
            stream = AdsStream(next(self._stream_ids), delta)
            self._streams[stream.id] = stream
            self.streams_opened += 1
        context.add_callback(lambda: stream.out.put(_END))
        reader = threading.Thread(
            target=self._read,
            args=(stream, requests),
            name=f"proxyless-ads-stream-{stream.id}",
            daemon=True,
        )
        reader.start()
        try:
            while True:
                item = stream.out.get()
                if item is _END:
                    return
                if isinstance(item, _Abort):
                    context.abort(item.code, item.message)
                assert isinstance(item, Message)
                yield item
        finally:
            with self._lock:
                stream.closed = True
                self._streams.pop(stream.id, None)

    def _close_stream(self, stream: AdsStream, how: object) -> None:
        stream.closed = True
        self._streams.pop(stream.id, None)
        stream.out.put(how)

    def _read(self, stream: AdsStream, requests: Iterable[Message]) -> None:
        try:
            for request in requests:
                with self._lock:
                    if stream.closed:
                        return
                    if stream.delta:
                        assert isinstance(request, discovery_pb2.DeltaDiscoveryRequest)
                        self._on_delta(stream, request)
                    else:
                        assert isinstance(request, discovery_pb2.DiscoveryRequest)
                        self._on_sotw(stream, request)
        except grpc.RpcError:
            pass
        except Exception as exc:
            _log.exception("ADS stream %d failed", stream.id)
            with self._lock:
                self._close_stream(
                    stream, _Abort(grpc.StatusCode.INTERNAL, f"control plane error: {exc}")
                )
            return
        with self._lock:
            self._close_stream(stream, _END)

    def _identify(self, stream: AdsStream, node: base_pb2.Node, has_node: bool) -> None:
        if stream.node is not None:
            return
        stream.node = node if has_node else base_pb2.Node()
        stream.info = NodeInfo.from_proto(stream.node)
        stream.view = self._view_for(stream.info)

    def _record(self, record: ReceivedRequest) -> None:
        self.requests.append(record)
        if self._max_records is not None and len(self.requests) > self._max_records:
            del self.requests[: len(self.requests) - self._max_records]
        self._cond.notify_all()

    def _next_nonce(self) -> str:
        return str(next(self._nonces))

    def _version(self, type_url: str) -> str:
        return str(self._versions.get(type_url, 0))

    def _send(self, stream: AdsStream, reply: Reply | None) -> None:
        if reply is None or stream.closed:
            return
        self.responses.append(reply.record)
        if self._max_records is not None and len(self.responses) > self._max_records:
            del self.responses[: len(self.responses) - self._max_records]
        stream.out.put(reply.message)

    # State of the World --------------------------------------------------------
    def _on_sotw(self, stream: AdsStream, request: discovery_pb2.DiscoveryRequest) -> None:
        self._identify(stream, request.node, request.HasField("node"))
        assert stream.node is not None
        type_url = request.type_url
        self._record(
            ReceivedRequest(
                stream_id=stream.id,
                node=stream.node,
                type_url=type_url,
                resource_names=tuple(request.resource_names),
                version_info=request.version_info,
                response_nonce=request.response_nonce,
                error_detail=request.error_detail if request.HasField("error_detail") else None,
            )
        )
        if request.HasField("error_detail"):
            _log.warning(
                "NACK from node %r for %s version %r: %s",
                stream.node.id,
                type_url,
                request.version_info,
                request.error_detail.message,
            )
        self._send(stream, stream.on_sotw(request, self._version(type_url), self._next_nonce))

    # Delta ------------------------------------------------------------------------
    def _on_delta(self, stream: AdsStream, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        self._identify(stream, request.node, request.HasField("node"))
        assert stream.node is not None
        type_url = request.type_url
        subscribe = tuple(request.resource_names_subscribe)
        unsubscribe = tuple(request.resource_names_unsubscribe)
        self._record(
            ReceivedRequest(
                stream_id=stream.id,
                node=stream.node,
                type_url=type_url,
                resource_names=subscribe,
                version_info="",
                response_nonce=request.response_nonce,
                error_detail=request.error_detail if request.HasField("error_detail") else None,
                delta=True,
                resource_names_unsubscribe=unsubscribe,
                initial_resource_versions=dict(request.initial_resource_versions),
            )
        )
        if request.HasField("error_detail"):
            _log.warning(
                "delta NACK from node %r for %s: %s",
                stream.node.id,
                type_url,
                request.error_detail.message,
            )
        self._send(stream, stream.on_delta(request, self._version(type_url), self._next_nonce))

    def __repr__(self) -> str:
        return f"AdsServer({self.target}, open_streams={self.open_streams})"
