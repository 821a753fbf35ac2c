"""One ordinary httpx connection pool per endpoint, drained when EDS drops it.

Each :class:`proxyless.httpx.Transport` (and ``AsyncTransport``) owns an
:class:`EndpointPools`: per endpoint address (and scheme, TLS server name,
HTTP version) one ``httpx.HTTPTransport`` or ``httpx.AsyncHTTPTransport``,
created on the first request to that endpoint with the transport's
``verify``/``cert``/``limits``. The Mesh's cluster registry tells the pools
(:meth:`EndpointPools.retain` / :meth:`EndpointPools.release`, on the Mesh
thread) when an address joins or leaves a cluster; once no cluster lists
an address, its transports close as soon as their in-flight requests
(including response bodies still being read) have ended — the way Envoy
drains connections to a host removed from EDS.

A TLS cluster's endpoints get one transport per credentials version
(:meth:`EndpointPools.acquire_tls`, keyed by the cluster's
:class:`~proxyless.security.credentials.ClientTls`): a rotated certificate
is used by new connections at once, and the transport of the previous
version drains — its requests in flight finish, then it closes with its
idle connections — as soon as a request of the new version reaches that
endpoint.

HTTP/2 (``cluster.http2``) uses httpx's HTTP/2 support, which needs the
``h2`` package (``pip install 'httpx[http2]'``); plain-text HTTP/2 is sent
with prior knowledge, as Envoy does to an ``http2_protocol_options``
cluster.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from proxyless.runtime.cluster import release_refs, retain_refs
from proxyless.security.credentials import ClientTls

__all__ = [
    "EndpointPools",
    "PoolEntry",
    "attach",
    "hand_over",
    "stop_waiting",
    "wait_for_connection",
]

log = logging.getLogger("proxyless.httpx")


class PoolEntry:
    """The httpx transport to one endpoint and its in-flight count."""

    __slots__ = (
        "address",
        "closing",
        "in_flight",
        "key",
        "limit",
        "loop",
        "raw_host",
        "transport",
        "waiting",
    )

    def __init__(
        self, key: Hashable, address: str, transport: Any, loop: asyncio.AbstractEventLoop | None
    ) -> None:
        self.key = key
        self.address = address
        self.transport = transport
        self.loop = loop
        self.in_flight = 0
        #: connections the pool opens at most (HTTP/1.1); past it requests
        #: wait for one: they are pending (None: HTTP/2, multiplexed)
        self.limit: int | None = None
        self.closing = False
        #: the endpoint's address as bytes, filled in on first use
        self.raw_host: bytes | None = None
        #: the attempts holding a ``max_pending_requests`` slot while they
        #: wait for one of the ``limit`` connections, oldest first
        self.waiting: deque[Any] = deque()

    def __repr__(self) -> str:
        state = " closing" if self.closing else ""
        return f"PoolEntry({self.address}, in_flight={self.in_flight}{state})"


def wait_for_connection(entry: PoolEntry, attempt: Any, breaker: Any) -> None:
    """``attempt`` holds a ``max_pending_requests`` slot of ``breaker`` while
    it waits in ``entry`` for a connection (every one is busy)."""
    attempt.pending = (breaker, entry)
    entry.waiting.append(attempt)


def hand_over(entry: PoolEntry) -> None:
    """A request on ``entry`` ended: those still marked waiting beyond the
    requests that cannot have a connection yet (``in_flight - limit``) got
    the connections freed, and give back their pending slots, oldest first,
    as Envoy's pool does when a waiting request is assigned a connection.
    (One that ended without ever getting a connection has already left the
    queue through :func:`stop_waiting`.)"""
    waiting = entry.waiting
    limit = entry.limit or 0
    excess = len(waiting) - max(0, entry.in_flight - limit)
    for _ in range(excess):
        try:
            attempt = waiting.popleft()
        except IndexError:
            return
        held = attempt.pending
        attempt.pending = None
        if held is not None:
            held[0].release_pending()


def stop_waiting(attempt: Any) -> None:
    """``attempt`` was answered or failed: if it still holds a pending slot
    (it was not handed a connection by :func:`hand_over`), give it back.
    Whoever takes the attempt out of the queue gives the slot back, so it is
    given back once."""
    held = attempt.pending
    if held is None:
        return
    breaker, entry = held
    try:
        entry.waiting.remove(attempt)
    except ValueError:
        return  # handed over meanwhile
    attempt.pending = None
    breaker.release_pending()


class EndpointPools:
    """Per-endpoint httpx transports of one proxyless transport (module docstring).

    ``factory(http2)`` builds a new ``HTTPTransport``/``AsyncHTTPTransport``;
    ``tls_factory(tls, http2)`` one for a TLS cluster's endpoint.
    """

    def __init__(
        self,
        factory: Callable[[bool], Any],
        *,
        is_async: bool,
        tls_factory: Callable[[ClientTls, bool], Any] | None = None,
        max_connections: int | None = None,
    ) -> None:
        self._factory = factory
        self._max_connections = max_connections
        self._tls_factory = tls_factory
        self._async = is_async
        self._entries: dict[Hashable, PoolEntry] = {}
        self._refs: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._tasks: set[Any] = set()

    # -- request path --------------------------------------------------------------------
    def acquire(self, address: str, scheme: str, sni: str | None, http2: bool) -> PoolEntry:
        """The entry for ``address`` with one more request in flight."""
        key = (address, scheme, sni, http2)
        entry = self._entries.get(key)
        if entry is None or entry.closing:
            entry = self._create(key, address, http2)
        entry.in_flight += 1
        if entry.closing:  # drained between the lookup and now: never reuse it
            return self._retake(entry, key, address, http2, None)
        return entry

    def _retake(
        self, old: PoolEntry, key: Hashable, address: str, http2: bool, tls: ClientTls | None
    ) -> PoolEntry:
        self.release_entry(old)
        entry = self._create(key, address, http2, tls)
        entry.in_flight += 1
        return entry

    def acquire_tls(self, address: str, tls: ClientTls, http2: bool) -> PoolEntry:
        """The entry for ``address`` of a TLS cluster at ``tls``'s version (or
        a newer one), with one more request in flight (module docstring)."""
        key = (address, tls, http2)
        entry = self._entries.get(key)
        if entry is None or entry.closing:
            entry = self._create(key, address, http2, tls)
        entry.in_flight += 1
        if entry.closing:  # drained between the lookup and now: never reuse it
            return self._retake(entry, key, address, http2, tls)
        return entry

    def _rotate(
        self, address: str, tls: ClientTls, http2: bool
    ) -> tuple[PoolEntry | None, list[PoolEntry]]:
        """(lock held) The entry of newer credentials than ``tls`` to
        ``address``, if one exists (a request that read ``tls`` just before a
        rotation uses it); else mark older credentials' entries closing and
        return the idle ones, to be closed now."""
        idle: list[PoolEntry] = []
        for key, entry in list(self._entries.items()):
            if not isinstance(key, tuple) or key[0] != address:
                continue
            other = key[1]
            if not isinstance(other, ClientTls) or other.cluster != tls.cluster:
                continue
            if other.version > tls.version:
                if not entry.closing and key[2] == http2:
                    return entry, []
                continue
            if other.version < tls.version:
                entry.closing = True
                if entry.in_flight <= 0:
                    del self._entries[key]
                    idle.append(entry)
        return None, idle

    def _create(
        self, key: Hashable, address: str, http2: bool, tls: ClientTls | None = None
    ) -> PoolEntry:
        loop: asyncio.AbstractEventLoop | None = None
        if self._async:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        idle: list[PoolEntry] = []
        with self._lock:
            if self._closed:
                raise RuntimeError("the proxyless httpx transport is closed")
            entry = self._entries.get(key)
            if entry is None or entry.closing:
                if tls is None:
                    transport = self._factory(http2)
                else:
                    newer, idle = self._rotate(address, tls, http2)
                    if newer is not None:
                        return newer
                    assert self._tls_factory is not None
                    transport = self._tls_factory(tls, http2)
                entry = PoolEntry(key, address, transport, loop)
                if not http2:
                    entry.limit = self._max_connections
                self._entries[key] = entry
        for old in idle:
            log.debug("credentials rotated: closing the idle connections to %s", old.address)
            self._close(old)
        return entry

    def release_entry(self, entry: PoolEntry) -> None:
        """A request on ``entry`` ended (its response closed or it failed)."""
        entry.in_flight -= 1
        if entry.waiting:
            hand_over(entry)
        if entry.in_flight > 0:
            return
        if not entry.closing and self._refs.get(entry.address, 0) > 0:
            return  # the common case: a live endpoint
        # EDS dropped the address, or no cluster ever listed it (a pick made
        # from a picker older than the last update): close when idle.
        with self._lock:
            if entry.in_flight > 0 or (not entry.closing and self._refs.get(entry.address, 0) > 0):
                return
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
            if entry.transport is None:
                return
            entry.closing = True
        self._close(entry)

    # -- EndpointPool protocol (Mesh thread) ----------------------------------------------
    def retain(self, addresses: Sequence[str]) -> None:
        """An EDS update listed each of ``addresses`` in one more cluster."""
        with self._lock:
            retain_refs(self._refs, addresses)

    def release(self, addresses: Sequence[str]) -> None:
        """``addresses`` left a cluster: drain their transports once no cluster lists them."""
        doomed: list[PoolEntry] = []
        with self._lock:
            gone = release_refs(self._refs, addresses)
            if not gone:
                return
            for entry in list(self._entries.values()):
                if entry.address in gone:
                    entry.closing = True
                    if entry.in_flight <= 0:
                        del self._entries[entry.key]
                        doomed.append(entry)
        for entry in doomed:
            self._close(entry)

    def referenced(self, address: str) -> bool:
        return self._refs.get(address, 0) > 0

    # -- closing ----------------------------------------------------------------------------
    def _close(self, entry: PoolEntry) -> None:
        transport, entry.transport = entry.transport, None
        if transport is None:
            return
        log.debug("closing drained connections to %s", entry.address)
        if not self._async:
            try:
                transport.close()
            except Exception:
                log.debug("closing the transport to %s failed", entry.address, exc_info=True)
            return
        loop = entry.loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._spawn(transport)
        else:
            try:
                loop.call_soon_threadsafe(self._spawn, transport)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _spawn(self, transport: Any) -> None:
        task = asyncio.ensure_future(transport.aclose())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def entries(self) -> list[PoolEntry]:
        return list(self._entries.values())

    def take_all(self) -> list[Any]:
        """Forget every transport (the owner closes them); later requests fail."""
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
            self._entries.clear()
        return [e.transport for e in entries]

    def __len__(self) -> int:
        return len(self._entries)


class _Handle:
    """What the cluster registry holds: a weak link, so a dropped transport is
    collected even though registries keep their pools for good."""

    __slots__ = ("_ref",)

    def __init__(self, pools: EndpointPools) -> None:
        self._ref = weakref.ref(pools)

    def retain(self, addresses: Sequence[str]) -> None:
        pools = self._ref()
        if pools is not None:
            pools.retain(addresses)

    def release(self, addresses: Sequence[str]) -> None:
        pools = self._ref()
        if pools is not None:
            pools.release(addresses)


def attach(mesh: Any, pools: EndpointPools) -> None:
    """Let ``mesh``'s cluster registry drain ``pools``."""
    mesh.clusters.add_pool(_Handle(pools))
