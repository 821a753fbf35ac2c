"""A misbehaving ADS server for tests: a grpcio servicer that does what the test says.

:class:`ScriptedAds` serves ``StreamAggregatedResources`` (State of the
World) on 127.0.0.1 from :attr:`ScriptedAds.resources` (type URL -> name ->
proto), answering a request when it is the first of its type on the stream
or names other resources than the last response (an ACK or a NACK gets no
answer), the way a plain SotW server does. What it does wrong is set on the
instance, and read by every stream at each step:

- ``silent``: read requests, never answer;
- ``delay``: seconds to wait before each response (slow);
- ``withhold``: type URLs never answered (partial);
- ``raw``: type URL -> bytes sent as the response instead (a huge one);
- ``close_after``: end each stream after this many responses (a server that
  keeps dropping streams);
- :meth:`push`: send a type's resources again on every live stream at once,
  with a new version, whether or not the last one was ACKed (high rate);
- :meth:`kick`: end every live stream with UNAVAILABLE.

Bounded: every wait has a timeout (0.05 s ticks), every stream ends on
:meth:`stop`, and only counts and the last 1,000 requests are kept.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent import futures
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_TICK = 0.05
_KICK = object()
_END = object()


def _serialize(message: Any) -> bytes:
    return message if isinstance(message, bytes) else bytes(message.SerializeToString())


class ScriptedAds:
    """An ADS server on 127.0.0.1 whose streams misbehave on request."""

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, Message]] = {}
        self.silent = False
        self.delay = 0.0
        self.withhold: set[str] = set()
        self.raw: dict[str, bytes] = {}
        self.close_after: int | None = None
        #: streams opened, requests received, responses sent, ACKs per type (last version)
        self.streams = 0
        self.requests = 0
        self.responses = 0
        self.acked: dict[str, str] = {}
        #: the version (= nonce) of the last response sent, per type
        self.last_sent: dict[str, str] = {}
        self.last_requests: deque[discovery_pb2.DiscoveryRequest] = deque(maxlen=1000)
        self._version = itertools.count(1)
        self._lock = threading.Lock()
        self._live: list[queue.SimpleQueue[Any]] = []
        self._stop = threading.Event()
        self._pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="scripted-ads")
        self._server = grpc.server(self._pool)
        handler = grpc.stream_stream_rpc_method_handler(
            self._stream,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=_serialize,
        )
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    ADS_SERVICE, {"StreamAggregatedResources": handler}
                ),
            )
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"

    # -- control -----------------------------------------------------------------------
    def start(self) -> ScriptedAds:
        self._server.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.stop(0).wait(5)
        self._pool.shutdown(wait=True)

    def set(self, type_url: str, resources: Mapping[str, Message]) -> None:
        self.resources[type_url] = dict(resources)

    def push(self, type_url: str, resources: Mapping[str, Message] | None = None) -> None:
        """Send ``type_url`` again on every live stream, with a new version:
        ``resources`` if given (each push its own), else what is set then."""
        with self._lock:
            live = list(self._live)
        for q in live:
            q.put((type_url, None if resources is None else dict(resources)))

    def kick(self) -> None:
        """End every live stream with UNAVAILABLE."""
        with self._lock:
            live = list(self._live)
        for q in live:
            q.put(_KICK)

    @property
    def live(self) -> int:
        with self._lock:
            return len(self._live)

    # -- the stream ----------------------------------------------------------------------
    def _stream(
        self, requests: Iterator[discovery_pb2.DiscoveryRequest], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._lock:
            self.streams += 1
            stream = self.streams
            self._live.append(events)

        def pump() -> None:
            try:
                for r in requests:
                    events.put(r)
            except Exception:  # the stream was cancelled
                pass
            events.put(_END)

        threading.Thread(target=pump, name=f"scripted-ads-{stream}", daemon=True).start()
        sent_names: dict[str, list[str]] = {}
        nonces: dict[str, str] = {}
        sent = 0
        try:
            while context.is_active() and not self._stop.is_set():
                try:
                    item = events.get(timeout=_TICK)
                except queue.Empty:
                    continue
                if item is _END:
                    return
                if item is _KICK:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "scripted ADS server: kicked")
                snapshot: dict[str, Message] | None = None
                if isinstance(item, tuple):
                    type_url, snapshot = item
                    names = sent_names.get(type_url)
                    if names is None:
                        continue  # never asked for on this stream
                else:
                    req: discovery_pb2.DiscoveryRequest = item
                    with self._lock:
                        self.requests += 1
                        self.last_requests.append(req)
                        if req.response_nonce and not req.HasField("error_detail"):
                            if req.response_nonce == nonces.get(req.type_url):
                                self.acked[req.type_url] = req.version_info
                    type_url, names = req.type_url, sorted(req.resource_names)
                    if self.silent or type_url in self.withhold:
                        continue
                    if sent_names.get(type_url) == names:
                        continue  # an ACK or NACK of what was sent
                if self.delay and self._stop.wait(self.delay):
                    return
                sent_names[type_url] = names
                nonce = f"{stream}-{next(self._version)}"
                nonces[type_url] = nonce
                self.last_sent[type_url] = nonce
                yield self._response(type_url, names, nonce, snapshot)
                with self._lock:
                    self.responses += 1
                sent += 1
                if self.close_after is not None and sent >= self.close_after:
                    return
        finally:
            with self._lock:
                self._live.remove(events)

    def _response(
        self, type_url: str, names: list[str], nonce: str, snapshot: dict[str, Message] | None
    ) -> Any:
        raw = self.raw.get(type_url)
        if raw is not None:
            return raw
        have = snapshot if snapshot is not None else self.resources.get(type_url, {})
        resp = discovery_pb2.DiscoveryResponse(type_url=type_url, version_info=nonce, nonce=nonce)
        for name in names or sorted(have):
            if name in have:
                packed = any_pb2.Any()
                packed.Pack(have[name])
                resp.resources.append(packed)
        return resp


def raw_response(type_url: str, resources: list[bytes], nonce: str = "raw-1") -> bytes:
    """A serialized DiscoveryResponse holding already-serialized resources."""
    resp = discovery_pb2.DiscoveryResponse(type_url=type_url, version_info=nonce, nonce=nonce)
    for data in resources:
        resp.resources.append(any_pb2.Any(type_url=type_url, value=data))
    return bytes(resp.SerializeToString())


def huge_endpoints(cluster_name: str, size: int) -> bytes:
    """A serialized ClusterLoadAssignment of about ``size`` bytes: one
    locality whose metadata holds a string of that size."""
    from envoy.config.core.v3 import base_pb2
    from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
    from google.protobuf import struct_pb2

    md = base_pb2.Metadata()
    md.filter_metadata["pad"].CopyFrom(
        struct_pb2.Struct(fields={"padding": struct_pb2.Value(string_value="x" * size)})
    )
    cla = endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster_name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(metadata=md)],
    )
    return bytes(cla.SerializeToString())


def main() -> int:
    """``python -m tests.e2e.cp_faults.scripted_ads BACKEND``: serve ``svc:80``
    -> ``c`` -> BACKEND in a process of its own (so the test's memory is the
    client's alone). Prints ``READY <port>``; commands on standard input:
    ``huge MB`` (every EDS response becomes a ~MB MB ClusterLoadAssignment,
    pushed at once), ``normal``, ``stats`` (``STATS <streams> <responses>``).
    Ends when standard input closes."""
    import sys

    from tests.e2e.cp_faults.conftest import good_config

    from proxyless.testing.resources import ENDPOINT_URL

    server = ScriptedAds()
    for type_url, resources in good_config([sys.argv[1]]).items():
        server.set(type_url, resources)
    server.start()
    print(f"READY {server.port}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["huge"]:
            cla = huge_endpoints("c", int(words[1]) << 20)
            server.raw[ENDPOINT_URL] = raw_response(ENDPOINT_URL, [cla])
            del cla
            server.push(ENDPOINT_URL)
            print("OK", flush=True)
        elif words[:1] == ["normal"]:
            server.raw.clear()
            server.push(ENDPOINT_URL)
            print("OK", flush=True)
        elif words[:1] == ["stats"]:
            print(f"STATS {server.streams} {server.responses}", flush=True)
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
