"""Route configuration model (RDS): virtual hosts, routes and their actions.

Implements the parts of ``envoy.config.route.v3.RouteConfiguration`` a client
acts on, following gRFC A28 (routing and weighted splits), A31 (timeouts),
A42 (hash policies), A44 (retries) and, where Envoy supports more for HTTP,
Envoy's ``route_components.proto`` documentation (route ``timeout``, retry
host predicates, hedging, request mirroring, rewrites, redirects, direct
responses, header mutations).

Durations are float seconds. ``None`` means "not set in the resource"; the
consumer applies the documented default (e.g. Envoy's 15 s HTTP route
timeout), while 0 keeps the proto meaning ("disabled"). Fractions are per
million. Weighted-cluster entries with weight 0 are dropped at parse time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from proxyless.resources.model.filters import FilterConfig
from proxyless.resources.model.matchers import (
    HeaderMatcher,
    QueryParameterMatcher,
    RegexRewrite,
)
from proxyless.resources.model.regex import Regex

__all__ = [
    "Action",
    "AppendAction",
    "ClusterWeight",
    "DirectResponseAction",
    "HashPolicy",
    "HashPolicyKind",
    "HeaderValueOption",
    "HedgePolicy",
    "LazyRoutes",
    "MirrorPolicy",
    "NonForwardingAction",
    "PathKind",
    "RateLimitedRetryBackOff",
    "RedirectAction",
    "ResetHeader",
    "RetryPolicy",
    "Route",
    "RouteAction",
    "RouteConfiguration",
    "RouteMatch",
    "VirtualHost",
    "plain_virtual_host",
]

AppendAction = Literal[
    "append_if_exists_or_add",
    "add_if_absent",
    "overwrite_if_exists_or_add",
    "overwrite_if_exists",
]
PathKind = Literal["prefix", "path", "safe_regex", "path_separated_prefix"]
HashPolicyKind = Literal[
    "header", "cookie", "query_parameter", "connection_properties", "filter_state"
]


_NO_FILTERS: Mapping[str, FilterConfig] = MappingProxyType({})


def _no_filters() -> Mapping[str, FilterConfig]:
    return _NO_FILTERS  # read-only, so one serves every model


@dataclass(frozen=True, slots=True)
class HeaderValueOption:
    """``envoy.config.core.v3.HeaderValueOption``.

    ``append_action`` comes from ``append_action``, or from the deprecated
    ``append`` (true -> append_if_exists_or_add, false ->
    overwrite_if_exists_or_add); the default is append_if_exists_or_add.
    ``value`` is ``header.value``, or ``header.raw_value`` decoded as UTF-8.
    With ``keep_empty_value`` false an empty value means "do not add".
    """

    key: str
    value: str
    append_action: AppendAction = "append_if_exists_or_add"
    keep_empty_value: bool = False


@dataclass(frozen=True, slots=True)
class ResetHeader:
    """``RetryPolicy.ResetHeader``: a response header carrying the retry delay."""

    name: str
    format: Literal["SECONDS", "UNIX_TIMESTAMP"] = "SECONDS"


@dataclass(frozen=True, slots=True)
class RateLimitedRetryBackOff:
    """``RetryPolicy.rate_limited_retry_back_off`` (``max_interval`` default 300 s)."""

    reset_headers: tuple[ResetHeader, ...]
    max_interval: float = 300.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``envoy.config.route.v3.RetryPolicy`` (gRFC A44; Envoy for HTTP).

    ``retry_on`` holds the raw comma-separated conditions, trimmed and
    lower-cased, unknown ones included (the gRPC and HTTP data paths each
    pick the ones they understand). ``num_retries`` defaults to 1;
    ``base_interval`` to 25 ms and ``max_interval`` to 10 x base.
    ``per_try_timeout``/``per_try_idle_timeout`` None = unset.
    ``retry_host_predicates`` are extension names, e.g.
    ``envoy.retry_host_predicates.previous_hosts``.
    """

    retry_on: frozenset[str] = frozenset()
    num_retries: int = 1
    per_try_timeout: float | None = None
    per_try_idle_timeout: float | None = None
    base_interval: float = 0.025
    max_interval: float = 0.25
    retriable_status_codes: frozenset[int] = frozenset()
    retriable_headers: tuple[HeaderMatcher, ...] = ()
    retriable_request_headers: tuple[HeaderMatcher, ...] = ()
    retry_host_predicates: tuple[str, ...] = ()
    host_selection_retry_max_attempts: int = 1
    rate_limited_retry_back_off: RateLimitedRetryBackOff | None = None


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """``envoy.config.route.v3.HedgePolicy`` (Envoy semantics)."""

    initial_requests: int = 1
    additional_request_chance_per_million: int = 0
    hedge_on_per_try_timeout: bool = False


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """``RouteAction.HashPolicy`` (gRFC A42, Envoy).

    ``name`` is the header name (``header``), cookie name (``cookie``), query
    parameter name (``query_parameter``) or filter-state key
    (``filter_state``, e.g. ``io.grpc.channel_id``); "" for
    ``connection_properties`` (which hashes the source IP when
    ``source_ip`` is true). ``regex_rewrite`` applies to header values.
    ``cookie_ttl``/``cookie_path`` describe the cookie to generate when the
    request carries none (``cookie_ttl`` None = do not generate).
    """

    kind: HashPolicyKind
    name: str = ""
    terminal: bool = False
    regex_rewrite: RegexRewrite | None = None
    cookie_ttl: float | None = None
    cookie_path: str = ""
    source_ip: bool = False


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    """``RouteAction.RequestMirrorPolicy``: shadow a fraction of requests."""

    cluster: str
    runtime_fraction_per_million: int = 1_000_000


@dataclass(frozen=True, slots=True)
class ClusterWeight:
    """One entry of ``RouteAction.weighted_clusters`` (weight > 0)."""

    name: str
    weight: int
    typed_per_filter_config: Mapping[str, FilterConfig] = field(default_factory=_no_filters)
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[str, ...] = ()
    host_rewrite_literal: str = ""


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """``envoy.config.route.v3.RouteMatch``.

    ``path`` is the prefix / exact path / separated prefix, or the regex
    source for ``safe_regex`` (compiled in ``regex``, full-match).
    ``case_sensitive`` (default true) affects prefix/path kinds only.
    ``runtime_fraction_per_million`` None = unset (always matches); the
    route matches when a random integer in [0, 1e6) is < the value.
    ``grpc`` true: only requests with ``content-type: application/grpc*``.
    """

    path_kind: PathKind
    path: str
    regex: Regex | None = None
    case_sensitive: bool = True
    headers: tuple[HeaderMatcher, ...] = ()
    query_parameters: tuple[QueryParameterMatcher, ...] = ()
    runtime_fraction_per_million: int | None = None
    grpc: bool = False


@dataclass(frozen=True, slots=True)
class RouteAction:
    """``envoy.config.route.v3.RouteAction``: forward to a cluster.

    Exactly one of ``cluster``, ``weighted_clusters`` (weights > 0, sum in
    (0, 2^32-1]) and ``cluster_header`` is set.

    Timeouts (float seconds, None = unset in the resource): ``timeout``
    (Envoy route timeout; consumers default HTTP to 15 s; 0 = disabled),
    ``idle_timeout``, and the gRFC A31 pair ``max_stream_duration`` /
    ``grpc_timeout_header_max`` from ``RouteAction.max_stream_duration``.
    ``retry_policy``/``hedge_policy`` None = fall back to the virtual host.
    ``cluster_not_found_response_code`` is 503, 404 or 500.
    """

    cluster: str | None = None
    weighted_clusters: tuple[ClusterWeight, ...] | None = None
    cluster_header: str | None = None
    timeout: float | None = None
    idle_timeout: float | None = None
    max_stream_duration: float | None = None
    grpc_timeout_header_max: float | None = None
    retry_policy: RetryPolicy | None = None
    hedge_policy: HedgePolicy | None = None
    hash_policies: tuple[HashPolicy, ...] = ()
    prefix_rewrite: str | None = None
    regex_rewrite: RegexRewrite | None = None
    host_rewrite_literal: str | None = None
    auto_host_rewrite: bool = False
    host_rewrite_header: str | None = None
    request_mirror_policies: tuple[MirrorPolicy, ...] = ()
    cluster_not_found_response_code: int = 503


@dataclass(frozen=True, slots=True)
class RedirectAction:
    """``envoy.config.route.v3.RedirectAction``: answer with a redirect.

    ``scheme`` is "https" for ``https_redirect``. ``port`` None keeps the
    port. At most one of ``path``, ``prefix_rewrite``, ``regex_rewrite``
    is set. ``response_code`` is 301 (default), 302, 303, 307 or 308.
    """

    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None
    prefix_rewrite: str | None = None
    regex_rewrite: RegexRewrite | None = None
    response_code: int = 301
    strip_query: bool = False


@dataclass(frozen=True, slots=True)
class DirectResponseAction:
    """``envoy.config.route.v3.DirectResponseAction``: answer locally."""

    status: int
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class NonForwardingAction:
    """``non_forwarding_action``: valid only on servers (gRFC A36); a client
    fails requests that select it (``NonForwardingRoute``)."""


Action: TypeAlias = RouteAction | RedirectAction | DirectResponseAction | NonForwardingAction


@dataclass(frozen=True, slots=True)
class Route:
    """``envoy.config.route.v3.Route``: first matching route wins (gRFC A28)."""

    match: RouteMatch
    action: Action
    name: str = ""
    typed_per_filter_config: Mapping[str, FilterConfig] = field(default_factory=_no_filters)
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[str, ...] = ()


class LazyRoutes(Sequence[Route]):
    """The routes of a virtual host that were validated ahead and are built
    on first use (:mod:`proxyless.resources.parse.route_bulk`,
    :mod:`proxyless.resources.parse.route_screen`); one cluster per route.

    It behaves as the tuple of routes it stands for (iteration, ``len``,
    indexing, equality, hashing all build it once); ``clusters`` names the
    clusters its routes forward to, in route order, known without building
    the routes; ``source`` is the serialized virtual host they are built from
    (``build(source)``), by which a later configuration holding the same
    virtual host finds this one to reuse. Building is idempotent, so two
    threads racing to build it at most build it twice.
    """

    __slots__ = ("_build", "_routes", "clusters", "source")

    def __init__(
        self,
        build: Callable[[bytes], tuple[Route, ...]],
        clusters: tuple[str, ...],
        source: bytes,
    ) -> None:
        self._build = build
        self._routes: tuple[Route, ...] | None = None
        self.clusters = clusters
        self.source = source

    @property
    def built(self) -> bool:
        """Whether the routes have been built yet."""
        return self._routes is not None

    def routes(self) -> tuple[Route, ...]:
        """The routes, built on the first call."""
        routes = self._routes
        if routes is None:
            routes = self._routes = self._build(self.source)
        return routes

    def __len__(self) -> int:
        return len(self.clusters)

    def __getitem__(self, index: Any) -> Any:
        return self.routes()[index]

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return self.routes() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.routes())

    def __repr__(self) -> str:
        return repr(self.routes()) if self.built else f"<{len(self)} routes, not built yet>"


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """``envoy.config.route.v3.VirtualHost``.

    ``domains`` are lower-cased; the domain matching order is exact >
    longest suffix wildcard > longest prefix wildcard > ``*``.
    ``retry_policy``/``hedge_policy`` apply to routes that set none.
    ``routes`` is a tuple, or for a plain virtual host of a large
    configuration a :class:`LazyRoutes`, which reads the same.
    """

    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...] | LazyRoutes
    retry_policy: RetryPolicy | None = None
    hedge_policy: HedgePolicy | None = None
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[str, ...] = ()
    typed_per_filter_config: Mapping[str, FilterConfig] = field(default_factory=_no_filters)
    include_request_attempt_count: bool = False
    include_attempt_count_in_response: bool = False


_NEW = object.__new__
_SET = {name: VirtualHost.__dict__[name].__set__ for name in VirtualHost.__slots__}


def plain_virtual_host(
    name: str,
    domains: tuple[str, ...],
    routes: LazyRoutes,
    include_request_attempt_count: bool,
    include_attempt_count_in_response: bool,
) -> VirtualHost:
    """``VirtualHost(name=..., domains=..., routes=..., include_...)`` with
    every other field at its default, made in half the time of the dataclass
    ``__init__`` (a configuration can hold thousands; the slots are set
    directly). ``tests/unit/resources/test_route_screen.py`` checks that it
    sets every field."""
    vh: VirtualHost = _NEW(VirtualHost)
    _SET["name"](vh, name)
    _SET["domains"](vh, domains)
    _SET["routes"](vh, routes)
    _SET["retry_policy"](vh, None)
    _SET["hedge_policy"](vh, None)
    _SET["request_headers_to_add"](vh, ())
    _SET["request_headers_to_remove"](vh, ())
    _SET["response_headers_to_add"](vh, ())
    _SET["response_headers_to_remove"](vh, ())
    _SET["typed_per_filter_config"](vh, _NO_FILTERS)
    _SET["include_request_attempt_count"](vh, include_request_attempt_count)
    _SET["include_attempt_count_in_response"](vh, include_attempt_count_in_response)
    return vh


@dataclass(frozen=True, slots=True)
class RouteConfiguration:
    """``envoy.config.route.v3.RouteConfiguration`` (RDS resource or inline in a Listener).

    ``ignored_fields`` lists the field paths that were set but are not acted
    on; the xDS client logs them once per resource version.
    """

    name: str
    virtual_hosts: tuple[VirtualHost, ...]
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[str, ...] = ()
    typed_per_filter_config: Mapping[str, FilterConfig] = field(default_factory=_no_filters)
    ignored_fields: tuple[str, ...] = ()
