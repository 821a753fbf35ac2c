"""What both httpx transports share: hosts, routing, the fast path, attempt bookkeeping.

:class:`Core` is the sans-I/O part of :class:`proxyless.httpx.Transport`
and :class:`proxyless.httpx.AsyncTransport`; the transports only send,
sleep and read (``docs/architecture.md``, "The request path"):

1. which hosts go through the mesh (:mod:`proxyless.httpx._hosts`);
2. the :class:`~proxyless.runtime.call.Call`: virtual host by the ``Host``
   header, first matching route (method, path, query, headers and the
   pseudo-headers ``:method``, ``:path``, ``:authority``, ``:scheme``),
   weighted cluster, hash policy, circuit breaker, EDS drops, the fault
   filter (HTTP aborts answered locally, delays slept by the transport);
3. redirect and direct-response routes answered locally; header
   mutations, host and path rewrites (:mod:`proxyless.httpx._router`,
   Envoy's router semantics), request mirrors (:mod:`proxyless.httpx._mirror`);
4. attempts on per-endpoint httpx connection pools
   (:mod:`proxyless.httpx._pool`), each outcome classified once
   (:mod:`proxyless.httpx._outcome`) and fed to outlier detection and the
   retry policy (Envoy ``retry_on``: ``5xx``, ``gateway-error``, ``reset``,
   ``connect-failure``, ``retriable-4xx``, ``refused-stream``,
   ``retriable-status-codes``, ``retriable-headers``), with Envoy's backoff,
   ``Retry-After`` and the cluster's retry budget;
5. the route ``timeout`` (Envoy's 15 s default; 0 disables it) bounds the
   whole request, attempts and response body included, and the retry
   policy's ``per_try_timeout`` each attempt; httpx's own ``Timeout`` still
   bounds every connect/read/write, whichever is shorter.

A cluster with an ``UpstreamTlsContext`` is reached over TLS with its
current credentials only (:mod:`proxyless.httpx._tls`): :func:`~proxyless.httpx._tls.pending_credentials`
tells the transport to wait for credentials still on their way, and each
attempt takes the pool of the credentials' version.

Requests whose route depends only on the URL and the ``Host`` header, and
asks nothing of the request but an endpoint, take the fast path
(:mod:`proxyless.httpx._lane`): no routing, no
:class:`~proxyless.runtime.call.Call` unless the first attempt fails.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

import httpx

from proxyless.errors import ClusterNotAvailable, InvalidTarget, ProxylessError, SecurityError
from proxyless.httpx._bodies import Finisher, ReplayBody, TimeoutSource, body_for
from proxyless.httpx._errors import mesh_error
from proxyless.httpx._hosts import Fallback, HostDecision, HostTable, MeshHosts, target_name
from proxyless.httpx._lane import LANE_LIMIT, FastLane, FastRequest, FirstTry, LaneKey
from proxyless.httpx._outcome import (
    allows_retry,
    error_outcome,
    failure,
    local_reply,
    response_outcome,
)
from proxyless.httpx._pool import (
    EndpointPools,
    PoolEntry,
    attach,
    stop_waiting,
    wait_for_connection,
)
from proxyless.httpx._router import (
    RoutePlan,
    direct_response_headers,
    plan_for,
    redirect_location,
)
from proxyless.httpx._telemetry import RawHeaders, attempt_headers
from proxyless.httpx._tls import client_tls
from proxyless.httpx._upstream import (
    ClusterInfo,
    EndpointURL,
    Routed,
    Upstream,
    attempt_timeouts,
    endpoint_conn,
    host_value,
    request_info,
    rewrite_request,
    set_host,
)
from proxyless.lb.state import EndpointState
from proxyless.mesh import Mesh
from proxyless.observability.telemetry import CallTelemetry
from proxyless.resilience.outcome import CONNECT_FAILURE, LOCAL_CIRCUIT_OPEN, SUCCESS
from proxyless.resources.model import DirectResponseAction, RedirectAction
from proxyless.routing import MissingClusterHeader
from proxyless.runtime.call import Attempt, Call, Lane
from proxyless.runtime.cluster import ClusterRuntime
from proxyless.runtime.target import TargetRuntime, path_determined
from proxyless.security.credentials import ClientTls

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_RETRY_AFTER",
    "DEFAULT_RETRY_BUFFER_LIMIT",
    "Core",
    "make_core",
]

log = logging.getLogger("proxyless.httpx")

#: Envoy's default per-connection buffer limit: the largest body kept for retries.
DEFAULT_RETRY_BUFFER_LIMIT: Final = 1024 * 1024
#: Longest ``Retry-After`` honoured before a retry; longer ones end the retries.
DEFAULT_MAX_RETRY_AFTER: Final = 60.0
#: httpx's default pool limits, per endpoint.
DEFAULT_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20)

_channel_ids = itertools.count(1 << 20)

#: Makes a replayable request body (sync or async) from a stream and a limit.
ReplayFactory = Callable[[Any, int], ReplayBody]
#: Wraps a response body (sync or async): inner stream, done, deadline, request, timeout source.
BodyFactory = Callable[
    [Any, Callable[[], None], "float | None", httpx.Request, TimeoutSource],
    "httpx.SyncByteStream | httpx.AsyncByteStream",
]


def _url_error(request: httpx.Request, why: str) -> httpx.TransportError:
    return mesh_error(InvalidTarget(why), request, "url")


class Core:
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
        replay: ReplayFactory,
        response_body: BodyFactory,
        tls_factory: Any = None,
        max_connections: int | None = None,
    ) -> None:
        if retry_buffer_limit < 0:
            raise ValueError("retry_buffer_limit must be >= 0")
        self.mesh = mesh if mesh is not None else Mesh.default()
        self.hosts = MeshHosts(hosts, fallback)
        self.table = HostTable(self.mesh, self.hosts)
        self.refuse = fallback == "refuse"
        self.retry_buffer_limit = retry_buffer_limit
        self.max_retry_after = max_retry_after
        self.pools = EndpointPools(
            factory, is_async=is_async, tls_factory=tls_factory, max_connections=max_connections
        )
        attach(self.mesh, self.pools)
        self.channel_id = next(_channel_ids)
        self.rng = self.mesh.rng
        self.replay = replay
        self.response_body = response_body
        self._clusters: dict[int, ClusterInfo] = {}
        self.lanes: dict[LaneKey, FastLane] = {}
        #: the snapshot each target's lanes belong to
        self._lanes_state: dict[TargetRuntime, object] = {}
        self.closed = False

    # -- the request URL ------------------------------------------------------------
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
        tel: CallTelemetry | None = None,
        extra: RawHeaders | None = None,
    ) -> Routed | httpx.Response:
        """Route ``request``: a :class:`Routed`, or the local answer (redirect,
        direct response, fault abort, cluster_not_found code)."""
        raw_path = request.url.raw_path.decode("ascii")
        authority = host_value.decode("latin-1") if host_value else target_name(host, port)
        info = request_info(request, raw_headers, authority, raw_path, scheme)
        state = rt.current
        try:
            call = Call(
                rt,
                info,
                timeout=None,
                wait_for_ready=False,
                channel_id=self.channel_id,
                pool_get=endpoint_conn,
                allow_local_actions=True,
            )
        except MissingClusterHeader as exc:
            log.debug("%s", exc)
            return local_reply(request, exc.response_code, [("content-length", "0")], b"")
        except ProxylessError as exc:
            raise mesh_error(exc, request) from None
        if tel is not None:
            call.obs = tel
            cluster_name = call.cluster.name if call.cluster else ""
            tel.routed(call.route.route.name or "", cluster_name, call.fault)
        state = state or rt.current
        assert state is not None
        plan = plan_for(call.route, state[1].route_config)
        action = call.route.action
        if call.cluster is None:
            call.end()
            if isinstance(action, RedirectAction):
                location = redirect_location(action, call.route.route, scheme, authority, raw_path)
                hl = [("location", location), ("content-length", "0")]
                return local_reply(request, action.response_code, plan.response_headers(hl), b"")
            assert isinstance(action, DirectResponseAction)
            hl = plan.response_headers(direct_response_headers(action))
            return local_reply(request, action.status, hl, action.body)
        if call.cluster is not None:
            info_c = self.cluster_info(call.cluster)
            if info_c.problem:
                call.end()
                raise mesh_error(ClusterNotAvailable(info_c.problem), request, "upstream")
        r = Routed()
        r.request = request
        r.call = call
        r.plan = plan
        r.scheme = scheme
        r.host = host
        r.authority = authority
        r.raw_path = raw_path
        if plan.changes_request:
            target, r.up_headers = rewrite_request(plan, call, raw_headers, raw_path)
            r.target = request.url.raw_path if target is None else target
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
        if extra:
            r.up_headers = [*r.up_headers, *extra]
        r.body, r.replayable = body_for(request, self.retry_buffer_limit, self.replay)
        return r

    def route_request(
        self,
        request: httpx.Request,
        decision: HostDecision,
        scheme: str,
        host: str,
        port: int | None,
        tel: CallTelemetry | None = None,
        extra: RawHeaders | None = None,
    ) -> Routed | httpx.Response:
        """:meth:`route` for a request to a mesh host."""
        rt = decision.runtime
        assert rt is not None
        raw_headers = request.headers.raw
        hv = host_value(raw_headers)
        return self.route(request, rt, scheme, host, port, raw_headers, hv, tel, extra)

    # -- the fast path ----------------------------------------------------------------------
    def _add_lane(
        self, rt: TargetRuntime, state: object, call: Call, hplan: RoutePlan, key: LaneKey
    ) -> None:
        cluster = call.cluster
        if cluster is None or cluster.config.children or not path_determined(call.route):
            return  # (an aggregate's endpoints are reached as their leaf clusters say)
        info = self.cluster_info(cluster)
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
        if len(lanes) >= LANE_LIMIT:
            lanes.clear()
        scheme, host, _, _, raw_path = key
        lanes[key] = FastLane(rt, core, hplan, info, scheme, host, raw_path)

    def fast(
        self,
        request: httpx.Request,
        tel: CallTelemetry | None = None,
        extra: RawHeaders | None = None,
    ) -> FastRequest | None:
        """Start ``request`` on the fast path when it has a :class:`FastLane` in
        the current snapshot: take the breaker slot, pick an endpoint and
        build the first attempt. None sends it down the general path (which
        also reports every error, except the two raised here the same way)."""
        url = request.url
        raw_headers = request.headers.raw
        hv = raw_headers[0][1] if raw_headers and raw_headers[0][0] == b"Host" else None
        if hv is None:
            hv = host_value(raw_headers)
        lane = self.lanes.get((url.scheme, url.host, url.port, hv, url.raw_path))
        if (
            lane is None
            or lane.core.state is not lane.rt.current
            or not isinstance(request.stream, httpx.ByteStream)
            or lane.core.cluster.config is not lane.config
        ):
            return None
        core = lane.core
        tls: ClientTls | None = None
        if lane.tls_required:
            creds = core.cluster.tls
            if creds is None:
                return None
            try:
                tls = creds.current()
            except SecurityError:
                return None  # the general path waits for them, or reports why not
        try:
            attempt = core.begin(self.rng, None)
        except ProxylessError as exc:
            raise mesh_error(exc, request) from None
        if attempt is None:
            return None
        endpoint = attempt.endpoint
        try:
            if tls is None:
                entry = self.pools.acquire(endpoint.address, lane.scheme, lane.sni, lane.http2)
            else:
                entry = self.pools.acquire_tls(endpoint.address, tls, lane.http2)
        except BaseException:
            core.abandon(attempt)
            raise
        if entry.limit is not None and entry.in_flight > entry.limit:
            # every connection is busy: the request waits for one (pending)
            if not core.breaker.try_acquire_pending():
                self.pools.release_entry(entry)
                core.abandon(attempt)
                raise mesh_error(core.breaker.open_error("max_pending_requests"), request)
            wait_for_connection(entry, attempt, core.breaker)
        attempt.conn = endpoint
        f = FastRequest()
        f.lane = lane
        f.attempt = attempt
        f.entry = entry
        f.raw_headers = raw_headers
        f.tel = tel
        f.extra = extra
        headers = raw_headers if extra is None else [*raw_headers, *extra]
        if tel is not None:
            tel.routed(core.plan.route.route.name or "", core.cluster.name)
            tel.attempt_started(attempt)
            headers = attempt_headers(tel, raw_headers)
        ext = dict(request.extensions)
        user = ext.get("timeout")
        timeout = attempt.timeout
        cached = lane.timeouts
        if cached[0] != user or cached[1] != timeout:
            limits = attempt_timeouts(user, timeout, lane.connect_timeout)
            cached = lane.timeouts = (user, timeout, limits)
        ext["timeout"] = cached[2]
        if lane.sni is not None and tls is None:
            ext["sni_hostname"] = lane.sni
        upstream_url = lane.urls.get(entry)
        if upstream_url is None:
            upstream_url = lane.url_for(entry, endpoint)
        f.upstream = Upstream(request.method, upstream_url, headers, request.stream, ext)
        return f

    def fast_done(
        self,
        f: FastRequest,
        request: httpx.Request,
        result: httpx.Response | httpx.TransportError,
    ) -> httpx.Response | tuple[Routed, FirstTry]:
        """After the first attempt: the response when it plainly succeeded,
        else the routed request and that attempt for the general path."""
        lane = f.lane
        if (
            not isinstance(result, httpx.Response)
            or result.status_code >= 400
            or lane.inspects_success
        ):
            routed = f.routed(request, self.retry_buffer_limit, self.replay)
            routed.call.obs = f.tel
            return routed, (f.attempt, f.entry, result)
        lane.core.succeeded(f.attempt.endpoint, f.attempt)
        tel = f.tel
        if tel is not None:
            tel.response_status = result.status_code
            tel.attempt_ended(f.attempt, SUCCESS)
        f.pools = self.pools
        f.held = True
        result.stream = self.response_body(result.stream, f, f.attempt.call_deadline, request, f)
        return result

    def fast_abort(self, f: FastRequest) -> None:
        """The first attempt ended in something other than an httpx error."""
        self.pools.release_entry(f.entry)
        f.lane.core.abandon(f.attempt)

    def cluster_info(self, rt: ClusterRuntime) -> ClusterInfo:
        info = self._clusters.get(id(rt))
        if info is None or info.config is not rt.config:
            info = ClusterInfo(rt)
            self._clusters[id(rt)] = info
        return info

    # -- attempts ----------------------------------------------------------------------------
    def start_attempt(self, r: Routed) -> tuple[Attempt, PoolEntry, Upstream]:
        cluster = r.call.cluster
        assert cluster is not None
        aggregate = bool(cluster.config.children)
        info = self.cluster_info(cluster)
        tls = client_tls(r, cluster) if info.tls_required and not aggregate else None
        try:
            attempt = r.call.attempt()
        except ProxylessError as exc:
            raise mesh_error(exc, r.request) from None
        es: EndpointState = attempt.conn
        if aggregate:
            # The leaf cluster that lists the endpoint says how to reach it.
            info, tls = self._leaf_upstream(r, cluster, attempt)
        https = r.scheme == "https" or tls is not None
        sni = r.host if https and tls is None else None
        try:
            if tls is None:
                entry = self.pools.acquire(es.address, r.scheme, sni, info.http2)
            else:
                entry = self.pools.acquire_tls(es.address, tls, info.http2)
        except RuntimeError:
            es.active_requests -= 1
            raise
        if entry.limit is not None and entry.in_flight > entry.limit:
            # every connection is busy: the request waits for one (pending)
            breaker = r.call.breaker
            if not breaker.try_acquire_pending():
                self.pools.release_entry(entry)
                r.call.attempt_done(attempt, LOCAL_CIRCUIT_OPEN, may_retry=False)
                raise mesh_error(breaker.open_error("max_pending_requests"), r.request)
            wait_for_connection(entry, attempt, breaker)
        headers = r.up_headers
        if r.plan.auto_host_rewrite and es.endpoint.hostname:
            hl = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]
            hl = set_host(hl, es.endpoint.hostname, keep_original=True)
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in hl]
        tel = r.call.obs
        if tel is not None:
            headers = attempt_headers(tel, headers)
        ext = dict(r.request.extensions)
        ext["timeout"] = attempt_timeouts(ext.get("timeout"), attempt.timeout, info.connect_timeout)
        if sni is not None:
            ext["sni_hostname"] = sni
        raw_host = entry.raw_host
        if raw_host is None:
            raw_host = entry.raw_host = es.endpoint.address.encode("ascii")
        url = EndpointURL(b"https" if https else b"http", raw_host, es.endpoint.port, r.target)
        return attempt, entry, Upstream(r.request.method, url, headers, r.body, ext)

    def _leaf_upstream(
        self, r: Routed, aggregate: ClusterRuntime, attempt: Attempt
    ) -> tuple[ClusterInfo, ClientTls | None]:
        """How to reach the endpoint of ``attempt``, picked from the aggregate
        cluster: its leaf cluster's protocol options and TLS credentials
        (never plaintext for a TLS leaf). A problem ends the attempt as a
        connect failure and raises the request's error."""
        try:
            leaf = self.mesh.clusters.leaf_of(aggregate, attempt.conn)
            info = self.cluster_info(leaf)
            if info.problem:
                raise ClusterNotAvailable(info.problem)
        except ProxylessError as exc:
            r.call.attempt_done(attempt, CONNECT_FAILURE, may_retry=False)
            raise mesh_error(exc, r.request, "upstream") from None
        try:
            return info, client_tls(r, leaf) if info.tls_required else None
        except httpx.TransportError:
            r.call.attempt_done(attempt, CONNECT_FAILURE, may_retry=False)
            raise

    @staticmethod
    def sent(attempt: Attempt) -> None:
        """The attempt's request was answered or failed: it no longer waits
        for a connection (gives back its ``max_pending_requests`` slot, unless
        a connection freed earlier took it; ``_pool.hand_over``)."""
        stop_waiting(attempt)

    def settle(
        self,
        r: Routed,
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
            outcome, ours = error_outcome(attempt, result)
            delay = call.attempt_done(attempt, outcome)
            if delay is None or not allows_retry(r):
                raise failure(r, attempt, result, ours) from result
            return delay, None
        outcome = response_outcome(r, result, self.max_retry_after)
        if call.obs is not None:
            call.obs.response_status = result.status_code
        if outcome.kind != "success":
            delay = call.attempt_done(attempt, outcome)
            if delay is not None and allows_retry(r):
                return delay, result
        else:
            call.attempt_done(attempt, outcome)
        return None, self.finish_response(r, entry, result)

    def finish_response(
        self, r: Routed, entry: PoolEntry, response: httpx.Response
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
        done = Finisher(self.pools, entry, r.call.end)
        response.stream = self.response_body(response.stream, done, r.call.deadline, r.request, r)
        return response

    def close_pools(self) -> list[Any]:
        self.closed = True
        return self.pools.take_all()


def make_core(
    transport_cls: Any,
    replay: ReplayFactory,
    response_body: BodyFactory,
    mesh: Mesh | None,
    hosts: Iterable[str] | str | None,
    fallback: Fallback,
    retry_buffer_limit: int,
    max_retry_after: float,
    options: dict[str, Any],
    passthrough: Any,
    tls_transport: Any = None,
) -> tuple[Core, Any]:
    """The core of a sync or async transport, and its pass-through transport
    (the caller's, else one made like the endpoints' with the caller's
    ``verify``/``cert``/``trust_env``/``limits``; ``transport_cls`` is
    ``HTTPTransport`` or ``AsyncHTTPTransport``, ``replay`` and
    ``response_body`` the matching body classes; ``tls_transport(tls,
    http2, limits)`` makes a TLS cluster's endpoint transports)."""

    def factory(http2: bool) -> Any:
        return transport_cls(http1=not http2, http2=http2, **options)

    def tls_factory(tls: ClientTls, http2: bool) -> Any:
        return tls_transport(tls, http2, options["limits"])

    is_async = issubclass(transport_cls, httpx.AsyncHTTPTransport)
    core = Core(
        mesh,
        hosts,
        fallback,
        retry_buffer_limit,
        max_retry_after,
        is_async,
        factory,
        replay,
        response_body,
        tls_factory if tls_transport is not None else None,
        options["limits"].max_connections,
    )
    return core, passthrough if passthrough is not None else transport_cls(**options)
