"""RDS rules: C-core ``xds_route_config_parser.cc`` (with the per-route filter
configs of ``xds_http_fault_filter.cc``) and Envoy's ``route.proto`` and
``route_components.proto``."""

from __future__ import annotations

from typing import Any

from tests.unit.resources.conformance.table import Case, merged, typed

FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"
FILTER_CONFIG = "envoy.config.route.v3.FilterConfig"
RBAC_PER_ROUTE = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"

_R0 = "virtual_hosts[0].routes[0]"
_M0 = f"{_R0}.match"
_A0 = f"{_R0}.route"


def _route(**patch: Any) -> dict[str, Any]:
    return merged({"match": {"prefix": ""}, "route": {"cluster": "c"}}, patch)


def _config(*routes: dict[str, Any], **vhost: Any) -> dict[str, Any]:
    host = merged({"name": "v", "domains": ["*"], "routes": list(routes) or [_route()]}, vhost)
    return {"name": "r", "virtual_hosts": [host]}


def _case(id: str, resource: dict[str, Any], grpc: str, path: str = "", differs: str = "") -> Case:
    return Case(f"rds-{id}", "RouteConfiguration", resource, grpc, path, differs)  # type: ignore[arg-type]


def _match(**match: Any) -> dict[str, Any]:
    return _config({"match": match, "route": {"cluster": "c"}})


def _action(**action: Any) -> dict[str, Any]:
    return _config({"match": {"prefix": ""}, "route": action})


def _header(**header: Any) -> dict[str, Any]:
    return _match(prefix="", headers=[merged({"name": "x-a"}, header)])


def _weighted(*clusters: dict[str, Any]) -> dict[str, Any]:
    return _action(weighted_clusters={"clusters": list(clusters)})


def _per_route(key: str, config: dict[str, Any]) -> dict[str, Any]:
    return _config(_route(typed_per_filter_config={key: config}))


def _rbac(action: str = "ALLOW", **policy: Any) -> dict[str, Any]:
    """A per-route RBACPerRoute holding one policy ``p`` (any permission and
    principal unless ``policy`` says otherwise)."""
    body = merged({"permissions": [{"any": True}], "principals": [{"any": True}]}, policy)
    return _per_route(
        "rbac", typed(RBAC_PER_ROUTE, rbac={"rules": {"action": action, "policies": {"p": body}}})
    )


_RBAC_P = f"{_R0}.typed_per_filter_config['rbac'].rbac.rules.policies['p']"
_HTTP = "proxyless supports redirects and direct responses for the httpx transport (Envoy)"

CASES = [
    _case("valid", _config(), "accept"),
    # virtual hosts and domains
    _case("virtual-host-without-domains", _config(domains=[]), "nack", "virtual_hosts[0].domains"),
    _case("domain-empty", _config(domains=[""]), "nack", "virtual_hosts[0].domains[0]"),
    _case("domain-suffix-wildcard", _config(domains=["*.example.com"]), "accept"),
    _case("domain-prefix-wildcard", _config(domains=["svc.*"]), "accept"),
    _case(
        "domain-wildcard-in-the-middle",
        _config(domains=["svc.*:9000"]),
        "nack",
        differs=(
            "a '*' inside a domain is part of an exact domain, as in Envoy "
            "(see 'Where gRPC and Envoy differ'); gRPC rejects the pattern"
        ),
    ),
    _case(
        "domain-repeated-across-virtual-hosts",
        {
            "name": "r",
            "virtual_hosts": [
                {"name": "a", "domains": ["svc"], "routes": [_route()]},
                {"name": "b", "domains": ["svc"], "routes": [_route()]},
            ],
        },
        "accept",
        "virtual_hosts[1].domains",
        differs=(
            "Envoy NACKs a domain listed twice in a RouteConfiguration: which "
            "virtual host serves it would depend on their order"
        ),
    ),
    # route match
    _case("route-without-match", _config({"route": {"cluster": "c"}}), "nack", f"{_R0}.match"),
    _case(
        "route-without-path-specifier",
        _config(
            {
                "match": {"headers": [{"name": "x", "present_match": True}]},
                "route": {"cluster": "c"},
            }
        ),
        "nack",
        _M0,
    ),
    _case("prefix-without-slash", _match(prefix="service"), "accept"),
    _case("prefix-with-three-slashes", _match(prefix="/a/b/c"), "accept"),
    _case("prefix-with-double-slash", _match(prefix="//a"), "accept"),
    _case("path-not-service-method", _match(path="/service"), "accept"),
    _case("path-empty", _match(path=""), "accept"),
    _case("path", _match(path="/pkg.Service/Method"), "accept"),
    _case("safe-regex", _match(safe_regex={"regex": "/pkg\\..*"}), "accept"),
    _case("safe-regex-invalid", _match(safe_regex={"regex": "(a"}), "nack", f"{_M0}.safe_regex"),
    _case("case-insensitive", _match(prefix="/Pkg", case_sensitive=False), "accept"),
    _case(
        "query-parameters",
        _match(prefix="", query_parameters=[{"name": "q", "present_match": True}]),
        "accept",
    ),
    _case(
        "runtime-fraction",
        _match(prefix="", runtime_fraction={"default_value": {"numerator": 20}}),
        "accept",
    ),
    _case(
        "runtime-fraction-unknown-denominator",
        _match(prefix="", runtime_fraction={"default_value": {"numerator": 20, "denominator": 9}}),
        "nack",
        f"{_M0}.runtime_fraction.default_value.denominator",
    ),
    # header matchers
    _case("header-exact", _header(exact_match="v"), "accept"),
    _case("header-present", _header(present_match=True), "accept"),
    _case("header-range", _header(range_match={"start": 1, "end": 10}), "accept"),
    _case(
        "header-range-inverted",
        _header(range_match={"start": 10, "end": 1}),
        "nack",
        f"{_M0}.headers[0].range_match",
    ),
    _case(
        "header-safe-regex-invalid",
        _header(safe_regex_match={"regex": "(a"}),
        "nack",
        f"{_M0}.headers[0].safe_regex_match",
    ),
    _case(
        "header-string-match", _header(string_match={"suffix": "x", "ignore_case": True}), "accept"
    ),
    _case(
        "header-string-match-without-pattern",
        _header(string_match={"ignore_case": True}),
        "nack",
        f"{_M0}.headers[0].string_match",
    ),
    _case(
        "header-string-match-regex-ignore-case",
        _header(string_match={"safe_regex": {"regex": "a"}, "ignore_case": True}),
        "nack",
        f"{_M0}.headers[0].string_match.ignore_case",
    ),
    _case(
        "header-without-match-kind",
        _header(),
        "nack",
        differs=(
            "Envoy treats a HeaderMatcher without a specifier as a presence "
            "match, and HTTP routing follows Envoy; C-core rejects it"
        ),
    ),
    # route actions
    _case(
        "no-action",
        _config({"match": {"prefix": ""}}),
        "accept",
        _R0,
        differs=(
            "Envoy's route_components.proto requires an action and Envoy "
            "NACKs a route without one; gRPC keeps the route and fails the "
            "calls it matches"
        ),
    ),
    _case(
        "non-forwarding-action",
        _config({"match": {"prefix": ""}, "non_forwarding_action": {}}),
        "accept",
    ),
    _case(
        "redirect",
        _config({"match": {"prefix": ""}, "redirect": {"host_redirect": "b"}}),
        "accept",
        differs="",
    ),
    _case(
        "direct-response",
        _config({"match": {"prefix": ""}, "direct_response": {"status": 503}}),
        "accept",
    ),
    _case("no-cluster-specifier", _action(), "accept"),
    _case("cluster-empty", _action(cluster=""), "nack", f"{_A0}.cluster"),
    _case(
        "cluster-specifier-plugin-unknown",
        _action(cluster_specifier_plugin="rls"),
        "nack",
        f"{_A0}.cluster_specifier_plugin",
    ),
    _case(
        "cluster-specifier-plugin-optional-unsupported",
        merged(
            _action(cluster_specifier_plugin="p"),
            {
                "cluster_specifier_plugins": [
                    {
                        "extension": {"name": "p", "typed_config": typed("google.protobuf.Empty")},
                        "is_optional": True,
                    }
                ]
            },
        ),
        "accept",
    ),
    _case(
        "cluster-specifier-plugin-unsupported",
        merged(
            _config(),
            {
                "cluster_specifier_plugins": [
                    {"extension": {"name": "p", "typed_config": typed("google.protobuf.Empty")}}
                ]
            },
        ),
        "nack",
        "cluster_specifier_plugins[0].extension.typed_config",
    ),
    _case(
        "cluster-specifier-plugin-duplicate-name",
        merged(
            _config(),
            {
                "cluster_specifier_plugins": [
                    {
                        "extension": {"name": "p", "typed_config": typed("google.protobuf.Empty")},
                        "is_optional": True,
                    }
                ]
                * 2
            },
        ),
        "nack",
        "cluster_specifier_plugins[1].extension.name",
    ),
    _case(
        "weighted-clusters",
        _weighted({"name": "a", "weight": 1}, {"name": "b", "weight": 3}),
        "accept",
    ),
    _case(
        "weighted-cluster-zero-weight",
        _weighted({"name": "a", "weight": 0}, {"name": "b", "weight": 3}),
        "accept",
    ),
    _case(
        "weighted-cluster-without-weight",
        _weighted({"name": "a"}, {"name": "b", "weight": 3}),
        "nack",
        f"{_A0}.weighted_clusters.clusters[0].weight",
    ),
    _case(
        "weighted-cluster-without-name",
        _weighted({"name": "", "weight": 1}),
        "nack",
        f"{_A0}.weighted_clusters.clusters[0].name",
    ),
    _case(
        "weighted-clusters-all-zero",
        _weighted({"name": "a", "weight": 0}),
        "nack",
        f"{_A0}.weighted_clusters",
    ),
    _case(
        "weighted-clusters-exceed-uint32",
        _weighted({"name": "a", "weight": 4294967295}, {"name": "b", "weight": 1}),
        "nack",
        f"{_A0}.weighted_clusters",
    ),
    _case(
        "max-stream-duration",
        _action(cluster="c", max_stream_duration={"grpc_timeout_header_max": "1s"}),
        "accept",
    ),
    _case(
        "max-stream-duration-negative",
        _action(cluster="c", max_stream_duration={"max_stream_duration": "-1s"}),
        "nack",
        f"{_A0}.max_stream_duration.max_stream_duration",
    ),
    _case(
        "grpc-timeout-header-max-negative",
        _action(cluster="c", max_stream_duration={"grpc_timeout_header_max": "-0.000000001s"}),
        "nack",
        f"{_A0}.max_stream_duration.grpc_timeout_header_max",
    ),
    # hash policies (gRFC A42)
    _case(
        "hash-policy-header",
        _action(cluster="c", hash_policy=[{"header": {"header_name": "x-user"}}]),
        "accept",
    ),
    _case(
        "hash-policy-header-without-name",
        _action(cluster="c", hash_policy=[{"header": {"header_name": ""}}]),
        "nack",
        f"{_A0}.hash_policy[0].header.header_name",
    ),
    _case(
        "hash-policy-header-regex-rewrite-empty",
        _action(
            cluster="c",
            hash_policy=[
                {"header": {"header_name": "x", "regex_rewrite": {"pattern": {"regex": ""}}}}
            ],
        ),
        "nack",
        f"{_A0}.hash_policy[0].header.regex_rewrite.pattern.regex",
    ),
    _case(
        "hash-policy-header-regex-rewrite-invalid",
        _action(
            cluster="c",
            hash_policy=[
                {"header": {"header_name": "x", "regex_rewrite": {"pattern": {"regex": "(a"}}}}
            ],
        ),
        "nack",
        f"{_A0}.hash_policy[0].header.regex_rewrite.pattern.regex",
    ),
    _case(
        "hash-policy-channel-id",
        _action(cluster="c", hash_policy=[{"filter_state": {"key": "io.grpc.channel_id"}}]),
        "accept",
    ),
    _case(
        "hash-policy-other-filter-state",
        _action(cluster="c", hash_policy=[{"filter_state": {"key": "other"}}]),
        "accept",
    ),
    _case(
        "hash-policy-connection-properties",
        _action(cluster="c", hash_policy=[{"connection_properties": {"source_ip": True}}]),
        "accept",
    ),
    _case(
        "hash-policy-cookie-without-name",
        _action(cluster="c", hash_policy=[{"cookie": {"name": ""}}]),
        "accept",
        f"{_A0}.hash_policy[0].cookie.name",
        differs="Envoy's route_components.proto requires a cookie name (min_len 1); gRPC ignores cookie policies",
    ),
    _case(
        "hash-policy-without-specifier",
        _action(cluster="c", hash_policy=[{"terminal": True}]),
        "accept",
        f"{_A0}.hash_policy[0]",
        differs=(
            "Envoy's route_components.proto requires a policy specifier; gRPC skips the entry"
        ),
    ),
    # retry policies (gRFC A44)
    _case(
        "retry-policy",
        _action(cluster="c", retry_policy={"retry_on": "unavailable,cancelled", "num_retries": 2}),
        "accept",
    ),
    _case(
        "retry-policy-unknown-condition",
        _action(cluster="c", retry_policy={"retry_on": "5xx,unknown-thing"}),
        "accept",
    ),
    _case(
        "retry-policy-zero-retries",
        _action(cluster="c", retry_policy={"num_retries": 0}),
        "nack",
        f"{_A0}.retry_policy.num_retries",
    ),
    _case(
        "virtual-host-retry-policy-zero-retries",
        _config(retry_policy={"num_retries": 0}),
        "nack",
        "virtual_hosts[0].retry_policy.num_retries",
    ),
    _case(
        "retry-back-off-without-base-interval",
        _action(cluster="c", retry_policy={"retry_back_off": {"max_interval": "1s"}}),
        "nack",
        f"{_A0}.retry_policy.retry_back_off.base_interval",
    ),
    _case(
        "retry-back-off-negative-base-interval",
        _action(cluster="c", retry_policy={"retry_back_off": {"base_interval": "-1s"}}),
        "nack",
        f"{_A0}.retry_policy.retry_back_off.base_interval",
    ),
    _case(
        "retry-back-off-negative-max-interval",
        _action(
            cluster="c",
            retry_policy={"retry_back_off": {"base_interval": "1s", "max_interval": "-1s"}},
        ),
        "nack",
        f"{_A0}.retry_policy.retry_back_off.max_interval",
    ),
    _case(
        "retry-back-off-max-below-base",
        _action(
            cluster="c",
            retry_policy={"retry_back_off": {"base_interval": "2s", "max_interval": "1s"}},
        ),
        "accept",
        f"{_A0}.retry_policy.retry_back_off.max_interval",
        differs="Envoy rejects a max_interval below base_interval (route_components.proto)",
    ),
    # typed_per_filter_config (gRFC A39)
    _case("per-route-fault", _per_route("fault", typed(FAULT, abort={"grpc_status": 5})), "accept"),
    _case(
        "per-route-empty-key",
        _per_route("", typed(FAULT)),
        "nack",
        f"{_R0}.typed_per_filter_config['']",
    ),
    _case(
        "per-route-invalid-fault",
        _per_route("fault", typed(FAULT, abort={"grpc_status": 20})),
        "nack",
        f"{_R0}.typed_per_filter_config['fault'].abort.grpc_status",
    ),
    _case(
        "per-route-unsupported-type",
        _per_route("f", typed("google.protobuf.Empty")),
        "nack",
        f"{_R0}.typed_per_filter_config['f']",
    ),
    _case(
        "per-route-unsupported-type-optional",
        _per_route(
            "f", typed(FILTER_CONFIG, config=typed("google.protobuf.Empty"), is_optional=True)
        ),
        "accept",
    ),
    _case(
        "per-route-filter-config-without-config",
        _per_route("f", typed(FILTER_CONFIG)),
        "nack",
        f"{_R0}.typed_per_filter_config['f']",
    ),
    _case(
        "virtual-host-per-filter-config-empty-key",
        _config(typed_per_filter_config={"": typed(FAULT)}),
        "nack",
        "virtual_hosts[0].typed_per_filter_config['']",
    ),
    _case(
        "weighted-cluster-per-filter-config-invalid-fault",
        _weighted(
            {
                "name": "a",
                "weight": 1,
                "typed_per_filter_config": {"fault": typed(FAULT, abort={"grpc_status": 99})},
            }
        ),
        "nack",
        f"{_A0}.weighted_clusters.clusters[0].typed_per_filter_config['fault'].abort.grpc_status",
    ),
    # RBACPerRoute (gRFC A41; C-core xds_http_rbac_filter.cc)
    _case("rbac-per-route", _rbac(), "accept"),
    _case("rbac-per-route-log-action", _rbac("LOG"), "accept"),
    _case("rbac-per-route-without-rbac", _per_route("rbac", typed(RBAC_PER_ROUTE)), "accept"),
    _case(
        "rbac-per-route-principal-header-grpc-prefix",
        _rbac(principals=[{"header": {"name": "grpc-status", "exact_match": "0"}}]),
        "nack",
        differs=(
            "A41 as the server's RBAC engine implements it: a rule on a "
            "grpc-* header is kept and never matches a call; C-core NACKs "
            "the rule"
        ),
    ),
    _case(
        "rbac-per-route-not-rule-invalid",
        _rbac(permissions=[{"not_rule": {"url_path": {}}}]),
        "nack",
        f"{_RBAC_P}.permissions[0].not_rule",
    ),
    _case(
        "rbac-per-route-and-ids-invalid",
        _rbac(principals=[{"and_ids": {"ids": [{"any": True}, {}]}}]),
        "nack",
        f"{_RBAC_P}.principals[0].and_ids.ids[1]",
    ),
    _case(
        "rbac-per-route-checked-condition",
        _rbac(checked_condition={"expr": {"const_expr": {"bool_value": True}}}),
        "nack",
        f"{_RBAC_P}.checked_condition",
    ),
    _case(
        "rbac-per-route-destination-port-range",
        _rbac(permissions=[{"destination_port_range": {"start": 1, "end": 2}}]),
        "nack",
        f"{_RBAC_P}.permissions[0].destination_port_range",
    ),
    _case(
        "rbac-per-route-requested-server-name-without-pattern",
        _rbac(permissions=[{"requested_server_name": {}}]),
        "nack",
        f"{_RBAC_P}.permissions[0].requested_server_name",
    ),
    _case(
        "rbac-per-route-authenticated-without-name",
        _rbac(principals=[{"authenticated": {}}]),
        "accept",
    ),
    _case(
        "rbac-per-route-source-ip",
        _rbac(principals=[{"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}]),
        "accept",
    ),
]
