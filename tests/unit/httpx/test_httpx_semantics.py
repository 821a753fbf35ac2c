"""Envoy router semantics of proxyless.httpx as pure functions: header
mutations, path rewrites, redirect locations, shadow hosts, host patterns,
error mapping and the public names."""

from __future__ import annotations

import httpx
import pytest

import proxyless.httpx
from proxyless.errors import NoMatchingRoute, ResourceNacked, RetryBudgetExhausted
from proxyless.httpx._errors import mesh_error, timeout_error, upstream_error
from proxyless.httpx._hosts import MeshHosts, is_ip_literal, target_name
from proxyless.httpx._router import (
    HeaderLevel,
    LazyHeaders,
    evaluate_headers,
    redirect_location,
    rewrite_path,
    shadow_host,
    split_host_port,
)
from proxyless.httpx._upstream import request_info
from proxyless.resources.model import (
    HeaderValueOption,
    RedirectAction,
    RegexRewrite,
    Route,
    RouteAction,
    RouteMatch,
)
from proxyless.resources.parse.regex import compile_re2
from proxyless.routing import header_value, header_values


def _opt(
    key: str, value: str, action: str = "append_if_exists_or_add", keep: bool = False
) -> HeaderValueOption:
    return HeaderValueOption(key, value, action, keep)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "level", "expected"),
    [
        pytest.param(
            [("a", "1")], HeaderLevel((_opt("a", "2"),), ()), [("a", "1"), ("a", "2")], id="append"
        ),
        pytest.param(
            [("a", "1")],
            HeaderLevel((_opt("a", "2", "add_if_absent"), _opt("b", "3", "add_if_absent")), ()),
            [("a", "1"), ("b", "3")],
            id="add-if-absent",
        ),
        pytest.param(
            [("a", "1"), ("a", "x")],
            HeaderLevel((_opt("a", "2", "overwrite_if_exists_or_add"),), ()),
            [("a", "2")],
            id="overwrite-replaces-every-value",
        ),
        pytest.param(
            [("c", "1")],
            HeaderLevel((_opt("a", "2", "overwrite_if_exists"),), ()),
            [("c", "1")],
            id="overwrite-if-exists-absent",
        ),
        pytest.param(
            [("a", "1")],
            HeaderLevel((_opt("a", "2", "add_if_absent"),), ("a",)),
            [("a", "2")],
            id="remove-runs-before-add",
        ),
        pytest.param(
            [],
            HeaderLevel((_opt("a", ""), _opt("b", "", keep=True)), ()),
            [("b", "")],
            id="empty-values",
        ),
        pytest.param(
            [("z", "0")],
            HeaderLevel((_opt("a", "1"), _opt("b", "2", "overwrite_if_exists_or_add")), ()),
            [("z", "0"), ("b", "2"), ("a", "1")],
            id="overwrites-before-appends",
        ),
        pytest.param(
            [],
            HeaderLevel((_opt("X-Up", "é"),), ()),
            [("x-up", "é".encode().decode("latin-1"))],
            id="utf8-lower",
        ),
    ],
)
def test_evaluate_headers(
    headers: list[tuple[str, str]], level: HeaderLevel, expected: list[tuple[str, str]]
) -> None:
    before = list(headers)
    assert evaluate_headers(headers, level) == expected
    assert headers == before  # the input is never changed in place


def _route(kind: str, path: str, *, regex: str | None = None) -> Route:
    compiled = compile_re2(regex) if regex else None
    return Route(RouteMatch(kind, path, compiled), RouteAction(cluster="c"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("route", "action", "raw", "expected"),
    [
        pytest.param(
            _route("prefix", "/api/"),
            RouteAction(prefix_rewrite="/v2/"),
            "/api/x?q=1",
            "/v2/x?q=1",
            id="prefix",
        ),
        pytest.param(
            _route("prefix", "/API"),
            RouteAction(prefix_rewrite="/i"),
            "/api/x",
            "/i/x",
            id="prefix-case-insensitive",
        ),
        pytest.param(
            _route("path", "/exact"),
            RouteAction(prefix_rewrite="/was"),
            "/exact?q",
            "/was?q",
            id="exact-path",
        ),
        pytest.param(
            _route("safe_regex", "/r/.*", regex="/r/.*"),
            RouteAction(prefix_rewrite="/all"),
            "/r/a/b?x",
            "/all?x",
            id="regex-route-whole-path",
        ),
        pytest.param(
            _route("prefix", "/"),
            RouteAction(regex_rewrite=RegexRewrite(compile_re2(r"^/(\w+)/(\w+)$"), r"/\2/\1")),
            "/a/b?k=v",
            "/b/a?k=v",
            id="regex-rewrite-keeps-query",
        ),
        pytest.param(_route("prefix", "/"), RouteAction(cluster="c"), "/x", None, id="no-rewrite"),
    ],
)
def test_rewrite_path(route: Route, action: RouteAction, raw: str, expected: str | None) -> None:
    assert rewrite_path(route, action, raw) == expected


@pytest.mark.parametrize(
    ("action", "scheme", "authority", "raw", "expected"),
    [
        pytest.param(
            RedirectAction(scheme="https"),
            "http",
            "svc:8080",
            "/a?x=1",
            "https://svc:8080/a?x=1",
            id="https-keeps-odd-port",
        ),
        pytest.param(
            RedirectAction(scheme="https"),
            "http",
            "svc:80",
            "/a",
            "https://svc/a",
            id="https-drops-default-port",
        ),
        pytest.param(
            RedirectAction(host="other"),
            "http",
            "svc:8080",
            "/a?x=1",
            "http://other/a?x=1",
            id="host-drops-port",
        ),
        pytest.param(
            RedirectAction(port=9090), "http", "svc:8080", "/a", "http://svc:9090/a", id="port"
        ),
        pytest.param(
            RedirectAction(path="/landing"),
            "http",
            "svc",
            "/a?x=1",
            "http://svc/landing?x=1",
            id="path-keeps-query",
        ),
        pytest.param(
            RedirectAction(path="/l?f=1"),
            "http",
            "svc",
            "/a?x=1",
            "http://svc/l?f=1",
            id="path-with-query",
        ),
        pytest.param(
            RedirectAction(prefix_rewrite="/new/", strip_query=True),
            "http",
            "svc",
            "/old/p?x=1",
            "http://svc/new/p",
            id="prefix-strip-query",
        ),
        pytest.param(
            RedirectAction(scheme="https", port=8443),
            "http",
            "[::1]:8080",
            "/a",
            "https://[::1]:8443/a",
            id="ipv6",
        ),
    ],
)
def test_redirect_location(
    action: RedirectAction, scheme: str, authority: str, raw: str, expected: str
) -> None:
    assert redirect_location(action, _route("prefix", "/old/"), scheme, authority, raw) == expected


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        pytest.param("reviews:9080", "reviews-shadow:9080", id="with-port"),
        pytest.param("reviews", "reviews-shadow", id="no-port"),
        pytest.param("[::1]:80", "[::1]-shadow:80", id="ipv6"),
    ],
)
def test_shadow_host(authority: str, expected: str) -> None:
    assert shadow_host(authority) == expected


def test_split_host_port() -> None:
    assert split_host_port("a:1") == ("a", ":1")
    assert split_host_port("[::1]") == ("[::1]", "")


def test_lazy_headers_join_values_and_hide_host() -> None:
    h = LazyHeaders([(b"Host", b"svc"), (b"X-A", b"1"), (b"x-a", b"2")])
    assert h.get("x-a") == "1,2"
    assert "host" not in h and len(h) == 1 and list(h) == ["x-a"]
    assert h["x-a"] == "1,2"


def test_lazy_headers_keep_repeated_values() -> None:
    h = LazyHeaders(
        [(b"Host", b"svc"), (b"X-A", b"1"), (b"x-b", b"b"), (b"x-a", b"2"), (b"X-a", b"3")]
    )
    assert h.repeated() == {"x-a": ("1", "2", "3")}
    assert LazyHeaders([(b"Host", b"svc"), (b"x-a", b"1")]).repeated() is None
    request = httpx.Request("GET", "http://svc/p?q", headers=[("X-A", "1"), ("x-a", "2")])
    info = request_info(request, request.headers.raw, "svc", "/p?q", "http")
    assert header_values(info, "x-a") == ("1", "2")
    assert header_value(info, "x-a") == "1,2"
    assert header_value(info, "host") == "svc"


@pytest.mark.parametrize(
    ("hosts", "host", "port", "expected"),
    [
        pytest.param(None, "reviews", 9080, True, id="default-any-name"),
        pytest.param(None, "10.0.0.1", 80, False, id="default-ip"),
        pytest.param(None, "::1", 80, False, id="default-ipv6"),
        pytest.param(None, "localhost", 80, False, id="default-localhost"),
        pytest.param(["reviews:9080"], "reviews", 9080, True, id="exact-host-port"),
        pytest.param(["reviews:9080"], "reviews", 9081, False, id="exact-other-port"),
        pytest.param(["reviews"], "reviews", 1, True, id="host-any-port"),
        pytest.param(
            ["*.svc.cluster.local"], "a.default.svc.cluster.local", None, True, id="suffix"
        ),
        pytest.param(
            ["*.svc.cluster.local"], "svc.cluster.local", None, False, id="suffix-not-bare"
        ),
        pytest.param(["*"], "127.0.0.1", 80, False, id="wildcard-never-ip"),
        pytest.param(["127.0.0.1:8080"], "127.0.0.1", 8080, True, id="explicit-ip"),
    ],
)
def test_mesh_hosts(hosts: list[str] | None, host: str, port: int | None, expected: bool) -> None:
    assert MeshHosts(hosts).candidate(host, port) is expected


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("http://reviews", id="url"),
        pytest.param("a*b", id="inner-wildcard"),
        pytest.param("reviews:http", id="port-not-a-number"),
        pytest.param("", id="empty"),
    ],
)
def test_mesh_hosts_rejects_bad_patterns(bad: str) -> None:
    with pytest.raises(ValueError, match="hosts"):
        MeshHosts([bad])


def test_fallback_must_be_known() -> None:
    with pytest.raises(ValueError, match="fallback"):
        MeshHosts(None, "drop")  # type: ignore[arg-type]


def test_target_names_and_ip_literals() -> None:
    assert target_name("reviews", 9080) == "reviews:9080"
    assert target_name("reviews", None) == "reviews"
    assert target_name("::1", 80) == "[::1]:80"
    assert is_ip_literal("[::1]") and is_ip_literal("10.1.2.3") and not is_ip_literal("a.b")


REQUEST = httpx.Request("GET", "http://svc:8080/p?secret=1")


@pytest.mark.parametrize(
    ("error", "cls", "stage", "flag"),
    [
        pytest.param(
            NoMatchingRoute("no route"),
            proxyless.httpx.MeshConnectError,
            "routing",
            "[NR]",
            id="routing",
        ),
        pytest.param(
            ResourceNacked("bad"), proxyless.httpx.MeshConnectError, "config", "[NC]", id="config"
        ),
        pytest.param(
            RetryBudgetExhausted("x"),
            proxyless.httpx.MeshConnectError,
            "upstream",
            "[URX]",
            id="upstream",
        ),
    ],
)
def test_mesh_error_mapping(error: Exception, cls: type, stage: str, flag: str) -> None:
    exc = mesh_error(error, REQUEST)  # type: ignore[arg-type]
    assert isinstance(exc, cls) and isinstance(exc, httpx.ConnectError)
    assert exc.stage == stage  # type: ignore[attr-defined]
    assert exc.proxyless_error is error and exc.__cause__ is error  # type: ignore[attr-defined]
    text = str(exc)
    assert text.startswith("proxyless: GET http://svc:8080/p: ") and flag in text
    assert "secret" not in text
    assert exc.request is REQUEST


def test_timeout_and_upstream_errors_keep_httpx_types() -> None:
    t = timeout_error(REQUEST, "route timeout 1s expired", None, connecting=True)
    assert isinstance(t, httpx.ConnectTimeout) and "[UT]" in str(t)
    original = httpx.RemoteProtocolError("peer closed")
    out = upstream_error(original, REQUEST, "cluster 'c'")
    assert type(out) is httpx.RemoteProtocolError and out.__cause__ is original
    assert "peer closed" in str(out) and "cluster 'c'" in str(out)


def test_public_names() -> None:
    for name in proxyless.httpx.__all__:
        assert getattr(proxyless.httpx, name) is not None
    assert issubclass(proxyless.httpx.Transport, httpx.BaseTransport)
    assert issubclass(proxyless.httpx.AsyncTransport, httpx.AsyncBaseTransport)
