"""proxyless.routing: transport-agnostic request routing (gRFC A28, A31, A42).

Pure functions over the frozen resource model, shared by the gRPC adapter
and the httpx transports:

- :class:`RequestInfo`: the request as routing sees it;
- :func:`select_virtual_host` / :class:`VirtualHostCache`: Envoy's domain
  precedence;
- :func:`match_route`: first matching route;
- :func:`choose_cluster`: single, weighted or header-named cluster;
- :func:`request_hash`: the ring_hash / maglev hash of a request;
- :func:`grpc_deadline` / :func:`http_timeout`: effective timeouts;
- :func:`resolve` / :class:`RouteResult`: all of the above in one call.

Randomness comes in as a ``random.Random``; nothing here reads a clock,
blocks or imports a transport.
"""

from __future__ import annotations

from proxyless.routing.clusters import choose_cluster
from proxyless.routing.hashing import CHANNEL_ID_KEY, cookie_value, policy_hash, request_hash
from proxyless.routing.match import match_route, path_matches
from proxyless.routing.request import (
    HeaderLists,
    RequestInfo,
    header_value,
    header_values,
    parse_query,
    repeated_headers,
)
from proxyless.routing.resolve import (
    MissingClusterHeader,
    RouteResult,
    action_kind,
    resolve,
    route_label,
)
from proxyless.routing.timeouts import (
    DEFAULT_HTTP_ROUTE_TIMEOUT,
    apply_cap,
    format_seconds,
    grpc_cap,
    grpc_deadline,
    http_cap,
    http_timeout,
)
from proxyless.routing.vhost import VirtualHostCache, domain_match_rank, select_virtual_host

__all__ = [
    "CHANNEL_ID_KEY",
    "DEFAULT_HTTP_ROUTE_TIMEOUT",
    "HeaderLists",
    "MissingClusterHeader",
    "RequestInfo",
    "RouteResult",
    "VirtualHostCache",
    "action_kind",
    "apply_cap",
    "choose_cluster",
    "cookie_value",
    "domain_match_rank",
    "format_seconds",
    "grpc_cap",
    "grpc_deadline",
    "header_value",
    "header_values",
    "http_cap",
    "http_timeout",
    "match_route",
    "parse_query",
    "path_matches",
    "policy_hash",
    "repeated_headers",
    "request_hash",
    "resolve",
    "route_label",
    "select_virtual_host",
]
