"""The request as it goes upstream: routed request, endpoint request, Host rewrites, timeouts.

After routing (:mod:`proxyless.httpx._core`) a request is a :class:`Routed`:
its :class:`~proxyless.runtime.call.Call`, its :class:`~proxyless.httpx._router.RoutePlan`
and the parts every attempt sends (target path, headers, body). Each attempt
hands an endpoint's ``httpx.HTTPTransport`` an :class:`Upstream`: only what
``handle_request`` reads of an ``httpx.Request`` (method, scheme, host,
port, path, raw headers, stream, extensions), so no ``httpx.URL`` is parsed
again per attempt.

Host rewrites follow Envoy's router (``route_components.proto``,
``host_rewrite_literal`` / ``auto_host_rewrite``): a route-level rewrite
keeps the previous Host in ``x-envoy-original-host`` unless it is set
already; a weighted cluster's rewrite does not. httpx's per-operation
timeouts (connect, read, write, pool) are capped by the attempt's timeout
(route ``timeout`` or ``per_try_timeout``) and connect by the cluster's
``connect_timeout`` (Envoy's router and cluster docs).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from proxyless.httpx._router import (
    ORIGINAL_HOST_HEADER,
    ORIGINAL_PATH_HEADER,
    LazyHeaders,
    RoutePlan,
    evaluate_headers,
    rewrite_path,
)
from proxyless.lb.state import EndpointState
from proxyless.routing import RequestInfo
from proxyless.runtime.call import Call
from proxyless.runtime.cluster import ClusterRuntime

if TYPE_CHECKING:
    from proxyless.httpx._bodies import ReplayBody

__all__ = [
    "ClusterInfo",
    "EndpointURL",
    "Routed",
    "Upstream",
    "attempt_timeouts",
    "endpoint_conn",
    "host_value",
    "lower_headers",
    "request_info",
    "rewrite_request",
    "set_host",
]

_H2: bool | None = None


def _h2_available() -> bool:
    global _H2
    if _H2 is None:
        _H2 = importlib.util.find_spec("h2") is not None
    return _H2


def set_host(
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


def rewrite_request(
    plan: RoutePlan, call: Call, raw_headers: list[tuple[bytes, bytes]], raw_path: str
) -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
    """The headers and path of a request whose route changes it (``plan.changes_request``):
    the weighted cluster's mutations and Host come first, then the other
    levels' mutations, the route's Host rewrite and its path rewrite, which
    records the old path in ``x-envoy-original-path`` (Envoy). The path is
    None when it stays as it was."""
    hl = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw_headers]
    if plan.weighted_host_rewrite is not None:
        first = plan.request_levels[:1] if call.route.cluster_weight is not None else ()
        for level in first:
            hl = evaluate_headers(hl, level)
        hl = set_host(hl, plan.weighted_host_rewrite)
        for level in plan.request_levels[len(first) :]:
            hl = evaluate_headers(hl, level)
    else:
        hl = plan.request_headers(hl)
    if plan.host_rewrite is not None:
        hl = set_host(hl, plan.host_rewrite, keep_original=True)
    new_path = None
    if plan.rewrites_path:
        route_action = call.route.route_action
        assert route_action is not None
        new_path = rewrite_path(call.route.route, route_action, raw_path)
    target = None
    if new_path is not None and new_path != raw_path:
        hl = [(k, v) for k, v in hl if k != ORIGINAL_PATH_HEADER]
        hl.append((ORIGINAL_PATH_HEADER, raw_path))
        target = new_path.encode("latin-1")
    return target, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in hl]


def endpoint_conn(endpoint: EndpointState, cluster: Any) -> EndpointState:
    """A :class:`~proxyless.runtime.call.Call`'s ``pool_get``: an httpx
    attempt's connection is its endpoint (the pool is found per attempt)."""
    return endpoint


def host_value(raw: list[tuple[bytes, bytes]]) -> bytes | None:
    """The first ``Host`` header's value (httpx puts it first)."""
    for key, value in raw:
        if len(key) == 4 and key.lower() == b"host":
            return value
    return None


def request_info(
    request: httpx.Request,
    raw_headers: list[tuple[bytes, bytes]],
    authority: str,
    raw_path: str,
    scheme: str,
) -> RequestInfo:
    """What routing reads of ``request`` (headers looked up lazily)."""
    path, mark, query = raw_path.partition("?")
    return RequestInfo(
        authority,
        path,
        query,
        request.method,
        LazyHeaders(raw_headers),
        False,
        "",
        scheme,
        bool(mark) and not query,
    )


def lower_headers(headers: httpx.Headers) -> dict[str, str]:
    """Headers by lower-case name, repeated ones joined with commas."""
    out: dict[str, str] = {}
    for key, value in headers.multi_items():
        prev = out.get(key)
        out[key] = value if prev is None else f"{prev},{value}"
    return out


def attempt_timeouts(user: Any, limit: float | None, connect: float) -> dict[str, Any]:
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


class EndpointURL:
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


class Upstream:
    """What ``HTTPTransport.handle_request`` reads of a request: method, url
    (scheme, host, port, path), raw headers, stream, extensions."""

    __slots__ = ("extensions", "headers", "method", "stream", "url")

    def __init__(
        self,
        method: str,
        url: EndpointURL,
        headers: list[tuple[bytes, bytes]],
        stream: Any,
        extensions: dict[str, Any],
    ) -> None:
        self.method = method
        self.url = url
        self.headers = _RawHeaders(headers)
        self.stream = stream
        self.extensions = extensions


class Routed:
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
    replayable: bool | ReplayBody

    @property
    def why_timeout(self) -> str:
        """Where the request's timeout came from (worked out only when needed)."""
        return self.call.timeout_source or "route timeout"

    def can_replay(self) -> bool:
        r = self.replayable
        return r if isinstance(r, bool) else r.replayable


class ClusterInfo:
    """What the transports need of a cluster: HTTP/2, ``connect_timeout``,
    whether it requires TLS (an ``UpstreamTlsContext``), and why it cannot be
    used (no ``h2`` package), if it cannot."""

    __slots__ = ("config", "connect_timeout", "http2", "problem", "tls_required")

    def __init__(self, rt: ClusterRuntime) -> None:
        cluster = rt.config.cluster
        self.config = rt.config
        self.http2 = bool(cluster is not None and cluster.http2)
        self.connect_timeout = cluster.connect_timeout if cluster is not None else 5.0
        #: the cluster's connections are TLS with its credentials (never plaintext)
        self.tls_required = cluster is not None and cluster.upstream_tls is not None
        self.problem = ""
        if self.http2 and not _h2_available():
            self.problem = (
                f"cluster {rt.name!r} speaks HTTP/2 (http2_protocol_options) but the 'h2' "
                "package is not installed: pip install 'httpx[http2]'"
            )
