"""One grpcio channel per endpoint, shared by the whole process.

Every proxyless channel that sends to ``10.0.0.7:9080`` with the same
security settings uses the same underlying ``grpc.Channel`` (or, for
``grpc.aio``, the same ``grpc.aio.Channel`` per event loop). Channels are
created lazily on the first call to the endpoint and closed once the
endpoint has left every cluster that listed it and its in-flight calls have
ended, so removing an endpoint from EDS drains it without failing a call.

Multicallables are cached per (channel, method, serializers) because
creating one costs several microseconds, a visible share of a 500 µs call.

Endpoints of TLS clusters get channels of their own (:meth:`ChannelPool.get_tls`),
keyed by the cluster's :class:`~proxyless.security.credentials.ClientTls`: a
grpcio channel to a local forwarder that makes and verifies the TLS
connections (:mod:`._tls_forward`). When the credentials rotate, the
channels made with the old ones are retired at once (idle ones close, busy
ones close once their in-flight calls have ended) and the next call makes a
new channel with the new ones.

Connectivity: each pooled channel follows its connection's state and
reports it to the :class:`~proxyless.lb.state.EndpointState` of every
cluster endpoint it serves (:meth:`PooledChannel.watch`, called when a call
first takes the channel for that endpoint), so the pickers skip an endpoint
whose connection is CONNECTING or in TRANSIENT_FAILURE while others are
READY (:mod:`proxyless.lb.pickers`). A sync channel is followed with
``channel.subscribe(..., try_to_connect=True)`` (grpcio runs one polling
thread per subscribed channel). A ``grpc.aio`` channel is followed by a task
on its own event loop (``get_state`` / ``wait_for_state_change``) that ends
when the channel closes: it sees exactly the connection the aio calls use,
costs no thread, and is there even when no sync channel to the address
exists, which sharing the sync pool's state would not give. When one
endpoint is served by several channels (sync and aio, several loops) the
last change reported wins. A closed channel makes its endpoints' state
unknown again (``ready``), and the next call that takes a channel for them
registers it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import grpc
import grpc.aio

from proxyless.grpc._tls import explain_failure
from proxyless.grpc._tls_forward import Forwarder, hub
from proxyless.lb.state import EndpointState
from proxyless.runtime.call import Attempt
from proxyless.runtime.cluster import release_refs, retain_refs
from proxyless.security.credentials import ClientTls, ClusterCredentials

__all__ = ["AIO_POOL", "POOL", "RETIRE_GRACE", "ChannelPool", "PooledChannel", "attempt_failed"]

log = logging.getLogger("proxyless.grpc")

_Key = tuple[Hashable, ...]

#: Seconds a retired idle TLS channel stays open before it is closed.
RETIRE_GRACE = 1.0

# Guards PooledChannel.watched and the endpoint states it writes (rare operations).
_WATCH_LOCK = threading.Lock()


class PooledChannel:
    """A grpc channel to one endpoint plus its cached multicallables."""

    __slots__ = (
        "_callables",
        "_follower",
        "address",
        "channel",
        "closing",
        "connectivity",
        "forwarder",
        "in_flight",
        "key",
        "owner",
        "tls",
        "watched",
    )

    def __init__(
        self, key: _Key, address: str, channel: Any, forwarder: Forwarder | None = None
    ) -> None:
        self.key = key
        self.address = address
        self.channel = channel
        self.in_flight = 0
        self.closing = False
        #: for a TLS cluster's endpoint: the forwarder and the credentials it uses
        self.forwarder = forwarder
        self.tls: ClientTls | None = forwarder.tls if forwarder is not None else None
        #: the credentials ``tls`` came from (whose rotation retires this channel)
        self.owner: ClusterCredentials | None = None
        self._callables: dict[tuple[Any, ...], Any] = {}
        #: the connection's state as last seen (a ChannelConnectivity name; None: unknown)
        self.connectivity: str | None = None
        #: the cluster endpoints this channel reports its state to
        self.watched: weakref.WeakSet[EndpointState] = weakref.WeakSet()
        #: what follows the state: the subscribed callback (sync) or the task (aio)
        self._follower: Any = None

    def watch(self, endpoint: EndpointState) -> None:
        """Report this channel's connectivity to ``endpoint`` from now on
        (the state known now at once)."""
        with _WATCH_LOCK:
            self.watched.add(endpoint)
            endpoint.watcher = self
            endpoint.set_connectivity(self.connectivity)

    def report(self, state: str | None) -> None:
        """The connection's state changed to ``state``."""
        with _WATCH_LOCK:
            if self._follower is None:
                return  # stopped: a late report of a closed channel
            self.connectivity = state
            for endpoint in self.watched:
                endpoint.set_connectivity(state)

    def follow(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Start following the channel's connectivity (see the module docstring)."""
        if loop is None:
            ch = self.channel

            def changed(state: grpc.ChannelConnectivity) -> None:
                self.report(state.name)

            self._follower = changed
            ch.subscribe(changed, try_to_connect=True)
            return
        self._follower = True  # until the task exists
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._follower = loop.create_task(self._follow_aio())
        else:
            try:
                loop.call_soon_threadsafe(self._start_aio_task, loop)
            except RuntimeError:  # a closed loop: its channel takes no calls
                pass

    def _start_aio_task(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._follower is True:
            self._follower = loop.create_task(self._follow_aio())

    async def _follow_aio(self) -> None:
        ch = self.channel
        try:
            state = ch.get_state(try_to_connect=True)
            while state is not grpc.ChannelConnectivity.SHUTDOWN and self._follower is not None:
                self.report(state.name)
                await ch.wait_for_state_change(state)
                state = ch.get_state(try_to_connect=False)
        except Exception as exc:  # a channel closed under the watch
            log.debug("stopped following %s: %r", self.address, exc)

    def stop_following(self) -> None:
        """The channel is closing: its endpoints' state is unknown again."""
        follower = self._follower
        with _WATCH_LOCK:
            self._follower = None
            self.connectivity = None
            for endpoint in self.watched:
                if endpoint.watcher is self:
                    endpoint.watcher = None
                    endpoint.set_connectivity(None)
            self.watched = weakref.WeakSet()
        if callable(follower) and not isinstance(self.channel, grpc.aio.Channel):
            try:
                self.channel.unsubscribe(follower)
            except Exception:  # already closed
                pass

    def callable(
        self,
        kind: str,
        method: str,
        request_serializer: Callable[[Any], bytes] | None,
        response_deserializer: Callable[[bytes], Any] | None,
    ) -> Any:
        key = (kind, method, request_serializer, response_deserializer)
        mc = self._callables.get(key)
        if mc is None:
            if kind.endswith("_with_call"):
                base = self.callable(
                    kind[: -len("_with_call")], method, request_serializer, response_deserializer
                )
                mc = base.with_call
            else:
                mc = getattr(self.channel, kind)(
                    method,
                    request_serializer=request_serializer,
                    response_deserializer=response_deserializer,
                )
            self._callables[key] = mc
        return mc

    def __repr__(self) -> str:
        return f"PooledChannel({self.address}, in_flight={self.in_flight})"


def _plain(make: Any) -> Any:
    """grpcio's channel constructor itself, even when an instrumentation
    (OpenTelemetry's gRPC client instrumentation) has wrapped it: endpoint
    channels carry attempts of calls proxyless traces itself, and an
    interceptor there would trace them again and replace the attempt's
    trace context (docs/observability.md)."""
    return inspect.unwrap(make)


class ChannelPool:
    """Process-wide pool of per-endpoint channels (see the module docstring)."""

    def __init__(self, options: tuple[tuple[str, Any], ...] = ()) -> None:
        self._lock = threading.Lock()
        self._entries: dict[_Key, PooledChannel] = {}
        self._refs: dict[str, int] = {}  # address -> clusters whose EDS lists it
        self._options = options
        #: the cluster credentials whose rotations retire this pool's channels
        self._watched: weakref.WeakSet[ClusterCredentials] = weakref.WeakSet()

    def get(
        self,
        address: str,
        credentials: grpc.ChannelCredentials | None = None,
        security_key: Hashable = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        authority: str | None = None,
        options: tuple[tuple[str, Any], ...] = (),
    ) -> PooledChannel:
        """The channel to ``address`` (created on first use) with the
        channel ``options`` the application gave its proxyless channel."""
        key: _Key = (address, security_key, loop, authority, options)
        entry = self._entries.get(key)
        if entry is not None and not entry.closing:
            return entry
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.closing:
                opts = self._channel_options(options, authority)
                if loop is not None:
                    ch: Any = (
                        _plain(grpc.aio.secure_channel)(address, credentials, options=opts)
                        if credentials is not None
                        else _plain(grpc.aio.insecure_channel)(address, options=opts)
                    )
                else:
                    ch = (
                        _plain(grpc.secure_channel)(address, credentials, options=opts)
                        if credentials is not None
                        else _plain(grpc.insecure_channel)(address, options=opts)
                    )
                entry = PooledChannel(key, address, ch)
                self._entries[key] = entry
                entry.follow(loop)
        return entry

    def get_tls(
        self,
        address: str,
        tls: ClientTls,
        owner: ClusterCredentials,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        authority: str | None = None,
        options: tuple[tuple[str, Any], ...] = (),
    ) -> PooledChannel:
        """The channel to ``address`` whose connections use ``tls``, the
        current credentials of ``owner`` (created on first use; should
        ``owner`` have rotated since ``tls`` was read, its newest ones)."""
        current = owner._current
        if current is not None and current is not tls:
            tls = current  # never open a channel with credentials already retired
        key: _Key = (address, tls, loop, authority, options)
        entry = self._entries.get(key)
        if entry is not None and not entry.closing:
            return entry
        self._watch(owner)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.closing:
                fwd = hub().open(tls, address)
                opts = self._channel_options(options, authority)
                ch: Any = (
                    _plain(grpc.aio.insecure_channel)(fwd.target, options=opts)
                    if loop is not None
                    else _plain(grpc.insecure_channel)(fwd.target, options=opts)
                )
                entry = PooledChannel(key, address, ch, fwd)
                entry.owner = owner
                self._entries[key] = entry
                entry.follow(loop)
        if owner._current is tls:
            self._retire(owner, tls)
        return entry

    def _channel_options(
        self, options: tuple[tuple[str, Any], ...], authority: str | None
    ) -> list[tuple[str, Any]]:
        """The pool's options, the application's, then the authority (gRPC
        uses the last value given for an option)."""
        out = [*self._options, *options]
        if authority:
            out.append(("grpc.default_authority", authority))
        return out

    def _watch(self, owner: ClusterCredentials) -> None:
        if owner in self._watched:
            return
        with self._lock:
            if owner in self._watched:
                return
            self._watched.add(owner)
        ref = weakref.ref(owner)

        def rotated(tls: ClientTls) -> None:
            creds = ref()
            if creds is not None:
                self._retire(creds, tls)

        owner.on_change(rotated)

    def _retire(self, owner: ClusterCredentials, current: ClientTls) -> None:
        """``owner`` published ``current``: channels made with its older
        credentials take no new calls and close once idle (those idle now
        after :data:`RETIRE_GRACE`, so that a call which took one just
        before it was retired still counts as in flight by then)."""
        idle = []
        with self._lock:
            for entry in self._entries.values():
                if entry.owner is owner and entry.tls is not current and not entry.closing:
                    entry.closing = True
                    if entry.in_flight <= 0:
                        idle.append(entry)
        if idle:
            timer = threading.Timer(RETIRE_GRACE, self._close_idle, (idle,))
            timer.daemon = True
            timer.start()

    def _close_idle(self, entries: list[PooledChannel]) -> None:
        doomed = []
        with self._lock:
            for entry in entries:
                if entry.in_flight <= 0 and self._entries.get(entry.key) is entry:
                    del self._entries[entry.key]
                    doomed.append(entry)
        for entry in doomed:
            self._close(entry)

    def retain(self, addresses: Sequence[str]) -> None:
        """An EDS update listed each of ``addresses`` in one more cluster."""
        with self._lock:
            retain_refs(self._refs, addresses)

    def release(self, addresses: Sequence[str]) -> None:
        """``addresses`` left a cluster; close their channels once nothing uses them."""
        with self._lock:
            gone = release_refs(self._refs, addresses)
            if not gone:
                return
            doomed = []
            for entry in self._entries.values():
                if entry.address in gone:
                    entry.closing = True
                    if entry.in_flight <= 0:
                        doomed.append(entry)
            for entry in doomed:
                del self._entries[entry.key]
        for entry in doomed:
            self._close(entry)

    def referenced(self, address: str) -> bool:
        return self._refs.get(address, 0) > 0

    def call_ended(self, entry: PooledChannel) -> None:
        entry.in_flight -= 1
        if entry.in_flight <= 0 and entry.closing:
            with self._lock:
                if self._entries.get(entry.key) is entry:
                    del self._entries[entry.key]
                else:
                    entry = None  # type: ignore[assignment]
            if entry is not None:
                self._close(entry)

    def _close(self, entry: PooledChannel) -> None:
        log.debug("closing drained channel to %s", entry.address)
        entry.stop_following()
        if entry.forwarder is not None:
            entry.forwarder.close()
        ch = entry.channel
        if isinstance(ch, grpc.aio.Channel):
            loop = entry.key[2]
            if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(lambda: asyncio.ensure_future(ch.close(None)))
                except RuntimeError:
                    pass
        else:
            ch.close()

    def close_all(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            self._close(entry)

    def __len__(self) -> int:
        return len(self._entries)


#: The process-wide per-endpoint channel pool of sync channels.
POOL = ChannelPool()
#: The process-wide per-endpoint channel pool of ``grpc.aio`` channels (keyed by loop too).
AIO_POOL = ChannelPool()


def attempt_failed(pool: ChannelPool, attempt: Attempt, exc: BaseException) -> grpc.RpcError:
    """An attempt's call raised ``exc``: give back its connection. A
    ``grpc.RpcError`` is the attempt's result and is returned (for a TLS
    endpoint, with the failed handshake's reason: :func:`._tls.explain_failure`);
    anything else (the caller's own exception) also gives back the
    endpoint's count and propagates."""
    pool.call_ended(attempt.conn)
    if isinstance(exc, grpc.RpcError):
        return explain_failure(attempt.conn, exc)
    attempt.endpoint.active_requests -= 1
    raise exc
