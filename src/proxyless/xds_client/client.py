"""The generic xDS client: ADS State of the World, shared by the whole process.

What it implements, with sources:

- One ADS stream per xDS server (gRFC A27), shared by every watcher of every
  channel and transport; istio-agent keeps only one stream per pod.
- Per type: ``version_info`` and ``nonce``; an ACK carries the accepted
  version and the response's nonce. A response holding invalid resources is
  NACKed (previous version, the new nonce, ``error_detail`` listing every
  invalid resource and why) while its valid resources are still used, and an
  invalid resource keeps its last good value (gRFC A46).
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
thread). :meth:`watch` and :meth:`dump` may be called from any thread.
Watcher callbacks run on the loop, one at a time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format, struct_pb2
from google.rpc import status_pb2

from proxyless import __version__
from proxyless.bootstrap import Bootstrap, XdsServer
from proxyless.clock import Clock, SystemClock, TimerHandle
from proxyless.errors import ControlPlaneUnreachable, ResourceDoesNotExist, ResourceNacked
from proxyless.xds_client.backoff import Backoff
from proxyless.xds_client.resource_type import DecodeResult, ResourceType
from proxyless.xds_client.status import ClientStatus, ResourceStatus
from proxyless.xds_client.transport import AdsTransport, StreamEnd
from proxyless.xds_client.watcher import ResourceWatcher

__all__ = ["DOES_NOT_EXIST_TIMEOUT", "XdsClient"]

log = logging.getLogger("proxyless.xds_client")

_T = TypeVar("_T")

#: Seconds a subscribed resource may stay unanswered on a connected stream.
DOES_NOT_EXIST_TIMEOUT = 15.0

_RESOURCE_WRAPPER_URL = "type.googleapis.com/envoy.service.discovery.v3.Resource"

#: Features this client advertises in ``Node.client_features``.
CLIENT_FEATURES = ("xds.config.resource-in-sotw",)


@dataclass(eq=False, slots=True)
class _Resource:
    """State of one subscribed resource."""

    rtype: ResourceType
    name: str
    server: _ServerState
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
        )


@dataclass(eq=False, slots=True)
class _TypeState:
    rtype: ResourceType
    version: str = ""
    nonce: str = ""
    resources: dict[str, _Resource] = field(default_factory=dict)
    #: serialized resource -> name, for skipping the decode of unchanged resources
    by_raw: dict[bytes, str] = field(default_factory=dict)
    #: a subscription change waits to be sent (coalesced per loop turn)
    dirty: bool = False


@dataclass(eq=False, slots=True)
class _ServerState:
    server: XdsServer
    transport: AdsTransport | None = None
    types: dict[str, _TypeState] = field(default_factory=dict)
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

    @property
    def connected(self) -> bool:
        return self.stream_active and (self.channel_ready or self.got_response)


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
        self._servers: dict[tuple[Any, ...], _ServerState] = {}
        self._node = _node_proto(bootstrap)
        self._closed = False

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
        return self._run_on_loop(self._dump, timeout)

    def probe(
        self, rtype: ResourceType, name: str, timeout: float = 2.0
    ) -> tuple[str, ClientStatus | None, bool]:
        """``(last nonce of the type, status of name or None, cached)`` for one
        resource: lets a caller see that a response came and went without it."""

        def read() -> tuple[str, ClientStatus | None, bool]:
            ss = self._servers.get(self._server_for(name).key)
            ts = ss.types.get(rtype.type_url) if ss is not None else None
            if ts is None:
                return "", None, False
            res = ts.resources.get(name)
            if res is None:
                return ts.nonce, None, False
            return ts.nonce, res.status, res.cached

        return self._run_on_loop(read, timeout)

    def server_states(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Connection state per xDS server: uri, connected, last error."""
        return self._run_on_loop(self._server_states, timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._in_loop():
            self._close()
        else:
            try:
                self._run_on_loop(self._close, 5.0)
            except (RuntimeError, concurrent.futures.TimeoutError):
                pass

    # -- thread plumbing -------------------------------------------------------------
    def _in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if self._in_loop():
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _run_on_loop(self, fn: Callable[[], _T], timeout: float) -> _T:
        if self._in_loop():
            return fn()
        fut: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    # -- watches (loop) ----------------------------------------------------------------
    def _server_for(self, name: str) -> XdsServer:
        authority: str | None = None
        if name.startswith("xdstp://"):
            authority = name[len("xdstp://") :].split("/", 1)[0]
        return self.bootstrap.servers_for_authority(authority)[0]

    def _server_state(self, server: XdsServer) -> _ServerState:
        state = self._servers.get(server.key)
        if state is None:
            state = _ServerState(server, backoff=Backoff(rng=self._rng))
            self._servers[server.key] = state
        return state

    def _add_watch(self, rtype: ResourceType, name: str, watcher: ResourceWatcher) -> None:
        if self._closed:
            return
        ss = self._server_state(self._server_for(name))
        ts = ss.types.get(rtype.type_url)
        if ts is None:
            ts = ss.types[rtype.type_url] = _TypeState(rtype)
            ss.type_order.append(rtype.type_url)
        res = ts.resources.get(name)
        if res is None:
            res = ts.resources[name] = _Resource(rtype, name, ss)
            res.watchers.append(watcher)
            if ss.transport is None:
                self._connect(ss)
            elif ss.stream_active:
                self._request_soon(ss, ts)
            elif ss.last_error is not None:
                # The server is known to be unreachable right now: say so at once.
                self._safe(watcher.on_resource_error, self._unreachable(ss, res))
            return
        res.watchers.append(watcher)
        if res.cached:
            self._safe(watcher.on_changed, res.value)
            if res.status is ClientStatus.NACKED and res.error:
                self._safe(watcher.on_ambient_error, self._nacked(res))
        elif res.status is ClientStatus.DOES_NOT_EXIST:
            self._safe(watcher.on_resource_error, self._does_not_exist(res))
        elif res.status is ClientStatus.NACKED:
            self._safe(watcher.on_resource_error, self._nacked(res))
        elif ss.last_error is not None and not ss.connected:
            self._safe(watcher.on_resource_error, self._unreachable(ss, res))

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
    def _connect(self, ss: _ServerState) -> None:
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

    def _on_ready(self, ss: _ServerState, ready: bool) -> None:
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

    def _on_stream_end(self, ss: _ServerState, end: StreamEnd) -> None:
        if self._closed or end.stream_id != ss.stream_id:
            return
        ss.stream_active = False
        for ts in ss.types.values():
            for res in ts.resources.values():
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

    def _stream_failed(self, ss: _ServerState, reason: str) -> None:
        ss.last_error = reason
        delay = ss.backoff.next_delay()
        log.warning("%s; retrying in %.1fs", reason, delay)
        for ts in ss.types.values():
            for res in list(ts.resources.values()):
                if res.cached:
                    err: Exception = ControlPlaneUnreachable(
                        f"{res.rtype.short_name} {res.name!r}: {reason} (using the cached version {res.version!r})"
                    )
                    for w in list(res.watchers):
                        self._safe(w.on_ambient_error, err)
                elif res.status is ClientStatus.REQUESTED:
                    res.error = reason
                    res.error_time = self._clock.time()
                    unreachable = self._unreachable(ss, res)
                    for w in list(res.watchers):
                        self._safe(w.on_resource_error, unreachable)
        if not self._closed and ss.transport is not None:
            ss.reconnect_timer = self._clock.call_later(delay, lambda: self._connect(ss))

    def _close(self) -> None:
        for ss in self._servers.values():
            if ss.reconnect_timer is not None:
                ss.reconnect_timer.cancel()
            for ts in ss.types.values():
                for res in ts.resources.values():
                    self._cancel_timer(res)
            if ss.transport is not None:
                ss.transport.close()
                ss.transport = None
            ss.stream_active = False

    # -- requests ---------------------------------------------------------------------------
    def _request_soon(self, ss: _ServerState, ts: _TypeState) -> None:
        """Send ``ts``'s subscription once this loop turn is over, so a burst of
        watches (a config with a thousand clusters) is one request, not one
        per name — each of which the server would answer with every
        subscribed resource."""
        ts.dirty = True
        if not ss.flush_scheduled:
            ss.flush_scheduled = True
            self._loop.call_soon(self._flush, ss)

    def _flush(self, ss: _ServerState) -> None:
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
        ss: _ServerState,
        ts: _TypeState,
        *,
        version: str | None = None,
        nonce: str | None = None,
        error: str | None = None,
    ) -> None:
        if ss.transport is None or not ss.stream_active:
            return
        ts.dirty = False
        req = discovery_pb2.DiscoveryRequest(
            version_info=ts.version if version is None else version,
            resource_names=sorted(ts.resources),
            type_url=ts.rtype.type_url,
            response_nonce=ts.nonce if nonce is None else nonce,
        )
        if not ss.sent_node:
            req.node.CopyFrom(self._node)
            ss.sent_node = True
        if error is not None:
            req.error_detail.CopyFrom(
                status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=error)
            )
        ss.transport.send(req)

    # -- responses ----------------------------------------------------------------------------
    def _on_response(
        self, ss: _ServerState, stream_id: int, resp: discovery_pb2.DiscoveryResponse
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

        error_text = "; ".join(errors) if errors else None
        for name, result in seen.items():
            res = ts.resources.get(name)
            if res is None:
                continue  # not subscribed: extra resources are ignored (A27)
            self._cancel_timer(res)
            if result.errors:
                self._apply_nack(res, "; ".join(result.errors), resp.version_info, now)
            else:
                self._apply_update(res, result.value, raws[name], resp.version_info, now)

        if ts.rtype.all_required_in_sotw:
            for name, res in list(ts.resources.items()):
                if name in seen or not res.cached:
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
        self, res: _Resource, value: Any, raw: bytes, version: str, now: float
    ) -> None:
        changed = not res.cached or raw != res.raw
        if changed:
            ts = res.server.types[res.rtype.type_url]
            if res.raw is not None:
                ts.by_raw.pop(res.raw, None)
            ts.by_raw[raw] = res.name
        res.value, res.raw, res.cached = value, raw, True
        res.version = version
        res.status = ClientStatus.ACKED
        res.last_updated = now
        res.error = res.error_version = res.error_time = None
        if not changed:
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
        for w in list(res.watchers):
            self._safe(w.on_changed, value)

    def _apply_nack(self, res: _Resource, reason: str, version: str, now: float) -> None:
        res.status = ClientStatus.NACKED
        res.error, res.error_version, res.error_time = reason, version, now
        err = self._nacked(res)
        for w in list(res.watchers):
            if res.cached:
                self._safe(w.on_ambient_error, err)
            else:
                self._safe(w.on_resource_error, err)

    def _apply_deletion(self, ss: _ServerState, res: _Resource, version: str, now: float) -> None:
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
        if res.raw is not None:
            ss.types[res.rtype.type_url].by_raw.pop(res.raw, None)
        res.value, res.raw, res.cached = None, None, False
        res.status = ClientStatus.DOES_NOT_EXIST
        res.version = ""
        res.last_updated = now
        log.warning("%s %r was deleted by %s", res.rtype.short_name, res.name, ss.server.server_uri)
        err = ResourceDoesNotExist(
            f"{res.rtype.short_name} {res.name!r} was removed by xDS server {ss.server.server_uri}"
        )
        for w in list(res.watchers):
            self._safe(w.on_resource_error, err)

    # -- does-not-exist timers ------------------------------------------------------------------
    def _start_timers(self, ss: _ServerState) -> None:
        for ts in ss.types.values():
            for res in ts.resources.values():
                self._start_timer(res)

    def _start_timer(self, res: _Resource) -> None:
        if res.timer is not None or res.cached or res.status is not ClientStatus.REQUESTED:
            return
        res.timer = self._clock.call_later(self._dne_timeout, lambda: self._timer_fired(res))

    def _cancel_timer(self, res: _Resource) -> None:
        if res.timer is not None:
            res.timer.cancel()
            res.timer = None

    def _timer_fired(self, res: _Resource) -> None:
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
        err = self._does_not_exist(res)
        for w in list(res.watchers):
            self._safe(w.on_resource_error, err)

    # -- errors -----------------------------------------------------------------------------------
    def _where(self, res: _Resource) -> str:
        return f"xDS server {res.server.server.server_uri}, node id {self.bootstrap.node.id!r}"

    def _does_not_exist(self, res: _Resource) -> ResourceDoesNotExist:
        return ResourceDoesNotExist(
            f"{res.rtype.short_name} resource {res.name!r} does not exist "
            f"({res.error or 'removed by the server'}; {self._where(res)})"
        )

    def _nacked(self, res: _Resource) -> ResourceNacked:
        kept = f"; still using version {res.version!r}" if res.cached else ""
        return ResourceNacked(
            f"{res.rtype.short_name} resource {res.name!r} version {res.error_version!r} "
            f"was rejected: {res.error}{kept} ({self._where(res)})"
        )

    def _unreachable(self, ss: _ServerState, res: _Resource) -> ControlPlaneUnreachable:
        return ControlPlaneUnreachable(
            f"{res.rtype.short_name} resource {res.name!r} not received: {ss.last_error} "
            f"(node id {self.bootstrap.node.id!r})"
        )

    def _safe(self, fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:
            log.exception("xDS watcher %r failed", fn)

    # -- status ---------------------------------------------------------------------------------------
    def _dump(self) -> list[ResourceStatus]:
        out = [
            res.to_status()
            for ss in self._servers.values()
            for ts in ss.types.values()
            for res in ts.resources.values()
        ]
        order = {"LDS": 0, "RDS": 1, "CDS": 2, "EDS": 3, "SDS": 4}
        out.sort(key=lambda s: (order.get(s.type_name, 9), s.type_name, s.name))
        return out

    def _server_states(self) -> list[dict[str, Any]]:
        return [
            {
                "server_uri": ss.server.server_uri,
                "connected": ss.connected,
                "ever_connected": ss.connected_once,
                "last_error": ss.last_error,
            }
            for ss in self._servers.values()
        ]


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


def _node_proto(bootstrap: Bootstrap) -> base_pb2.Node:
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
