"""``proxyless.httpx.Transport`` / ``AsyncTransport``: httpx on the mesh request path.

Used as ``httpx.Client(transport=proxyless.httpx.Transport())`` (or in
``mounts``), a transport sends each request the way an Envoy sidecar would
with the same xDS config, on the transport-agnostic request path shared
with the gRPC channels (DESIGN.md, "The request path"):

1. which hosts go through the mesh (:mod:`proxyless.interceptors.httpx_hosts`);
2. the :class:`~proxyless.runtime.call.Call`: virtual host by the ``Host``
   header, first matching route (method, path, query, headers and the
   pseudo-headers ``:method``, ``:path``, ``:authority``, ``:scheme``),
   weighted cluster, hash policy, circuit breaker, EDS drops, the fault
   filter (HTTP aborts answered locally, delays slept);
3. redirect and direct-response routes answered locally; header
   mutations, host and path rewrites, request mirrors
   (:mod:`proxyless.interceptors.httpx_request`, Envoy's router semantics);
4. attempts on per-endpoint httpx connection pools
   (:mod:`proxyless.interceptors.httpx_pool`), each outcome classified once
   (HTTP status, connect failure, reset, timeout) and fed to outlier
   detection and the retry policy (Envoy ``retry_on``: ``5xx``,
   ``gateway-error``, ``reset``, ``connect-failure``, ``retriable-4xx``,
   ``refused-stream``, ``retriable-status-codes``, ``retriable-headers``),
   with Envoy's backoff, ``Retry-After`` and the cluster's retry budget;
5. the route ``timeout`` (Envoy's 15 s default; 0 disables it) bounds the
   whole request, attempts and response body included, and the retry
   policy's ``per_try_timeout`` each attempt; httpx's own ``Timeout`` still
   bounds every connect/read/write, whichever is shorter.

Retries resend the body only when it can be replayed: a body given as
bytes (``content=``, ``data=``, ``json=``) up to ``retry_buffer_limit``
bytes, or a streamed body that was not read at all (a connect failure) or
was read completely within that limit. Like Envoy, the method alone does
not stop a retry; ``retriable_request_headers`` (e.g. a ``:method``
matcher) restricts retries to the requests it matches.

Failures become httpx exceptions (:mod:`proxyless.interceptors.httpx_errors`).

Requests whose route depends only on the URL and the ``Host`` header, and
asks nothing of the request but an endpoint, take a fast path (see
:class:`_Lane`): no routing, no :class:`~proxyless.runtime.call.Call`
unless the first attempt fails; documented in ``docs/httpx.md``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import logging
import threading
import time
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import httpx

from proxyless.errors import (
    ClusterNotAvailable,
    InvalidTarget,
    ProxylessError,
)
from proxyless.interceptors.httpx_errors import (
    MeshConnectError,
    mesh_error,
    timeout_error,
    upstream_error,
)
from proxyless.interceptors.httpx_hosts import (
    Fallback,
    HostDecision,
    HostTable,
    MeshHosts,
    target_name,
)
from proxyless.interceptors.httpx_pool import EndpointPools, PoolEntry, attach
from proxyless.interceptors.httpx_request import (
    ORIGINAL_HOST_HEADER,
    ORIGINAL_PATH_HEADER,
    LazyHeaders,
    RoutePlan,
    direct_response_headers,
    evaluate_headers,
    plan_for,
    redirect_location,
    rewrite_path,
    shadow_host,
)
from proxyless.lb.state import EndpointState
from proxyless.mesh import Mesh
from proxyless.resilience.fault import NO_FAULT
from proxyless.resilience.outcome import (
    CONNECT_FAILURE,
    OVERALL_TIMEOUT,
    PER_TRY_TIMEOUT,
    RESET,
    SUCCESS,
    Outcome,
    parse_retry_after,
)
from proxyless.resources.model import DirectResponseAction, RedirectAction
from proxyless.routing import MissingClusterHeader, RequestInfo, http_timeout
from proxyless.runtime.call import Attempt, Call, FirstAttempt, Lane
from proxyless.runtime.cluster import ClusterRuntime
from proxyless.runtime.target import TargetRuntime, path_determined

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_RETRY_BUFFER_LIMIT",
    "AsyncTransport",
    "Transport",
]

log = logging.getLogger("proxyless.httpx")

#: Envoy's default per-connection buffer limit: the largest body kept for retries.
DEFAULT_RETRY_BUFFER_LIMIT: Final = 1024 * 1024
#: Longest ``Retry-After`` honoured before a retry; longer ones end the retries.
DEFAULT_MAX_RETRY_AFTER: Final = 60.0
#: httpx's default pool limits, per endpoint.
DEFAULT_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20)
#: Response bodies read (to keep the connection) before a retry, at most.
_DRAIN_LIMIT: Final = 64 * 1024
#: Mirrored requests waiting to be sent, per transport, at most.
_MIRROR_QUEUE: Final = 64

_FAULT_BODY: Final = b"fault filter abort"
_channel_ids = itertools.count(1 << 20)
_H2: bool | None = None


def _h2_available() -> bool:
    global _H2
    if _H2 is None:
        _H2 = importlib.util.find_spec("h2") is not None
    return _H2


def _identity(endpoint: EndpointState) -> EndpointState:
    return endpoint


def _set_host(
    headers: list[tuple[str, str]], host: str, *, keep_original: bool = False
) -> list[tuple[str, str]]:
    """Replace the Host; with ``keep_original`` the old one goes to
    ``x-envoy-original-host`` unless that is already set (Envoy)."""
    old = next((v for k, v in headers if k == "host"), None)
    out = [(k, v) for k, v in headers if k != "host"]
    out.insert(0, ("host", host))
    if keep_original and old is not None and old != host:
        if not any(k == ORIGINAL_HOST_HEADER for k, _ in out):
            out.append((ORIGINAL_HOST_HEADER, old))
    return out


def _url_error(request: httpx.Request, why: str) -> httpx.TransportError:
    return mesh_error(InvalidTarget(why), request, "url")


# -- the light request handed to the endpoint transports -----------------------------------


class _EndpointURL:
    """The parts of an ``httpx.URL`` that ``HTTPTransport.handle_request`` reads
    (building a real ``httpx.URL`` per attempt would re-parse the URL)."""

    __slots__ = ("port", "raw_host", "raw_path", "raw_scheme")

    def __init__(self, raw_scheme: bytes, raw_host: bytes, port: int, raw_path: bytes) -> None:
        self.raw_scheme = raw_scheme
        self.raw_host = raw_host
        self.port = port
        self.raw_path = raw_path


class _RawHeaders:
    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw


class _Upstream:
    """What ``HTTPTransport.handle_request`` reads of a request: method, url
    (scheme, host, port, path), raw headers, stream, extensions."""

    __slots__ = ("extensions", "headers", "method", "stream", "url")

    def __init__(
        self,
        method: str,
        url: _EndpointURL,
        headers: list[tuple[bytes, bytes]],
        stream: Any,
        extensions: dict[str, Any],
    ) -> None:
        self.method = method
        self.url = url
        self.headers = _RawHeaders(headers)
        self.stream = stream
        self.extensions = extensions


# -- request bodies ------------------------------------------------------------------------


class _ReplayBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A streamed request body kept (up to ``limit`` bytes) while it is sent,
    so a failed attempt can be retried with it (Envoy buffers the same way)."""

    def __init__(self, source: Any, limit: int) -> None:
        self._source = source
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._state = "fresh"  # fresh | reading | done | overflow

    @property
    def replayable(self) -> bool:
        return self._state in ("fresh", "done")

    def _keep(self, chunk: bytes) -> None:
        if self._state == "reading":
            self._size += len(chunk)
            if self._size > self._limit:
                self._state = "overflow"
                self._chunks = []
            else:
                self._chunks.append(chunk)

    def __iter__(self) -> Iterator[bytes]:
        if self._state == "done":
            yield from self._chunks
            return
        if self._state != "fresh":
            raise httpx.StreamConsumed()
        self._state = "reading"
        for chunk in self._source:
            self._keep(chunk)
            yield chunk
        if self._state == "reading":
            self._state = "done"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._state == "done":
            for chunk in self._chunks:
                yield chunk
            return
        if self._state != "fresh":
            raise httpx.StreamConsumed()
        self._state = "reading"
        async for chunk in self._source:
            self._keep(chunk)
            yield chunk
        if self._state == "reading":
            self._state = "done"


def _body_for(request: httpx.Request, limit: int) -> tuple[Any, bool | _ReplayBody]:
    """(stream to send, replayable) — ``replayable`` may be a _ReplayBody whose
    state is known only after the attempt."""
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        content = getattr(request, "_content", None)
        size = len(content) if content is not None else 0
        return stream, size <= limit
    body = _ReplayBody(stream, limit)
    return body, body


# -- response streams -----------------------------------------------------------------------


class _Finisher:
    """Releases what a request holds (pool slot, then breaker and fault slot
    through ``end``) once."""

    __slots__ = ("_end", "_entry", "_pools")

    def __init__(
        self, pools: EndpointPools, entry: PoolEntry | None, end: Callable[[], None]
    ) -> None:
        self._pools = pools
        self._entry = entry
        self._end: Callable[[], None] | None = end

    def __call__(self) -> None:
        entry, self._entry = self._entry, None
        if entry is not None:
            self._pools.release_entry(entry)
        end, self._end = self._end, None
        if end is not None:
            end()


class _TimeoutSource(typing.Protocol):
    @property
    def why_timeout(self) -> str: ...


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body (sync or async, as the transport reads it) that
    enforces the request's deadline between chunks and calls ``done`` once
    when closed, giving back what the request holds."""

    __slots__ = ("_deadline", "_done", "_inner", "_request", "_source")

    def __init__(
        self,
        inner: Any,
        done: Callable[[], None],
        deadline: float | None,
        request: httpx.Request,
        source: _TimeoutSource,
    ) -> None:
        self._inner = inner
        self._done = done
        self._deadline = deadline
        self._request = request
        self._source = source

    def _expired(self) -> httpx.TimeoutException:
        return timeout_error(self._request, f"{self._source.why_timeout} expired", None)

    def __iter__(self) -> Iterator[bytes]:
        deadline = self._deadline
        for chunk in self._inner:
            if deadline is not None and time.monotonic() > deadline:
                self.close()
                raise self._expired()
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        deadline = self._deadline
        async for chunk in self._inner:
            if deadline is not None and time.monotonic() > deadline:
                await self.aclose()
                raise self._expired()
            yield chunk

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._done()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._done()


def _wrap_body(
    response: httpx.Response,
    done: Callable[[], None],
    deadline: float | None,
    request: httpx.Request,
    source: _TimeoutSource,
) -> httpx.Response:
    """Make ``response``'s body release ``done`` when closed and honour ``deadline``."""
    response.stream = _Body(response.stream, done, deadline, request, source)
    return response


# -- the shared core ---------------------------------------------------------------------------


def _request_info(
    request: httpx.Request,
    raw_headers: list[tuple[bytes, bytes]],
    authority: str,
    raw_path: str,
    scheme: str,
) -> RequestInfo:
    path, _, query = raw_path.partition("?")
    return RequestInfo(
        authority, path, query, request.method, LazyHeaders(raw_headers), False, "", scheme
    )


def _lower_headers(headers: httpx.Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers.multi_items():
        prev = out.get(key)
        out[key] = value if prev is None else f"{prev},{value}"
    return out


class _Routed:
    """One request after routing: the call, its plan and the upstream parts."""

    __slots__ = (
        "authority",
        "body",
        "call",
        "host",
        "plan",
        "raw_path",
        "replayable",
        "request",
        "scheme",
        "target",
        "up_headers",
    )

    request: httpx.Request
    call: Call
    plan: RoutePlan
    scheme: str
    host: str
    authority: str
    raw_path: str
    target: bytes
    up_headers: list[tuple[bytes, bytes]]
    body: Any
    replayable: bool | _ReplayBody

    @property
    def why_timeout(self) -> str:
        """Where the request's timeout came from (worked out only when needed)."""
        return self.call.timeout_source or "route timeout"

    def can_replay(self) -> bool:
        r = self.replayable
        return r if isinstance(r, bool) else r.replayable


class _ClusterInfo:
    __slots__ = ("config", "connect_timeout", "http2", "problem")

    def __init__(self, rt: ClusterRuntime) -> None:
        cluster = rt.config.cluster
        self.config = rt.config
        self.http2 = bool(cluster is not None and cluster.http2)
        self.connect_timeout = cluster.connect_timeout if cluster is not None else 5.0
        self.problem = ""
        if cluster is not None and cluster.upstream_tls is not None:
            self.problem = (
                f"cluster {rt.name!r} requires upstream TLS (UpstreamTlsContext), which "
                "proxyless.httpx does not set up yet; the request was not sent in plain text"
            )
        elif self.http2 and not _h2_available():
            self.problem = (
                f"cluster {rt.name!r} speaks HTTP/2 (http2_protocol_options) but the 'h2' "
                "package is not installed: pip install 'httpx[http2]'"
            )


def _host_value(raw: list[tuple[bytes, bytes]]) -> bytes | None:
    """The first ``Host`` header's value (httpx puts it first)."""
    for key, value in raw:
        if len(key) == 4 and key.lower() == b"host":
            return value
    return None


#: Fast-path routes kept per transport, at most (the table is emptied when full).
_LANE_LIMIT: Final = 1024


class _Lane:
    """The httpx side of a :class:`~proxyless.runtime.call.Lane`: a route
    every request with the same URL scheme, host, port, ``Host`` header and
    ``:path`` takes in one snapshot
    (:func:`~proxyless.runtime.target.path_determined`) and that asks
    nothing of the request beyond an endpoint: besides what the runtime
    lane rules out, no mirror, header mutation or rewrite. Requests on it
    skip routing and make their first attempt without a
    :class:`~proxyless.runtime.call.Call`; one is made only when that
    attempt does not plainly succeed (:meth:`_Core.fast_fallback`)."""

    __slots__ = (
        "breaker",
        "config",
        "connect_timeout",
        "core",
        "host",
        "hplan",
        "http2",
        "inspects_success",
        "raw_path",
        "rt",
        "scheme",
        "sni",
        "timeouts",
        "urls",
        "why_timeout",
    )

    def __init__(
        self,
        rt: TargetRuntime,
        core: Lane,
        hplan: RoutePlan,
        info: _ClusterInfo,
        scheme: str,
        host: str,
        raw_path: bytes,
    ) -> None:
        self.rt = rt
        self.core = core
        self.breaker = core.breaker
        self.scheme = scheme
        self.host = host
        self.sni = host if scheme == "https" else None
        self.raw_path = raw_path
        self.hplan = hplan
        self.config = info.config
        self.http2 = info.http2
        self.connect_timeout = info.connect_timeout
        self.inspects_success = core.plan.retry_policy.inspects_success
        action = core.plan.route.route_action
        assert action is not None
        self.why_timeout = http_timeout(action, None)[1]
        #: (the caller's httpx timeouts, the attempt's timeout, what is passed on)
        self.timeouts: tuple[object, float | None, dict[str, Any]] = (None, None, {})
        #: the upstream URL per endpoint connection pool
        self.urls: dict[PoolEntry, _EndpointURL] = {}

    def url_for(self, entry: PoolEntry, endpoint: EndpointState) -> _EndpointURL:
        urls = self.urls
        if len(urls) >= 64:
            urls.clear()
        url = urls[entry] = _EndpointURL(
            b"https" if self.scheme == "https" else b"http",
            endpoint.endpoint.address.encode("ascii"),
            endpoint.endpoint.port,
            self.raw_path,
        )
        return url


class _Fast:
    """One fast-path request: its first attempt (see :class:`_Lane`) and,
    once that plainly succeeded, what its response body gives back when
    closed (called like a :class:`_Finisher`)."""

    __slots__ = ("attempt", "entry", "held", "lane", "pools", "raw_headers", "upstream")

    lane: _Lane
    attempt: FirstAttempt
    entry: PoolEntry
    pools: EndpointPools
    held: bool
    upstream: _Upstream
    raw_headers: list[tuple[bytes, bytes]]

    @property
    def why_timeout(self) -> str:
        return self.lane.why_timeout

    def __call__(self) -> None:
        if self.held:
            self.held = False
            self.pools.release_entry(self.entry)
            self.lane.breaker.release_request()


#: An attempt the fast path made: the attempt, its pool entry, and its result.
_First = tuple[Attempt, PoolEntry, "httpx.Response | httpx.TransportError"]


class _Core:
    """Everything both transports share; only the I/O differs."""

    def __init__(
        self,
        mesh: Mesh | None,
        hosts: Iterable[str] | str | None,
        fallback: Fallback,
        retry_buffer_limit: int,
        max_retry_after: float,
        is_async: bool,
        factory: Any,
    ) -> None:
        if retry_buffer_limit < 0:
            raise ValueError("retry_buffer_limit must be >= 0")
        self.mesh = mesh if mesh is not None else Mesh.default()
        self.hosts = MeshHosts(hosts, fallback)
        self.table = HostTable(self.mesh, self.hosts)
        self.refuse = fallback == "refuse"
        self.retry_buffer_limit = retry_buffer_limit
        self.max_retry_after = max_retry_after
        self.pools = EndpointPools(factory, is_async=is_async)
        attach(self.mesh, self.pools)
        self.channel_id = next(_channel_ids)
        self.rng = self.mesh.rng
        self._clusters: dict[int, _ClusterInfo] = {}
        self.lanes: dict[tuple[str, str, int | None, bytes | None, bytes], _Lane] = {}
        #: the snapshot each target's lanes belong to
        self._lanes_state: dict[TargetRuntime, object] = {}
        self.closed = False

    # -- hosts ------------------------------------------------------------------------------
    @staticmethod
    def check_url(request: httpx.Request) -> tuple[str, str, int | None]:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise _url_error(request, f"unsupported URL scheme {scheme!r}: use http:// or https://")
        host = url.host
        if not host:
            raise _url_error(request, "the URL has no host")
        return scheme, host, url.port

    def fallback_error(self, request: httpx.Request, decision: HostDecision) -> MeshConnectError:
        err = ClusterNotAvailable(
            f"{decision.reason}; hosts outside the mesh are refused (fallback='refuse')"
        )
        exc = mesh_error(err, request, "config")
        assert isinstance(exc, MeshConnectError)
        return exc

    def config_wait(self, request: httpx.Request) -> float | None:
        timeouts = request.extensions.get("timeout")
        if isinstance(timeouts, Mapping):
            wait = timeouts.get("connect")
            if isinstance(wait, (int, float)):
                return float(wait)
        return None

    # -- routing ------------------------------------------------------------------------------
    def route(
        self,
        request: httpx.Request,
        rt: TargetRuntime,
        scheme: str,
        host: str,
        port: int | None,
        raw_headers: list[tuple[bytes, bytes]],
        host_value: bytes | None,
    ) -> _Routed | httpx.Response:
        """Route ``request``: a :class:`_Routed`, or the local answer (redirect,
        direct response, fault abort, cluster_not_found code)."""
        raw_path = request.url.raw_path.decode("ascii")
        authority = host_value.decode("latin-1") if host_value else target_name(host, port)
        info = _request_info(request, raw_headers, authority, raw_path, scheme)
        state = rt.current
        try:
            call = Call(
                rt,
                info,
                timeout=None,
                wait_for_ready=False,
                channel_id=self.channel_id,
                pool_get=_identity,
                allow_local_actions=True,
            )
        except MissingClusterHeader as exc:
            log.debug("%s", exc)
            return self._local(request, exc.response_code, [("content-length", "0")], b"")
        except ProxylessError as exc:
            raise mesh_error(exc, request) from None
        state = state or rt.current
        assert state is not None
        plan = plan_for(call.route, state[1].route_config)
        action = call.route.action
        if call.cluster is None:
            call.end()
            if isinstance(action, RedirectAction):
                location = redirect_location(action, call.route.route, scheme, authority, raw_path)
                hl = [("location", location), ("content-length", "0")]
                return self._local(request, action.response_code, plan.response_headers(hl), b"")
            assert isinstance(action, DirectResponseAction)
            hl = plan.response_headers(direct_response_headers(action))
            return self._local(request, action.status, hl, action.body)
        if call.cluster is not None:
            info_c = self._cluster_info(call.cluster)
            if info_c.problem:
                call.end()
                raise mesh_error(ClusterNotAvailable(info_c.problem), request, "upstream")
        r = _Routed()
        r.request = request
        r.call = call
        r.plan = plan
        r.scheme = scheme
        r.host = host
        r.authority = authority
        r.raw_path = raw_path
        if plan.changes_request:
            hl2 = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw_headers]
            if plan.weighted_host_rewrite is not None:
                # the weighted cluster's mutations and host come first (Envoy)
                first = plan.request_levels[:1] if call.route.cluster_weight is not None else ()
                for level in first:
                    hl2 = evaluate_headers(hl2, level)
                hl2 = _set_host(hl2, plan.weighted_host_rewrite)
                for level in plan.request_levels[len(first) :]:
                    hl2 = evaluate_headers(hl2, level)
            else:
                hl2 = plan.request_headers(hl2)
            if plan.host_rewrite is not None:
                hl2 = _set_host(hl2, plan.host_rewrite, keep_original=True)
            new_path = None
            if plan.rewrites_path:
                route_action = call.route.route_action
                assert route_action is not None
                new_path = rewrite_path(call.route.route, route_action, raw_path)
            if new_path is not None and new_path != raw_path:
                hl2 = [(k, v) for k, v in hl2 if k != ORIGINAL_PATH_HEADER]
                hl2.append((ORIGINAL_PATH_HEADER, raw_path))
                r.target = new_path.encode("latin-1")
            else:
                r.target = request.url.raw_path
            r.up_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in hl2]
        else:
            r.target = request.url.raw_path
            r.up_headers = raw_headers
            if (
                host_value
                and not plan.auto_host_rewrite
                and not plan.mirrors
                and not plan.response_levels
                and call.hash is None
                and not call.hedge.enabled
            ):
                key = (scheme, host, port, host_value, r.target)
                self._add_lane(rt, state, call, plan, key)
        r.body, r.replayable = _body_for(request, self.retry_buffer_limit)
        return r

    def route_request(
        self,
        request: httpx.Request,
        decision: HostDecision,
        scheme: str,
        host: str,
        port: int | None,
    ) -> _Routed | httpx.Response:
        """:meth:`route` for a request to a mesh host."""
        rt = decision.runtime
        assert rt is not None
        raw_headers = request.headers.raw
        return self.route(request, rt, scheme, host, port, raw_headers, _host_value(raw_headers))

    # -- the fast path ----------------------------------------------------------------------
    def _add_lane(
        self,
        rt: TargetRuntime,
        state: object,
        call: Call,
        hplan: RoutePlan,
        key: tuple[str, str, int | None, bytes | None, bytes],
    ) -> None:
        cluster = call.cluster
        if cluster is None or not path_determined(call.route):
            return
        info = self._cluster_info(cluster)
        if info.problem:
            return
        core = Lane.for_call(rt, state, call, is_grpc=False)
        if core is None:
            return
        lanes = self.lanes
        if self._lanes_state.get(rt) is not state:
            # A new snapshot of this target: its lanes are stale; drop them
            # rather than keep old snapshots alive through unused paths.
            for old in [k for k, lane in list(lanes.items()) if lane.rt is rt]:
                lanes.pop(old, None)  # (another thread may be at it too)
            self._lanes_state[rt] = state
        if len(lanes) >= _LANE_LIMIT:
            lanes.clear()
        scheme, host, _, _, raw_path = key
        lanes[key] = _Lane(rt, core, hplan, info, scheme, host, raw_path)

    def fast(self, request: httpx.Request) -> _Fast | None:
        """Start ``request`` on the fast path when it has a :class:`_Lane` in
        the current snapshot: take the breaker slot, pick an endpoint and
        build the first attempt. None sends it down the general path (which
        also reports every error, except the two raised here the same way)."""
        url = request.url
        raw_headers = request.headers.raw
        host_value = raw_headers[0][1] if raw_headers and raw_headers[0][0] == b"Host" else None
        if host_value is None:
            host_value = _host_value(raw_headers)
        lane = self.lanes.get((url.scheme, url.host, url.port, host_value, url.raw_path))
        if (
            lane is None
            or lane.core.state is not lane.rt.current
            or not isinstance(request.stream, httpx.ByteStream)
            or lane.core.cluster.config is not lane.config
        ):
            return None
        core = lane.core
        try:
            attempt = core.begin(self.rng, None)
        except ProxylessError as exc:
            raise mesh_error(exc, request) from None
        if attempt is None:
            return None
        endpoint = attempt.endpoint
        try:
            entry = self.pools.acquire(endpoint.address, lane.scheme, lane.sni, lane.http2)
        except BaseException:
            core.abandon(attempt)
            raise
        attempt.conn = endpoint
        f = _Fast()
        f.lane = lane
        f.attempt = attempt
        f.entry = entry
        f.raw_headers = raw_headers
        ext = dict(request.extensions)
        user = ext.get("timeout")
        timeout = attempt.timeout
        cached = lane.timeouts
        if cached[0] != user or cached[1] != timeout:
            limits = self._timeouts(user, timeout, lane.connect_timeout)
            cached = lane.timeouts = (user, timeout, limits)
        ext["timeout"] = cached[2]
        if lane.sni is not None:
            ext["sni_hostname"] = lane.sni
        upstream_url = lane.urls.get(entry)
        if upstream_url is None:
            upstream_url = lane.url_for(entry, endpoint)
        f.upstream = _Upstream(request.method, upstream_url, raw_headers, request.stream, ext)
        return f

    def fast_done(
        self,
        f: _Fast,
        request: httpx.Request,
        result: httpx.Response | httpx.TransportError,
    ) -> httpx.Response | tuple[_Routed, _First]:
        """After the first attempt: the response when it plainly succeeded,
        else the routed request and that attempt for the general path."""
        lane = f.lane
        if (
            not isinstance(result, httpx.Response)
            or result.status_code >= 400
            or lane.inspects_success
        ):
            return self.fast_fallback(f, request), (f.attempt, f.entry, result)
        lane.core.succeeded(f.attempt.endpoint)
        f.pools = self.pools
        f.held = True
        return _wrap_body(result, f, f.attempt.call_deadline, request, f)

    def fast_abort(self, f: _Fast) -> None:
        """The first attempt ended in something other than an httpx error."""
        self.pools.release_entry(f.entry)
        f.lane.core.abandon(f.attempt)

    def fast_fallback(self, f: _Fast, request: httpx.Request) -> _Routed:
        """The general path's view of a fast request after its first attempt."""
        lane = f.lane
        raw_path = request.url.raw_path.decode("ascii")
        host_value = _host_value(f.raw_headers)
        assert host_value is not None
        authority = host_value.decode("latin-1")
        info = _request_info(request, f.raw_headers, authority, raw_path, lane.scheme)
        r = _Routed()
        r.request = request
        r.call = lane.core.resume(lane.rt, info, f.attempt, _identity)
        r.plan = lane.hplan
        r.scheme = lane.scheme
        r.host = lane.host
        r.authority = authority
        r.raw_path = raw_path
        r.target = request.url.raw_path
        r.up_headers = f.raw_headers
        r.body, r.replayable = _body_for(request, self.retry_buffer_limit)
        return r

    def _cluster_info(self, rt: ClusterRuntime) -> _ClusterInfo:
        info = self._clusters.get(id(rt))
        if info is None or info.config is not rt.config:
            info = _ClusterInfo(rt)
            self._clusters[id(rt)] = info
        return info

    @staticmethod
    def _local(
        request: httpx.Request, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> httpx.Response:
        return httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(body),
            request=request,
            extensions={"proxyless_local_reply": True},
        )

    def fault_response(self, r: _Routed) -> httpx.Response | None:
        fault = r.call.fault
        if fault.abort_http is not None:
            return self._local(
                r.request,
                fault.abort_http,
                [("content-length", str(len(_FAULT_BODY))), ("content-type", "text/plain")],
                _FAULT_BODY,
            )
        if fault.abort_grpc is not None:
            return self._local(
                r.request,
                200,
                [
                    ("content-type", "application/grpc"),
                    ("grpc-status", str(fault.abort_grpc)),
                    ("grpc-message", "fault filter abort"),
                    ("content-length", "0"),
                ],
                b"",
            )
        return None

    # -- attempts ----------------------------------------------------------------------------
    def start_attempt(self, r: _Routed) -> tuple[Attempt, PoolEntry, _Upstream]:
        try:
            attempt = r.call.attempt()
        except ProxylessError as exc:
            raise mesh_error(exc, r.request) from None
        es: EndpointState = attempt.conn
        cluster = r.call.cluster
        assert cluster is not None
        info = self._cluster_info(cluster)
        https = r.scheme == "https"
        sni = r.host if https else None
        try:
            entry = self.pools.acquire(es.address, r.scheme, sni, info.http2)
        except RuntimeError:
            es.active_requests -= 1
            raise
        headers = r.up_headers
        if r.plan.auto_host_rewrite and es.endpoint.hostname:
            hl = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]
            hl = _set_host(hl, es.endpoint.hostname, keep_original=True)
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in hl]
        ext = dict(r.request.extensions)
        ext["timeout"] = self._timeouts(ext.get("timeout"), attempt.timeout, info.connect_timeout)
        if sni is not None:
            ext["sni_hostname"] = sni
        raw_host = entry.raw_host
        if raw_host is None:
            raw_host = entry.raw_host = es.endpoint.address.encode("ascii")
        url = _EndpointURL(b"https" if https else b"http", raw_host, es.endpoint.port, r.target)
        return attempt, entry, _Upstream(r.request.method, url, headers, r.body, ext)

    @staticmethod
    def _timeouts(user: Any, limit: float | None, connect: float) -> dict[str, Any]:
        """httpx's per-operation timeouts capped by the attempt's (and connect by
        the cluster's ``connect_timeout``)."""
        if isinstance(user, Mapping):
            c, rd, w, pl = (
                user.get("connect"),
                user.get("read"),
                user.get("write"),
                user.get("pool"),
            )
        else:
            c = rd = w = pl = None
        climit = connect if limit is None or connect < limit else limit
        c = climit if c is None or climit < c else c
        if limit is not None:
            rd = limit if rd is None or limit < rd else rd
            w = limit if w is None or limit < w else w
            pl = limit if pl is None or limit < pl else pl
        return {"connect": c, "read": rd, "write": w, "pool": pl}

    def fault_delay(self, r: _Routed) -> tuple[float, Exception | None]:
        """The fault filter's delay (Envoy HTTP fault filter): seconds to wait,
        then the error to end the request with when the delay outlasts the
        request's timeout."""
        delay = r.call.fault.delay
        if delay is None:
            return 0.0, None
        remaining = r.call.remaining()
        if remaining is not None and remaining < delay:
            why = f"{r.why_timeout} expired during an injected delay of {delay:g}s"
            return max(0.0, remaining), timeout_error(r.request, why, None)
        return delay, None

    def settle(
        self,
        r: _Routed,
        attempt: Attempt,
        entry: PoolEntry,
        result: httpx.Response | httpx.TransportError,
    ) -> tuple[float | None, httpx.Response | None]:
        """Record an attempt's result and decide: ``(None, response)`` to hand
        the response to the caller; ``(delay, failed)`` to retry after
        ``delay`` seconds, once the caller has drained the failed response
        (if any) and released ``entry`` for it. Raises the request's error
        when there is no retry."""
        call = r.call
        if isinstance(result, httpx.TransportError):
            self.pools.release_entry(entry)
            outcome, ours = self.error_outcome(r, attempt, result)
            delay = call.attempt_done(attempt, outcome)
            if delay is None or not self.allows_retry(r):
                raise self.failure(r, attempt, result, ours) from result
            return delay, None
        outcome = self.response_outcome(r, result)
        if outcome.kind != "success":
            delay = call.attempt_done(attempt, outcome)
            if delay is not None and self.allows_retry(r):
                return delay, result
        else:
            call.attempt_done(attempt, outcome)
        return None, self.finish_response(r, entry, result)

    def response_outcome(self, r: _Routed, response: httpx.Response) -> Outcome:
        status = response.status_code
        policy = r.call.retry_policy
        if status < 400 and not policy.inspects_success:
            return SUCCESS
        headers = _lower_headers(response.headers)
        pushback: float | str | None = None
        if policy.rate_limited is None:
            after = parse_retry_after(headers.get("retry-after"), time.time())
            if after is not None:
                pushback = after if after <= self.max_retry_after else "stop"
        outcome = Outcome.http(status, headers, pushback=pushback)  # type: ignore[arg-type]
        if outcome.kind == "success" and policy.enabled and policy.retryable(outcome):
            # A success the policy still retries (retriable-status-codes below
            # 400, retriable-headers): report it as a status the retry
            # decision acts on; outlier detection counts it as a success.
            outcome = Outcome("error_status", status, outcome.pushback, headers)
        return outcome

    def error_outcome(
        self, r: _Routed, attempt: Attempt, exc: httpx.TransportError
    ) -> tuple[Outcome, bool]:
        """(outcome, ours): ``ours`` is True when a proxyless timeout fired."""
        if isinstance(exc, httpx.TimeoutException):
            if attempt.timed_out():
                return (PER_TRY_TIMEOUT if attempt.per_try else OVERALL_TIMEOUT), True
            if isinstance(exc, httpx.ConnectTimeout):
                return CONNECT_FAILURE, False
            return OVERALL_TIMEOUT, False
        if isinstance(exc, httpx.ConnectError):
            return CONNECT_FAILURE, False
        return RESET, False

    def allows_retry(self, r: _Routed) -> bool:
        if not r.can_replay():
            return False
        policy = r.call.retry_policy
        if not policy.retriable_request_headers:
            return True
        request = r.request
        headers = dict(_lower_headers(request.headers))
        headers.pop("host", None)
        headers[":method"] = request.method
        headers[":path"] = r.raw_path
        headers[":authority"] = r.authority
        headers[":scheme"] = r.scheme
        return policy.request_allows_retry(headers)

    def where(self, r: _Routed, attempt: Attempt | None) -> str:
        text = r.call.describe()
        if attempt is not None:
            text = f"{text}, last endpoint {attempt.endpoint.address}"
        return text

    def failure(
        self, r: _Routed, attempt: Attempt, exc: httpx.TransportError, ours: bool
    ) -> Exception:
        call = r.call
        if isinstance(call.last_error, ProxylessError):  # the retry budget refused a retry
            out = mesh_error(call.last_error, r.request, "upstream")
            out.__cause__ = exc
            return out
        if ours:
            why = "per-try timeout" if attempt.per_try else r.why_timeout
            connecting = isinstance(exc, httpx.ConnectTimeout)
            return timeout_error(
                r.request, f"{why} expired ({self.where(r, attempt)})", exc, connecting=connecting
            )
        return upstream_error(exc, r.request, self.where(r, attempt))

    def finish_response(
        self,
        r: _Routed,
        entry: PoolEntry,
        response: httpx.Response,
    ) -> httpx.Response:
        plan = r.plan
        if plan.response_levels:
            hl = [
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers.raw
            ]
            hl = plan.response_headers(hl)
            response.headers = httpx.Headers(
                [(k.encode("latin-1"), v.encode("latin-1")) for k, v in hl]
            )
        done = _Finisher(self.pools, entry, r.call.end)
        return _wrap_body(response, done, r.call.deadline, r.request, r)

    # -- mirrors -----------------------------------------------------------------------------
    def mirror_targets(self, r: _Routed) -> list[tuple[EndpointState, ClusterRuntime]]:
        """The endpoints to shadow this request to (Envoy ``request_mirror_policies``)."""
        out: list[tuple[EndpointState, ClusterRuntime]] = []
        rt_state = r.call._rt.current
        if rt_state is None:
            return out
        snap = rt_state[0]
        for policy in r.plan.mirrors:
            fraction = policy.runtime_fraction_per_million
            if fraction < 1_000_000 and self.rng.randrange(1_000_000) >= fraction:
                continue
            try:
                cluster = r.call._rt.cluster(snap, policy.cluster)
                endpoint = cluster.lb.pick(r.call.hash, self.rng, ())
            except ProxylessError as exc:
                log.debug("mirror to cluster %r skipped: %s", policy.cluster, exc)
                continue
            out.append((endpoint, cluster))
        return out

    def mirror_request(
        self, r: _Routed, endpoint: EndpointState, cluster: ClusterRuntime
    ) -> tuple[PoolEntry, _Upstream] | None:
        body = r.request.stream
        if not isinstance(body, httpx.ByteStream):
            return None  # a streamed body is sent once, to the real destination
        info = self._cluster_info(cluster)
        if info.problem:
            return None
        https = r.scheme == "https"
        sni = r.host if https else None
        entry = self.pools.acquire(endpoint.address, r.scheme, sni, info.http2)
        headers = []
        for k, v in r.up_headers:
            if k.lower() == b"host":
                v = shadow_host(v.decode("latin-1")).encode("latin-1")
            headers.append((k, v))
        ext = dict(r.request.extensions)
        timeout = r.call.timeout
        ext["timeout"] = self._timeouts(ext.get("timeout"), timeout, info.connect_timeout)
        if sni is not None:
            ext["sni_hostname"] = sni
        url = _EndpointURL(
            b"https" if https else b"http",
            endpoint.endpoint.address.encode("ascii"),
            endpoint.endpoint.port,
            r.target,
        )
        return entry, _Upstream(r.request.method, url, headers, body, ext)

    def close_pools(self) -> list[Any]:
        self.closed = True
        return self.pools.take_all()


def _setup(
    transport_cls: Any,
    mesh: Mesh | None,
    hosts: Iterable[str] | str | None,
    fallback: Fallback,
    retry_buffer_limit: int,
    max_retry_after: float,
    options: dict[str, Any],
    passthrough: Any,
) -> tuple[_Core, Any]:
    """The core of a sync or async transport, and its pass-through transport
    (the caller's, else one made like the endpoints' with the caller's
    ``verify``/``cert``/``trust_env``/``limits``; ``transport_cls`` is
    ``HTTPTransport`` or ``AsyncHTTPTransport``)."""

    def factory(http2: bool) -> Any:
        return transport_cls(http1=not http2, http2=http2, **options)

    is_async = transport_cls is httpx.AsyncHTTPTransport
    core = _Core(mesh, hosts, fallback, retry_buffer_limit, max_retry_after, is_async, factory)
    return core, passthrough if passthrough is not None else transport_cls(**options)


def _decide(core: _Core, request: httpx.Request, host: str, port: int | None) -> HostDecision:
    try:
        return core.table.decide(host, port, core.config_wait(request))
    except ProxylessError as exc:
        raise mesh_error(exc, request) from None


# -- the sync transport ----------------------------------------------------------------------------


class Transport(httpx.BaseTransport):
    """An ``httpx.BaseTransport`` routing by xDS (see the module docstring).

    ``mesh``: the :class:`~proxyless.mesh.Mesh` (default: the process-wide
    one from ``GRPC_XDS_BOOTSTRAP``). ``hosts`` / ``fallback``: which hosts
    go through the mesh and what happens to the others
    (:mod:`proxyless.interceptors.httpx_hosts`). ``verify``, ``cert``,
    ``trust_env``, ``limits`` configure every endpoint's
    ``httpx.HTTPTransport`` and the pass-through one (or give your own
    ``passthrough`` transport). ``retry_buffer_limit``: the largest request
    body kept for retries. ``max_retry_after``: the longest ``Retry-After``
    waited for before a retry.
    """

    def __init__(
        self,
        mesh: Mesh | None = None,
        *,
        hosts: Iterable[str] | str | None = None,
        fallback: Fallback = "passthrough",
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        passthrough: httpx.BaseTransport | None = None,
        retry_buffer_limit: int = DEFAULT_RETRY_BUFFER_LIMIT,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        self._passthrough: httpx.BaseTransport
        self._core, self._passthrough = _setup(
            httpx.HTTPTransport,
            mesh,
            hosts,
            fallback,
            retry_buffer_limit,
            max_retry_after,
            {"verify": verify, "cert": cert, "trust_env": trust_env, "limits": limits},
            passthrough,
        )
        self._mirror_pool: ThreadPoolExecutor | None = None
        self._mirror_pending = 0
        self._lock = threading.Lock()

    @property
    def mesh(self) -> Mesh:
        return self._core.mesh

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        if core.closed:
            raise RuntimeError("the proxyless httpx transport is closed")
        fast = core.fast(request)
        first: _First | None = None
        if fast is not None:
            try:
                result: httpx.Response | httpx.TransportError = fast.entry.transport.handle_request(
                    fast.upstream
                )
            except httpx.TransportError as exc:
                result = exc
            except BaseException:
                core.fast_abort(fast)
                raise
            done = core.fast_done(fast, request, result)
            if isinstance(done, httpx.Response):
                return done
            routed, first = done
        else:
            scheme, host, port = core.check_url(request)
            decision = core.table.cached(host, port) or _decide(core, request, host, port)
            if not decision.in_mesh:
                if core.refuse:
                    raise core.fallback_error(request, decision)
                return self._passthrough.handle_request(request)
            got = core.route_request(request, decision, scheme, host, port)
            if isinstance(got, httpx.Response):
                return got
            routed = got
        try:
            return self._send(core, routed, first)
        except BaseException:
            routed.call.end()
            raise

    def _send(
        self,
        core: _Core,
        r: _Routed,
        first: _First | None = None,
    ) -> httpx.Response:
        """The attempts of a routed request; ``first`` is an attempt the fast
        path already made."""
        call = r.call
        if first is None and call.fault is not NO_FAULT:
            pause, err = core.fault_delay(r)
            if pause:
                time.sleep(pause)
            if err is not None:
                raise err
            local = core.fault_response(r)
            if local is not None:
                call.end()
                return local
        if first is None and r.plan.mirrors:
            self._mirror(core, r)
        while True:
            if first is not None:
                attempt, entry, result = first
                first = None
            else:
                attempt, entry, upstream = core.start_attempt(r)
                try:
                    result = entry.transport.handle_request(upstream)
                except httpx.TransportError as exc:
                    result = exc
                except BaseException:
                    core.pools.release_entry(entry)
                    attempt.endpoint.active_requests -= 1
                    raise
            delay, response = core.settle(r, attempt, entry, result)
            if delay is None:
                assert response is not None
                return response
            if response is not None:  # a failed response: read it to keep its connection
                _drain(response)
                core.pools.release_entry(entry)
            if delay > 0:
                time.sleep(delay)

    def _mirror(self, core: _Core, r: _Routed) -> None:
        for endpoint, cluster in core.mirror_targets(r):
            built = core.mirror_request(r, endpoint, cluster)
            if built is None:
                continue
            entry, upstream = built
            with self._lock:
                if self._mirror_pending >= _MIRROR_QUEUE:
                    core.pools.release_entry(entry)
                    continue
                self._mirror_pending += 1
                if self._mirror_pool is None:
                    self._mirror_pool = ThreadPoolExecutor(
                        max_workers=2, thread_name_prefix="proxyless-mirror"
                    )
                pool = self._mirror_pool
            pool.submit(self._send_mirror, entry, upstream)

    def _send_mirror(self, entry: PoolEntry, upstream: _Upstream) -> None:
        core = self._core
        try:
            response = entry.transport.handle_request(upstream)
            try:
                response.read()
            finally:
                response.close()
        except Exception as exc:
            log.debug("mirror request to %s failed: %s", entry.address, exc)
        finally:
            core.pools.release_entry(entry)
            with self._lock:
                self._mirror_pending -= 1

    def close(self) -> None:
        """Close every endpoint connection and the pass-through transport."""
        if self._core.closed:
            return
        for transport in self._core.close_pools():
            try:
                transport.close()
            except Exception:
                log.debug("closing an endpoint transport failed", exc_info=True)
        if self._mirror_pool is not None:
            self._mirror_pool.shutdown(wait=False, cancel_futures=True)
        self._passthrough.close()

    def __repr__(self) -> str:
        return f"<proxyless.httpx.Transport {self._core.hosts!r} endpoints={len(self._core.pools)}>"


def _drain(response: httpx.Response) -> None:
    """Read a small failed response (keeps its connection), else just close it."""
    try:
        length = int(response.headers.get("content-length", "-1"))
        if 0 <= length <= _DRAIN_LIMIT:
            response.read()
    except (httpx.HTTPError, ValueError):
        pass
    finally:
        response.close()


async def _adrain(response: httpx.Response) -> None:
    try:
        length = int(response.headers.get("content-length", "-1"))
        if 0 <= length <= _DRAIN_LIMIT:
            await response.aread()
    except (httpx.HTTPError, ValueError):
        pass
    finally:
        await response.aclose()


# -- the async transport ---------------------------------------------------------------------------


class AsyncTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` routing by xDS: the same request path as
    :class:`Transport` (same arguments). Routing and picking are synchronous
    and never block the event loop; only a host's first lookup (waiting for
    the control plane) runs in the default executor."""

    def __init__(
        self,
        mesh: Mesh | None = None,
        *,
        hosts: Iterable[str] | str | None = None,
        fallback: Fallback = "passthrough",
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        passthrough: httpx.AsyncBaseTransport | None = None,
        retry_buffer_limit: int = DEFAULT_RETRY_BUFFER_LIMIT,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        self._passthrough: httpx.AsyncBaseTransport
        self._core, self._passthrough = _setup(
            httpx.AsyncHTTPTransport,
            mesh,
            hosts,
            fallback,
            retry_buffer_limit,
            max_retry_after,
            {"verify": verify, "cert": cert, "trust_env": trust_env, "limits": limits},
            passthrough,
        )
        self._mirrors: set[asyncio.Task[None]] = set()

    @property
    def mesh(self) -> Mesh:
        return self._core.mesh

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        if core.closed:
            raise RuntimeError("the proxyless httpx transport is closed")
        fast = core.fast(request)
        first: _First | None = None
        if fast is not None:
            try:
                result: (
                    httpx.Response | httpx.TransportError
                ) = await fast.entry.transport.handle_async_request(fast.upstream)
            except httpx.TransportError as exc:
                result = exc
            except BaseException:
                core.fast_abort(fast)
                raise
            done = core.fast_done(fast, request, result)
            if isinstance(done, httpx.Response):
                return done
            routed, first = done
        else:
            scheme, host, port = core.check_url(request)
            decision = core.table.cached(host, port)
            if decision is None:
                loop = asyncio.get_running_loop()
                decision = await loop.run_in_executor(None, _decide, core, request, host, port)
            if not decision.in_mesh:
                if core.refuse:
                    raise core.fallback_error(request, decision)
                return await self._passthrough.handle_async_request(request)
            got = core.route_request(request, decision, scheme, host, port)
            if isinstance(got, httpx.Response):
                return got
            routed = got
        try:
            return await self._send(core, routed, first)
        except BaseException:
            routed.call.end()
            raise

    async def _send(
        self,
        core: _Core,
        r: _Routed,
        first: _First | None = None,
    ) -> httpx.Response:
        """The attempts of a routed request; ``first`` is an attempt the fast
        path already made."""
        call = r.call
        if first is None and call.fault is not NO_FAULT:
            pause, err = core.fault_delay(r)
            if pause:
                await asyncio.sleep(pause)
            if err is not None:
                raise err
            local = core.fault_response(r)
            if local is not None:
                call.end()
                return local
        if first is None and r.plan.mirrors:
            self._mirror(core, r)
        while True:
            if first is not None:
                attempt, entry, result = first
                first = None
            else:
                attempt, entry, upstream = core.start_attempt(r)
                try:
                    result = await entry.transport.handle_async_request(upstream)
                except httpx.TransportError as exc:
                    result = exc
                except BaseException:
                    core.pools.release_entry(entry)
                    attempt.endpoint.active_requests -= 1
                    raise
            delay, response = core.settle(r, attempt, entry, result)
            if delay is None:
                assert response is not None
                return response
            if response is not None:  # a failed response: read it to keep its connection
                await _adrain(response)
                core.pools.release_entry(entry)
            if delay > 0:
                await asyncio.sleep(delay)

    def _mirror(self, core: _Core, r: _Routed) -> None:
        for endpoint, cluster in core.mirror_targets(r):
            if len(self._mirrors) >= _MIRROR_QUEUE:
                return
            built = core.mirror_request(r, endpoint, cluster)
            if built is None:
                continue
            task = asyncio.ensure_future(self._send_mirror(*built))
            self._mirrors.add(task)
            task.add_done_callback(self._mirrors.discard)

    async def _send_mirror(self, entry: PoolEntry, upstream: _Upstream) -> None:
        try:
            response = await entry.transport.handle_async_request(upstream)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except Exception as exc:
            log.debug("mirror request to %s failed: %s", entry.address, exc)
        finally:
            self._core.pools.release_entry(entry)

    async def aclose(self) -> None:
        """Close every endpoint connection and the pass-through transport."""
        if self._core.closed:
            return
        for task in list(self._mirrors):
            task.cancel()
        for transport in self._core.close_pools():
            try:
                await transport.aclose()
            except Exception:
                log.debug("closing an endpoint transport failed", exc_info=True)
        await self._passthrough.aclose()

    def __repr__(self) -> str:
        return (
            f"<proxyless.httpx.AsyncTransport {self._core.hosts!r} "
            f"endpoints={len(self._core.pools)}>"
        )
