"""Test kit for the embedded control plane.

* :class:`RawAdsStream` — a bare ADS client stream (State of the World or
  Delta) for protocol-level tests: send requests, read responses with a
  timeout.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

__all__ = ["RawAdsStream", "make_node"]

_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
_END = object()


def make_node(
    node_id: str = "test-node",
    *,
    cluster: str = "test",
    metadata: dict[str, Any] | None = None,
    user_agent_name: str = "proxyless-test",
) -> base_pb2.Node:
    """A Node proto for raw test streams."""
    node = base_pb2.Node(id=node_id, cluster=cluster, user_agent_name=user_agent_name)
    if metadata:
        struct = struct_pb2.Struct()
        struct.update(metadata)
        node.metadata.CopyFrom(struct)
    return node


class RawAdsStream:
    """One ADS stream to ``target`` (``delta=True`` for DeltaAggregatedResources)."""

    def __init__(self, target: str, *, delta: bool = False) -> None:
        self.delta = delta
        self._channel = grpc.insecure_channel(target)
        self._outbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        if delta:
            call = self._channel.stream_stream(
                _ADS + "DeltaAggregatedResources",
                request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
            )
        else:
            call = self._channel.stream_stream(
                _ADS + "StreamAggregatedResources",
                request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
            )
        self._call = call(self._requests())
        self.error: grpc.RpcError | None = None
        self._reader = threading.Thread(target=self._read, daemon=True, name="raw-ads-reader")
        self._reader.start()

    def _requests(self) -> Iterator[Any]:
        while True:
            item = self._outbox.get()
            if item is _END:
                return
            yield item

    def _read(self) -> None:
        try:
            for response in self._call:
                self._inbox.put(response)
        except grpc.RpcError as exc:
            self.error = exc
        self._inbox.put(_END)

    def send(self, request: Any) -> None:
        self._outbox.put(request)

    def request(
        self,
        type_url: str,
        names: list[str] | tuple[str, ...] = (),
        *,
        version_info: str = "",
        nonce: str = "",
        node: base_pb2.Node | None = None,
        error: str | None = None,
    ) -> None:
        """Send a State-of-the-World DiscoveryRequest."""
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=list(names),
            version_info=version_info,
            response_nonce=nonce,
        )
        if node is not None:
            req.node.CopyFrom(node)
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        self.send(req)

    def delta_request(
        self,
        type_url: str,
        subscribe: list[str] | tuple[str, ...] = (),
        unsubscribe: list[str] | tuple[str, ...] = (),
        *,
        initial_versions: dict[str, str] | None = None,
        nonce: str = "",
        node: base_pb2.Node | None = None,
        error: str | None = None,
    ) -> None:
        """Send a DeltaDiscoveryRequest."""
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
        )
        for name, version in (initial_versions or {}).items():
            req.initial_resource_versions[name] = version
        if node is not None:
            req.node.CopyFrom(node)
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        self.send(req)

    def recv(self, timeout: float = 5.0) -> Any:
        """The next response; raises TimeoutError, or EOFError when the stream ended."""
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no ADS response within {timeout}s") from None
        if item is _END:
            self._inbox.put(_END)
            raise EOFError(f"ADS stream ended: {self.error!r}")
        return item

    def close(self) -> None:
        self._outbox.put(_END)
        self._call.cancel()  # type: ignore[no-untyped-call]
        self._channel.close()
        self._reader.join(timeout=5)

    def __enter__(self) -> RawAdsStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
