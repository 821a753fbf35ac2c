"""Client Status Discovery Service (gRFC A40): what this process's xDS
client has subscribed to and the state of each resource, in the shape
``grpcdebug`` and Envoy's tooling read.

Each :class:`~proxyless.mesh.Mesh` is one client scope (gRFC A71): its
``ClientConfig`` carries the node it sends and one ``GenericXdsConfig`` per
subscribed resource (the flat list gRFC A40 prefers) with its type URL,
name, version, the resource itself when one is cached (``xds_config``),
when it was last updated, its ``client_status`` (REQUESTED,
DOES_NOT_EXIST, ACKED, NACKED) and, after a NACK, the error with the
rejected version and when it came (``error_state``). A resource that was
NACKED but still has a cached value reports NACKED with the cached version
and value — the "nacked but cached" state of gRFC A78.

:class:`CsdsServicer` serves ``envoy.service.status.v3.ClientStatusDiscoveryService``
(``FetchClientStatus`` and ``StreamClientStatus``); the admin server
(:mod:`proxyless.admin`) puts it on a port.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import grpc
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import any_pb2, timestamp_pb2

from proxyless.mesh import Mesh
from proxyless.xds_client import ClientStatus, ResourceStatus
from proxyless.xds_client.protocol import node_proto

__all__ = ["CsdsServicer", "client_config", "generic_config", "status_rows"]

log = logging.getLogger("proxyless.admin")

_STATUS = {
    ClientStatus.REQUESTED: config_dump_shared_pb2.REQUESTED,
    ClientStatus.DOES_NOT_EXIST: config_dump_shared_pb2.DOES_NOT_EXIST,
    ClientStatus.ACKED: config_dump_shared_pb2.ACKED,
    ClientStatus.NACKED: config_dump_shared_pb2.NACKED,
}


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def generic_config(status: ResourceStatus) -> csds_pb2.ClientConfig.GenericXdsConfig:
    """One resource's entry (see the module docstring)."""
    out = csds_pb2.ClientConfig.GenericXdsConfig(
        type_url=status.type_url,
        name=status.name,
        version_info=status.version,
        client_status=_STATUS[status.status],
    )
    if status.raw is not None:
        out.xds_config.CopyFrom(any_pb2.Any(type_url=status.type_url, value=status.raw))
    updated = _timestamp(status.last_updated)
    if updated is not None:
        out.last_updated.CopyFrom(updated)
    if status.status is ClientStatus.NACKED and status.error is not None:
        state = out.error_state
        state.details = status.error
        state.version_info = status.error_version or ""
        attempt = _timestamp(status.error_time)
        if attempt is not None:
            state.last_update_attempt.CopyFrom(attempt)
    return out


def client_config(mesh: Mesh, scope: str = "") -> csds_pb2.ClientConfig:
    """The ``ClientConfig`` of one Mesh (one client scope)."""
    config = csds_pb2.ClientConfig(node=node_proto(mesh.bootstrap), client_scope=scope)
    config.generic_xds_configs.extend(generic_config(s) for s in mesh.xds_client.dump())
    return config


class CsdsServicer(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):  # type: ignore[misc]
    """Answers CSDS requests for the Meshes ``meshes()`` returns (each its
    own client scope when there is more than one)."""

    def __init__(self, meshes: Callable[[], Sequence[Mesh]]) -> None:
        self._meshes = meshes

    def _response(self, request: csds_pb2.ClientStatusRequest) -> csds_pb2.ClientStatusResponse:
        meshes = [m for m in self._meshes() if not m.closed]
        many = len(meshes) > 1
        configs = []
        for i, mesh in enumerate(meshes):
            scope = (mesh.bootstrap.node.id or f"mesh-{i}") if many else ""
            try:
                configs.append(client_config(mesh, scope))
            except Exception:  # a Mesh closing meanwhile
                log.debug("CSDS: cannot read %r", mesh, exc_info=True)
        return csds_pb2.ClientStatusResponse(config=configs)

    def FetchClientStatus(
        self, request: csds_pb2.ClientStatusRequest, context: grpc.ServicerContext
    ) -> csds_pb2.ClientStatusResponse:
        return self._response(request)

    def StreamClientStatus(
        self,
        request_iterator: Iterable[csds_pb2.ClientStatusRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[csds_pb2.ClientStatusResponse]:
        for request in request_iterator:
            yield self._response(request)


def status_rows(response: Any) -> list[dict[str, Any]]:
    """A ``ClientStatusResponse`` as rows for printing (``proxyless status``)."""
    rows = []
    for config in response.config:
        for g in config.generic_xds_configs:
            rows.append(
                {
                    "scope": config.client_scope,
                    "node": config.node.id,
                    "type": g.type_url.rsplit(".", 1)[-1],
                    "name": g.name,
                    "status": config_dump_shared_pb2.ClientResourceStatus.Name(g.client_status),
                    "version": g.version_info,
                    "error": g.error_state.details if g.HasField("error_state") else "",
                }
            )
    return rows
