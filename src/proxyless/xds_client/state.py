"""What the xDS client remembers: per server, per type, per resource.

A :class:`ServerState` per xDS server holds its stream's state (gRFC A27:
one ADS stream per server) and a :class:`TypeState` per type URL, with the
``version_info`` and ``nonce`` an ACK or NACK carries and the names
subscribed on that stream. An :class:`AuthorityState` per authority (gRFC
A47; its servers in a :class:`~proxyless.xds_client.fallback.ServerChain`,
gRFC A71) owns that authority's resources: one :class:`ResourceState` per
subscribed name, with its watchers and cache: the last good value, the
version it came in, the server it came from, and the last error (gRFC A46: a
NACKed resource keeps its last good value). When fallback puts several
servers in use, their ``TypeState`` maps share the same ``ResourceState``
objects: one cache per authority, whichever server fills it. Its transitions (:meth:`ResourceState.accept`,
:meth:`~ResourceState.reject`, :meth:`~ResourceState.delete`) change the
record only; telling the watchers is the client's job.

:func:`status_dump` is the CSDS view of every record (gRFC A40), sorted by
type (LDS, RDS, CDS, EDS, SDS) and name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from proxyless.bootstrap import XdsServer
from proxyless.clock import TimerHandle
from proxyless.errors import ControlPlaneUnreachable, ResourceDoesNotExist, ResourceNacked
from proxyless.xds_client.backoff import Backoff
from proxyless.xds_client.fallback import ServerChain
from proxyless.xds_client.resource_type import ResourceType
from proxyless.xds_client.status import ClientStatus, ResourceStatus
from proxyless.xds_client.transport import AdsTransport
from proxyless.xds_client.watcher import ResourceWatcher

__all__ = [
    "AuthorityState",
    "ResourceState",
    "ServerState",
    "TypeState",
    "server_summaries",
    "status_dump",
]

_TYPE_ORDER = {"LDS": 0, "RDS": 1, "CDS": 2, "EDS": 3, "SDS": 4}


@dataclass(eq=False, slots=True)
class ResourceState:
    """State of one subscribed resource."""

    rtype: ResourceType
    name: str
    #: the server the cached value came from (before any: the one first asked)
    server: ServerState
    authority: AuthorityState
    watchers: list[ResourceWatcher] = field(default_factory=list)
    value: Any = None
    raw: bytes | None = None
    cached: bool = False
    version: str = ""
    status: ClientStatus = ClientStatus.REQUESTED
    last_updated: float | None = None
    error: str | None = None
    error_version: str | None = None
    error_time: float | None = None
    timer: TimerHandle | None = None
    logged_ignored_version: str | None = None

    def accept(self, value: Any, raw: bytes, version: str, now: float, source: ServerState) -> bool:
        """Cache a valid update (ACKed) received from ``source``; True if the
        value changed."""
        changed = not self.cached or raw != self.raw
        if changed or source is not self.server:
            self._forget_raw()
            ts = source.types.get(self.rtype.type_url)
            if ts is not None:
                ts.by_raw[raw] = self.name
        self.server = source
        self.value, self.raw, self.cached = value, raw, True
        self.version = version
        self.status = ClientStatus.ACKED
        self.last_updated = now
        self.error = self.error_version = self.error_time = None
        return changed

    def reject(self, reason: str, version: str, now: float) -> None:
        """Record a NACK of ``version``; the cached value, if any, stays."""
        self.status = ClientStatus.NACKED
        self.error, self.error_version, self.error_time = reason, version, now

    def delete(self, now: float) -> None:
        """The server removed the resource: forget the cached value."""
        self._forget_raw()
        self.value, self.raw, self.cached = None, None, False
        self.status = ClientStatus.DOES_NOT_EXIST
        self.version = ""
        self.last_updated = now

    def _forget_raw(self) -> None:
        if self.raw is not None:
            ts = self.server.types.get(self.rtype.type_url)
            if ts is not None and ts.by_raw.get(self.raw) == self.name:
                del ts.by_raw[self.raw]

    @property
    def uncached(self) -> bool:
        """Requested and nothing heard yet: no value, no NACK, no "does not
        exist" (the resources that make the client fall back, gRFC A71)."""
        return not self.cached and self.status is ClientStatus.REQUESTED

    def does_not_exist_error(self, node_id: str) -> ResourceDoesNotExist:
        return ResourceDoesNotExist(
            f"{self.rtype.short_name} resource {self.name!r} does not exist "
            f"({self.error or 'removed by the server'}; {self._where(node_id)})"
        )

    def nacked_error(self, node_id: str) -> ResourceNacked:
        kept = f"; still using version {self.version!r}" if self.cached else ""
        return ResourceNacked(
            f"{self.rtype.short_name} resource {self.name!r} version {self.error_version!r} "
            f"was rejected: {self.error}{kept} ({self._where(node_id)})"
        )

    def unreachable_error(self, node_id: str, reason: str | None) -> ControlPlaneUnreachable:
        return ControlPlaneUnreachable(
            f"{self.rtype.short_name} resource {self.name!r} not received: "
            f"{reason or self.error} (node id {node_id!r})"
        )

    def _where(self, node_id: str) -> str:
        return f"xDS server {self.server.server.server_uri}, node id {node_id!r}"

    def to_status(self) -> ResourceStatus:
        return ResourceStatus(
            type_name=self.rtype.short_name,
            type_url=self.rtype.type_url,
            name=self.name,
            server=self.server.server.server_uri,
            status=self.status,
            version=self.version,
            last_updated=self.last_updated,
            error=self.error,
            error_version=self.error_version,
            error_time=self.error_time,
            cached=self.cached,
            raw=self.raw,
        )


@dataclass(eq=False, slots=True)
class TypeState:
    """One resource type on one server's stream."""

    rtype: ResourceType
    version: str = ""
    nonce: str = ""
    resources: dict[str, ResourceState] = field(default_factory=dict)
    #: serialized resource -> name, for skipping the decode of unchanged resources
    by_raw: dict[bytes, str] = field(default_factory=dict)
    #: a subscription change waits to be sent (coalesced per loop turn)
    dirty: bool = False
    #: delta xDS: the names subscribed so far on the current stream
    sent_names: set[str] = field(default_factory=set)


@dataclass(eq=False, slots=True)
class AuthorityState:
    """The resources of one authority and the servers they are asked of."""

    chain: ServerChain
    #: type URL -> name -> state; the same objects the servers' TypeStates hold
    types: dict[str, dict[str, ResourceState]] = field(default_factory=dict)

    def all_resources(self) -> list[ResourceState]:
        return [res for by_name in self.types.values() for res in by_name.values()]

    def has_uncached(self) -> bool:
        return any(res.uncached for by_name in self.types.values() for res in by_name.values())

    def uses_now(self, ss: ServerState) -> bool:
        """``ss`` is the server in use (the active one of the chain)."""
        active = self.chain.active
        return active is not None and active.key == ss.server.key

    def get(self, type_url: str, name: str) -> ResourceState | None:
        by_name = self.types.get(type_url)
        return None if by_name is None else by_name.get(name)


@dataclass(eq=False, slots=True)
class ServerState:
    """One xDS server: its transport, stream and the types subscribed on it."""

    server: XdsServer
    transport: AdsTransport | None = None
    types: dict[str, TypeState] = field(default_factory=dict)
    stream_id: int = 0
    stream_active: bool = False
    channel_ready: bool = False
    got_response: bool = False
    sent_node: bool = False
    connected_once: bool = False
    reconnect_timer: TimerHandle | None = None
    backoff: Backoff = field(default_factory=Backoff)
    last_error: str | None = None
    #: type URLs in the order they were first subscribed (requests keep it).
    type_order: list[str] = field(default_factory=list)
    flush_scheduled: bool = False
    #: clock.monotonic() when the transport (and its TLS files) was made
    creds_read_at: float = 0.0
    #: clock.monotonic() when the current stream started
    stream_started_at: float = 0.0
    #: streams in a row that ended after a response but lived less than
    #: ``SHORT_STREAM`` (a server dropping every stream)
    short_streams: int = 0

    @property
    def connected(self) -> bool:
        return self.stream_active and (self.channel_ready or self.got_response)

    def probe(self, type_url: str, name: str) -> tuple[str, ClientStatus | None, bool]:
        """``(last nonce of the type, status of name or None, cached)``."""
        ts = self.types.get(type_url)
        if ts is None:
            return "", None, False
        res = ts.resources.get(name)
        if res is None:
            return ts.nonce, None, False
        return ts.nonce, res.status, res.cached

    def all_resources(self) -> list[ResourceState]:
        return [res for ts in self.types.values() for res in ts.resources.values()]

    def type_state(self, rtype: ResourceType) -> TypeState:
        ts = self.types.get(rtype.type_url)
        if ts is None:
            ts = self.types[rtype.type_url] = TypeState(rtype)
            self.type_order.append(rtype.type_url)
        return ts


def status_dump(authorities: Iterable[AuthorityState]) -> list[ResourceStatus]:
    """Status of every subscribed resource (CSDS shape), sorted by type and name."""
    out = [res.to_status() for auth in authorities for res in auth.all_resources()]
    out.sort(key=lambda s: (_TYPE_ORDER.get(s.type_name, 9), s.type_name, s.name))
    return out


def server_summaries(servers: Iterable[ServerState]) -> list[dict[str, Any]]:
    """Connection state per xDS server: uri, connected, last error."""
    return [
        {
            "server_uri": ss.server.server_uri,
            "connected": ss.connected,
            "ever_connected": ss.connected_once,
            "last_error": ss.last_error,
        }
        for ss in servers
    ]
