"""Request mirroring: fire-and-forget copies of a request (Envoy ``request_mirror_policies``).

For each of the route's mirror policies whose ``runtime_fraction`` lets the
request through, a copy goes to an endpoint of the policy's cluster with
``-shadow`` appended to the host part of the ``Host`` header (Envoy's
router, "Request mirroring"). The response is read and dropped; a failure
is logged at debug level and never reaches the caller. A streamed request
body is sent once, to the real destination, so such requests are not
mirrored; neither are requests to a cluster the transports cannot use.

At most 64 mirrored requests per transport wait or run at a time; more are
dropped. The sync transport sends them from a small thread pool
(:class:`Mirrors`), the async one as tasks on the caller's event loop
(:class:`AsyncMirrors`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

import httpx

from proxyless.errors import ProxylessError
from proxyless.httpx._pool import PoolEntry
from proxyless.httpx._router import shadow_host
from proxyless.httpx._tls import client_tls
from proxyless.httpx._upstream import EndpointURL, Routed, Upstream, attempt_timeouts
from proxyless.lb.state import EndpointState
from proxyless.runtime.cluster import ClusterRuntime

if TYPE_CHECKING:
    from proxyless.httpx._core import Core

__all__ = ["MIRROR_QUEUE", "AsyncMirrors", "Mirrors", "mirror_request", "mirror_targets"]

log = logging.getLogger("proxyless.httpx")

#: Mirrored requests waiting to be sent, per transport, at most.
MIRROR_QUEUE: Final = 64


def mirror_targets(core: Core, r: Routed) -> list[tuple[EndpointState, ClusterRuntime]]:
    """The endpoints to shadow this request to (Envoy ``request_mirror_policies``)."""
    out: list[tuple[EndpointState, ClusterRuntime]] = []
    rt_state = r.call._rt.current
    if rt_state is None:
        return out
    snap = rt_state[0]
    rng = core.rng
    for policy in r.plan.mirrors:
        fraction = policy.runtime_fraction_per_million
        if fraction < 1_000_000 and rng.randrange(1_000_000) >= fraction:
            continue
        try:
            cluster = r.call._rt.cluster(snap, policy.cluster)
            endpoint = cluster.lb.pick(r.call.hash, rng, ())
        except ProxylessError as exc:
            log.debug("mirror to cluster %r skipped: %s", policy.cluster, exc)
            continue
        out.append((endpoint, cluster))
    return out


def mirror_request(
    core: Core, r: Routed, endpoint: EndpointState, cluster: ClusterRuntime
) -> tuple[PoolEntry, Upstream] | None:
    """The shadow copy of ``r`` for ``endpoint`` and the pool entry it holds,
    or None when it is not to be sent."""
    body = r.request.stream
    if not isinstance(body, httpx.ByteStream):
        return None  # a streamed body is sent once, to the real destination
    if cluster.config.children:  # an aggregate: the leaf that lists the endpoint decides
        try:
            cluster = core.mesh.clusters.leaf_of(cluster, endpoint)
        except ProxylessError as exc:
            log.debug("mirror to cluster %r skipped: %s", cluster.name, exc)
            return None
    info = core.cluster_info(cluster)
    if info.problem:
        return None
    tls = None
    if info.tls_required:
        try:
            tls = client_tls(r, cluster)
        except httpx.TransportError as exc:
            log.debug("mirror to cluster %r skipped: %s", cluster.name, exc)
            return None
    https = r.scheme == "https" or tls is not None
    sni = r.host if https and tls is None else None
    if tls is None:
        entry = core.pools.acquire(endpoint.address, r.scheme, sni, info.http2)
    else:
        entry = core.pools.acquire_tls(endpoint.address, tls, info.http2)
    headers = []
    for k, v in r.up_headers:
        if k.lower() == b"host":
            v = shadow_host(v.decode("latin-1")).encode("latin-1")
        headers.append((k, v))
    ext = dict(r.request.extensions)
    timeout = r.call.timeout
    ext["timeout"] = attempt_timeouts(ext.get("timeout"), timeout, info.connect_timeout)
    if sni is not None:
        ext["sni_hostname"] = sni
    url = EndpointURL(
        b"https" if https else b"http",
        endpoint.endpoint.address.encode("ascii"),
        endpoint.endpoint.port,
        r.target,
    )
    return entry, Upstream(r.request.method, url, headers, body, ext)


class Mirrors:
    """The sync transport's mirrored requests: run on two threads, made on first use."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending = 0
        self._lock = threading.Lock()

    def full(self) -> bool:
        return self._pending >= MIRROR_QUEUE

    def start(
        self, send: Callable[[PoolEntry, Upstream], None], entry: PoolEntry, upstream: Upstream
    ) -> bool:
        """Queue ``send(entry, upstream)``; False when the queue is full."""
        with self._lock:
            if self._pending >= MIRROR_QUEUE:
                return False
            self._pending += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix="proxyless-mirror"
                )
            pool = self._pool
        pool.submit(self._run, send, entry, upstream)
        return True

    def _run(
        self, send: Callable[[PoolEntry, Upstream], None], entry: PoolEntry, upstream: Upstream
    ) -> None:
        try:
            send(entry, upstream)
        finally:
            with self._lock:
                self._pending -= 1

    def cancel(self) -> None:
        """Drop the queued mirrored requests (running ones finish)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class AsyncMirrors:
    """The async transport's mirrored requests: tasks on the caller's loop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def full(self) -> bool:
        return len(self._tasks) >= MIRROR_QUEUE

    def start(
        self,
        send: Callable[[PoolEntry, Upstream], Coroutine[Any, Any, None]],
        entry: PoolEntry,
        upstream: Upstream,
    ) -> bool:
        """Start ``send(entry, upstream)`` as a task; False when too many run."""
        if len(self._tasks) >= MIRROR_QUEUE:
            return False
        task = asyncio.ensure_future(send(entry, upstream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def cancel(self) -> None:
        """Cancel the mirrored requests still running."""
        for task in list(self._tasks):
            task.cancel()

    def __iter__(self) -> Iterator[asyncio.Task[None]]:
        """The mirrored requests still running."""
        return iter(list(self._tasks))
