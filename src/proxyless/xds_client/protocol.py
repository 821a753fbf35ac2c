"""The ADS State of the World messages: the node, requests, decoded responses.

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
"""

from __future__ import annotations

from dataclasses import dataclass
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
    "decode_response",
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


def decode_response(ts: TypeState, resp: discovery_pb2.DiscoveryResponse) -> DecodedResponse:
    """Decode every resource of ``resp`` (a response for ``ts``'s type)."""
    errors: list[str] = []
    seen: dict[str, DecodeResult] = {}
    raws: dict[str, bytes] = {}
    for index, any_msg in enumerate(resp.resources):
        raw, problem = _unwrap(any_msg, ts.rtype.type_url)
        if problem is not None:
            errors.append(f"resources[{index}]: {problem}")
            continue
        assert raw is not None
        known = ts.by_raw.get(raw)
        res = ts.resources.get(known) if known is not None else None
        if res is not None and res.cached and res.raw == raw and res.error is None:
            result = DecodeResult(known, res.value)  # unchanged: no need to decode
        else:
            result = ts.rtype.decode(raw)
        if result.name is None:
            errors.append(f"resources[{index}]: " + "; ".join(result.errors))
            continue
        if result.name in seen:
            errors.append(f"{result.name}: duplicate resource name in one response")
            continue
        seen[result.name] = result
        raws[result.name] = raw
        if result.errors:
            errors.append(f"{result.name}: " + "; ".join(result.errors))
    return DecodedResponse(results=seen, raws=raws, errors=errors)


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
