"""Routing of real gRPC calls by xDS (gRFC A28): header matching on call
metadata (exact, regex, ``-bin`` ignored), path / prefix / regex matching on
``/package.Service/Method``, case-insensitive prefix, and query-parameter
routes that never match gRPC."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence

import pytest
from envoy.config.route.v3 import route_components_pb2
from tests.e2e.grpc.conftest import (
    SERVICE,
    TARGET,
    AnyMethodServer,
    Xds,
    bootstrap_for,
    call_until,
)

import proxyless.grpc
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.resources import header_match, route


def _query_route(cluster: str) -> route_components_pb2.Route:
    """A catch-all route that also requires a query parameter: present,
    or absent (``present_match: false``) — neither may match gRPC."""
    r = route(prefix="/", cluster=cluster)
    r.match.query_parameters.add(name="debug", present_match=True)
    return r


def _absent_query_route(cluster: str) -> route_components_pb2.Route:
    r = route(prefix="/", cluster=cluster)
    r.match.query_parameters.add(name="debug", present_match=False)
    return r


ROUTES = [
    _query_route("query"),
    _absent_query_route("query"),
    route(prefix="/", headers=[header_match("x-tag-bin", present=True)], cluster="bin"),
    route(prefix="/", headers=[header_match("x-env", exact="canary")], cluster="canary"),
    route(prefix="/", headers=[header_match("x-user", regex="user-[0-9]+")], cluster="users"),
    route(path="/pkg.Svc/Exact", cluster="path"),
    route(prefix="/pkg.Other/", cluster="prefix"),
    # gRPC routing sees content-type as application/grpc (gRFC A28).
    route(
        prefix="/ct.Check/",
        headers=[header_match("content-type", exact="application/grpc")],
        cluster="prefix",
    ),
    route(prefix="/PKG.Loud/", case_sensitive=False, cluster="nocase"),
    route(regex=r"/pkg\.Re[a-z]+/Do[A-Z]\w*", cluster="regex"),
    route(prefix="/", cluster="default"),
]
CLUSTERS = ["query", "bin", "canary", "users", "path", "prefix", "nocase", "regex", "default"]


@pytest.fixture(scope="module")
def routed() -> Iterator[Callable[..., str]]:
    """``routed(method, metadata)`` -> the cluster (= backend name) that served it.

    Module-scoped: one ADS server, one Mesh and one backend per cluster serve
    every case of the table."""
    ads = AdsServer()
    ads.start()
    servers = [AnyMethodServer(name).start() for name in CLUSTERS]
    mesh = Mesh(bootstrap_for(ads))
    try:
        xds = Xds(ads)
        for server in servers:
            xds.cluster(server.name, [server.address])
        xds.service(SERVICE, ROUTES)
        ch = proxyless.grpc.channel(TARGET, mesh=mesh)

        def call(method: str, metadata: Sequence[tuple[str, str | bytes]] | None = None) -> str:
            reply = json.loads(
                ch.unary_unary(method)(b"", timeout=5, metadata=tuple(metadata or ()))
            )
            assert reply["method"] == method
            name: str = reply["backend"]
            return name

        call_until(lambda req, **kw: ch.unary_unary("/a.B/C")(req, **kw), "default")
        yield call
    finally:
        mesh.close()
        for server in servers:
            server.stop()
        ads.stop()


@pytest.mark.parametrize(
    ("method", "metadata", "cluster"),
    [
        pytest.param("/a.B/C", None, "default", id="no-match-falls-through"),
        pytest.param("/a.B/C", [("x-env", "canary")], "canary", id="header-exact"),
        pytest.param(
            "/a.B/C", [("x-env", "Canary")], "default", id="header-exact-is-case-sensitive"
        ),
        pytest.param("/a.B/C", [("x-env", "canary-2")], "default", id="header-exact-not-prefix"),
        pytest.param("/a.B/C", [("x-user", "user-42")], "users", id="header-regex"),
        pytest.param("/a.B/C", [("x-user", "user-42x")], "default", id="header-regex-full-match"),
        pytest.param(
            "/a.B/C", [("x-env", "canary"), ("x-user", "user-1")], "canary", id="first-route-wins"
        ),
        pytest.param("/a.B/C", [("x-tag-bin", b"\x00\x01")], "default", id="bin-metadata-ignored"),
        pytest.param("/pkg.Svc/Exact", None, "path", id="path-exact"),
        pytest.param("/pkg.Svc/Exactly", None, "default", id="path-exact-not-prefix"),
        pytest.param("/pkg.svc/exact", None, "default", id="path-case-sensitive"),
        pytest.param("/pkg.Other/Any", None, "prefix", id="prefix"),
        pytest.param("/pkg.other/Any", None, "default", id="prefix-case-sensitive"),
        pytest.param("/ct.Check/M", None, "prefix", id="content-type-is-application-grpc"),
        pytest.param("/pkg.loud/Get", None, "nocase", id="prefix-case-insensitive-lower"),
        pytest.param("/PKG.LOUD/Get", None, "nocase", id="prefix-case-insensitive-upper"),
        pytest.param("/pkg.Reads/DoIt", None, "regex", id="path-regex"),
        pytest.param("/pkg.Reads/doIt", None, "default", id="path-regex-full-match"),
        pytest.param("/pkg.Svc/Exact", [("x-env", "canary")], "canary", id="header-route-first"),
    ],
)
def test_route_choice(
    routed: Callable[..., str],
    method: str,
    metadata: Sequence[tuple[str, str | bytes]] | None,
    cluster: str,
) -> None:
    assert routed(method, metadata) == cluster


def test_query_parameter_routes_never_match(routed: Callable[..., str]) -> None:
    for method in ("/a.B/C", "/pkg.Svc/Exact", "/pkg.Other/X"):
        assert routed(method) != "query"
        assert routed(method, [("debug", "1")]) != "query"
