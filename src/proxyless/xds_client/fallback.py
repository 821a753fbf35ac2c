"""Which xDS servers of an authority are in use: fallback and its reversal (gRFC A71).

The bootstrap lists the servers of an authority in priority order (the
top-level ``xds_servers`` for old-style names, ``authorities[a].xds_servers``
for ``xdstp://a/...`` names, gRFC A47). A :class:`ServerChain` holds that
order and how many of them are in use: ``servers[:in_use]`` have a channel
and an ADS stream, every resource of the authority is subscribed on each of
them, and the last one is the *active* server, whose failures reach the
watchers and whose responses may delete resources.

The rules, from gRFC A71 (and gRPC C-core's ``XdsClient``, which implements it):

- The first watch of an authority opens a stream to its first server.
- A server *fails* when its channel cannot connect or its ADS stream ends
  before any response (gRFC A57). When the active server fails, the client
  falls back only if some resource of the authority is not cached — a value,
  a NACK or "does not exist" all count as cached. It then adds the next
  servers in order until one is not already failing (another authority may
  share it). If every resource is cached it adds nothing: the cache keeps
  serving and the failed server keeps being retried with backoff.
- A new watch of a resource not cached while the active server is failing
  is such a resource: the next servers are added then.
- As soon as a server in use that is not the active one sends a response, the
  servers after it are dropped (their streams closed): that server is active
  again. Values received from a lower-priority server stay cached until the
  restored server's responses replace them.

Everything here is pure bookkeeping over :class:`~proxyless.bootstrap.XdsServer`
values; whether a server is failing is asked through the ``failing``
predicate, so tests drive the rules without a network or a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxyless.bootstrap import XdsServer

__all__ = ["ServerChain"]

Failing = Callable[[XdsServer], bool]


@dataclass(eq=False, slots=True)
class ServerChain:
    """The servers of one authority in priority order; ``servers[:in_use]`` in use."""

    servers: tuple[XdsServer, ...]
    in_use: int = 0

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("a ServerChain needs at least one xDS server")

    @property
    def active(self) -> XdsServer | None:
        """The server whose stream serves the authority now (None before any watch)."""
        return self.servers[self.in_use - 1] if self.in_use else None

    @property
    def used(self) -> tuple[XdsServer, ...]:
        """The servers with a stream, highest priority first."""
        return self.servers[: self.in_use]

    def position(self, server: XdsServer) -> int | None:
        """Index of ``server`` among the servers in use, or None."""
        for i, s in enumerate(self.used):
            if s.key == server.key:
                return i
        return None

    def _extend(self, failing: Failing) -> tuple[XdsServer, ...]:
        added: list[XdsServer] = []
        while self.in_use < len(self.servers):
            server = self.servers[self.in_use]
            self.in_use += 1
            added.append(server)
            if not failing(server):
                break
        return tuple(added)

    def on_new_resource(self, failing: Failing) -> tuple[XdsServer, ...]:
        """A resource never seen before is watched: the servers to add (the
        first server for the first watch; the next ones when the active
        server is failing)."""
        active = self.active
        if active is not None and not failing(active):
            return ()
        return self._extend(failing)

    def on_failure(
        self, server: XdsServer, *, uncached: bool, failing: Failing
    ) -> tuple[XdsServer, ...] | None:
        """``server`` failed. None when it is not the active server (nothing to
        do or report); else the servers added, possibly none (then the
        watchers hear of the failure)."""
        active = self.active
        if active is None or active.key != server.key:
            return None
        if not uncached:
            return ()
        return self._extend(failing)

    def on_response(self, server: XdsServer) -> tuple[XdsServer, ...]:
        """``server`` sent a response: the lower-priority servers to drop."""
        index = self.position(server)
        if index is None or index == self.in_use - 1:
            return ()
        dropped = self.servers[index + 1 : self.in_use]
        self.in_use = index + 1
        return dropped

    def reports_failure(self, failing: Failing) -> bool:
        """True when the active server is failing (watchers get errors)."""
        active = self.active
        return active is not None and failing(active)
