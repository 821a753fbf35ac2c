"""resolve(): virtual host -> route -> cluster, with errors that say where it broke."""

from __future__ import annotations

import random

import pytest

from proxyless.errors import (
    ClusterNotAvailable,
    NoMatchingRoute,
    NoMatchingVirtualHost,
    NonForwardingRoute,
    RoutingError,
)
from proxyless.resources.model import (
    ClusterWeight,
    DirectResponseAction,
    HashPolicy,
    HedgePolicy,
    NonForwardingAction,
    RedirectAction,
    RetryPolicy,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from proxyless.routing import MissingClusterHeader, RequestInfo, VirtualHostCache, resolve

VH_RETRY = RetryPolicy(retry_on=frozenset({"unavailable"}), num_retries=2)
ROUTE_RETRY = RetryPolicy(retry_on=frozenset({"cancelled"}), num_retries=3)
HEDGE = HedgePolicy(initial_requests=2)
HASH = (HashPolicy("header", "x-user"),)

ROUTES = (
    Route(RouteMatch("path", "/pkg.S/Single"), RouteAction(cluster="single"), name="single"),
    Route(
        RouteMatch("path", "/pkg.S/Retry"),
        RouteAction(cluster="r", retry_policy=ROUTE_RETRY, hash_policies=HASH),
        name="retry",
    ),
    Route(
        RouteMatch("path", "/pkg.S/Split"),
        RouteAction(weighted_clusters=(ClusterWeight("blue", 1), ClusterWeight("green", 1))),
        name="split",
    ),
    Route(RouteMatch("path", "/pkg.S/Header"), RouteAction(cluster_header="x-cluster")),
    Route(RouteMatch("path", "/pkg.S/Server"), NonForwardingAction(), name="server-only"),
    Route(RouteMatch("path", "/old"), RedirectAction(path="/new"), name="moved"),
    Route(RouteMatch("path", "/health"), DirectResponseAction(200, b"ok"), name="health"),
)
RC = RouteConfiguration(
    "rc-main",
    (
        VirtualHost("svc-vh", ("svc", "svc:80"), ROUTES, retry_policy=VH_RETRY, hedge_policy=HEDGE),
        VirtualHost("other", ("other.example.com",), ()),
    ),
)


def req(path: str, authority: str = "svc", **headers: str) -> RequestInfo:
    return RequestInfo(authority, path, headers=headers, is_grpc=True)


OK_CASES = [
    pytest.param(req("/pkg.S/Single"), "single", "single", VH_RETRY, (), id="single-vh-retry"),
    pytest.param(req("/pkg.S/Retry"), "retry", "r", ROUTE_RETRY, HASH, id="route-retry-wins"),
    pytest.param(
        req("/pkg.S/Header", **{"x-cluster": "canary"}), None, "canary", VH_RETRY, (), id="header"
    ),
    pytest.param(req("/old"), "moved", None, None, (), id="redirect-not-error"),
    pytest.param(req("/health"), "health", None, None, (), id="direct-response-not-error"),
    pytest.param(
        req("/pkg.S/Single", "SVC:80"), "single", "single", VH_RETRY, (), id="authority-case"
    ),
]


@pytest.mark.parametrize(("request_info", "route", "cluster", "retry", "hashes"), OK_CASES)
def test_resolve_ok(
    request_info: RequestInfo,
    route: str | None,
    cluster: str | None,
    retry: RetryPolicy | None,
    hashes: tuple[HashPolicy, ...],
) -> None:
    result = resolve(VirtualHostCache(RC), request_info, random.Random(1))
    assert result.route_config_name == "rc-main"
    assert result.virtual_host.name == "svc-vh"
    if route is not None:
        assert result.route.name == route
    assert result.cluster_name == cluster
    assert result.hash_policies == hashes
    if cluster is None:
        assert result.route_action is None
        assert "redirect" in result.describe() or "direct_response" in result.describe()
    else:
        assert result.retry_policy == retry
        assert result.hedge_policy == HEDGE
        assert f"cluster {cluster!r}" in result.describe()


ERROR_CASES = [
    pytest.param(
        req("/pkg.S/Single", "nope:80"),
        NoMatchingVirtualHost,
        ["'nope:80'", "'rc-main'", "'svc'", "'svc:80'", "'other.example.com'"],
        id="no-vhost",
    ),
    pytest.param(
        req("/pkg.S/Unknown"), NoMatchingRoute, ["'svc-vh'", "'/pkg.S/Unknown'"], id="no-route"
    ),
    pytest.param(
        req("/x", "other.example.com"), NoMatchingRoute, ["'other'", "'/x'"], id="empty-vhost"
    ),
    pytest.param(
        req("/pkg.S/Server"),
        NonForwardingRoute,
        ["'server-only'", "non_forwarding_action"],
        id="non-forwarding",
    ),
    pytest.param(
        req("/pkg.S/Header"),
        MissingClusterHeader,
        ["'x-cluster'", "#3 (path '/pkg.S/Header')"],
        id="cluster-header-missing",
    ),
]


@pytest.mark.parametrize(("request_info", "error", "mentions"), ERROR_CASES)
def test_resolve_errors(
    request_info: RequestInfo, error: type[Exception], mentions: list[str]
) -> None:
    with pytest.raises(error) as caught:
        resolve(VirtualHostCache(RC), request_info, random.Random(1))
    for text in mentions:
        assert text in str(caught.value)


def test_error_classes() -> None:
    assert issubclass(MissingClusterHeader, ClusterNotAvailable)
    err = MissingClusterHeader("'r'", "x-c", 404)
    assert err.response_code == 404 and err.flag == "NC"
    assert issubclass(NonForwardingRoute, RoutingError)


def test_many_domains_truncated() -> None:
    vhosts = tuple(VirtualHost(f"v{i}", (f"d{i}.example",), ()) for i in range(30))
    with pytest.raises(NoMatchingVirtualHost, match="and 10 more"):
        resolve(VirtualHostCache(RouteConfiguration("big", vhosts)), req("/", "x"), random.Random())


def test_no_virtual_hosts_message() -> None:
    with pytest.raises(NoMatchingVirtualHost, match="no virtual hosts"):
        resolve(VirtualHostCache(RouteConfiguration("empty", ())), req("/"), random.Random())


def test_results_are_memoized_per_choice() -> None:
    cache = VirtualHostCache(RC)
    rng = random.Random(11)
    first = resolve(cache, req("/pkg.S/Single"), rng)
    assert resolve(cache, req("/pkg.S/Single"), rng) is first
    seen: dict[str, object] = {}
    for _ in range(200):
        result = resolve(cache, req("/pkg.S/Split"), rng)
        assert result.cluster_weight is not None
        assert result.cluster_name == result.cluster_weight.name
        assert seen.setdefault(result.cluster_name, result) is result
    assert set(seen) == {"blue", "green"}
