"""Routing through proxyless.httpx: the request path the gRPC channel uses,
with HTTP matching (method, path, query, headers, pseudo-headers), splits,
local answers (redirect, direct response, fault abort) and what the
backend receives (header mutations, rewrites, Host)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2
from tests.e2e.httpx.conftest import (
    CLUSTER,
    SERVICE,
    URL,
    HttpEcho,
    Service,
    fault_filter,
    header_option,
    header_values,
    reply,
    wait_until,
)

import proxyless.httpx
from proxyless.mesh import Mesh
from proxyless.testing.resources import cluster, header_match, route


def test_get_reaches_the_backend_with_the_original_host_and_path(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    service.simple([a])
    response = client.get(f"{URL}/items/7?x=1&y=2", headers={"x-user": "u1"})
    assert response.status_code == 200
    got = reply(response)
    assert got["backend"] == "a"
    assert (got["method"], got["path"], got["query"]) == ("GET", "/items/7", "x=1&y=2")
    assert got["host"] == "svc:8080"
    assert header_values(got, "x-user") == ["u1"]
    assert response.request.url == httpx.URL(f"{URL}/items/7?x=1&y=2")


def test_post_body_and_streaming_response(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    service.simple([a])
    with client.stream("POST", f"{URL}/upload", content=b"hello body") as response:
        data = b"".join(response.iter_bytes())
    got = reply(httpx.Response(200, content=data))
    assert (got["method"], got["body"]) == ("POST", "hello body")


def _match_routes() -> list[route_components_pb2.Route]:
    by_method = route(prefix="/", cluster="m", headers=[header_match(":method", exact="DELETE")])
    by_query = route(prefix="/q", cluster="q")
    by_query.match.query_parameters.add(name="v", string_match=string_pb2.StringMatcher(exact="2"))
    by_path_header = route(
        prefix="/", cluster="p", headers=[header_match(":path", regex="/exact/[0-9]+\\?z=1")]
    )
    by_header = route(prefix="/", cluster="h", headers=[header_match("x-tier", exact="gold")])
    return [by_method, by_query, by_path_header, by_header, route(prefix="/", cluster="d")]


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        pytest.param("DELETE", "/any", {}, "m", id="method-pseudo-header"),
        pytest.param("GET", "/q?v=2", {}, "q", id="query-parameter"),
        pytest.param("GET", "/q?v=3", {}, "d", id="query-parameter-mismatch"),
        pytest.param("GET", "/exact/12?z=1", {}, "p", id="path-pseudo-header-with-query"),
        pytest.param("GET", "/x", {"X-Tier": "gold"}, "h", id="header-case-insensitive-name"),
        pytest.param("GET", "/x", {"x-tier": "silver"}, "d", id="default"),
    ],
)
def test_route_match(
    service: Service,
    backends: Callable[..., list[HttpEcho]],
    client: httpx.Client,
    method: str,
    path: str,
    headers: dict[str, str],
    expected: str,
) -> None:
    servers = backends("m", "q", "p", "h", "d")
    for s in servers:
        service.cluster(s.name, [s])
    service.routes_for(SERVICE, _match_routes())
    response = client.request(method, f"{URL}{path}", headers=headers)
    assert response.headers["x-backend"] == expected


def test_virtual_host_chosen_by_host_header(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    a, b = backends("a", "b")
    service.cluster("a", [a])
    service.cluster("b", [b])
    vh_b = route_components_pb2.VirtualHost(
        name="other", domains=["other.example"], routes=[route(prefix="/", cluster="b")]
    )
    rc = route_components_pb2.VirtualHost(
        name="main", domains=["svc", "svc:8080"], routes=[route(prefix="/", cluster="a")]
    )
    from envoy.config.route.v3 import route_pb2

    service.routes_for(SERVICE, [], rc_proto=route_pb2.RouteConfiguration(virtual_hosts=[rc, vh_b]))
    assert client.get(f"{URL}/").headers["x-backend"] == "a"
    assert client.get(f"{URL}/", headers={"host": "other.example"}).headers["x-backend"] == "b"


def test_weighted_split_and_weighted_cluster_headers(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    a, b = backends("a", "b")
    service.cluster("a", [a])
    service.cluster("b", [b])
    r = route(prefix="/", weighted={"a": 75, "b": 25})
    r.route.weighted_clusters.clusters[1].request_headers_to_add.append(
        header_option("x-split", "b")
    )
    service.routes_for(SERVICE, [r])
    counts: Counter[str] = Counter()
    for _ in range(400):
        got = reply(client.get(f"{URL}/"))
        counts[got["backend"]] += 1
        if got["backend"] == "b":
            assert header_values(got, "x-split") == ["b"]
        else:
            assert header_values(got, "x-split") == []
    assert 250 <= counts["a"] <= 350, counts


def test_redirect_is_answered_locally(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    service.cluster(CLUSTER, [a])
    r = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/old"))
    r.redirect.prefix_rewrite = "/new"
    r.redirect.response_code = route_components_pb2.RedirectAction.FOUND
    r.response_headers_to_add.append(header_option("x-redirected", "yes"))
    service.routes_for(SERVICE, [r, route(prefix="/", cluster=CLUSTER)])
    response = client.get(f"{URL}/old/page?k=v")
    assert response.status_code == 302
    assert response.headers["location"] == "http://svc:8080/new/page?k=v"
    assert response.headers["x-redirected"] == "yes"
    assert a.requests == []
    followed = client.get(f"{URL}/old/page?k=v", follow_redirects=True)
    assert reply(followed)["path"] == "/new/page"


def test_direct_response_is_answered_locally(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    service.cluster(CLUSTER, [a])
    r = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/health"))
    r.direct_response.status = 418
    r.direct_response.body.inline_string = "teapot"
    service.routes_for(SERVICE, [r, route(prefix="/", cluster=CLUSTER)])
    response = client.get(f"{URL}/health")
    assert (response.status_code, response.text) == (418, "teapot")
    assert response.headers["content-type"] == "text/plain"
    assert a.requests == []


def test_rewrites_and_header_mutations_reach_the_backend(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    service.cluster(CLUSTER, [a])
    r = route(prefix="/api/", cluster=CLUSTER)
    r.route.prefix_rewrite = "/v2/"
    r.route.host_rewrite_literal = "backend.internal"
    r.request_headers_to_add.extend(
        [
            header_option("x-route", "r1"),
            header_option("x-env", "route", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ]
    )
    r.request_headers_to_remove.append("x-secret")
    r.response_headers_to_add.append(header_option("x-served-by", "mesh"))
    r.response_headers_to_remove.append("x-backend")
    rx = route(prefix="/rx/", cluster=CLUSTER)
    rx.route.regex_rewrite.pattern.CopyFrom(
        regex_pb2.RegexMatcher(
            google_re2=regex_pb2.RegexMatcher.GoogleRE2(), regex="^/rx/(\\w+)/(\\w+)$"
        )
    )
    rx.route.regex_rewrite.substitution = "/\\2/\\1"
    vh = route_components_pb2.VirtualHost(name="svc", domains=["svc", "svc:8080"], routes=[r, rx])
    vh.request_headers_to_add.append(header_option("x-env", "vhost", "OVERWRITE_IF_EXISTS_OR_ADD"))
    vh.request_headers_to_add.append(header_option("x-vhost", "v"))
    service.routes_for(SERVICE, [], vhost=vh)
    response = client.get(f"{URL}/api/items?id=3", headers={"x-secret": "s", "x-env": "client"})
    got = reply(response)
    assert (got["path"], got["query"], got["host"]) == ("/v2/items", "id=3", "backend.internal")
    assert header_values(got, "x-route") == ["r1"]
    assert header_values(got, "x-env") == ["vhost"]  # the less specific level runs last
    assert header_values(got, "x-vhost") == ["v"]
    assert header_values(got, "x-secret") == []
    assert header_values(got, "x-envoy-original-path") == ["/api/items?id=3"]
    assert response.headers["x-served-by"] == "mesh"
    assert "x-backend" not in response.headers
    got = reply(client.get(f"{URL}/rx/one/two"))
    assert got["path"] == "/two/one"


def test_fault_abort_is_answered_with_the_http_status(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    fault = fault_pb2.HTTPFault()
    fault.abort.http_status = 503
    fault.abort.percentage.numerator = 100
    service.simple([a], http_filters=[fault_filter(fault)])
    response = client.get(f"{URL}/")
    assert (response.status_code, response.text) == (503, "fault filter abort")
    assert a.requests == []


def test_async_transport_routes_the_same(
    service: Service, backends: Callable[..., list[HttpEcho]], mesh: Mesh
) -> None:
    a, b = backends("a", "b")
    service.cluster("a", [a])
    service.cluster("b", [b])
    service.routes_for(
        SERVICE,
        [
            route(prefix="/", cluster="b", headers=[header_match("x-v", exact="2")]),
            route(prefix="/", cluster="a"),
        ],
    )

    async def run() -> list[str]:
        async with httpx.AsyncClient(
            transport=proxyless.httpx.AsyncTransport(mesh=mesh), timeout=10.0
        ) as client:
            first = await client.get(f"{URL}/x")
            second = await client.get(f"{URL}/x", headers={"x-v": "2"})
            many = await asyncio.gather(*(client.get(f"{URL}/y") for _ in range(20)))
            assert all(r.status_code == 200 for r in many)
            return [first.headers["x-backend"], second.headers["x-backend"]]

    assert asyncio.run(run()) == ["a", "b"]


def test_case_insensitive_prefix_rewrite(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    service.cluster(CLUSTER, [a])
    r = route(prefix="/API", cluster=CLUSTER)
    r.match.case_sensitive.CopyFrom(wrappers_pb2.BoolValue(value=False))
    r.route.prefix_rewrite = "/internal"
    service.routes_for(SERVICE, [r])
    assert reply(client.get(f"{URL}/api/x"))["path"] == "/internal/x"


def test_mirror_is_fire_and_forget_with_shadow_host(
    service: Service, backends: Callable[..., list[HttpEcho]], mesh: Mesh
) -> None:
    main, shadow = backends("main", "shadow")
    service.cluster("main", [main])
    service.cluster("shadow", [shadow])
    r = route(prefix="/", cluster="main")
    r.route.request_mirror_policies.add(cluster="shadow")
    service.routes_for(SERVICE, [r])
    shadow.hold()  # a stalled shadow never delays the caller
    try:
        transport = proxyless.httpx.Transport(mesh=mesh)
        with httpx.Client(transport=transport, timeout=10.0) as client:
            got = reply(client.post(f"{URL}/m?x=1", content=b"body"))
            assert (got["backend"], got["host"]) == ("main", "svc:8080")
            # The mirrored request ends before the client closes: closing a
            # transport with one in flight leaves its mirror thread waiting for
            # the reply until the request's timeout.
            shadow.release()
            wait_until(lambda: len(shadow.requests) == 1, what="the shadow request")
            mirrors = transport._mirrors  # type: ignore[attr-defined]
            wait_until(lambda: mirrors._pending == 0, what="the mirrored request's end")
        seen = shadow.requests[0]
        assert (seen["host"], seen["path"], seen["query"], seen["body"]) == (
            "svc-shadow:8080",
            "/m",
            "x=1",
            "body",
        )
    finally:
        shadow.release()

    async def run() -> None:
        async with httpx.AsyncClient(
            transport=proxyless.httpx.AsyncTransport(mesh=mesh), timeout=10.0
        ) as client:
            assert (await client.get(f"{URL}/async")).status_code == 200
            transport = client._transport
            await asyncio.gather(*transport._mirrors)  # type: ignore[attr-defined]

    asyncio.run(run())
    assert [r["path"] for r in shadow.requests] == ["/m", "/async"]


def test_ring_hash_on_a_header_keeps_a_user_on_one_endpoint(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    servers = backends("a", "b", "c")
    service.cluster(CLUSTER, servers, cluster(CLUSTER, lb="ring_hash"))
    service.routes_for(SERVICE, [route(prefix="/", cluster=CLUSTER, hash_headers=["x-user"])])
    for user in ("alice", "bob", "carol", "dave"):
        seen = {
            client.get(f"{URL}/", headers={"x-user": user}).headers["x-backend"] for _ in range(10)
        }
        assert len(seen) == 1, (user, seen)
