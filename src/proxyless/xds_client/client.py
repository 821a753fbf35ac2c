"""The generic xDS client: ADS (State of the World or delta), shared by the whole process.

What it implements, with sources:

- State of the World by default; delta (incremental) xDS with a server whose
  bootstrap entry lists the ``delta_xds`` feature (Envoy's
  api-docs/xds_protocol.rst; what a response means in each variant is in
  :mod:`proxyless.xds_client.responses`).
- One ADS stream per xDS server (gRFC A27), shared by every watcher of every
  channel and transport; istio-agent keeps only one stream per pod.
- Per type: ``version_info`` and ``nonce``; an ACK carries the accepted
  version and the response's nonce. A response holding invalid resources is
  NACKed while its valid resources are still used, and an invalid resource
  keeps its last good value (gRFC A46). The messages are built and decoded
  in :mod:`proxyless.xds_client.protocol`; what is remembered per server,
  type and resource is in :mod:`proxyless.xds_client.state`.
- Watchers get changed / resource error / ambient error
  (:mod:`proxyless.xds_client.watcher`; what each event does to the cache is
  in :mod:`proxyless.xds_client.events`). The first watch of a name
  subscribes it; the last cancel unsubscribes it.
- Does-not-exist timer: 15 s per resource, started only once the request
  naming it was sent on a stream whose channel is connected; after a
  reconnect it is started again only for resources not cached (gRFC A57).
- LDS and CDS are "all resources required in SotW": a cached resource
  missing from a response of the server in use was deleted, unless the
  server lists the ``ignore_resource_deletion`` feature (gRFC A53), in which
  case the deletion is logged at WARNING and the resource kept.
- A stream failure before any response is an error. The client reconnects
  with exponential backoff and jitter, reset once a response arrives; a
  stream that ends after a response reconnects at once (gRFC A57), unless
  the last :data:`SHORT_STREAMS_IN_A_ROW` streams each lived less than
  :data:`SHORT_STREAM` (a server that drops every stream): then the
  reconnect waits the backoff.
  Everything subscribed is requested again on the new stream, with the
  cached versions.
- Fallback servers (gRFC A71; rules in :mod:`proxyless.xds_client.fallback`):
  when the server in use fails while some resource of its authority is not
  cached, the next server of the bootstrap's list is asked for every
  resource of the authority; with everything cached the cache keeps serving
  and the failed server keeps being retried. Resources from the fallback
  replace the cached ones. The first response of a higher-priority server
  makes it the server in use again and closes the lower-priority streams.
  Only when no server is left do the watchers hear of the failure: cached
  resources get an ambient error (keep using them), resources never
  received a resource error saying the server is unreachable.
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
from typing import Any, TypeAlias, TypeVar

from envoy.service.discovery.v3 import discovery_pb2

from proxyless.bootstrap import Bootstrap, XdsServer
from proxyless.clock import Clock, SystemClock
from proxyless.observability import xds_metrics
from proxyless.xds_client.backoff import Backoff
from proxyless.xds_client.events import ResourceEvents
from proxyless.xds_client.fallback import ServerChain
from proxyless.xds_client.loop import call_on_loop, in_loop, run_on_loop
from proxyless.xds_client.protocol import delta_request, discovery_request, node_proto
from proxyless.xds_client.resource_type import ResourceType
from proxyless.xds_client.responses import apply_delta, apply_sotw
from proxyless.xds_client.state import (
    AuthorityState,
    ResourceState,
    ServerState,
    TypeState,
    server_summaries,
    status_dump,
)
from proxyless.xds_client.status import ClientStatus, ResourceStatus
from proxyless.xds_client.transport import (
    AdsTransport,
    StreamEnd,
    failure_reason,
    tls_refresh_interval,
)
from proxyless.xds_client.watcher import ResourceWatcher

__all__ = ["DOES_NOT_EXIST_TIMEOUT", "XdsClient"]

log = logging.getLogger("proxyless.xds_client")

#: A stream that ends after a response sooner than this (seconds) counts as
#: short; after this many in a row, reconnects wait the backoff.
SHORT_STREAM = 1.0
SHORT_STREAMS_IN_A_ROW = 3

_T = TypeVar("_T")

Response: TypeAlias = "discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse"

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
        self._transport_factory = transport_factory
        self._servers: dict[tuple[Any, ...], ServerState] = {}
        #: per authority (keyed by its servers' keys): the resources and the fallback chain
        self._authorities: dict[tuple[Any, ...], AuthorityState] = {}
        self._node = node_proto(bootstrap)
        self._node_id = bootstrap.node.id
        self._closed = False
        self._events = ResourceEvents(
            self._clock, self._node_id, does_not_exist_timeout, lambda: self._closed
        )
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
        return run_on_loop(self._loop, lambda: status_dump(self._authorities.values()), timeout)

    def probe(
        self, rtype: ResourceType, name: str, timeout: float = 2.0
    ) -> tuple[str, ClientStatus | None, bool]:
        """``(last nonce of the type, status of name or None, cached)`` for one
        resource: lets a caller see that a response came and went without it."""

        def read() -> tuple[str, ClientStatus | None, bool]:
            auth = self._authority_for(name)
            active = auth.chain.active
            ss = self._servers.get(active.key) if active is not None else None
            if ss is None:
                return "", None, False
            nonce, _, _ = ss.probe(rtype.type_url, name)
            res = auth.get(rtype.type_url, name)
            return (nonce, None, False) if res is None else (nonce, res.status, res.cached)

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
    def _authority_for(self, name: str) -> AuthorityState:
        authority: str | None = None
        if name.startswith("xdstp://"):
            authority = name[len("xdstp://") :].split("/", 1)[0]
        servers = self.bootstrap.servers_for_authority(authority)
        key = tuple(s.key for s in servers)
        state = self._authorities.get(key)
        if state is None:
            state = self._authorities[key] = AuthorityState(ServerChain(servers))
        return state

    def _server_state(self, server: XdsServer) -> ServerState:
        state = self._servers.get(server.key)
        if state is None:
            state = ServerState(server, backoff=Backoff(rng=self._rng))
            self._servers[server.key] = state
        return state

    def _failing(self, server: XdsServer) -> bool:
        ss = self._servers.get(server.key)
        return ss is not None and ss.last_error is not None

    def _active_error(self, auth: AuthorityState) -> str | None:
        """The active server's failure, when it is failing (gRFC A71: the
        watchers of the authority hear of it)."""
        active = auth.chain.active
        ss = self._servers.get(active.key) if active is not None else None
        return ss.last_error if ss is not None else None

    def _add_watch(self, rtype: ResourceType, name: str, watcher: ResourceWatcher) -> None:
        if self._closed:
            return
        auth = self._authority_for(name)
        res = auth.get(rtype.type_url, name)
        if res is None:
            before = auth.chain.active
            added = auth.chain.on_new_resource(self._failing)
            if added and before is not None:
                self._log_fallback(before, added, "a resource not cached is watched")
            active = auth.chain.active
            assert active is not None
            res = ResourceState(rtype, name, self._server_state(active), auth)
            auth.types.setdefault(rtype.type_url, {})[name] = res
            res.watchers.append(watcher)
            for server in auth.chain.used:
                if server in added:
                    self._subscribe(self._server_state(server), auth.all_resources())
                else:
                    self._subscribe(self._server_state(server), (res,))
            reason = self._active_error(auth)
            if reason is not None and res.uncached and watcher in res.watchers:
                # The server is known to be unreachable right now: say so at once.
                self._events.safe(
                    watcher.on_resource_error, res.unreachable_error(self._node_id, reason)
                )
            return
        res.watchers.append(watcher)
        self._events.greet(res, watcher, self._active_error(auth))

    def _subscribe(self, ss: ServerState, resources: Iterable[ResourceState]) -> None:
        """Ask ``ss`` for ``resources`` too (connecting it if it has no channel)."""
        changed: list[TypeState] = []
        for res in resources:
            ts = ss.type_state(res.rtype)
            if ts.resources.get(res.name) is not res:
                ts.resources[res.name] = res
                changed.append(ts)
        if ss.transport is None:
            self._connect(ss)
        elif ss.stream_active:
            for ts in changed:
                self._request_soon(ss, ts)

    def _unsubscribe(self, ss: ServerState, resources: Iterable[ResourceState]) -> None:
        for res in resources:
            ts = ss.types.get(res.rtype.type_url)
            if ts is None or ts.resources.get(res.name) is not res:
                continue
            del ts.resources[res.name]
            if res.raw is not None and ts.by_raw.get(res.raw) == res.name:
                del ts.by_raw[res.raw]
            if ss.stream_active:
                self._request_soon(ss, ts)

    def _remove_watch(self, rtype: ResourceType, name: str, watcher: ResourceWatcher) -> None:
        if self._closed:
            return
        auth = self._authority_for(name)
        res = auth.get(rtype.type_url, name)
        if res is None:
            return
        try:
            res.watchers.remove(watcher)
        except ValueError:
            return
        if res.watchers:
            return
        self._events.cancel_timer(res)
        del auth.types[rtype.type_url][name]
        for server in auth.chain.used:
            ss = self._servers.get(server.key)
            if ss is not None:
                self._unsubscribe(ss, (res,))

    # -- fallback (loop; gRFC A71, rules in proxyless.xds_client.fallback) -----------------
    def _log_fallback(self, failed: XdsServer, added: Iterable[XdsServer], why: str) -> None:
        log.warning(
            "xDS server %s is unreachable and %s: falling back to %s",
            failed.server_uri,
            why,
            ", ".join(s.server_uri for s in added),
        )

    def _restore(self, ss: ServerState) -> None:
        """``ss`` answered: lower-priority servers of its authorities are dropped."""
        for auth in self._authorities.values():
            dropped = auth.chain.on_response(ss.server)
            if not dropped:
                continue
            log.info(
                "xDS server %s is back: switching back from %s",
                ss.server.server_uri,
                ", ".join(s.server_uri for s in dropped),
            )
            for server in dropped:
                other = self._servers.get(server.key)
                if other is not None:
                    self._unsubscribe(other, auth.all_resources())
        for key, other in list(self._servers.items()):
            if any(a.chain.position(other.server) is not None for a in self._authorities.values()):
                continue
            self._close_server(other)
            del self._servers[key]

    # -- stream lifecycle (loop) -----------------------------------------------------------
    def _connect(self, ss: ServerState) -> None:
        ss.reconnect_timer = None
        if self._closed or self._servers.get(ss.server.key) is not ss:
            return
        refresh = tls_refresh_interval(ss.server)
        now = self._clock.monotonic()
        if ss.transport is not None and refresh is not None and now - ss.creds_read_at >= refresh:
            # A65 refresh_interval: a new channel reads the TLS files again.
            log.info("reading the TLS files of xDS server %s again", ss.server.server_uri)
            ss.transport.close()
            ss.transport = None
        if ss.transport is None:
            ss.creds_read_at = now
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
                log.error("cannot create the xDS channel to %s: %s", ss.server.server_uri, exc)
                self._stream_failed(ss, str(exc))
                return
        ss.stream_id = ss.transport.start_stream()
        ss.stream_started_at = self._clock.monotonic()
        ss.stream_active = True
        ss.got_response = False
        ss.sent_node = False
        for type_url in ss.type_order:
            ts = ss.types[type_url]
            ts.nonce = ""
            ts.sent_names = set()
            # Types whose resources all went away: nothing to ask for.
            if ts.resources:
                self._send_request(ss, ts, first=True)
        if ss.connected:
            self._events.start_timers(ss)

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
            self._events.start_timers(ss)

    def _on_stream_end(self, ss: ServerState, end: StreamEnd) -> None:
        if self._closed or end.stream_id != ss.stream_id:
            return
        ss.stream_active = False
        for res in ss.all_resources():
            if res.authority.uses_now(ss):
                self._events.cancel_timer(res)
        if end.got_response:
            # A57: a stream that closes after a response is not an error, and
            # is reopened at once. A server that drops every stream right
            # after answering would then be reconnected to hundreds of times
            # a second: from the third such short stream in a row, the
            # reconnect waits the backoff (Envoy always does).
            lived = self._clock.monotonic() - ss.stream_started_at
            ss.short_streams = ss.short_streams + 1 if lived < SHORT_STREAM else 0
            if ss.short_streams >= SHORT_STREAMS_IN_A_ROW:
                delay = ss.backoff.next_delay()
                log.info(
                    "xDS stream to %s closed again after %.2fs (%s: %s); reconnecting in %.1fs",
                    ss.server.server_uri,
                    lived,
                    end.code.name,
                    end.details,
                    delay,
                )
                ss.reconnect_timer = self._clock.call_later(delay, lambda: self._connect(ss))
                return
            log.info(
                "xDS stream to %s closed (%s: %s); reconnecting",
                ss.server.server_uri,
                end.code.name,
                end.details,
            )
            ss.backoff.reset()
            self._connect(ss)
            return
        self._stream_failed(ss, failure_reason(ss.server, end))

    def _stream_failed(self, ss: ServerState, reason: str) -> None:
        if ss.last_error is None:  # working until now (gRFC A78 server_failure)
            xds_metrics.server_failure(self._node_id, ss.server.server_uri)
        ss.last_error = reason
        delay = ss.backoff.next_delay()
        resources = ss.all_resources()
        cached = sum(1 for res in resources if res.cached)
        # One line per attempt: the watchers hear of it without logging again.
        log.warning(
            "%s; retrying in %.1fs (%d of %d resources served from cache)",
            reason,
            delay,
            cached,
            len(resources),
        )
        if not self._closed and ss.transport is not None:
            ss.reconnect_timer = self._clock.call_later(delay, lambda: self._connect(ss))
        for auth in list(self._authorities.values()):
            added = auth.chain.on_failure(
                ss.server, uncached=auth.has_uncached(), failing=self._failing
            )
            if added is None:
                continue  # not the server this authority is using now
            if added:
                self._log_fallback(ss.server, added, "some resources are not cached")
                for server in added:
                    self._subscribe(self._server_state(server), auth.all_resources())
            active_error = self._active_error(auth)
            if active_error is None:
                continue  # a fallback server took over
            self._events.unreachable(auth, active_error)

    def _close_server(self, ss: ServerState) -> None:
        if ss.reconnect_timer is not None:
            ss.reconnect_timer.cancel()
            ss.reconnect_timer = None
        if ss.transport is not None:
            ss.transport.close()
            ss.transport = None
        ss.stream_active = False

    def _close(self) -> None:
        for auth in self._authorities.values():
            for res in auth.all_resources():
                self._events.cancel_timer(res)
        for ss in self._servers.values():
            self._close_server(ss)

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
                        self._events.start_timer(res)

    def _send_request(
        self,
        ss: ServerState,
        ts: TypeState,
        *,
        error: str | None = None,
        first: bool = False,
    ) -> None:
        """A request for ``ts``: its subscription, ACKing the last response
        (NACKing it with ``error``); ``first``: the first of the stream."""
        if ss.transport is None or not ss.stream_active:
            return
        ts.dirty = False
        if ss.server.delta and not ts.resources and not ts.sent_names and not ts.nonce:
            return  # an empty first delta request of a type would subscribe to everything
        node = None if ss.sent_node else self._node
        ss.sent_node = True
        if ss.server.delta:
            ss.transport.send(delta_request(ts, node=node, first=first, server=ss, error=error))
        else:
            ss.transport.send(discovery_request(ts, node=node, error=error))

    # -- responses ----------------------------------------------------------------------------
    def _on_response(self, ss: ServerState, stream_id: int, resp: Response) -> None:
        if self._closed or stream_id != ss.stream_id:
            return
        if not ss.got_response:
            ss.got_response = True
            ss.backoff.reset()
            if ss.last_error is not None:
                log.info("xDS stream to %s is back", ss.server.server_uri)
            ss.last_error = None
            ss.connected_once = True
            self._restore(ss)
            self._events.start_timers(ss)
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
        if isinstance(resp, discovery_pb2.DeltaDiscoveryResponse):
            version = resp.system_version_info
            decoded = apply_delta(ss, ts, resp, self._events, now)
        else:
            version = resp.version_info
            decoded = apply_sotw(ss, ts, resp, self._events, now)
        xds_metrics.resource_updates(self._node_id, ss.server.server_uri, resp, decoded)
        error_text = "; ".join(decoded.errors) if decoded.errors else None
        if error_text is not None:
            log.warning(
                "NACK %s version %r from %s: %s",
                ts.rtype.short_name,
                version,
                ss.server.server_uri,
                error_text,
            )
            self._send_request(ss, ts, error=error_text)
        else:
            ts.version = version
            self._send_request(ss, ts)
