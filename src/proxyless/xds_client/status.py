"""Per-resource status, shaped like CSDS (gRFC A40).

Every subscribed resource has one :class:`ResourceStatus`: its type, name,
accepted version, :class:`ClientStatus`, when it last changed, and the last
error (a NACK reason, a stream failure, or the does-not-exist timeout).
``nacked_but_cached`` is true when the newest update was rejected while an
older good value is still in use (the A78 ``grpc.xds_cache_state`` label).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ClientStatus", "ResourceStatus"]


class ClientStatus(enum.Enum):
    """envoy.admin.v3.ClientResourceStatus values used by gRPC clients."""

    REQUESTED = "REQUESTED"
    DOES_NOT_EXIST = "DOES_NOT_EXIST"
    ACKED = "ACKED"
    NACKED = "NACKED"


@dataclass(frozen=True, slots=True)
class ResourceStatus:
    type_name: str  # LDS, RDS, CDS, EDS, SDS
    type_url: str
    name: str
    server: str  # server_uri of the xDS server the resource comes from
    status: ClientStatus
    version: str  # the version of the cached value ("" when none)
    last_updated: float | None  # wall-clock time of the last accepted update
    error: str | None  # the last error, if any
    error_version: str | None  # version_info of the rejected update, for NACKs
    error_time: float | None
    cached: bool  # a valid value is in use
    raw: bytes | None = None  # the serialized resource in use (CSDS ``xds_config``)

    @property
    def nacked_but_cached(self) -> bool:
        return self.status is ClientStatus.NACKED and self.cached

    def as_dict(self) -> dict[str, object]:
        return {
            "type": self.type_name,
            "type_url": self.type_url,
            "name": self.name,
            "server": self.server,
            "status": self.status.value,
            "version": self.version,
            "last_updated": self.last_updated,
            "error": self.error,
            "error_version": self.error_version,
            "error_time": self.error_time,
            "cached": self.cached,
        }
