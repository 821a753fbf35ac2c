"""What a resource's watchers are told, and the record change that goes with it.

:class:`ResourceEvents` turns what happened to a subscribed resource into the
transition of its :class:`~proxyless.xds_client.state.ResourceState` and the
three watcher calls (:mod:`proxyless.xds_client.watcher`):

- a valid update: cached and ACKed; watchers get ``on_changed`` only when the
  serialized resource changed (gRFC A46: valid siblings of an invalid
  resource are still used);
- an invalid update (NACK): the last good value stays; watchers of a cached
  resource get an ambient error, others a resource error (A46);
- a deletion by the server in use (in SotW, a Listener or Cluster missing
  from a response; in delta xDS, ``removed_resources``): a resource error,
  unless the resource is cached and the server lists
  ``ignore_resource_deletion`` (gRFC A53), when it is logged and kept;
- the does-not-exist timer: 15 s per resource, started once the request
  naming it went out on a connected stream (gRFC A57), ends in a resource
  error;
- the servers of an authority unreachable (no fallback left, gRFC A71):
  ambient errors for cached resources, resource errors for the others.

Watcher exceptions are logged, never propagated to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from proxyless.clock import Clock
from proxyless.errors import ControlPlaneUnreachable, ResourceDoesNotExist
from proxyless.xds_client.state import AuthorityState, ResourceState, ServerState
from proxyless.xds_client.status import ClientStatus

__all__ = ["ResourceEvents"]

log = logging.getLogger("proxyless.xds_client")


class ResourceEvents:
    """Record transitions and watcher calls for the resources of one client."""

    def __init__(
        self, clock: Clock, node_id: str, dne_timeout: float, closed: Callable[[], bool]
    ) -> None:
        self._clock = clock
        self._node_id = node_id
        self.dne_timeout = dne_timeout
        self._closed = closed

    # -- updates --------------------------------------------------------------------------
    def update(
        self,
        res: ResourceState,
        value: Any,
        raw: bytes,
        version: str,
        now: float,
        source: ServerState,
    ) -> None:
        if not res.accept(value, raw, version, now, source):
            return
        ignored = getattr(value, "ignored_fields", ())
        if ignored and res.logged_ignored_version != version:
            res.logged_ignored_version = version
            log.info(
                "%s %r version %r: ignored %s",
                res.rtype.short_name,
                res.name,
                version,
                ", ".join(ignored),
            )
        self.notify(res, "on_changed", value)

    def nack(self, res: ResourceState, reason: str, version: str, now: float) -> None:
        res.reject(reason, version, now)
        err = res.nacked_error(self._node_id)
        self.notify(res, "on_ambient_error" if res.cached else "on_resource_error", err)

    def deletion(self, ss: ServerState, res: ResourceState, version: str, now: float) -> None:
        if ss.server.ignore_resource_deletion and res.cached:
            log.warning(
                "%s %r is missing from version %r of %s; kept because the server has "
                "ignore_resource_deletion",
                res.rtype.short_name,
                res.name,
                version,
                ss.server.server_uri,
            )
            return
        if res.cached:
            log.warning(
                "%s %r was deleted by %s", res.rtype.short_name, res.name, ss.server.server_uri
            )
        res.delete(now)
        err = ResourceDoesNotExist(
            f"{res.rtype.short_name} {res.name!r} was removed by xDS server {ss.server.server_uri}"
        )
        self.notify(res, "on_resource_error", err)

    def unreachable(self, auth: AuthorityState, reason: str) -> None:
        """The server ``auth`` uses failed and no other took over."""
        for res in auth.all_resources():
            if res.cached:
                err: Exception = ControlPlaneUnreachable(
                    f"{res.rtype.short_name} {res.name!r}: {reason} "
                    f"(using the cached version {res.version!r})"
                )
                self.notify(res, "on_ambient_error", err)
            elif res.status is ClientStatus.REQUESTED:
                res.error = reason
                res.error_time = self._clock.time()
                self.notify(res, "on_resource_error", res.unreachable_error(self._node_id, reason))

    def greet(self, res: ResourceState, watcher: Any, reason: str | None) -> None:
        """Tell a new watcher of a known resource what is known; ``reason``:
        the failure of the server in use, if it is failing."""
        if res.cached:
            self.safe(watcher.on_changed, res.value)
            if res.status is ClientStatus.NACKED and res.error:
                self.safe(watcher.on_ambient_error, res.nacked_error(self._node_id))
        elif res.status is ClientStatus.DOES_NOT_EXIST:
            self.safe(watcher.on_resource_error, res.does_not_exist_error(self._node_id))
        elif res.status is ClientStatus.NACKED:
            self.safe(watcher.on_resource_error, res.nacked_error(self._node_id))
        elif reason is not None:
            self.safe(watcher.on_resource_error, res.unreachable_error(self._node_id, reason))

    # -- does-not-exist timers ----------------------------------------------------------------
    def start_timers(self, ss: ServerState) -> None:
        for res in ss.all_resources():
            self.start_timer(res)

    def start_timer(self, res: ResourceState) -> None:
        if res.timer is not None or res.cached or res.status is not ClientStatus.REQUESTED:
            return
        res.timer = self._clock.call_later(self.dne_timeout, lambda: self._timer_fired(res))

    def cancel_timer(self, res: ResourceState) -> None:
        if res.timer is not None:
            res.timer.cancel()
            res.timer = None

    def _timer_fired(self, res: ResourceState) -> None:
        res.timer = None
        if self._closed() or res.cached or res.status is not ClientStatus.REQUESTED:
            return
        if res.authority.get(res.rtype.type_url, res.name) is not res:
            return
        res.status = ClientStatus.DOES_NOT_EXIST
        res.error = (
            f"not received within {self.dne_timeout:g}s of subscribing on a connected stream"
        )
        res.error_time = self._clock.time()
        log.warning(
            "%s %r does not exist on xDS server %s (node id %r)",
            res.rtype.short_name,
            res.name,
            res.server.server.server_uri,
            self._node_id,
        )
        self.notify(res, "on_resource_error", res.does_not_exist_error(self._node_id))

    # -- calling watchers ---------------------------------------------------------------------
    def notify(self, res: ResourceState, event: str, arg: Any) -> None:
        """Call ``event`` (``on_changed``, ``on_resource_error`` or
        ``on_ambient_error``) on every watcher of ``res``."""
        for w in list(res.watchers):
            self.safe(getattr(w, event), arg)

    def safe(self, fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:
            log.exception("xDS watcher %r failed", fn)
