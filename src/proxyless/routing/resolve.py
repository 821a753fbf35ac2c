"""Steps 2-3 of the request path: virtual host, route, cluster (gRFC A28).

:func:`resolve` turns a :class:`~proxyless.routing.request.RequestInfo` into
a :class:`RouteResult` or raises the routing error that says where it broke:

- :class:`~proxyless.errors.NoMatchingVirtualHost`: names the authority and
  the domains on offer;
- :class:`~proxyless.errors.NoMatchingRoute`: names the virtual host and the
  path;
- :class:`~proxyless.errors.NonForwardingRoute`: the route carries a
  ``non_forwarding_action`` (server-only, gRFC A36);
- :class:`MissingClusterHeader` (a :class:`~proxyless.errors.ClusterNotAvailable`):
  the route's ``cluster_header`` is missing or empty.

Redirect and direct-response routes are *not* errors here: the result
carries the action and no cluster, so the HTTP transport can answer
locally; the gRPC adapter fails such calls with UNAVAILABLE naming the
route.

Results for single-cluster routes and for each weighted entry are memoized
on the :class:`~proxyless.routing.vhost.VirtualHostCache`, so a resolve
allocates nothing in the common case.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from proxyless.errors import (
    ClusterNotAvailable,
    NoMatchingRoute,
    NoMatchingVirtualHost,
    NonForwardingRoute,
)
from proxyless.resources.model import (
    Action,
    ClusterWeight,
    DirectResponseAction,
    HashPolicy,
    HedgePolicy,
    NonForwardingAction,
    RedirectAction,
    RetryPolicy,
    Route,
    RouteAction,
    VirtualHost,
)
from proxyless.routing.clusters import choose_cluster
from proxyless.routing.match import match_route
from proxyless.routing.request import RequestInfo
from proxyless.routing.vhost import VirtualHostCache

__all__ = ["MissingClusterHeader", "RouteResult", "action_kind", "resolve", "route_label"]

_MAX_DOMAINS_SHOWN = 20


class MissingClusterHeader(ClusterNotAvailable):
    """The route takes its cluster from a request header the request lacks.

    ``response_code`` is the route's ``cluster_not_found_response_code``
    (503 unless configured) for HTTP transports.
    """

    def __init__(self, route: str, header: str, response_code: int) -> None:
        self.route = route
        self.header = header
        self.response_code = response_code
        super().__init__(
            f"route {route} takes its cluster from request header {header!r}, "
            "which is missing or empty"
        )


@dataclass(frozen=True, slots=True)
class RouteResult:
    """Everything the request path needs from routing.

    ``cluster_name`` is None exactly when ``action`` is a
    :class:`~proxyless.resources.model.RedirectAction` or
    :class:`~proxyless.resources.model.DirectResponseAction`.
    ``cluster_weight`` is the chosen weighted entry (for its header
    mutations and ``typed_per_filter_config``). ``retry_policy`` and
    ``hedge_policy`` are the route's, else the virtual host's.
    """

    route_config_name: str
    virtual_host: VirtualHost
    route: Route
    action: Action
    cluster_name: str | None
    cluster_weight: ClusterWeight | None
    retry_policy: RetryPolicy | None
    hedge_policy: HedgePolicy | None
    hash_policies: tuple[HashPolicy, ...]

    @property
    def route_action(self) -> RouteAction | None:
        """The action when it forwards to a cluster, else None."""
        action = self.action
        return action if isinstance(action, RouteAction) else None

    def describe(self) -> str:
        """One line for logs and error details."""
        where = f"virtual host {self.virtual_host.name!r}, route {route_label(self.virtual_host, self.route)}"
        if self.cluster_name is None:
            return f"{where}: {action_kind(self.action)}"
        return f"{where} -> cluster {self.cluster_name!r}"


def action_kind(action: Action) -> str:
    """The proto name of the route's action oneof."""
    if isinstance(action, RouteAction):
        return "route"
    if isinstance(action, RedirectAction):
        return "redirect"
    if isinstance(action, DirectResponseAction):
        return "direct_response"
    return "non_forwarding_action"


def route_label(vhost: VirtualHost, route: Route) -> str:
    """``'name'`` for a named route, else ``#index (match)`` within the virtual host."""
    if route.name:
        return repr(route.name)
    index = next((i for i, r in enumerate(vhost.routes) if r is route), -1)
    match = route.match
    return f"#{index} ({match.path_kind} {match.path!r})"


def _domains_text(cache: VirtualHostCache) -> str:
    domains = cache.domains()
    if not domains:
        return "none (the route configuration has no virtual hosts)"
    shown = ", ".join(repr(d) for d in domains[:_MAX_DOMAINS_SHOWN])
    if len(domains) > _MAX_DOMAINS_SHOWN:
        shown += f" and {len(domains) - _MAX_DOMAINS_SHOWN} more"
    return shown


def resolve(cache: VirtualHostCache, request: RequestInfo, rng: random.Random) -> RouteResult:
    """Route ``request`` through the RouteConfiguration behind ``cache``."""
    vhost = cache.select(request.authority)
    if vhost is None:
        raise NoMatchingVirtualHost(
            f"no virtual host in route configuration {cache.route_config.name!r} matches "
            f"authority {request.authority!r}; domains on offer: {_domains_text(cache)}"
        )
    route = match_route(vhost, request, rng)
    if route is None:
        raise NoMatchingRoute(
            f"no route in virtual host {vhost.name!r} matches {request.method} "
            f"{request.path!r} (authority {request.authority!r}, "
            f"{len(vhost.routes)} routes)"
        )
    action = route.action
    if isinstance(action, RouteAction):
        cluster, weight = choose_cluster(action, request, rng)
        if cluster is None:
            assert action.cluster_header is not None
            raise MissingClusterHeader(
                route_label(vhost, route),
                action.cluster_header,
                action.cluster_not_found_response_code,
            )
        if action.cluster_header is not None:
            return _build(cache, vhost, route, action, cluster, None)
        key = (id(route), id(weight))
        memo = cache.results
        found: RouteResult | None = memo.get(key)
        if found is None or found.route is not route:
            found = _build(cache, vhost, route, action, cluster, weight)
            memo[key] = found
        return found
    if isinstance(action, NonForwardingAction):
        raise NonForwardingRoute(
            f"route {route_label(vhost, route)} in virtual host {vhost.name!r} has a "
            "non_forwarding_action, which only servers may use (gRFC A36)"
        )
    key = (id(route), 0)
    memo = cache.results
    found = memo.get(key)
    if found is None or found.route is not route:
        found = _build(cache, vhost, route, action, None, None)
        memo[key] = found
    return found


def _build(
    cache: VirtualHostCache,
    vhost: VirtualHost,
    route: Route,
    action: Action,
    cluster: str | None,
    weight: ClusterWeight | None,
) -> RouteResult:
    retry: RetryPolicy | None = None
    hedge: HedgePolicy | None = None
    hashes: tuple[HashPolicy, ...] = ()
    if isinstance(action, RouteAction):
        retry = action.retry_policy
        hedge = action.hedge_policy
        hashes = action.hash_policies
    return RouteResult(
        route_config_name=cache.route_config.name,
        virtual_host=vhost,
        route=route,
        action=action,
        cluster_name=cluster,
        cluster_weight=weight,
        retry_policy=retry if retry is not None else vhost.retry_policy,
        hedge_policy=hedge if hedge is not None else vhost.hedge_policy,
        hash_policies=hashes,
    )
