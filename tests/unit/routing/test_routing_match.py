"""Route matching: path kinds, headers, query parameters, grpc flag, runtime fraction."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest

from proxyless.resources.model import (
    HeaderMatcher,
    QueryParameterMatcher,
    Route,
    RouteAction,
    RouteMatch,
    StringMatcher,
    VirtualHost,
)
from proxyless.resources.parse.regex import compile_re2
from proxyless.routing import (
    RequestInfo,
    header_value,
    header_values,
    match_route,
    parse_query,
    path_matches,
)


def grpc(path: str = "/pkg.Svc/Method", headers: Mapping[str, str] | None = None) -> RequestInfo:
    return RequestInfo(authority="svc", path=path, headers=headers or {}, is_grpc=True)


def http(
    path: str = "/",
    query: str = "",
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
) -> RequestInfo:
    return RequestInfo(
        authority="web:8080",
        path=path,
        query=query,
        method=method,
        headers=headers or {},
        is_grpc=False,
        scheme="https",
    )


class _Sent(dict[str, str]):
    """Headers as an HTTP transport keeps them: joined, plus the separate
    values of the repeated ones."""

    def __init__(self, joined: dict[str, str], repeated: dict[str, tuple[str, ...]]) -> None:
        super().__init__(joined)
        self._repeated = repeated

    def repeated(self) -> Mapping[str, tuple[str, ...]]:
        return self._repeated


def http_sent(*pairs: tuple[str, str], is_grpc: bool = False) -> RequestInfo:
    """A request whose headers were sent as ``pairs`` (names may repeat);
    for gRPC the separate values are there too, and must not be used."""
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    joined = {k: ",".join(v) for k, v in values.items()}
    repeated = {k: tuple(v) for k, v in values.items() if len(v) > 1}
    return RequestInfo(
        authority="web:8080",
        path="/",
        method="GET",
        headers=_Sent(joined, repeated),
        is_grpc=is_grpc,
    )


def exact(name: str, value: str, **kw: bool) -> HeaderMatcher:
    return HeaderMatcher(
        name=name, kind="exact", string_matcher=StringMatcher("exact", value), **kw
    )


PATH_CASES = [
    pytest.param(RouteMatch("prefix", "/pkg."), grpc(), True, id="prefix"),
    pytest.param(RouteMatch("prefix", ""), grpc(), True, id="empty-prefix"),
    pytest.param(RouteMatch("prefix", "/PKG."), grpc(), False, id="prefix-case-sensitive"),
    pytest.param(
        RouteMatch("prefix", "/PKG.", case_sensitive=False), grpc(), True, id="prefix-ignore-case"
    ),
    pytest.param(RouteMatch("path", "/pkg.Svc/Method"), grpc(), True, id="path-exact"),
    pytest.param(RouteMatch("path", "/pkg.Svc/method"), grpc(), False, id="path-case"),
    pytest.param(
        RouteMatch("path", "/PKG.svc/method", case_sensitive=False),
        grpc(),
        True,
        id="path-ignore-case",
    ),
    pytest.param(RouteMatch("path", "/a"), http("/a", query="x=1"), True, id="path-ignores-query"),
    # Envoy's PathMatcher strips the query before a prefix is compared (Envoy 1.40)
    pytest.param(
        RouteMatch("prefix", "/a?x"), http("/a", query="x=1"), False, id="prefix-never-sees-query"
    ),
    pytest.param(
        RouteMatch("prefix", "/A?X", case_sensitive=False),
        http("/a", query="x=1"),
        False,
        id="prefix-ignore-case-never-sees-query",
    ),
    pytest.param(RouteMatch("prefix", "/a"), http("/a", query="x=1"), True, id="prefix-with-query"),
    pytest.param(
        RouteMatch("safe_regex", r"/pkg\..*", regex=compile_re2(r"/pkg\..*")),
        grpc(),
        True,
        id="regex-full",
    ),
    pytest.param(
        RouteMatch("safe_regex", "/pkg", regex=compile_re2("/pkg")),
        grpc(),
        False,
        id="regex-must-match-whole-path",
    ),
    pytest.param(
        RouteMatch("safe_regex", "/PKG.*", regex=compile_re2("/PKG.*"), case_sensitive=False),
        grpc(),
        False,
        id="regex-ignores-case-flag",
    ),
    pytest.param(
        RouteMatch("safe_regex", "/a", regex=compile_re2("/a")),
        http("/a", query="q=1"),
        True,
        id="regex-without-query",
    ),
    pytest.param(RouteMatch("path_separated_prefix", "/api"), http("/api"), True, id="sep-equal"),
    pytest.param(
        RouteMatch("path_separated_prefix", "/api"), http("/api/v1"), True, id="sep-slash"
    ),
    pytest.param(
        RouteMatch("path_separated_prefix", "/api"), http("/apiv1"), False, id="sep-no-slash"
    ),
    pytest.param(
        RouteMatch("path_separated_prefix", "/API", case_sensitive=False),
        http("/api/x"),
        True,
        id="sep-ignore-case",
    ),
]


@pytest.mark.parametrize(("match", "request_info", "expected"), PATH_CASES)
def test_path_matches(match: RouteMatch, request_info: RequestInfo, expected: bool) -> None:
    assert path_matches(match, request_info) is expected


HEADER_CASES = [
    pytest.param(exact("x-user", "alice"), grpc(headers={"x-user": "alice"}), True, id="metadata"),
    pytest.param(exact("x-user", "alice"), grpc(headers={"x-user": "bob"}), False, id="mismatch"),
    pytest.param(exact("x-user", "alice"), grpc(), False, id="absent"),
    pytest.param(
        exact("x-user", "alice", invert_match=True), grpc(), False, id="absent-inverted-never"
    ),
    pytest.param(
        HeaderMatcher("x-user", "present", present=False, invert_match=False),
        grpc(),
        True,
        id="present-false-absent",
    ),
    pytest.param(
        HeaderMatcher("x-user", "present", present=False, invert_match=True),
        grpc(),
        False,
        id="present-false-inverted-absent",
    ),
    pytest.param(
        HeaderMatcher("x-user", "present", present=True, invert_match=True),
        grpc(),
        True,
        id="present-inverted-absent",
    ),
    pytest.param(
        exact("x-id-bin", "AAEC"), grpc(headers={"x-id-bin": "AAEC"}), False, id="grpc-bin-absent"
    ),
    pytest.param(
        HeaderMatcher("x-id-bin", "present", present=True),
        http(headers={"x-id-bin": "AAEC"}),
        True,
        id="http-bin-visible",
    ),
    pytest.param(
        exact("content-type", "application/grpc"), grpc(), True, id="grpc-content-type-default"
    ),
    pytest.param(
        exact("content-type", "application/grpc+proto"),
        grpc(headers={"content-type": "application/grpc+proto"}),
        True,
        id="grpc-content-type-given",
    ),
    pytest.param(exact(":path", "/pkg.Svc/Method"), grpc(), False, id="grpc-no-pseudo"),
    pytest.param(exact(":method", "GET"), http(), True, id="http-method"),
    pytest.param(exact(":path", "/a?b=1"), http("/a", query="b=1"), True, id="http-path-query"),
    pytest.param(exact(":authority", "web:8080"), http(), True, id="http-authority"),
    pytest.param(exact(":scheme", "https"), http(), True, id="http-scheme"),
    pytest.param(exact(":status", "200"), http(), False, id="http-unknown-pseudo"),
    pytest.param(
        exact("x-multi", "a,b"), grpc(headers={"x-multi": "a,b"}), True, id="joined-values"
    ),
    pytest.param(
        HeaderMatcher("x-n", "range", range_start=1, range_end=10),
        grpc(headers={"x-n": "9"}),
        True,
        id="range",
    ),
    # Repeated headers: HTTP matches value by value (Envoy >= 1.39,
    # match_headers_individually), gRPC the joined value (gRFC A28).
    pytest.param(
        exact("x-role", "admin"),
        http_sent(("x-role", "user"), ("x-role", "admin")),
        True,
        id="http-repeated-any-value",
    ),
    pytest.param(
        exact("x-role", "user,admin"),
        http_sent(("x-role", "user"), ("x-role", "admin")),
        False,
        id="http-repeated-not-joined",
    ),
    pytest.param(
        exact("x-role", "user,admin"),
        http_sent(("x-role", "user,admin")),
        True,
        id="http-one-line-with-comma",
    ),
    pytest.param(
        exact("x-role", "admin", invert_match=True),
        http_sent(("x-role", "user"), ("x-role", "admin")),
        False,
        id="http-repeated-inverted",
    ),
    pytest.param(
        exact("x-role", "root", invert_match=True),
        http_sent(("x-role", "user"), ("x-role", "admin")),
        True,
        id="http-repeated-inverted-none",
    ),
    pytest.param(
        HeaderMatcher("x-n", "range", range_start=1, range_end=10),
        http_sent(("x-n", "50"), ("x-n", "5")),
        True,
        id="http-repeated-range",
    ),
    pytest.param(
        exact("x-role", "admin"),
        http_sent(("x-other", "1"), ("x-other", "2"), ("x-role", "admin")),
        True,
        id="http-other-name-repeated",
    ),
    pytest.param(
        exact("x-role", "admin"),
        http_sent(("x-role", "user"), ("x-role", "admin"), is_grpc=True),
        False,
        id="grpc-repeated-joined",
    ),
    pytest.param(
        exact("x-role", "user,admin"),
        http_sent(("x-role", "user"), ("x-role", "admin"), is_grpc=True),
        True,
        id="grpc-repeated-joined-match",
    ),
    # ``host``: the authority for HTTP (Envoy keeps Host as :authority);
    # for gRPC neither it nor :authority is visible (gRFC A28).
    pytest.param(exact("host", "web:8080"), http(), True, id="http-host-is-authority"),
    pytest.param(exact("host", "other"), http(), False, id="http-host-mismatch"),
    pytest.param(
        HeaderMatcher("host", "present", present=False), http(), False, id="http-host-present"
    ),
    pytest.param(exact("host", "svc"), grpc(), False, id="grpc-host-absent"),
    pytest.param(exact(":authority", "svc"), grpc(), False, id="grpc-authority-absent"),
    # The deprecated ``exact_match: ""`` (kind "exact"): for HTTP any value of a
    # present header matches, as in Envoy 1.40; ``string_match {exact: ""}``
    # and gRPC (gRFC A28) compare exactly.
    pytest.param(exact("x-a", ""), http_sent(("x-a", "x")), True, id="http-empty-exact-any"),
    pytest.param(exact("x-a", ""), http_sent(("x-a", "")), True, id="http-empty-exact-empty"),
    pytest.param(exact("x-a", ""), http(), False, id="http-empty-exact-absent"),
    pytest.param(
        exact("x-a", "", invert_match=True),
        http_sent(("x-a", "x")),
        False,
        id="http-empty-exact-inverted",
    ),
    pytest.param(
        exact("x-a", "", invert_match=True), http(), False, id="http-empty-exact-inverted-absent"
    ),
    pytest.param(
        exact("x-a", "", treat_missing_header_as_empty=True),
        http(),
        True,
        id="http-empty-exact-missing-as-empty",
    ),
    pytest.param(
        exact("x-a", ""),
        http_sent(("x-a", "x"), ("x-a", "y")),
        True,
        id="http-empty-exact-repeated",
    ),
    pytest.param(
        HeaderMatcher("x-a", "string_match", string_matcher=StringMatcher("exact", "")),
        http_sent(("x-a", "x")),
        False,
        id="http-string-match-empty-exact",
    ),
    pytest.param(exact("x-a", ""), grpc(headers={"x-a": "x"}), False, id="grpc-empty-exact"),
    pytest.param(exact("x-a", ""), grpc(headers={"x-a": ""}), True, id="grpc-empty-exact-empty"),
]


@pytest.mark.parametrize(("matcher", "request_info", "expected"), HEADER_CASES)
def test_header_matching(matcher: HeaderMatcher, request_info: RequestInfo, expected: bool) -> None:
    route = Route(RouteMatch("prefix", "", headers=(matcher,)), RouteAction(cluster="c"))
    vhost = VirtualHost("vh", ("*",), (route,))
    found = match_route(vhost, request_info, random.Random(1))
    assert (found is route) is expected


def test_header_value_rules() -> None:
    g = grpc(headers={"a": "1", "b-bin": "x", ":path": "/p"})
    assert header_value(g, "a") == "1"
    assert header_value(g, "b-bin") is None
    assert header_value(g, ":path") is None
    assert header_value(g, "content-type") == "application/grpc"
    h = http("/p", query="q", headers={"content-type": "text/plain"})
    assert header_value(h, "content-type") == "text/plain"
    assert header_value(h, ":path") == "/p?q"
    assert header_value(h, "host") == header_value(h, ":authority") == "web:8080"
    assert header_values(h, "content-type") is None
    r = http_sent(("a", "1"), ("a", "2"), ("b", "3"))
    assert header_value(r, "a") == "1,2"
    assert header_values(r, "a") == ("1", "2")
    assert header_values(r, "b") is None
    assert header_values(http_sent(("a", "1"), ("a", "2"), is_grpc=True), "a") is None


QUERY_CASES = [
    pytest.param(
        QueryParameterMatcher("debug", StringMatcher("exact", "1")), "debug=1", True, id="exact"
    ),
    pytest.param(
        QueryParameterMatcher("debug", StringMatcher("exact", "1")),
        "debug=2&debug=1",
        False,
        id="first-value-only",
    ),
    pytest.param(QueryParameterMatcher("debug", present_match=True), "debug", True, id="bare-name"),
    pytest.param(QueryParameterMatcher("debug", present_match=True), "x=1", False, id="absent"),
    pytest.param(
        QueryParameterMatcher("q", StringMatcher("exact", "a%20b")),
        "q=a%20b",
        True,
        id="not-decoded",
    ),
]


@pytest.mark.parametrize(("matcher", "query", "expected"), QUERY_CASES)
def test_query_parameters_http(matcher: QueryParameterMatcher, query: str, expected: bool) -> None:
    route = Route(RouteMatch("prefix", "/", query_parameters=(matcher,)), RouteAction(cluster="c"))
    vhost = VirtualHost("vh", ("*",), (route,))
    assert (match_route(vhost, http("/x", query=query), random.Random(1)) is route) is expected


def test_query_parameters_never_match_grpc() -> None:
    matcher = QueryParameterMatcher("debug", present_match=True)
    route = Route(RouteMatch("prefix", "/", query_parameters=(matcher,)), RouteAction(cluster="c"))
    vhost = VirtualHost("vh", ("*",), (route,))
    req = RequestInfo(authority="a", path="/pkg.S/M", query="debug=1", is_grpc=True)
    assert match_route(vhost, req, random.Random(1)) is None


@pytest.mark.parametrize(
    ("query", "parsed"),
    [
        pytest.param("", {}, id="empty"),
        pytest.param("a=1&b=2", {"a": "1", "b": "2"}, id="two"),
        pytest.param("a=1&a=2", {"a": "1"}, id="first-wins"),
        pytest.param("a&&b=", {"a": "", "b": ""}, id="bare-and-empty"),
        pytest.param("a=x=y", {"a": "x=y"}, id="equals-in-value"),
    ],
)
def test_parse_query(query: str, parsed: dict[str, str]) -> None:
    assert parse_query(query) == parsed


GRPC_FLAG_CASES = [
    pytest.param(grpc(), True, id="grpc-default-content-type"),
    pytest.param(http(headers={"content-type": "application/grpc-web"}), True, id="grpc-web"),
    pytest.param(http(headers={"content-type": "application/json"}), False, id="json"),
    pytest.param(http(), False, id="no-content-type"),
]


@pytest.mark.parametrize(("request_info", "expected"), GRPC_FLAG_CASES)
def test_grpc_flag(request_info: RequestInfo, expected: bool) -> None:
    route = Route(RouteMatch("prefix", "/", grpc=True), RouteAction(cluster="c"))
    vhost = VirtualHost("vh", ("*",), (route,))
    assert (match_route(vhost, request_info, random.Random(1)) is route) is expected


def test_first_matching_route_wins() -> None:
    a = Route(RouteMatch("prefix", "/pkg.Svc/", headers=(exact("x", "1"),)), RouteAction("a"))
    b = Route(RouteMatch("prefix", "/pkg."), RouteAction("b"))
    c = Route(RouteMatch("prefix", ""), RouteAction("c"))
    vhost = VirtualHost("vh", ("*",), (a, b, c))
    rng = random.Random(0)
    assert match_route(vhost, grpc(headers={"x": "1"}), rng) is a
    assert match_route(vhost, grpc(), rng) is b
    assert match_route(vhost, grpc("/other.S/M"), rng) is c


@pytest.mark.parametrize(
    ("per_million", "low", "high"),
    [
        pytest.param(250_000, 0.22, 0.28, id="quarter"),
        pytest.param(0, 0.0, 0.0, id="zero"),
        pytest.param(1_000_000, 1.0, 1.0, id="all"),
    ],
)
def test_runtime_fraction(per_million: int, low: float, high: float) -> None:
    route = Route(
        RouteMatch("prefix", "", runtime_fraction_per_million=per_million), RouteAction("a")
    )
    fallback = Route(RouteMatch("prefix", ""), RouteAction("b"))
    vhost = VirtualHost("vh", ("*",), (route, fallback))
    rng = random.Random(42)
    hits = sum(match_route(vhost, grpc(), rng) is route for _ in range(4000))
    assert low <= hits / 4000 <= high


def test_runtime_fraction_draws_only_when_needed() -> None:
    route = Route(RouteMatch("path", "/x", runtime_fraction_per_million=1), RouteAction("a"))
    plain = Route(RouteMatch("prefix", ""), RouteAction("b"))
    vhost = VirtualHost("vh", ("*",), (route, plain))
    rng = random.Random(7)
    state = rng.getstate()
    assert match_route(vhost, grpc("/y"), rng) is plain
    assert rng.getstate() == state
