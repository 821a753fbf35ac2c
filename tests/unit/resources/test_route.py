"""RouteConfiguration parsing and validation (gRFC A28, A31, A39, A42, A44; Envoy routes)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from proxyless.errors import ResourceValidationError
from proxyless.resources.model import (
    ClusterWeight,
    DirectResponseAction,
    DisabledFilterConfig,
    FaultFilterConfig,
    HashPolicy,
    HeaderValueOption,
    HedgePolicy,
    NonForwardingAction,
    RbacFilterConfig,
    RedirectAction,
    RetryPolicy,
    RouteAction,
    RouteConfiguration,
)
from proxyless.resources.parse.route import decode_route_configuration, parse_route_configuration

from . import builders as b


def _decode(config: route_pb2.RouteConfiguration) -> RouteConfiguration:
    result = decode_route_configuration(config.SerializeToString())
    assert result.ok, result.errors
    assert isinstance(result.value, RouteConfiguration)
    return result.value


def _errors(config: route_pb2.RouteConfiguration) -> tuple[str, ...]:
    result = decode_route_configuration(config.SerializeToString())
    assert not result.ok
    assert result.value is None
    assert result.name == config.name
    return result.errors


def _one_route(r: rc.Route) -> route_pb2.RouteConfiguration:
    return b.route_config(vhosts=[b.virtual_host(routes=[r])])


def _action(**kw: Any) -> RouteAction:
    action = _decode(_one_route(b.route(**kw))).virtual_hosts[0].routes[0].action
    assert isinstance(action, RouteAction)
    return action


def _dur(seconds: int, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def _pct(numerator: int, denominator: int = 0) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(numerator=numerator, denominator=denominator)


def test_minimal_route_configuration() -> None:
    config = _decode(b.route_config())
    assert config.name == "route-a"
    vhost = config.virtual_hosts[0]
    assert vhost.domains == ("*",)
    route = vhost.routes[0]
    assert route.match.path_kind == "prefix"
    assert route.match.path == "/"
    assert route.match.case_sensitive is True
    assert route.action == RouteAction(cluster="cluster-a")
    assert config.ignored_fields == ()


def _weighted(*weights: tuple[str, int | None]) -> rc.WeightedCluster:
    clusters = []
    for name, weight in weights:
        cw = rc.WeightedCluster.ClusterWeight(name=name)
        if weight is not None:
            cw.weight.value = weight
        clusters.append(cw)
    return rc.WeightedCluster(clusters=clusters)


def _weighted_route(wc: rc.WeightedCluster) -> rc.Route:
    return rc.Route(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(weighted_clusters=wc))


def test_weighted_clusters_skip_zero_weights() -> None:
    action = (
        _decode(_one_route(_weighted_route(_weighted(("a", 0), ("b", 3), ("c", 0), ("d", 1)))))
        .virtual_hosts[0]
        .routes[0]
        .action
    )
    assert isinstance(action, RouteAction)
    assert action.weighted_clusters == (ClusterWeight("b", 3), ClusterWeight("d", 1))
    assert action.cluster is None


_WC_PATH = "virtual_hosts[0].routes[0].route.weighted_clusters.clusters"


@pytest.mark.parametrize(
    ("wc", "error"),
    [
        pytest.param(
            _weighted(("a", 0), ("b", None)),
            f"{_WC_PATH}: total weight 0 must be > 0",
            id="all-zero",
        ),
        pytest.param(
            _weighted(("a", 2**32 - 1), ("b", 1)),
            f"{_WC_PATH}: total weight 4294967296 exceeds 4294967295",
            id="sum-overflows-uint32",
        ),
        pytest.param(
            rc.WeightedCluster(), f"{_WC_PATH}: at least one cluster is required", id="empty"
        ),
        pytest.param(_weighted(("", 1)), f"{_WC_PATH}[0].name: must not be empty", id="no-name"),
    ],
)
def test_weighted_cluster_errors(wc: rc.WeightedCluster, error: str) -> None:
    assert error in _errors(_one_route(_weighted_route(wc)))


def _route_with(match: rc.RouteMatch | None = None, **action: Any) -> rc.Route:
    r = rc.Route(match=match or rc.RouteMatch(prefix="/"))
    r.route.CopyFrom(rc.RouteAction(**action) if action else rc.RouteAction(cluster="c"))
    return r


_R = "virtual_hosts[0].routes[0]"


@pytest.mark.parametrize(
    ("route", "error"),
    [
        pytest.param(rc.Route(match=rc.RouteMatch(prefix="/")), f"{_R}: no action", id="no-action"),
        pytest.param(
            rc.Route(route=rc.RouteAction(cluster="c")), f"{_R}.match: is required", id="no-match"
        ),
        pytest.param(_route_with(rc.RouteMatch()), f"{_R}.match: no path specifier", id="no-path"),
        pytest.param(
            _route_with(cluster=""),
            f"{_R}.route.cluster: must not be empty",
            id="empty-cluster",
        ),
        pytest.param(
            _route_with(cluster_specifier_plugin="p"),
            f"{_R}.route.cluster_specifier_plugin: cluster specifier plugins are not supported",
            id="cluster-specifier-plugin",
        ),
        pytest.param(
            _route_with(rc.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex="(")), cluster="c"),
            f"{_R}.match.safe_regex.regex: invalid regex",
            id="bad-path-regex",
        ),
        pytest.param(
            _route_with(rc.RouteMatch(path_separated_prefix="/a/"), cluster="c"),
            f"{_R}.match.path_separated_prefix:",
            id="separated-prefix-trailing-slash",
        ),
        pytest.param(
            _route_with(
                rc.RouteMatch(prefix="/", tls_context=rc.RouteMatch.TlsContextMatchOptions()),
                cluster="c",
            ),
            f"{_R}.match.tls_context: unsupported match criterion",
            id="tls-context-match",
        ),
        pytest.param(
            _route_with(cluster="c", timeout=_dur(-1)),
            f"{_R}.route.timeout: duration must not be negative",
            id="negative-timeout",
        ),
        pytest.param(
            _route_with(cluster="c", idle_timeout=_dur(1, 1_000_000_000)),
            f"{_R}.route.idle_timeout: duration nanos 1000000000 exceeds 999999999",
            id="nanos-overflow",
        ),
        pytest.param(
            _route_with(cluster="c", timeout=_dur(315_576_000_001)),
            f"{_R}.route.timeout: duration seconds 315576000001 exceeds 315576000000",
            id="seconds-overflow",
        ),
        pytest.param(
            _route_with(
                cluster="c",
                prefix_rewrite="/x",
                regex_rewrite=regex_pb2.RegexMatchAndSubstitute(
                    pattern=regex_pb2.RegexMatcher(regex="a"), substitution="b"
                ),
            ),
            f"{_R}.route: prefix_rewrite and regex_rewrite cannot both be set",
            id="two-rewrites",
        ),
        pytest.param(
            _route_with(
                rc.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex="/a.*")),
                cluster="c",
                prefix_rewrite="/x",
            ),
            f"{_R}.route.prefix_rewrite: cannot be used with a safe_regex path match",
            id="prefix-rewrite-with-regex",
        ),
        pytest.param(
            _route_with(
                cluster="c",
                retry_policy=rc.RetryPolicy(
                    retry_back_off=rc.RetryPolicy.RetryBackOff(
                        base_interval=_dur(1), max_interval=_dur(0, 5)
                    )
                ),
            ),
            f"{_R}.route.retry_policy.retry_back_off.max_interval:",
            id="max-interval-below-base",
        ),
        pytest.param(
            _route_with(
                cluster="c",
                retry_policy=rc.RetryPolicy(
                    retry_back_off=rc.RetryPolicy.RetryBackOff(max_interval=_dur(1))
                ),
            ),
            f"{_R}.route.retry_policy.retry_back_off.base_interval: is required",
            id="no-base-interval",
        ),
        pytest.param(
            _route_with(
                cluster="c",
                hash_policy=[rc.RouteAction.HashPolicy(header=rc.RouteAction.HashPolicy.Header())],
            ),
            f"{_R}.route.hash_policy[0].header.header_name: must not be empty",
            id="hash-header-no-name",
        ),
        pytest.param(
            rc.Route(
                match=rc.RouteMatch(prefix="/"),
                direct_response=rc.DirectResponseAction(status=99),
            ),
            f"{_R}.direct_response.status: 99 must be in [200, 600)",
            id="direct-response-status",
        ),
        pytest.param(
            rc.Route(
                match=rc.RouteMatch(prefix="/"),
                route=rc.RouteAction(cluster="c"),
                request_headers_to_add=[
                    base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=":path", value="x"))
                ],
            ),
            f"{_R}.request_headers_to_add[0].header.key: cannot add header ':path'",
            id="add-pseudo-header",
        ),
        pytest.param(
            rc.Route(
                match=rc.RouteMatch(prefix="/"),
                route=rc.RouteAction(cluster="c"),
                request_headers_to_remove=["host"],
            ),
            f"{_R}.request_headers_to_remove[0]: cannot remove header 'host'",
            id="remove-host",
        ),
        pytest.param(
            rc.Route(
                match=rc.RouteMatch(prefix="/"),
                route=rc.RouteAction(cluster="c"),
                request_headers_to_add=[
                    base_pb2.HeaderValueOption(
                        header=base_pb2.HeaderValue(key="a", value="x"),
                        append=wrappers_pb2.BoolValue(value=True),
                        append_action=base_pb2.HeaderValueOption.ADD_IF_ABSENT,
                    )
                ],
            ),
            f"{_R}.request_headers_to_add[0]: append and append_action cannot both be set",
            id="append-and-action",
        ),
        pytest.param(
            _route_with(
                rc.RouteMatch(
                    prefix="/",
                    headers=[
                        rc.HeaderMatcher(
                            name="x-role",
                            string_match=string_pb2.StringMatcher(
                                safe_regex=regex_pb2.RegexMatcher(regex="admin"), ignore_case=True
                            ),
                        )
                    ],
                ),
                cluster="c",
            ),
            f"{_R}.match.headers[0].string_match.ignore_case: "
            "ignore_case has no effect for safe_regex",
            id="header-regex-ignore-case",
        ),
        pytest.param(
            _route_with(
                rc.RouteMatch(
                    prefix="/",
                    query_parameters=[
                        rc.QueryParameterMatcher(
                            name="q",
                            string_match=string_pb2.StringMatcher(
                                safe_regex=regex_pb2.RegexMatcher(regex="a"), ignore_case=True
                            ),
                        )
                    ],
                ),
                cluster="c",
            ),
            f"{_R}.match.query_parameters[0].string_match.ignore_case: "
            "ignore_case has no effect for safe_regex",
            id="query-regex-ignore-case",
        ),
    ],
)
def test_route_errors(route: rc.Route, error: str) -> None:
    errors = _errors(_one_route(route))
    assert any(e.startswith(error) for e in errors), errors


@pytest.mark.parametrize(
    ("domains", "error"),
    [
        pytest.param(["a b"], "virtual_hosts[0].domains[0]: invalid domain 'a b'", id="space"),
        pytest.param([""], "virtual_hosts[0].domains[0]: domain must not be empty", id="empty"),
        pytest.param([], "virtual_hosts[0].domains: at least one domain is required", id="none"),
        pytest.param(
            ["a.com", "A.com"], "virtual_hosts[0].domains[1]: duplicate domain 'a.com'", id="dup"
        ),
    ],
)
def test_domain_errors(domains: list[str], error: str) -> None:
    config = route_pb2.RouteConfiguration(
        name="r", virtual_hosts=[rc.VirtualHost(name="v", domains=domains, routes=[b.route()])]
    )
    errors = _errors(config)
    assert any(e.startswith(error) for e in errors), errors


@pytest.mark.parametrize(
    ("domain", "stored"),
    [
        # Envoy: only a leading or a trailing ``*`` is a wildcard; any other
        # ``*`` is a literal character of an exact domain.
        pytest.param("svc.*:9000", "svc.*:9000", id="star-before-port"),
        pytest.param("a-*:80", "a-*:80", id="prefix-star-then-port"),
        pytest.param("A*B", "a*b", id="mid-star"),
        pytest.param("*.a.*", "*.a.*", id="two-stars-leading-wins"),
        pytest.param("a*b*", "a*b*", id="two-stars-trailing"),
        pytest.param("*", "*", id="catch-all"),
    ],
)
def test_domains_envoy_accepts(domain: str, stored: str) -> None:
    config = b.route_config(vhosts=[b.virtual_host(domains=(domain,))])
    assert parse_route_configuration(config).virtual_hosts[0].domains == (stored,)


def test_domain_used_by_two_virtual_hosts() -> None:
    config = b.route_config(
        vhosts=[b.virtual_host("a", ("x.com",)), b.virtual_host("b", ("X.COM",))]
    )
    assert _errors(config) == (
        "virtual_hosts[1].domains: domain 'x.com' already used by virtual_hosts[0]",
    )


def test_every_problem_is_reported() -> None:
    config = b.route_config(
        vhosts=[
            b.virtual_host(domains=("a b",), routes=[_route_with(cluster="c", timeout=_dur(-1))]),
            b.virtual_host("v2", domains=("ok",), routes=[rc.Route()]),
        ]
    )
    errors = _errors(config)
    assert len(errors) == 4, errors


def test_route_match_fields() -> None:
    match = rc.RouteMatch(
        path="/svc.S/M",
        case_sensitive=wrappers_pb2.BoolValue(value=False),
        headers=[rc.HeaderMatcher(name="k", exact_match="v")],
        query_parameters=[rc.QueryParameterMatcher(name="q", present_match=True)],
        runtime_fraction=base_pb2.RuntimeFractionalPercent(default_value=_pct(25)),
        grpc=rc.RouteMatch.GrpcRouteMatchOptions(),
    )
    parsed = _decode(_one_route(_route_with(match, cluster="c"))).virtual_hosts[0].routes[0].match
    assert parsed.path_kind == "path"
    assert parsed.path == "/svc.S/M"
    assert parsed.case_sensitive is False
    assert parsed.headers[0].name == "k"
    assert parsed.query_parameters[0].name == "q"
    assert parsed.runtime_fraction_per_million == 250_000
    assert parsed.grpc is True


@pytest.mark.parametrize(
    ("fraction", "per_million"),
    [
        pytest.param(_pct(50, 0), 500_000, id="hundred"),
        pytest.param(_pct(50, 1), 5_000, id="ten-thousand"),
        pytest.param(_pct(50, 2), 50, id="million"),
        pytest.param(_pct(150, 0), 1_000_000, id="capped"),
    ],
)
def test_runtime_fraction_scaling(
    fraction: percent_pb2.FractionalPercent, per_million: int
) -> None:
    match = rc.RouteMatch(
        prefix="/", runtime_fraction=base_pb2.RuntimeFractionalPercent(default_value=fraction)
    )
    parsed = _decode(_one_route(_route_with(match, cluster="c"))).virtual_hosts[0].routes[0].match
    assert parsed.runtime_fraction_per_million == per_million


def test_safe_regex_path() -> None:
    match = rc.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex="/svc/.*"))
    parsed = _decode(_one_route(_route_with(match, cluster="c"))).virtual_hosts[0].routes[0].match
    assert parsed.path_kind == "safe_regex"
    assert parsed.regex is not None and parsed.regex.full_match("/svc/x")


def test_timeouts() -> None:
    action = _action(
        timeout=_dur(0),
        idle_timeout=_dur(7),
        max_stream_duration=rc.RouteAction.MaxStreamDuration(
            max_stream_duration=_dur(3), grpc_timeout_header_max=_dur(1, 500_000_000)
        ),
    )
    assert action.timeout == 0.0
    assert action.idle_timeout == 7.0
    assert action.max_stream_duration == 3.0
    assert action.grpc_timeout_header_max == 1.5
    unset = _action()
    assert unset.timeout is None and unset.max_stream_duration is None


def test_retry_policy_defaults() -> None:
    action = _action(retry_policy=rc.RetryPolicy(retry_on="5xx, Unavailable ,,reset"))
    assert action.retry_policy == RetryPolicy(retry_on=frozenset({"5xx", "unavailable", "reset"}))
    assert action.retry_policy.num_retries == 1
    assert action.retry_policy.base_interval == 0.025
    assert action.retry_policy.max_interval == pytest.approx(0.25)


def test_retry_policy_full() -> None:
    policy = rc.RetryPolicy(
        retry_on="retriable-status-codes",
        num_retries=wrappers_pb2.UInt32Value(value=4),
        per_try_timeout=_dur(2),
        per_try_idle_timeout=_dur(1),
        retry_back_off=rc.RetryPolicy.RetryBackOff(base_interval=_dur(0, 100_000_000)),
        retriable_status_codes=[503, 429],
        retriable_headers=[rc.HeaderMatcher(name="x-retry", present_match=True)],
        retriable_request_headers=[rc.HeaderMatcher(name=":method", exact_match="GET")],
        retry_host_predicate=[
            rc.RetryPolicy.RetryHostPredicate(name="envoy.retry_host_predicates.previous_hosts")
        ],
        host_selection_retry_max_attempts=3,
        rate_limited_retry_back_off=rc.RetryPolicy.RateLimitedRetryBackOff(
            reset_headers=[rc.RetryPolicy.ResetHeader(name="Retry-After")]
        ),
    )
    retry = _action(retry_policy=policy).retry_policy
    assert retry is not None
    assert retry.num_retries == 4
    assert retry.per_try_timeout == 2.0
    assert retry.per_try_idle_timeout == 1.0
    assert retry.base_interval == pytest.approx(0.1)
    assert retry.max_interval == pytest.approx(1.0)
    assert retry.retriable_status_codes == frozenset({503, 429})
    assert retry.retriable_headers[0].name == "x-retry"
    assert retry.retriable_request_headers[0].name == ":method"
    assert retry.retry_host_predicates == ("envoy.retry_host_predicates.previous_hosts",)
    assert retry.host_selection_retry_max_attempts == 3
    assert retry.rate_limited_retry_back_off is not None
    assert retry.rate_limited_retry_back_off.reset_headers[0].name == "retry-after"
    assert retry.rate_limited_retry_back_off.max_interval == 300.0


def test_virtual_host_retry_and_hedge() -> None:
    vhost = b.virtual_host(
        retry_policy=rc.RetryPolicy(retry_on="unavailable"),
        hedge_policy=rc.HedgePolicy(
            initial_requests=wrappers_pb2.UInt32Value(value=2),
            additional_request_chance=_pct(10),
            hedge_on_per_try_timeout=True,
        ),
        include_request_attempt_count=True,
    )
    parsed = _decode(b.route_config(vhosts=[vhost])).virtual_hosts[0]
    assert parsed.retry_policy is not None
    assert parsed.retry_policy.retry_on == frozenset({"unavailable"})
    assert parsed.hedge_policy == HedgePolicy(2, 100_000, True)
    assert parsed.include_request_attempt_count is True


def test_hash_policies() -> None:
    hp = rc.RouteAction.HashPolicy
    action = _action(
        hash_policy=[
            hp(
                header=hp.Header(
                    header_name="X-User",
                    regex_rewrite=regex_pb2.RegexMatchAndSubstitute(
                        pattern=regex_pb2.RegexMatcher(regex="-.*"), substitution=""
                    ),
                ),
                terminal=True,
            ),
            hp(cookie=hp.Cookie(name="session", ttl=_dur(60), path="/")),
            hp(connection_properties=hp.ConnectionProperties(source_ip=True)),
            hp(query_parameter=hp.QueryParameter(name="u")),
            hp(filter_state=hp.FilterState(key="io.grpc.channel_id")),
        ]
    )
    header, cookie, conn, query, state = action.hash_policies
    assert header.kind == "header" and header.name == "x-user" and header.terminal
    assert header.regex_rewrite is not None and header.regex_rewrite.apply("a-b") == "a"
    assert cookie == HashPolicy(kind="cookie", name="session", cookie_ttl=60.0, cookie_path="/")
    assert conn == HashPolicy(kind="connection_properties", source_ip=True)
    assert query == HashPolicy(kind="query_parameter", name="u")
    assert state == HashPolicy(kind="filter_state", name="io.grpc.channel_id")


def test_rewrites_mirrors_and_not_found_code() -> None:
    action = _action(
        prefix_rewrite="/v2/",
        host_rewrite_literal="backend.local",
        request_mirror_policies=[
            rc.RouteAction.RequestMirrorPolicy(
                cluster="shadow",
                runtime_fraction=base_pb2.RuntimeFractionalPercent(default_value=_pct(5)),
            ),
            rc.RouteAction.RequestMirrorPolicy(cluster="all"),
        ],
        cluster_not_found_response_code=rc.RouteAction.NOT_FOUND,
    )
    assert action.prefix_rewrite == "/v2/"
    assert action.host_rewrite_literal == "backend.local"
    assert [
        (m.cluster, m.runtime_fraction_per_million) for m in action.request_mirror_policies
    ] == [
        ("shadow", 50_000),
        ("all", 1_000_000),
    ]
    assert action.cluster_not_found_response_code == 404
    assert _action(auto_host_rewrite=wrappers_pb2.BoolValue(value=True)).auto_host_rewrite
    assert _action(host_rewrite_header="X-Host").host_rewrite_header == "x-host"
    assert _action(cluster_header="X-Cluster", cluster="").cluster_header == "x-cluster"


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        pytest.param(
            rc.Route(
                match=rc.RouteMatch(prefix="/"),
                redirect=rc.RedirectAction(
                    https_redirect=True, host_redirect="h", strip_query=True
                ),
            ),
            RedirectAction(scheme="https", host="h", strip_query=True),
            id="redirect-https",
        ),
        pytest.param(
            rc.Route(
                match=rc.RouteMatch(prefix="/"),
                redirect=rc.RedirectAction(
                    port_redirect=8443,
                    prefix_rewrite="/new",
                    response_code=rc.RedirectAction.PERMANENT_REDIRECT,
                ),
            ),
            RedirectAction(port=8443, prefix_rewrite="/new", response_code=308),
            id="redirect-prefix-308",
        ),
        pytest.param(
            rc.Route(
                match=rc.RouteMatch(prefix="/"),
                direct_response=rc.DirectResponseAction(
                    status=418, body=base_pb2.DataSource(inline_string="teapot")
                ),
            ),
            DirectResponseAction(status=418, body=b"teapot"),
            id="direct-response",
        ),
        pytest.param(
            rc.Route(
                match=rc.RouteMatch(prefix="/"), non_forwarding_action=rc.NonForwardingAction()
            ),
            NonForwardingAction(),
            id="non-forwarding",
        ),
    ],
)
def test_other_actions(route: rc.Route, expected: object) -> None:
    assert _decode(_one_route(route)).virtual_hosts[0].routes[0].action == expected


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        pytest.param({}, "append_if_exists_or_add", id="default"),
        pytest.param(
            {"append": wrappers_pb2.BoolValue(value=False)},
            "overwrite_if_exists_or_add",
            id="append-false",
        ),
        pytest.param(
            {"append": wrappers_pb2.BoolValue(value=True)},
            "append_if_exists_or_add",
            id="append-true",
        ),
        pytest.param({"append_action": 1}, "add_if_absent", id="add-if-absent"),
        pytest.param({"append_action": 2}, "overwrite_if_exists_or_add", id="overwrite-or-add"),
        pytest.param({"append_action": 3}, "overwrite_if_exists", id="overwrite-if-exists"),
    ],
)
def test_header_append_action(option: dict[str, Any], expected: str) -> None:
    vhost = b.virtual_host(
        request_headers_to_add=[
            base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="X-A", value="1"), **option)
        ],
        response_headers_to_remove=["X-Gone"],
    )
    parsed = _decode(b.route_config(vhosts=[vhost])).virtual_hosts[0]
    assert parsed.request_headers_to_add == (HeaderValueOption("x-a", "1", expected),)  # type: ignore[arg-type]
    assert parsed.response_headers_to_remove == ("x-gone",)


def _fault_any() -> Any:
    fault = fault_pb2.HTTPFault()
    fault.abort.http_status = 503
    fault.abort.percentage.numerator = 100
    return b.pack(fault)


def test_typed_per_filter_config() -> None:
    disabled = rc.FilterConfig(disabled=True)
    optional_unknown = rc.FilterConfig(
        is_optional=True, config=b.pack(wrappers_pb2.StringValue(value="x"))
    )
    vhost = b.virtual_host(
        typed_per_filter_config={
            "fault": _fault_any(),
            "rbac": b.pack(rbac_pb2.RBACPerRoute()),
            "off": b.pack(disabled),
            "maybe": b.pack(optional_unknown),
        }
    )
    config = _decode(b.route_config(vhosts=[vhost]))
    filters = config.virtual_hosts[0].typed_per_filter_config
    assert set(filters) == {"fault", "rbac", "off"}
    assert isinstance(filters["fault"], FaultFilterConfig)
    assert filters["rbac"] == RbacFilterConfig()
    assert filters["off"] == DisabledFilterConfig()
    assert config.ignored_fields == (
        "virtual_hosts[0].typed_per_filter_config['maybe'].config (google.protobuf.StringValue)",
    )


def test_unknown_per_filter_config_is_invalid() -> None:
    vhost = b.virtual_host(
        typed_per_filter_config={"x": b.pack(wrappers_pb2.StringValue(value="x"))}
    )
    assert _errors(b.route_config(vhosts=[vhost])) == (
        "virtual_hosts[0].typed_per_filter_config['x']: unsupported filter config type "
        "google.protobuf.StringValue",
    )


def test_ignored_fields_are_listed() -> None:
    vhost = b.virtual_host(
        rate_limits=[rc.RateLimit()],
        require_tls=rc.VirtualHost.ALL,
        routes=[
            rc.Route(
                match=rc.RouteMatch(prefix="/"),
                route=rc.RouteAction(cluster="c", priority=base_pb2.HIGH),
                decorator=rc.Decorator(operation="op"),
            )
        ],
    )
    config = route_pb2.RouteConfiguration(
        name="r", virtual_hosts=[vhost], validate_clusters=wrappers_pb2.BoolValue(value=True)
    )
    assert set(_decode(config).ignored_fields) == {
        "validate_clusters",
        "virtual_hosts[0].rate_limits",
        "virtual_hosts[0].require_tls",
        "virtual_hosts[0].routes[0].decorator",
        "virtual_hosts[0].routes[0].route.priority",
    }


def test_parse_raises_with_every_error() -> None:
    config = b.route_config(vhosts=[b.virtual_host(domains=("a b",))])
    with pytest.raises(ResourceValidationError) as info:
        parse_route_configuration(config)
    assert info.value.name == "route-a"
    assert info.value.errors == ["virtual_hosts[0].domains[0]: invalid domain 'a b'"]
    assert parse_route_configuration(b.route_config()).name == "route-a"
