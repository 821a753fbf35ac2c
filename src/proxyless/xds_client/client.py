"""The generic xDS client: ADS State of the World, shared by the whole process.

What it implements, with sources:

- One ADS stream per xDS server (gRFC A27), shared by every watcher of every
  channel and transport; istio-agent keeps only one stream per pod.
- Per type: ``version_info`` and ``nonce``; an ACK carries the accepted
  version and the response's nonce. A response holding invalid resources is
  NACKed while its valid resources are still used, and an invalid resource
  keeps its last good value (gRFC A46). The messages are built and decoded
  in :mod:`proxyless.xds_client.protocol`; what is remembered per server,
  type and resource is in :mod:`proxyless.xds_client.state`.
- Watchers get changed / resource error / ambient error
  (:mod:`proxyless.xds_client.watcher`). The first watch of a name subscribes
  it; the last cancel unsubscribes it.
- Does-not-exist timer: 15 s per resource, started only once the request
  naming it was sent on a stream whose channel is connected; after a
  reconnect it is started again only for resources not cached (gRFC A57).
- LDS and CDS are "all resources required in SotW": a cached resource
  missing from a response was deleted, unless the server lists the
  ``ignore_resource_deletion`` feature (gRFC A53), in which case the deletion
  is logged at WARNING and the resource kept.
- A stream failure before any response is an error: watchers of cached
  resources get an ambient error (keep using them), watchers of resources
  never received get a resource error saying the server is unreachable. The
  client reconnects with exponential backoff and jitter, reset once a
  response arrives; a stream that ends after a response reconnects at once
  (gRFC A57). Everything subscribed is requested again on the new stream,
  with the cached versions.
- :meth:`XdsClient.dump` returns a :class:`ResourceStatus` per resource, the
  shape of CSDS (gRFC A40).
- Federation (gRFC A47): an ``xdstp://authority/...`` name goes to the
  servers of that authority in the bootstrap.

Threading: all state lives on one asyncio loop (the Mesh's background
thread; :mod:`proxyless.xds_client.loop`). :meth:`watch` and :meth:`dump`
may be called from any thread. Watcher callbacks run on the loop, one at a
time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from envoy.service.discovery.v3 import discovery_pb2

from proxyless.bootstrap import Bootstrap, XdsServer
from proxyless.clock import Clock, SystemClock
from proxyless.errors import ControlPlaneUnreachable, ResourceDoesNotExist
from proxyless.observability import xds_metrics
from proxyless.xds_client.backoff import Backoff
from proxyless.xds_client.loop import call_on_loop, in_loop, run_on_loop
from proxyless.xds_client.protocol import decode_response, discovery_request, node_proto
from proxyless.xds_client.resource_type import ResourceType
from proxyless.xds_client.state import (
    ResourceState,
    ServerState,
    TypeState,
    server_summaries,
    status_dump,
)
from proxyless.xds_client.status import ClientStatus, ResourceStatus
from proxyless.xds_client.transport import AdsTransport, StreamEnd
from proxyless.xds_client.watcher import ResourceWatcher

__all__ = ["DOES_NOT_EXIST_TIMEOUT", "XdsClient"]

log = logging.getLogger("proxyless.xds_client")

_T = TypeVar("_T")

#: Seconds a subscribed resource may stay unanswered on a connected stream.
DOES_NOT_EXIST_TIMEOUT = 15.0


class XdsClient:
    """A process-wide xDS client for one bootstrap (see the module docstring)."""

    def __init__(
        self,
        bootstrap: Bootstrap,
        loop: asyncio.AbstractEventLoop,
        *,
        resource_types: Iterable[ResourceType],
        clock: Clock | None = None,
        rng: random.Random | None = None,
        does_not_exist_timeout: float = DOES_NOT_EXIST_TIMEOUT,
        transport_factory: Callable[..., AdsTransport] = AdsTransport,
    ) -> None:
        self.bootstrap = bootstrap
        self._loop = loop
        self._types = {t.type_url: t for t in resource_types}
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._dne_timeout = does_not_exist_timeout
        self._transport_factory = transport_factory
        self._servers: dict[tuple[Any, ...], ServerState] = {}
        self._node = node_proto(bootstrap)
        self._node_id = bootstrap.node.id
        self._closed = False
        xds_metrics.track(self)  # gRFC A78 gauges

    # -- public API (any thread) ---------------------------------------------------
    def watch(self, rtype: ResourceType, name: str, watcher: ResourceWatcher) -> Callable[[], None]:
        """Start watching ``name``; returns a function that cancels the watch."""
        if rtype.type_url not in self._types:
            self._types[rtype.type_url] = rtype
        self._call_on_loop(self._add_watch, rtype, name, watcher)

        def cancel() -> None:
            self._call_on_loop(self._remove_watch, rtype, name, watcher)

        return cancel

    def dump(self, timeout: float = 5.0) -> list[ResourceStatus]:
        """Status of every subscribed resource (CSDS shape), sorted by type and name."""
        return run_on_loop(self._loop, lambda: status_dump(self._servers.values()), timeout)

    def probe(
        self, rtype: ResourceType, name: str, timeout: float = 2.0
    ) -> tuple[str, ClientStatus | None, bool]:
        """``(last nonce of the type, status of name or None, cached)`` for one
        resource: lets a caller see that a response came and went without it."""

        def read() -> tuple[str, ClientStatus | None, bool]:
            ss = self._servers.get(self._server_for(name).key)
            return ("", None, False) if ss is None else ss.probe(rtype.type_url, name)

        return run_on_loop(self._loop, read, timeout)

    def server_states(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Connection state per xDS server: uri, connected, last error."""
        return run_on_loop(self._loop, lambda: server_summaries(self._servers.values()), timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        xds_metrics.untrack(self)
        if in_loop(self._loop):
            self._close()
        else:
            try:
                run_on_loop(self._loop, self._close, 5.0)
            except (RuntimeError, concurrent.futures.TimeoutError):
                pass

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the client's loop after what runs there now (for
        watchers that want one pass after all the updates of a response)."""
        if in_loop(self._loop):
            self._loop.call_soon(fn)
        else:
            call_on_loop(self._loop, fn)

    def _call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the client's loop (the config watcher and the
        Mesh schedule their own work there through it)."""
        call_on_loop(self._loop, fn, *args)

    # -- watches (loop) ----------------------------------------------------------------
    def _server_for(self, name: str) -> XdsServer:
        authority: str | None = None
        if name.startswith("xdstp://"):
            authority = name[len("xdstp://") :].split("/", 1)[0]
        return self.bootstrap.servers_for_authority(authority)[0]

    def _server_state(self, server: XdsServer) -> ServerState:
        state = self._servers.get(server.key)
        if state is None:
            state = ServerState(server, backoff=Backoff(rng=self._rng))
            self._servers[server.key] = state
        return state

    def _add_watch(self, rtype: ResourceType, name: str, watcher: ResourceWatcher) -> None:
        if self._closed:
            return
        ss = self._server_state(self._server_for(name))
        ts = ss.types.get(rtype.type_url)
        if ts is None:
            ts = ss.types[rtype.type_url] = TypeState(rtype)
            ss.type_order.append(rtype.type_url)
        res = ts.resources.get(name)
        if res is None:
            res = ts.resources[name] = ResourceState(rtype, name, ss)
            res.watchers.append(watcher)
            if ss.transport is None:
                self._connect(ss)
            elif ss.stream_active:
                self._request_soon(ss, ts)
            elif ss.last_error is not None:
                # The server is known to be unreachable right now: say so at once.
                self._safe(watcher.on_resource_error, res.unreachable_error(self._node_id))
            return
        res.watchers.append(watcher)
        if res.cached:
            self._safe(watcher.on_changed, res.value)
            if res.status is ClientStatus.NACKED and res.error:
                self._safe(watcher.on_ambient_error, res.nacked_error(self._node_id))
        elif res.status is ClientStatus.DOES_NOT_EXIST:
            self._safe(watcher.on_resource_error, res.does_not_exist_error(self._node_id))
        elif res.status is ClientStatus.NACKED:
            self._safe(watcher.on_resource_error, res.nacked_error(self._node_id))
        elif ss.last_error is not None and not ss.connected:
            self._safe(watcher.on_resource_error, res.unreachable_error(self._node_id))

    def _remove_watch(self, rtype: ResourceType, name: str, watcher: ResourceWatcher) -> None:
        if self._closed:
            return
        ss = self._servers.get(self._server_for(name).key)
        ts = ss.types.get(rtype.type_url) if ss else None
        res = ts.resources.get(name) if ts else None
        if ss is None or ts is None or res is None:
            return
        try:
            res.watchers.remove(watcher)
        except ValueError:
            return
        if res.watchers:
            return
        self._cancel_timer(res)
        del ts.resources[name]
        if res.raw is not None:
            ts.by_raw.pop(res.raw, None)
        if ss.stream_active:
            self._request_soon(ss, ts)

    # -- stream lifecycle (loop) -----------------------------------------------------------
    def _connect(self, ss: ServerState) -> None:
        ss.reconnect_timer = None
        if self._closed:
            return
        if ss.transport is None:
            try:
                ss.transport = self._transport_factory(
                    ss.server,
                    self._loop,
                    on_response=lambda sid, resp, ss=ss: self._on_response(ss, sid, resp),
                    on_stream_end=lambda end, ss=ss: self._on_stream_end(ss, end),
                    on_ready=lambda ready, ss=ss: self._on_ready(ss, ready),
                )
            except (OSError, ValueError) as exc:
                # Bad credentials files: nothing will ever connect; tell every watcher.
                ss.last_error = str(exc)
                log.error("cannot create the xDS channel to %s: %s", ss.server.server_uri, exc)
                self._stream_failed(ss, str(exc))
                return
        ss.stream_id = ss.transport.start_stream()
        ss.stream_active = True
        ss.got_response = False
        ss.sent_node = False
        for type_url in ss.type_order:
            ts = ss.types[type_url]
            # Restart also sends types whose resources all went away: nothing to ask for.
            if ts.resources:
                ts.nonce = ""
                self._send_request(ss, ts)
        if ss.connected:
            self._start_timers(ss)

    def _on_ready(self, ss: ServerState, ready: bool) -> None:
        if self._closed:
            return
        was = ss.connected
        ss.channel_ready = ready
        if ready and not was and ss.connected:
            if not ss.connected_once:
                log.info(
                    "connected to xDS server %s (node id %r)",
                    ss.server.server_uri,
                    self.bootstrap.node.id,
                )
            ss.connected_once = True
            self._start_timers(ss)

    def _on_stream_end(self, ss: ServerState, end: StreamEnd) -> None:
        if self._closed or end.stream_id != ss.stream_id:
            return
        ss.stream_active = False
        for res in ss.all_resources():
            self._cancel_timer(res)
        if end.got_response:
            # A57: a stream that closes after a response is not an error.
            log.info(
                "xDS stream to %s closed (%s: %s); reconnecting",
                ss.server.server_uri,
                end.code.name,
                end.details,
            )
            ss.backoff.reset()
            self._connect(ss)
            return
        reason = f"xDS server {ss.server.server_uri} unreachable: {end.code.name}: {end.details}"
        self._stream_failed(ss, reason)

    def _stream_failed(self, ss: ServerState, reason: str) -> None:
        if ss.last_error is None:  # working until now (gRFC A78 server_failure)
            xds_metrics.server_failure(self._node_id, ss.server.server_uri)
        ss.last_error = reason
        delay = ss.backoff.next_delay()
        resources = list(ss.all_resources())
        cached = sum(1 for res in resources if res.cached)
        # One line per attempt: the watchers hear of it without logging again.
        log.warning(
            "%s; retrying in %.1fs (%d of %d resources served from cache)",
            reason,
            delay,
            cached,
            len(resources),
        )
        for res in resources:
            if res.cached:
                err: Exception = ControlPlaneUnreachable(
                    f"{res.rtype.short_name} {res.name!r}: {reason} (using the cached version {res.version!r})"
                )
                self._notify(res, "on_ambient_error", err)
            elif res.status is ClientStatus.REQUESTED:
                res.error = reason
                res.error_time = self._clock.time()
                unreachable = res.unreachable_error(self._node_id)
                self._notify(res, "on_resource_error", unreachable)
        if not self._closed and ss.transport is not None:
            ss.reconnect_timer = self._clock.call_later(delay, lambda: self._connect(ss))

    def _close(self) -> None:
        for ss in self._servers.values():
            if ss.reconnect_timer is not None:
                ss.reconnect_timer.cancel()
            for res in ss.all_resources():
                self._cancel_timer(res)
            if ss.transport is not None:
                ss.transport.close()
                ss.transport = None
            ss.stream_active = False

    # -- requests ---------------------------------------------------------------------------
    def _request_soon(self, ss: ServerState, ts: TypeState) -> None:
        """Send ``ts``'s subscription once this loop turn is over, so a burst of
        watches (a config with a thousand clusters) is one request, not one
        per name — each of which the server would answer with every
        subscribed resource."""
        ts.dirty = True
        if not ss.flush_scheduled:
            ss.flush_scheduled = True
            self._loop.call_soon(self._flush, ss)

    def _flush(self, ss: ServerState) -> None:
        ss.flush_scheduled = False
        if self._closed or not ss.stream_active:
            return
        for type_url in ss.type_order:
            ts = ss.types[type_url]
            if ts.dirty:
                self._send_request(ss, ts)
                if ss.connected:
                    for res in ts.resources.values():
                        self._start_timer(res)

    def _send_request(
        self,
        ss: ServerState,
        ts: TypeState,
        *,
        version: str | None = None,
        nonce: str | None = None,
        error: str | None = None,
    ) -> None:
        if ss.transport is None or not ss.stream_active:
            return
        ts.dirty = False
        node = None if ss.sent_node else self._node
        ss.sent_node = True
        ss.transport.send(
            discovery_request(ts, node=node, version=version, nonce=nonce, error=error)
        )

    # -- responses ----------------------------------------------------------------------------
    def _on_response(
        self, ss: ServerState, stream_id: int, resp: discovery_pb2.DiscoveryResponse
    ) -> None:
        if self._closed or stream_id != ss.stream_id:
            return
        if not ss.got_response:
            ss.got_response = True
            ss.backoff.reset()
            if ss.last_error is not None:
                log.info("xDS stream to %s is back", ss.server.server_uri)
            ss.last_error = None
            ss.connected_once = True
            self._start_timers(ss)
        ts = ss.types.get(resp.type_url)
        if ts is None:
            log.warning(
                "xDS server %s sent type %s, which was never requested; ignored",
                ss.server.server_uri,
                resp.type_url,
            )
            return
        ts.nonce = resp.nonce
        now = self._clock.time()
        decoded = decode_response(ts, resp)
        xds_metrics.resource_updates(self._node_id, ss.server.server_uri, resp, decoded)
        error_text = "; ".join(decoded.errors) if decoded.errors else None
        for name, result in decoded.results.items():
            res = ts.resources.get(name)
            if res is None:
                continue  # not subscribed: extra resources are ignored (A27)
            self._cancel_timer(res)
            if result.errors:
                self._apply_nack(res, "; ".join(result.errors), resp.version_info, now)
            else:
                self._apply_update(res, result.value, decoded.raws[name], resp.version_info, now)

        if ts.rtype.all_required_in_sotw:
            for name, res in list(ts.resources.items()):
                if name in decoded.results or not res.cached:
                    continue
                self._apply_deletion(ss, res, resp.version_info, now)

        if error_text is not None:
            log.warning(
                "NACK %s version %r from %s: %s",
                ts.rtype.short_name,
                resp.version_info,
                ss.server.server_uri,
                error_text,
            )
            self._send_request(ss, ts, error=error_text)
        else:
            ts.version = resp.version_info
            self._send_request(ss, ts)

    def _apply_update(
        self, res: ResourceState, value: Any, raw: bytes, version: str, now: float
    ) -> None:
        if not res.accept(value, raw, version, now):
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
        self._notify(res, "on_changed", value)

    def _apply_nack(self, res: ResourceState, reason: str, version: str, now: float) -> None:
        res.reject(reason, version, now)
        err = res.nacked_error(self._node_id)
        self._notify(res, "on_ambient_error" if res.cached else "on_resource_error", err)

    def _apply_deletion(
        self, ss: ServerState, res: ResourceState, version: str, now: float
    ) -> None:
        if ss.server.ignore_resource_deletion:
            log.warning(
                "%s %r is missing from version %r of %s; kept because the server has "
                "ignore_resource_deletion",
                res.rtype.short_name,
                res.name,
                version,
                ss.server.server_uri,
            )
            return
        res.delete(now)
        log.warning("%s %r was deleted by %s", res.rtype.short_name, res.name, ss.server.server_uri)
        err = ResourceDoesNotExist(
            f"{res.rtype.short_name} {res.name!r} was removed by xDS server {ss.server.server_uri}"
        )
        self._notify(res, "on_resource_error", err)

    # -- does-not-exist timers ------------------------------------------------------------------
    def _start_timers(self, ss: ServerState) -> None:
        for res in ss.all_resources():
            self._start_timer(res)

    def _start_timer(self, res: ResourceState) -> None:
        if res.timer is not None or res.cached or res.status is not ClientStatus.REQUESTED:
            return
        res.timer = self._clock.call_later(self._dne_timeout, lambda: self._timer_fired(res))

    def _cancel_timer(self, res: ResourceState) -> None:
        if res.timer is not None:
            res.timer.cancel()
            res.timer = None

    def _timer_fired(self, res: ResourceState) -> None:
        res.timer = None
        if self._closed or res.cached or res.status is not ClientStatus.REQUESTED:
            return
        ts = res.server.types.get(res.rtype.type_url)
        if ts is None or ts.resources.get(res.name) is not res:
            return
        res.status = ClientStatus.DOES_NOT_EXIST
        res.error = (
            f"not received within {self._dne_timeout:g}s of subscribing on a connected stream"
        )
        res.error_time = self._clock.time()
        log.warning(
            "%s %r does not exist on xDS server %s (node id %r)",
            res.rtype.short_name,
            res.name,
            res.server.server.server_uri,
            self.bootstrap.node.id,
        )
        err = res.does_not_exist_error(self._node_id)
        self._notify(res, "on_resource_error", err)

    # -- errors -----------------------------------------------------------------------------------
    def _notify(self, res: ResourceState, event: str, arg: Any) -> None:
        """Call ``event`` (``on_changed``, ``on_resource_error`` or
        ``on_ambient_error``) on every watcher of ``res``."""
        for w in list(res.watchers):
            self._safe(getattr(w, event), arg)

    def _safe(self, fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:
            log.exception("xDS watcher %r failed", fn)
