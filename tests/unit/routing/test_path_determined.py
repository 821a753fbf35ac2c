"""path_determined(): which routing results every request with the same
authority and :path would also get (the transports' fast path)."""

from __future__ import annotations

import random

import pytest

from proxyless.resources.model import (
    ClusterWeight,
    HashPolicy,
    HeaderMatcher,
    QueryParameterMatcher,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from proxyless.routing import RequestInfo, VirtualHostCache, resolve
from proxyless.runtime.target import path_determined

PLAIN = Route(RouteMatch("prefix", "/"), RouteAction(cluster="a"), name="plain")
HEADER = Route(
    RouteMatch("prefix", "/h", headers=(HeaderMatcher("x-user", "present", present=True),)),
    RouteAction(cluster="b"),
    name="header",
)
QUERY = Route(
    RouteMatch("prefix", "/q", query_parameters=(QueryParameterMatcher("v", present_match=True),)),
    RouteAction(cluster="b"),
    name="query",
)
GRPC = Route(RouteMatch("prefix", "/g", grpc=True), RouteAction(cluster="b"), name="grpc")
FRACTION = Route(
    RouteMatch("prefix", "/f", runtime_fraction_per_million=500_000),
    RouteAction(cluster="b"),
    name="fraction",
)
SPLIT = Route(
    RouteMatch("prefix", "/"),
    RouteAction(weighted_clusters=(ClusterWeight("a", 1), ClusterWeight("b", 1))),
    name="split",
)
CLUSTER_HEADER = Route(RouteMatch("prefix", "/"), RouteAction(cluster_header="x-c"), name="ch")
HASHED = Route(
    RouteMatch("prefix", "/"),
    RouteAction(cluster="a", hash_policies=(HashPolicy("header", "x-user"),)),
    name="hashed",
)
EXACT = Route(RouteMatch("path", "/exact"), RouteAction(cluster="a"), name="exact")


def _result(routes: tuple[Route, ...], path: str, **headers: str):  # type: ignore[no-untyped-def]
    rc = RouteConfiguration("rc", (VirtualHost("vh", ("svc",), routes),))
    request = RequestInfo("svc", path, headers=headers, is_grpc=False, method="GET")
    return resolve(VirtualHostCache(rc), request, random.Random(1))


@pytest.mark.parametrize(
    ("routes", "path", "expected"),
    [
        pytest.param((PLAIN,), "/x", True, id="single-route"),
        pytest.param((EXACT, PLAIN), "/x", True, id="path-only-routes-before"),
        pytest.param((HEADER, PLAIN), "/x", False, id="header-route-before"),
        pytest.param((QUERY, PLAIN), "/x", False, id="query-route-before"),
        pytest.param((GRPC, PLAIN), "/x", False, id="grpc-route-before"),
        pytest.param((FRACTION, PLAIN), "/x", False, id="fraction-route-before"),
        pytest.param((PLAIN, HEADER), "/x", True, id="header-route-after-the-match"),
        pytest.param((SPLIT,), "/x", False, id="weighted-split"),
        pytest.param((HASHED,), "/x", True, id="hash-policy-is-the-transport-s-business"),
    ],
)
def test_path_determined(routes: tuple[Route, ...], path: str, expected: bool) -> None:
    assert path_determined(_result(routes, path)) is expected


def test_cluster_header_route_is_not_path_determined() -> None:
    assert path_determined(_result((CLUSTER_HEADER,), "/x", **{"x-c": "a"})) is False


def test_the_answer_is_cached_per_route_and_virtual_host() -> None:
    first = _result((HEADER, PLAIN), "/x")
    assert path_determined(first) is False
    assert path_determined(first) is False
    # the same Route object in another virtual host is judged again
    assert path_determined(_result((PLAIN,), "/x")) is True
