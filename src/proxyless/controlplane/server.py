"""An Aggregated Discovery Service (ADS) server on grpc.

Serves ``envoy.service.discovery.v3.AggregatedDiscoveryService`` with both
variants of the protocol described in Envoy's xDS protocol document
(api-docs/xds_protocol.rst):

* ``StreamAggregatedResources`` — State of the World. Per stream and type the
  server tracks the subscribed names. A request whose names differ from the
  stream's current subscription (or the first request of a type) gets a reply
  with every subscribed resource that exists, ``version_info`` = the type's
  version and a fresh nonce. A request carrying the latest nonce and no name
  change is an ACK, or a NACK when it has ``error_detail``; neither gets a
  reply, and a NACKed response is not resent. A request with an older nonce
  is stale and ignored (the client repeats its subscription when it answers
  the newest response). Legacy wildcard: for Listener and Cluster, a first
  request without names subscribes to everything and later empty requests
  keep it; once names are sent only ``"*"`` among them means wildcard.
* ``DeltaAggregatedResources`` — incremental xDS. Subscriptions change by
  ``resource_names_subscribe``/``_unsubscribe`` (``"*"`` is the wildcard;
  a first request without names for Listener/Cluster is the legacy
  wildcard); ``initial_resource_versions`` seeds what the client already has.
  Each resource carries its own version (a hash of its bytes); responses list
  changed resources and ``removed_resources``. A newly subscribed name that
  does not exist is reported in ``removed_resources`` so the client learns it
  at once. The first request of each type always gets a response.

Resources are either static (:meth:`AdsServer.set_resources`, the same for
every node) or computed per node by a ``snapshot_fn`` (the Istio translation
gives proxyless and Envoy nodes different listeners); static entries override
snapshot entries of the same type and name. After any change a stream gets a
push only for a type whose subscribed resources changed.

Every request received is recorded in :attr:`AdsServer.requests` and every
response sent in :attr:`AdsServer.responses`, so tests can wait for ACKs and
NACKs (:meth:`AdsServer.wait_for`).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from proxyless.controlplane.model import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    WILDCARD_TYPES,
    NodeInfo,
    ReceivedRequest,
    Resource,
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

#: Types whose SotW responses must list every subscribed resource (a missing
#: one means it was deleted); for the others a response may be partial.
_ALL_REQUIRED = frozenset({LISTENER_TYPE, CLUSTER_TYPE})


@dataclass(frozen=True, slots=True)
class SentResponse:
    """One response sent on an ADS stream."""

    stream_id: int
    node_id: str
    type_url: str
    version_info: str
    nonce: str
    resource_names: tuple[str, ...]
    removed_resources: tuple[str, ...] = ()
    delta: bool = False


@dataclass(frozen=True, slots=True)
class _Encoded:
    packed: any_pb2.Any
    version: str


@dataclass(slots=True)
class _SotwState:
    legacy_wildcard: bool = False
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    nonce: str = ""
    sent: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _DeltaState:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    nonce: str = ""
    #: what the client has, name -> version
    known: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Abort:
    code: grpc.StatusCode
    message: str


_END = object()

_View = dict[str, dict[str, _Encoded]]


class _Stream:
    def __init__(self, stream_id: int, delta: bool) -> None:
        self.id = stream_id
        self.delta = delta
        self.node: base_pb2.Node | None = None
        self.info: NodeInfo | None = None
        self.view: _View = {}
        self.sotw: dict[str, _SotwState] = {}
        self.deltas: dict[str, _DeltaState] = {}
        self.out: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.closed = False


def _encode(type_url: str, resource: Resource) -> _Encoded:
    if isinstance(resource, bytes):
        packed = any_pb2.Any(type_url=type_url, value=resource)
    else:
        packed = any_pb2.Any()
        packed.Pack(resource, deterministic=True)
    digest = hashlib.blake2b(packed.type_url.encode() + b"\0" + packed.value, digest_size=8)
    return _Encoded(packed, digest.hexdigest())


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
    ) -> None:
        """``max_records`` caps :attr:`requests` and :attr:`responses` (oldest dropped) for
        long-running servers; None (the default, for tests) keeps everything."""
        self.address = address
        self._max_records = max_records
        self.port = port
        self._snapshot_fn = snapshot_fn
        self._max_workers = max_workers
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._static: _View = {}
        self._versions: dict[str, int] = {}
        self._streams: dict[int, _Stream] = {}
        self._stream_ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self._server: grpc.Server | None = None
        self.requests: list[ReceivedRequest] = []
        self.responses: list[SentResponse] = []
        self.streams_opened = 0

    # lifecycle ---------------------------------------------------------------
    @property
    def target(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

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
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(ADS_SERVICE, handlers),)
        )
        host = f"[{self.address}]" if ":" in self.address else self.address
        try:
            bound = server.add_insecure_port(f"{host}:{self.port}")
        except RuntimeError:
            bound = 0
        if bound == 0:
            server.stop(None)
            raise OSError(f"ADS server could not bind {host}:{self.port} (address in use?)")
        self.port = bound
        server.start()
        self._server = server
        _log.info("ADS server listening on %s", self.target)
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
            return str(self._versions.get(type_url, 0))

    def set_resources(self, type_url: str, resources: Mapping[str, Resource]) -> None:
        """Replace every static resource of ``type_url`` and push the changes."""
        encoded = {name: _encode(type_url, res) for name, res in resources.items()}
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
                current[name] = _encode(type_url, resource)
            self._static[type_url] = current
            self._update(bump={type_url})

    def refresh(self) -> None:
        """Recompute every node's snapshot (call after the snapshot_fn's input changed)."""
        with self._lock:
            self._update(bump=set())

    def _view_for(self, info: NodeInfo, cache: dict[bytes, _View] | None = None) -> _View:
        key = info.proto.SerializeToString(deterministic=True)
        if cache is not None and key in cache:
            return cache[key]
        view: _View = {}
        if self._snapshot_fn is not None:
            snapshot = self._snapshot_fn(info)
            for type_url, resources in snapshot.resources.items():
                view[type_url] = {n: _encode(type_url, r) for n, r in resources.items()}
        for type_url, static in self._static.items():
            view.setdefault(type_url, {}).update(static)
        if cache is not None:
            cache[key] = view
        return view

    def _update(self, bump: set[str]) -> None:
        cache: dict[bytes, _View] = {}
        changed = set(bump)
        new_views: dict[int, _View] = {}
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
                if stream.delta:
                    if type_url in stream.deltas:
                        self._delta_push(stream, type_url, newly=(), first=False)
                elif type_url in stream.sotw:
                    self._sotw_push(stream, type_url, force=False)

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
            stream = _Stream(next(self._stream_ids), delta)
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

    def _close_stream(self, stream: _Stream, how: object) -> None:
        stream.closed = True
        self._streams.pop(stream.id, None)
        stream.out.put(how)

    def _read(self, stream: _Stream, requests: Iterable[Message]) -> None:
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

    def _identify(self, stream: _Stream, node: base_pb2.Node, has_node: bool) -> None:
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

    # State of the World --------------------------------------------------------
    def _on_sotw(self, stream: _Stream, request: discovery_pb2.DiscoveryRequest) -> None:
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
        state = stream.sotw.get(type_url)
        first = state is None
        if state is None:
            state = stream.sotw[type_url] = _SotwState()
        elif request.response_nonce and request.response_nonce != state.nonce:
            return  # stale: the client will repeat its subscription with the newest nonce
        names = set(request.resource_names)
        if type_url in WILDCARD_TYPES:
            if (first or state.legacy_wildcard) and not names:
                legacy, wildcard = True, True
            else:
                legacy, wildcard = False, "*" in names
        else:
            legacy, wildcard = False, False
        names.discard("*")
        new_names = frozenset(names)
        if not first and (wildcard, new_names) == (state.wildcard, state.names):
            return  # ACK or NACK: no reply
        state.legacy_wildcard, state.wildcard, state.names = legacy, wildcard, new_names
        self._sotw_push(stream, type_url, force=True)

    def _subscribed(
        self, stream: _Stream, type_url: str, wildcard: bool, names: Iterable[str]
    ) -> dict[str, _Encoded]:
        available = stream.view.get(type_url, {})
        if wildcard:
            return dict(available)
        return {n: available[n] for n in names if n in available}

    def _sotw_push(self, stream: _Stream, type_url: str, *, force: bool) -> None:
        state = stream.sotw[type_url]
        current = self._subscribed(stream, type_url, state.wildcard, state.names)
        versions = {n: e.version for n, e in current.items()}
        if not force:
            if type_url in _ALL_REQUIRED:
                if versions == state.sent:
                    return
            elif all(state.sent.get(n) == v for n, v in versions.items()):
                return
        nonce = self._next_nonce()
        version = str(self._versions.get(type_url, 0))
        response = discovery_pb2.DiscoveryResponse(
            version_info=version,
            resources=[current[n].packed for n in sorted(current)],
            type_url=type_url,
            nonce=nonce,
        )
        state.nonce = nonce
        state.sent = versions
        self._send(
            stream,
            response,
            SentResponse(
                stream_id=stream.id,
                node_id=stream.node.id if stream.node else "",
                type_url=type_url,
                version_info=version,
                nonce=nonce,
                resource_names=tuple(sorted(current)),
            ),
        )

    def _send(self, stream: _Stream, response: Message, record: SentResponse) -> None:
        if stream.closed:
            return
        self.responses.append(record)
        if self._max_records is not None and len(self.responses) > self._max_records:
            del self.responses[: len(self.responses) - self._max_records]
        stream.out.put(response)

    # Delta ------------------------------------------------------------------------
    def _on_delta(self, stream: _Stream, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
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
        state = stream.deltas.get(type_url)
        first = state is None
        if state is None:
            state = stream.deltas[type_url] = _DeltaState()
            state.known.update(request.initial_resource_versions)
            if type_url in WILDCARD_TYPES and not subscribe:
                state.wildcard = True
        for name in subscribe:
            if name == "*":
                state.wildcard = True
            else:
                state.names.add(name)
        for name in unsubscribe:
            if name == "*":
                state.wildcard = False
            else:
                state.names.discard(name)
        if not state.wildcard:
            for name in list(state.known):
                if name not in state.names:
                    del state.known[name]
        if first or subscribe or unsubscribe:
            self._delta_push(stream, type_url, newly=subscribe, first=first)

    def _delta_push(
        self, stream: _Stream, type_url: str, *, newly: Iterable[str], first: bool
    ) -> None:
        state = stream.deltas[type_url]
        current = self._subscribed(stream, type_url, state.wildcard, state.names)
        changed = sorted(n for n, e in current.items() if state.known.get(n) != e.version)
        removed = {n for n in state.known if n not in current}
        removed.update(n for n in newly if n != "*" and n not in current)
        if not changed and not removed and not first:
            return
        nonce = self._next_nonce()
        version = str(self._versions.get(type_url, 0))
        response = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version,
            resources=[
                discovery_pb2.Resource(
                    name=n, version=current[n].version, resource=current[n].packed
                )
                for n in changed
            ],
            type_url=type_url,
            removed_resources=sorted(removed),
            nonce=nonce,
        )
        for n in changed:
            state.known[n] = current[n].version
        for n in removed:
            state.known.pop(n, None)
        state.nonce = nonce
        self._send(
            stream,
            response,
            SentResponse(
                stream_id=stream.id,
                node_id=stream.node.id if stream.node else "",
                type_url=type_url,
                version_info=version,
                nonce=nonce,
                resource_names=tuple(changed),
                removed_resources=tuple(sorted(removed)),
                delta=True,
            ),
        )

    def __repr__(self) -> str:
        return f"AdsServer({self.target}, open_streams={self.open_streams})"
