"""The ADS messages: the node, requests and decoded responses, State of the
World and delta (Envoy's api-docs/xds_protocol.rst).

- :func:`node_proto`: the ``Node`` sent on the first request of each stream
  (id, cluster, locality, metadata from the bootstrap; gRFC A27), with the
  client features this client advertises.
- :func:`discovery_request`: a ``DiscoveryRequest`` for one type. An ACK
  carries the accepted ``version_info`` and the response's nonce; a NACK the
  previous version, the new nonce and an ``error_detail`` listing every
  invalid resource and why (gRFC A46).
- :func:`decode_response`: every resource of a ``DiscoveryResponse``, decoded
  by its :class:`ResourceType` (or reused when its bytes are those of the
  cached value), unwrapped from an ``envoy.service.discovery.v3.Resource``
  when wrapped, with one problem per resource that is undecodable, of the
  wrong type, invalid, or named twice.
- :func:`delta_request` and :func:`decode_delta_response`: the same for delta
  xDS. A request subscribes the names not yet sent on the stream and
  unsubscribes those no longer watched; the first one of a stream lists
  every name and, in ``initial_resource_versions``, the version of each
  cached resource, so the server resends only what changed. An ACK carries
  the response's nonce; a NACK adds ``error_detail``. A decoded delta
  response also gives each resource's own version and the removed names.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format, struct_pb2
from google.rpc import status_pb2

from proxyless import __version__
from proxyless.bootstrap import Bootstrap
from proxyless.xds_client.resource_type import DecodeResult
from proxyless.xds_client.state import TypeState

__all__ = [
    "CLIENT_FEATURES",
    "DecodedResponse",
    "collector_paused",
    "decode_delta_response",
    "decode_response",
    "delta_request",
    "discovery_request",
    "node_proto",
]

_RESOURCE_WRAPPER_URL = "type.googleapis.com/envoy.service.discovery.v3.Resource"

#: Features this client advertises in ``Node.client_features``.
CLIENT_FEATURES = ("xds.config.resource-in-sotw",)


@dataclass(frozen=True, slots=True)
class DecodedResponse:
    """The resources of one response, by name, and the problems found."""

    results: dict[str, DecodeResult]
    #: serialized resource by name
    raws: dict[str, bytes]
    errors: list[str]
    #: delta: each resource's own version, by name
    versions: dict[str, str] = field(default_factory=dict)
    #: delta: ``removed_resources``
    removed: tuple[str, ...] = ()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (if it runs) for the block.

    Decoding a large response builds tens of thousands of model objects
    that all survive, and each collection the allocations trigger walks
    them again: about a third of the time of a 5,000-virtual-host
    RouteConfiguration. Models hold no reference cycles, and the pause
    lasts one decode (bounded by the response's size); reference counting
    frees everything else as usual meanwhile.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def decode_response(ts: TypeState, resp: discovery_pb2.DiscoveryResponse) -> DecodedResponse:
    """Decode every resource of ``resp`` (a response for ``ts``'s type)."""
    out = DecodedResponse(results={}, raws={}, errors=[])
    with collector_paused():
        for index, any_msg in enumerate(resp.resources):
            _decode_one(ts, index, any_msg, out)
    return out


def decode_delta_response(
    ts: TypeState, resp: discovery_pb2.DeltaDiscoveryResponse
) -> DecodedResponse:
    """Decode every resource of a delta response for ``ts``'s type."""
    out = DecodedResponse(results={}, raws={}, errors=[], removed=tuple(resp.removed_resources))
    with collector_paused():
        for index, wrapper in enumerate(resp.resources):
            if not wrapper.HasField("resource"):
                continue  # a TTL heartbeat: nothing changes
            name = _decode_one(ts, index, wrapper.resource, out)
            if name is None:
                continue
            if wrapper.name and wrapper.name != name:
                out.errors.append(f"{name}: sent under the name {wrapper.name!r}")
                del out.results[name], out.raws[name]
                continue
            out.versions[name] = wrapper.version
    return out


def _decode_one(ts: TypeState, index: int, any_msg: Any, out: DecodedResponse) -> str | None:
    """Decode one resource into ``out``; its name, or None when it has none
    usable (undecodable, of the wrong type, or named twice)."""
    raw, problem = _unwrap(any_msg, ts.rtype.type_url)
    if problem is not None:
        out.errors.append(f"resources[{index}]: {problem}")
        return None
    assert raw is not None
    known = ts.by_raw.get(raw)
    res = ts.resources.get(known) if known is not None else None
    if res is not None and res.cached and res.raw == raw and res.error is None:
        result = DecodeResult(known, res.value)  # unchanged: no need to decode
    else:
        result = ts.rtype.decode(raw)
    if result.name is None:
        out.errors.append(f"resources[{index}]: " + "; ".join(result.errors))
        return None
    if result.name in out.results:
        out.errors.append(f"{result.name}: duplicate resource name in one response")
        return None
    out.results[result.name] = result
    out.raws[result.name] = raw
    if result.errors:
        out.errors.append(f"{result.name}: " + "; ".join(result.errors))
    return result.name


def discovery_request(
    ts: TypeState,
    *,
    node: base_pb2.Node | None,
    version: str | None = None,
    nonce: str | None = None,
    error: str | None = None,
) -> discovery_pb2.DiscoveryRequest:
    """A request for every name subscribed in ``ts``; ``version`` and ``nonce``
    default to the type's; ``error`` makes it a NACK; ``node`` is set on the
    first request of a stream."""
    req = discovery_pb2.DiscoveryRequest(
        version_info=ts.version if version is None else version,
        resource_names=sorted(ts.resources),
        type_url=ts.rtype.type_url,
        response_nonce=ts.nonce if nonce is None else nonce,
    )
    if node is not None:
        req.node.CopyFrom(node)
    if error is not None:
        req.error_detail.CopyFrom(
            status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=error)
        )
    return req


def delta_request(
    ts: TypeState,
    *,
    node: base_pb2.Node | None,
    first: bool,
    server: object,
    error: str | None = None,
) -> discovery_pb2.DeltaDiscoveryRequest:
    """A delta request for ``ts``: the subscription changes since the last
    request of the stream (all names when ``first``), the type's nonce (an
    ACK, or a NACK with ``error``). Updates ``ts.sent_names``.

    ``initial_resource_versions`` lists only resources whose cached value
    came from ``server`` (the ServerState of the stream): a version names
    a value only on the server that sent it, and a fallback server must
    send its own (gRFC A71: the fallback's resources replace the cache)."""
    names = set(ts.resources)
    if first:
        ts.sent_names = set()
    req = discovery_pb2.DeltaDiscoveryRequest(
        type_url=ts.rtype.type_url,
        resource_names_subscribe=sorted(names - ts.sent_names),
        resource_names_unsubscribe=sorted(ts.sent_names - names),
        response_nonce=ts.nonce,
    )
    if first:
        for name in sorted(names):
            res = ts.resources[name]
            if res.cached and res.version and res.server is server:
                req.initial_resource_versions[name] = res.version
    ts.sent_names = names
    if node is not None:
        req.node.CopyFrom(node)
    if error is not None:
        req.error_detail.CopyFrom(
            status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=error)
        )
    return req


def _unwrap(any_msg: Any, type_url: str) -> tuple[bytes | None, str | None]:
    """The serialized resource inside ``any_msg`` (maybe wrapped in a Resource)."""
    if any_msg.type_url == _RESOURCE_WRAPPER_URL:
        wrapper = discovery_pb2.Resource()
        try:
            wrapper.ParseFromString(any_msg.value)
        except Exception as exc:
            return None, f"could not decode the Resource wrapper: {exc}"
        if not wrapper.HasField("resource"):
            return None, f"Resource wrapper {wrapper.name!r} holds no resource"
        any_msg = wrapper.resource
    if any_msg.type_url != type_url:
        return None, f"type {any_msg.type_url!r} in a response for {type_url!r}"
    return bytes(any_msg.value), None


def node_proto(bootstrap: Bootstrap) -> base_pb2.Node:
    """The bootstrap's node as an ``envoy.config.core.v3.Node``."""
    node = bootstrap.node
    msg = base_pb2.Node(
        id=node.id,
        cluster=node.cluster,
        user_agent_name="proxyless",
        user_agent_version=__version__,
        client_features=list(CLIENT_FEATURES),
    )
    if node.locality is not None:
        msg.locality.region = node.locality.region
        msg.locality.zone = node.locality.zone
        msg.locality.sub_zone = node.locality.sub_zone
    if node.metadata:
        struct = struct_pb2.Struct()
        json_format.ParseDict(node.metadata_json(), struct)
        msg.metadata.CopyFrom(struct)
    return msg
