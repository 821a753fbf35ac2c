"""Values shared by the embedded ADS server and its users.

Type URLs of the v3 xDS resources, the :class:`NodeInfo` a stream identifies
itself with, the per-node :class:`Snapshot` a snapshot function returns, and
the :class:`ReceivedRequest` record the server keeps of every DiscoveryRequest
(State of the World) or DeltaDiscoveryRequest it receives, and the
:class:`SentResponse` record of every response it sends.

Reference: Envoy's xDS protocol document (api-docs/xds_protocol.rst),
"Resource types" and "Type URLs".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "SECRET_TYPE",
    "WILDCARD_TYPES",
    "NodeInfo",
    "ReceivedRequest",
    "Resource",
    "SentResponse",
    "Snapshot",
]

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

#: Types a client may subscribe to with a wildcard (xds_protocol.rst, "How the
#: client specifies what resources to return"): Listener and Cluster.
WILDCARD_TYPES = frozenset({LISTENER_TYPE, CLUSTER_TYPE})

#: A resource handed to the server: a proto message, or its serialized bytes
#: (sent as given inside an ``Any`` of the type URL it is published under).
Resource = Message | bytes


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Who is on the other end of an ADS stream (from the first request's node)."""

    id: str
    cluster: str
    user_agent_name: str
    #: ``node.metadata`` converted to plain Python values.
    metadata: Mapping[str, Any]
    proto: base_pb2.Node = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, node: base_pb2.Node) -> NodeInfo:
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        return cls(
            id=node.id,
            cluster=node.cluster,
            user_agent_name=node.user_agent_name,
            metadata=metadata,
            proto=node,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The resources one node sees: ``{type_url: {name: resource}}``.

    A type absent from ``resources`` has no resources for this node.
    """

    resources: Mapping[str, Mapping[str, Resource]] = field(default_factory=dict)

    def get(self, type_url: str) -> Mapping[str, Resource]:
        return self.resources.get(type_url, {})


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request received on an ADS stream, in arrival order.

    ``node`` is the node of the stream (clients send it only on the first
    request; every record carries it). For a delta request ``resource_names``
    is ``resource_names_subscribe``, ``version_info`` is "" and the delta-only
    fields are filled.
    """

    stream_id: int
    node: base_pb2.Node = field(repr=False)
    type_url: str
    resource_names: tuple[str, ...]
    version_info: str
    response_nonce: str
    error_detail: status_pb2.Status | None
    delta: bool = False
    resource_names_unsubscribe: tuple[str, ...] = ()
    initial_resource_versions: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_nack(self) -> bool:
        return self.error_detail is not None

    @property
    def node_id(self) -> str:
        return str(self.node.id)

    def __repr__(self) -> str:
        kind = "Delta" if self.delta else "SotW"
        short = self.type_url.rsplit(".", 1)[-1]
        parts = [
            f"stream={self.stream_id}",
            f"node={self.node.id!r}",
            short,
            f"names={list(self.resource_names)}",
        ]
        if self.resource_names_unsubscribe:
            parts.append(f"unsubscribe={list(self.resource_names_unsubscribe)}")
        if self.version_info:
            parts.append(f"version={self.version_info!r}")
        if self.response_nonce:
            parts.append(f"nonce={self.response_nonce!r}")
        if self.error_detail is not None:
            parts.append(f"NACK={self.error_detail.message!r}")
        return f"{kind}Request({', '.join(parts)})"


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
