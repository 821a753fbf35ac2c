"""Route matching within a virtual host (gRFC A28; Envoy ``RouteMatch``).

The first route whose match holds wins, in configuration order. A route
matches when all of these hold:

- **path**: ``prefix``, ``path`` (exact), ``safe_regex`` (full match) or
  ``path_separated_prefix`` (the path equals the prefix or continues with
  ``/``), each against the path without the query string: Envoy's
  ``PathMatcher`` strips ``?query`` first, so a prefix holding ``?`` never
  matches (checked against Envoy 1.40 by ``tests/interop/test_routing_diff.py``).
  ``case_sensitive: false`` applies to ``prefix``, ``path`` and
  ``path_separated_prefix`` only, never to regexes.
- **headers**: every header matcher, with the visibility rules of
  :func:`proxyless.routing.request.header_value` (gRPC: metadata plus
  ``content-type``, ``-bin`` absent, no pseudo-headers; HTTP: pseudo-headers
  ``:method``, ``:path``, ``:authority``, ``:scheme`` visible, and ``host``
  is the authority). A header sent more than once is matched as its values
  joined with ``","`` for gRPC (gRFC A28) and value by value for HTTP (Envoy
  since 1.39, ``match_headers_individually``): the matcher holds when any
  value matches, and ``invert_match`` inverts that.
  For HTTP the deprecated ``exact_match: ""`` matches any value of a
  present header, as in Envoy 1.40 (``string_match {exact: ""}`` still wants
  an empty value); for gRPC it wants an empty value (gRFC A28 compares
  exactly).
- **query parameters**: never match a gRPC request (gRFC A28); for HTTP
  each matcher sees the first value of its parameter, not percent-decoded
  (Envoy's router).
- **grpc**: the request's ``content-type`` starts with ``application/grpc``.
- **runtime_fraction**: a random integer in [0, 1e6) from the injected RNG
  is below the per-million value (only ``default_value`` is used, gRFC
  A28). The draw happens only when every other condition holds, so routes
  without a fraction never consume randomness.
"""

from __future__ import annotations

import random

from proxyless.resources.model import (
    HeaderMatcher,
    Route,
    RouteMatch,
    StringMatcher,
    VirtualHost,
)
from proxyless.routing.request import RequestInfo, header_value, parse_query

__all__ = ["match_route", "path_matches"]


def path_matches(match: RouteMatch, request: RequestInfo) -> bool:
    """True when the path condition of ``match`` holds for ``request``."""
    path = request.path
    expected = match.path
    kind = match.path_kind
    if kind == "prefix":
        if match.case_sensitive:
            return path.startswith(expected)
        return path.lower().startswith(expected.lower())
    if kind == "path":
        if match.case_sensitive:
            return path == expected
        return path.lower() == expected.lower()
    if kind == "safe_regex":
        assert match.regex is not None
        return match.regex.full_match(path)
    # path_separated_prefix
    if not match.case_sensitive:
        path, expected = path.lower(), expected.lower()
    return path == expected or path.startswith(expected + "/")


def _is_grpc_request(request: RequestInfo) -> bool:
    content_type = header_value(request, "content-type")
    return content_type is not None and content_type.startswith("application/grpc")


def _empty(string_matcher: StringMatcher | None) -> bool:
    return string_matcher is not None and not string_matcher.value


def _any_value_holds(matcher: HeaderMatcher, request: RequestInfo) -> bool:
    """Envoy's deprecated ``exact_match: ""``: any value of a present header
    matches (an absent one only with ``treat_missing_header_as_empty``)."""
    if header_value(request, matcher.name) is None and not matcher.treat_missing_header_as_empty:
        return False
    return not matcher.invert_match


def _headers_match(matchers: tuple[HeaderMatcher, ...], request: RequestInfo) -> bool:
    # Inlined repeated_headers(): this runs for every route with header matchers.
    is_http = not request.is_grpc
    repeated = getattr(request.headers, "repeated", None) if is_http else None
    lists = None if repeated is None else repeated()
    for matcher in matchers:
        if is_http and matcher.kind == "exact" and _empty(matcher.string_matcher):
            if not _any_value_holds(matcher, request):
                return False
        elif lists is not None and (values := lists.get(matcher.name)) is not None:
            if not matcher.matches_each(values):
                return False
        elif not matcher.matches(header_value(request, matcher.name)):
            return False
    return True


def match_route(vhost: VirtualHost, request: RequestInfo, rng: random.Random) -> Route | None:
    """The first route of ``vhost`` matching ``request``, or None."""
    query: dict[str, str] | None = None
    for route in vhost.routes:
        match = route.match
        if not path_matches(match, request):
            continue
        if match.headers and not _headers_match(match.headers, request):
            continue
        if match.query_parameters:
            if request.is_grpc:
                continue
            if query is None:
                query = parse_query(request.query)
            if not all(q.matches(query.get(q.name)) for q in match.query_parameters):
                continue
        if match.grpc and not _is_grpc_request(request):
            continue
        fraction = match.runtime_fraction_per_million
        if fraction is not None and fraction < 1_000_000:
            if fraction <= 0 or rng.randrange(1_000_000) >= fraction:
                continue
        return route
    return None
