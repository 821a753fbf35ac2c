"""The httpx fast path: routes that requests with the same URL take without routing.

A :class:`FastLane` is the httpx side of a
:class:`~proxyless.runtime.call.Lane`: a route every request with the same
URL scheme, host, port, ``Host`` header and ``:path`` takes in one snapshot
(:func:`~proxyless.runtime.target.path_determined`) and that asks nothing
of the request beyond an endpoint: besides what the runtime lane rules out,
no mirror, header mutation, rewrite or response header mutation. Requests
on it skip routing and make their first attempt without a
:class:`~proxyless.runtime.call.Call` (:class:`FastRequest`); one is made
only when that attempt does not plainly succeed (a transport error, a
status of 400 or more, or a retry policy that inspects successes), and the
request then carries on exactly as on the general path. A lane belongs to
one snapshot of its target: a new snapshot drops the target's lanes
(``docs/httpx.md``, "The fast path"; ``docs/architecture.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import httpx

from proxyless.httpx._bodies import ReplayBody, body_for
from proxyless.httpx._pool import EndpointPools, PoolEntry
from proxyless.httpx._router import RoutePlan
from proxyless.httpx._upstream import (
    ClusterInfo,
    EndpointURL,
    Routed,
    Upstream,
    endpoint_conn,
    host_value,
    request_info,
)
from proxyless.lb.state import EndpointState
from proxyless.routing import http_timeout
from proxyless.runtime.call import Attempt, FirstAttempt, Lane
from proxyless.runtime.target import TargetRuntime

__all__ = ["LANE_LIMIT", "FastLane", "FastRequest", "FirstTry", "LaneKey"]

#: Fast-path routes kept per transport, at most (the table is emptied when full).
LANE_LIMIT: Final = 1024

#: (URL scheme, host, port, ``Host`` header, ``:path``)
LaneKey = tuple[str, str, int | None, bytes | None, bytes]

#: An attempt the fast path made: the attempt, its pool entry, and its result.
FirstTry = tuple[Attempt, PoolEntry, "httpx.Response | httpx.TransportError"]


class FastLane:
    """One fast-path route (module docstring), with what its requests reuse."""

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
        "tls_required",
        "urls",
        "why_timeout",
    )

    def __init__(
        self,
        rt: TargetRuntime,
        core: Lane,
        hplan: RoutePlan,
        info: ClusterInfo,
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
        #: a TLS cluster: each request takes the pool of its credentials' version
        self.tls_required = info.tls_required
        self.connect_timeout = info.connect_timeout
        self.inspects_success = core.plan.retry_policy.inspects_success
        action = core.plan.route.route_action
        assert action is not None
        self.why_timeout = http_timeout(action, None)[1]
        #: (the caller's httpx timeouts, the attempt's timeout, what is passed on)
        self.timeouts: tuple[object, float | None, dict[str, Any]] = (None, None, {})
        #: the upstream URL per endpoint connection pool
        self.urls: dict[PoolEntry, EndpointURL] = {}

    def url_for(self, entry: PoolEntry, endpoint: EndpointState) -> EndpointURL:
        urls = self.urls
        if len(urls) >= 64:
            urls.clear()
        url = urls[entry] = EndpointURL(
            b"https" if self.scheme == "https" or self.tls_required else b"http",
            endpoint.endpoint.address.encode("ascii"),
            endpoint.endpoint.port,
            self.raw_path,
        )
        return url


class FastRequest:
    """One fast-path request: its first attempt and, once that plainly
    succeeded, what its response body gives back when closed (called like a
    :class:`~proxyless.httpx._bodies.Finisher`)."""

    __slots__ = (
        "attempt",
        "entry",
        "extra",
        "held",
        "lane",
        "pools",
        "raw_headers",
        "tel",
        "upstream",
    )

    lane: FastLane
    attempt: FirstAttempt
    entry: PoolEntry
    pools: EndpointPools
    held: bool
    upstream: Upstream
    raw_headers: list[tuple[bytes, bytes]]
    tel: Any
    #: headers every attempt adds (request id, trace context), if any
    extra: list[tuple[bytes, bytes]] | None

    @property
    def why_timeout(self) -> str:
        return self.lane.why_timeout

    def __call__(self) -> None:
        if self.held:
            self.held = False
            self.pools.release_entry(self.entry)
            self.lane.breaker.release_request()

    def routed(
        self, request: httpx.Request, limit: int, replay: Callable[[Any, int], ReplayBody]
    ) -> Routed:
        """The general path's view of this request after its first attempt
        (``limit``, ``replay``: how to keep its body for retries)."""
        lane = self.lane
        raw_path = request.url.raw_path.decode("ascii")
        hv = host_value(self.raw_headers)
        assert hv is not None
        authority = hv.decode("latin-1")
        info = request_info(request, self.raw_headers, authority, raw_path, lane.scheme)
        r = Routed()
        r.request = request
        r.call = lane.core.resume(lane.rt, info, self.attempt, endpoint_conn)
        r.plan = lane.hplan
        r.scheme = lane.scheme
        r.host = lane.host
        r.authority = authority
        r.raw_path = raw_path
        r.target = request.url.raw_path
        extra = self.extra
        r.up_headers = self.raw_headers if not extra else [*self.raw_headers, *extra]
        r.body, r.replayable = body_for(request, limit, replay)
        return r
