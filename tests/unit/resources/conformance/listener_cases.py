"""LDS rules for a client Listener: C-core ``xds_listener_parser.cc``
(``HttpConnectionManagerParse``), ``xds_http_fault_filter.cc``,
``xds_http_rbac_filter.cc`` and Envoy's ``http_connection_manager.proto``,
``fault.proto`` and ``rbac.proto``."""

from __future__ import annotations

from typing import Any

from tests.unit.resources.conformance.table import ADS, DELETE, Case, Replace, merged, typed

HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "envoy.extensions.filters.http.router.v3.Router"
FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"
RBAC = "envoy.extensions.filters.http.rbac.v3.RBAC"

_F = "api_listener.api_listener"
_ROUTER_FILTER = {"name": "router", "typed_config": typed(ROUTER)}


def _listener(**hcm: Any) -> dict[str, Any]:
    manager = merged(
        {
            "rds": {"config_source": ADS, "route_config_name": "r"},
            "http_filters": [_ROUTER_FILTER],
        },
        hcm,
    )
    return {"name": "l", "api_listener": {"api_listener": typed(HCM, **manager)}}


def _case(id: str, resource: dict[str, Any], grpc: str, path: str = "", differs: str = "") -> Case:
    return Case(f"lds-{id}", "Listener", resource, grpc, path, differs)  # type: ignore[arg-type]


def _with_filter(config: dict[str, Any], name: str = "f") -> dict[str, Any]:
    return _listener(http_filters=[{"name": name, "typed_config": config}, _ROUTER_FILTER])


def _fault(**fields: Any) -> dict[str, Any]:
    return _with_filter(typed(FAULT, **fields), "fault")


def _rbac_policy(policy: dict[str, Any]) -> dict[str, Any]:
    return _with_filter(typed(RBAC, rules={"action": "ALLOW", "policies": {"p": policy}}), "rbac")


def _principal(principal: dict[str, Any]) -> dict[str, Any]:
    return _rbac_policy({"permissions": [{"any": True}], "principals": [principal]})


def _permission(permission: dict[str, Any]) -> dict[str, Any]:
    return _rbac_policy({"permissions": [permission], "principals": [{"any": True}]})


_FAULT0 = f"{_F}.http_filters[0].typed_config"
_RBAC_P = f"{_F}.http_filters[0].typed_config.rules.policies['p']"

CASES = [
    _case("valid", _listener(), "accept"),
    _case(
        "inline-route-config",
        _listener(
            rds=DELETE,
            route_config={
                "name": "r",
                "virtual_hosts": [
                    {
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": ""}, "route": {"cluster": "c"}}],
                    }
                ],
            },
        ),
        "accept",
    ),
    _case(
        "inline-route-config-invalid",
        _listener(
            rds=DELETE,
            route_config={"virtual_hosts": [{"domains": [], "routes": []}]},
        ),
        "nack",
        f"{_F}.route_config.virtual_hosts[0].domains",
    ),
    _case(
        "api-listener-not-hcm",
        {"name": "l", "api_listener": {"api_listener": typed(ROUTER)}},
        "nack",
        _F,
    ),
    _case("neither-rds-nor-route-config", _listener(rds=DELETE), "nack", _F),
    _case(
        "rds-without-config-source",
        _listener(rds={"config_source": DELETE}),
        "nack",
        f"{_F}.rds.config_source",
    ),
    _case(
        "rds-config-source-not-ads",
        _listener(rds={"config_source": Replace({"path_config_source": {"path": "/x"}})}),
        "nack",
        f"{_F}.rds.config_source",
    ),
    _case(
        "rds-config-source-self", _listener(rds={"config_source": Replace({"self": {}})}), "accept"
    ),
    # gRFC A41
    _case(
        "xff-num-trusted-hops",
        _listener(xff_num_trusted_hops=1),
        "nack",
        f"{_F}.xff_num_trusted_hops",
    ),
    _case(
        "original-ip-detection-extensions",
        _listener(
            original_ip_detection_extensions=[
                {
                    "name": "h",
                    "typed_config": typed(
                        "envoy.extensions.http.original_ip_detection.custom_header.v3.CustomHeaderConfig",
                        header_name="x-real-ip",
                    ),
                }
            ]
        ),
        "nack",
        f"{_F}.original_ip_detection_extensions",
    ),
    # gRFC A31
    _case(
        "max-stream-duration",
        _listener(common_http_protocol_options={"max_stream_duration": "5s"}),
        "accept",
    ),
    _case(
        "max-stream-duration-negative",
        _listener(common_http_protocol_options={"max_stream_duration": "-1s"}),
        "nack",
        f"{_F}.common_http_protocol_options.max_stream_duration",
    ),
    # http_filters (gRFC A39)
    _case(
        "filter-empty-name",
        _listener(http_filters=[{"name": "", "typed_config": typed(ROUTER)}]),
        "nack",
        f"{_F}.http_filters[0].name",
    ),
    _case(
        "filter-duplicate-name",
        _listener(
            http_filters=[
                _with_filter(typed(FAULT), "router")["api_listener"]["api_listener"][
                    "http_filters"
                ][0],
                _ROUTER_FILTER,
            ]
        ),
        "nack",
        f"{_F}.http_filters[1].name",
    ),
    _case(
        "filter-without-typed-config",
        _listener(http_filters=[{"name": "f"}, _ROUTER_FILTER]),
        "nack",
        f"{_F}.http_filters[0].typed_config",
    ),
    _case(
        "filter-unsupported-type",
        _with_filter(typed("google.protobuf.Empty")),
        "nack",
        f"{_F}.http_filters[0].typed_config",
    ),
    _case(
        "filter-unsupported-type-optional",
        _listener(
            http_filters=[
                {"name": "f", "typed_config": typed("google.protobuf.Empty"), "is_optional": True},
                _ROUTER_FILTER,
            ]
        ),
        "accept",
    ),
    _case(
        "filter-typed-struct-unsupported",
        _with_filter(typed("xds.type.v3.TypedStruct", type_url="type.googleapis.com/some.Filter")),
        "nack",
        f"{_F}.http_filters[0].typed_config",
    ),
    _case("no-filters", _listener(http_filters=[]), "nack", f"{_F}.http_filters"),
    _case(
        "router-not-last",
        _listener(http_filters=[_ROUTER_FILTER, {"name": "fault", "typed_config": typed(FAULT)}]),
        "nack",
        f"{_F}.http_filters[1]",
    ),
    _case(
        "last-filter-not-router",
        _listener(http_filters=[{"name": "fault", "typed_config": typed(FAULT)}]),
        "nack",
        f"{_F}.http_filters",
    ),
    # fault filter (gRFC A33)
    _case("fault-empty", _fault(), "accept"),
    _case(
        "fault-abort-grpc-status",
        _fault(abort={"grpc_status": 14, "percentage": {"numerator": 50}}),
        "accept",
    ),
    _case(
        "fault-abort-invalid-grpc-status",
        _fault(abort={"grpc_status": 17}),
        "nack",
        f"{_FAULT0}.abort.grpc_status",
    ),
    _case(
        "fault-abort-http-status",
        _fault(
            abort={"http_status": 503, "percentage": {"numerator": 1, "denominator": "MILLION"}}
        ),
        "accept",
    ),
    _case(
        "fault-abort-http-status-out-of-range",
        _fault(abort={"http_status": 600}),
        "accept",
        f"{_FAULT0}.abort.http_status",
        differs="Envoy's fault.proto requires http_status in [200, 600); gRPC maps any code",
    ),
    _case(
        "fault-abort-without-error-type",
        _fault(abort={"percentage": {"numerator": 5}}),
        "accept",
        f"{_FAULT0}.abort",
        differs="Envoy's fault.proto requires one of http_status, grpc_status, header_abort",
    ),
    _case("fault-abort-header", _fault(abort={"header_abort": {}}), "accept"),
    _case("fault-delay-fixed", _fault(delay={"fixed_delay": "1s"}), "accept"),
    _case("fault-delay-header", _fault(delay={"header_delay": {}}), "accept"),
    _case(
        "fault-delay-negative",
        _fault(delay={"fixed_delay": "-1s"}),
        "nack",
        f"{_FAULT0}.delay.fixed_delay",
    ),
    _case(
        "fault-delay-without-kind",
        _fault(delay={"percentage": {"numerator": 5}}),
        "accept",
        f"{_FAULT0}.delay",
        differs="Envoy's fault.proto requires fixed_delay or header_delay",
    ),
    _case("fault-max-active-faults", _fault(max_active_faults=3), "accept"),
    # RBAC filter (gRFC A41)
    _case(
        "rbac-valid",
        _principal({"authenticated": {"principal_name": {"exact": "spiffe://td/ns/a/sa/b"}}}),
        "nack",
        differs=(
            "RBAC in a client Listener is validated and accepted (a client "
            "has no callers to authorize, so nothing is enforced), as Envoy "
            "accepts it in any HTTP connection manager; gRPC NACKs it on "
            "clients unless it is optional"
        ),
    ),
    _case(
        "rbac-optional-on-client",
        _listener(
            http_filters=[
                {"name": "rbac", "typed_config": typed(RBAC), "is_optional": True},
                _ROUTER_FILTER,
            ]
        ),
        "accept",
    ),
    _case(
        "rbac-header-grpc-prefix",
        _principal({"header": {"name": "grpc-timeout", "present_match": True}}),
        "nack",
        differs=(
            "A41 as the server's RBAC engine implements it: a rule on a "
            "grpc-* or :scheme header is kept and never matches a call; "
            "C-core NACKs the rule"
        ),
    ),
    _case(
        "rbac-header-scheme",
        _permission({"header": {"name": ":scheme", "exact_match": "https"}}),
        "nack",
        differs=(
            "A41 as the server's RBAC engine implements it: a rule on a "
            "grpc-* or :scheme header is kept and never matches a call; "
            "C-core NACKs the rule"
        ),
    ),
    _case(
        "rbac-header-without-match-kind",
        _permission({"header": {"name": "x-a"}}),
        "nack",
        f"{_RBAC_P}.permissions[0].header",
    ),
    _case(
        "rbac-string-matcher-without-pattern",
        _principal({"authenticated": {"principal_name": {"ignore_case": True}}}),
        "nack",
        f"{_RBAC_P}.principals[0].authenticated.principal_name",
    ),
    _case(
        "rbac-url-path-without-path",
        _permission({"url_path": {}}),
        "nack",
        f"{_RBAC_P}.permissions[0].url_path",
    ),
    _case(
        "rbac-permission-without-rule",
        _rbac_policy({"permissions": [{}], "principals": [{"any": True}]}),
        "nack",
        f"{_RBAC_P}.permissions[0]",
    ),
    _case(
        "rbac-principal-without-identifier",
        _rbac_policy({"permissions": [{"any": True}], "principals": [{}]}),
        "nack",
        f"{_RBAC_P}.principals[0]",
    ),
    _case(
        "rbac-condition",
        _rbac_policy(
            {
                "permissions": [{"any": True}],
                "principals": [{"any": True}],
                "condition": {"const_expr": {"bool_value": True}},
            }
        ),
        "nack",
        f"{_RBAC_P}.condition",
    ),
]
