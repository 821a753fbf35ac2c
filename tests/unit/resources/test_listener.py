"""Listener parsing (gRFC A27/A31/A39): api_listener, RDS vs inline routes, HTTP filters."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import address_pb2, config_source_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.api.expr.v1alpha1 import syntax_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from proxyless.errors import ResourceValidationError
from proxyless.resources.model import (
    FaultAbort,
    FaultDelay,
    FaultFilterConfig,
    Listener,
    RbacFilterConfig,
    RouterFilterConfig,
)
from proxyless.resources.model.rbac import Policy
from proxyless.resources.parse.listener import decode_listener, parse_listener

from . import builders as b

_HCM = "api_listener.api_listener"
_CORS = wrappers_pb2.StringValue(value="stands in for an unknown filter config")


def _decode(msg: listener_pb2.Listener) -> Listener:
    result = decode_listener(msg.SerializeToString())
    assert result.ok, result.errors
    assert isinstance(result.value, Listener)
    return result.value


def _errors(msg: listener_pb2.Listener) -> tuple[str, ...]:
    result = decode_listener(msg.SerializeToString())
    assert result.value is None
    assert result.name == msg.name
    return result.errors


def test_rds_listener() -> None:
    listener = _decode(b.listener())
    assert listener.name == "svc.example:80"
    assert listener.route_config_name == "route-a"
    assert listener.route_config is None
    assert [f.name for f in listener.http_filters] == ["envoy.filters.http.router"]
    assert listener.http_filters[0].config == RouterFilterConfig()
    assert listener.max_stream_duration is None


def test_inline_route_config_and_max_stream_duration() -> None:
    manager = b.hcm(route_config=b.route_config("inline"))
    manager.common_http_protocol_options.max_stream_duration.CopyFrom(
        duration_pb2.Duration(seconds=2, nanos=250_000_000)
    )
    listener = _decode(b.listener(manager=manager))
    assert listener.route_config_name is None
    assert listener.route_config is not None
    assert listener.route_config.name == "inline"
    assert listener.max_stream_duration == 2.25


def test_inline_route_config_errors_carry_the_listener_path() -> None:
    config = b.route_config(vhosts=[b.virtual_host(domains=("a b",))])
    errors = _errors(b.listener(manager=b.hcm(route_config=config)))
    assert errors == (f"{_HCM}.route_config.virtual_hosts[0].domains[0]: invalid domain 'a b'",)


def _fault() -> fault_pb2.HTTPFault:
    fault = fault_pb2.HTTPFault(upstream_cluster="c", downstream_nodes=["n"])
    fault.delay.fixed_delay.FromMilliseconds(1500)
    fault.delay.percentage.numerator = 50
    fault.abort.grpc_status = 14
    fault.abort.percentage.numerator = 10
    fault.abort.percentage.denominator = 1
    fault.max_active_faults.value = 3
    fault.headers.add(name="x-fault", present_match=True)
    return fault


def test_filters_are_parsed_in_order() -> None:
    rbac = rbac_pb2.RBAC(
        rules=rbac_config_pb2.RBAC(
            action=rbac_config_pb2.RBAC.DENY,
            policies={"b": rbac_config_pb2.Policy(), "a": rbac_config_pb2.Policy()},
        )
    )
    manager = b.hcm(
        filters=[
            b.http_filter("fault", _fault()),
            b.http_filter("rbac", rbac),
            b.router_filter(),
        ]
    )
    listener = _decode(b.listener(manager=manager))
    fault, rbac_filter, router = listener.http_filters
    assert fault.type_url == "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    assert isinstance(fault.config, FaultFilterConfig)
    assert fault.config.delay == FaultDelay(fixed_delay=1.5, per_million=500_000)
    assert fault.config.abort == FaultAbort(http_status=None, grpc_status=14, per_million=1_000)
    assert fault.config.max_active_faults == 3
    assert fault.config.headers[0].name == "x-fault"
    assert fault.config.upstream_cluster == "c"
    assert fault.config.downstream_nodes == ("n",)
    assert rbac_filter.config == RbacFilterConfig(
        action="DENY",
        policy_names=("a", "b"),
        policies=(Policy("a", (), ()), Policy("b", (), ())),
    )
    assert router.config == RouterFilterConfig()


def test_optional_unknown_filter_is_skipped_and_reported() -> None:
    manager = b.hcm(
        filters=[b.http_filter("envoy.filters.http.cors", _CORS, optional=True), b.router_filter()]
    )
    listener = _decode(b.listener(manager=manager))
    assert [f.name for f in listener.http_filters] == ["envoy.filters.http.router"]
    assert listener.ignored_fields == (f"{_HCM}.http_filters[0] (envoy.filters.http.cors)",)


def _with_filters(*filters: hcm_pb2.HttpFilter) -> listener_pb2.Listener:
    return b.listener(manager=b.hcm(filters=list(filters)))


def _rds(source: config_source_pb2.ConfigSource, name: str = "r") -> listener_pb2.Listener:
    manager = hcm_pb2.HttpConnectionManager(
        rds=hcm_pb2.Rds(config_source=source, route_config_name=name),
        http_filters=[b.router_filter()],
    )
    return b.listener(manager=manager)


def _self_source() -> config_source_pb2.ConfigSource:
    source = config_source_pb2.ConfigSource()
    source.self.SetInParent()
    return source


_F = f"{_HCM}.http_filters"


@pytest.mark.parametrize(
    ("listener", "errors"),
    [
        pytest.param(
            listener_pb2.Listener(
                name="socket",
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address="0.0.0.0", port_value=80)
                ),
            ),
            ("api_listener: listener has no api_listener",),
            id="socket-listener",
        ),
        pytest.param(
            _with_filters(b.router_filter(), b.http_filter("fault", _fault())),
            (
                f"{_F}[1].name: filter 'fault' comes after the router filter "
                "(http_filters[0]), which must be last",
            ),
            id="router-not-last",
        ),
        pytest.param(
            _with_filters(b.http_filter("fault", _fault())),
            (
                f"{_F}: the router filter (envoy.extensions.filters.http.router.v3.Router) "
                "is required",
            ),
            id="no-router",
        ),
        pytest.param(
            _with_filters(b.http_filter("cors", _CORS), b.router_filter()),
            (
                f"{_F}[0].typed_config: unsupported filter type google.protobuf.StringValue "
                "for filter 'cors'",
            ),
            id="unknown-required-filter",
        ),
        pytest.param(
            _with_filters(
                b.http_filter("f", _fault()), b.http_filter("f", _fault()), b.router_filter()
            ),
            (f"{_F}[1].name: duplicate filter name 'f' (also http_filters[0])",),
            id="duplicate-name",
        ),
        pytest.param(
            _with_filters(
                hcm_pb2.HttpFilter(
                    name="f", config_discovery=config_source_pb2.ExtensionConfigSource()
                ),
                b.router_filter(),
            ),
            (f"{_F}[0].config_discovery: filter config discovery is not supported",),
            id="config-discovery",
        ),
        pytest.param(
            b.listener(manager=hcm_pb2.HttpConnectionManager(http_filters=[b.router_filter()])),
            (f"{_HCM}: neither rds nor route_config is set",),
            id="no-route-specifier",
        ),
        pytest.param(
            _rds(config_source_pb2.ConfigSource(path="/etc/routes.yaml")),
            (f"{_HCM}.rds.config_source: config source must be ads or self, got path",),
            id="rds-not-ads",
        ),
        pytest.param(
            _rds(b.ads(), name=""),
            (f"{_HCM}.rds.route_config_name: must not be empty",),
            id="rds-no-name",
        ),
        pytest.param(
            b.listener(manager=protocol_pb2.HttpProtocolOptions()),
            (
                "api_listener.api_listener: expected type envoy.extensions.filters.network."
                "http_connection_manager.v3.HttpConnectionManager, got "
                "type.googleapis.com/envoy.config.core.v3.HttpProtocolOptions",
            ),
            id="not-an-hcm",
        ),
        pytest.param(
            _with_filters(
                b.http_filter(
                    "fault", fault_pb2.HTTPFault(abort=fault_pb2.FaultAbort(http_status=99))
                ),
                b.router_filter(),
            ),
            (f"{_F}[0].typed_config.abort.http_status: 99 must be in [200, 600)",),
            id="fault-bad-status",
        ),
        pytest.param(
            _with_filters(
                b.http_filter(
                    "rbac",
                    rbac_pb2.RBAC(
                        rules=rbac_config_pb2.RBAC(
                            policies={"p": rbac_config_pb2.Policy(condition=syntax_pb2.Expr())}
                        )
                    ),
                ),
                b.router_filter(),
            ),
            (
                f"{_F}[0].typed_config.rules.policies['p'].condition: CEL conditions are not "
                "supported (gRFC A41)",
            ),
            id="rbac-cel",
        ),
    ],
)
def test_listener_errors(listener: listener_pb2.Listener, errors: tuple[str, ...]) -> None:
    assert _errors(listener) == errors


def test_self_config_source_is_accepted() -> None:
    assert _decode(_rds(_self_source())).route_config_name == "r"


def test_ignored_listener_fields() -> None:
    msg = b.listener()
    msg.stat_prefix = "x"
    manager = b.hcm()
    manager.stat_prefix = "ingress"
    manager.server_name = "proxy"
    msg.api_listener.api_listener.Pack(manager)
    assert _decode(msg).ignored_fields == ("stat_prefix", f"{_HCM}.server_name")


def test_parse_listener() -> None:
    assert parse_listener(b.listener()).route_config_name == "route-a"
    with pytest.raises(ResourceValidationError, match="listener has no api_listener") as info:
        parse_listener(listener_pb2.Listener(name="l"))
    assert info.value.name == "l"
    assert info.value.type_name == "Listener"


def test_disabled_filter_is_left_out_and_reported() -> None:
    fault = b.http_filter("fault", _fault())
    fault.disabled = True
    listener = _decode(_with_filters(fault, b.router_filter()))
    assert [f.name for f in listener.http_filters] == ["envoy.filters.http.router"]
    assert listener.ignored_fields == (f"{_F}[0] (fault, disabled)",)


def test_second_router_is_not_last() -> None:
    second = b.router_filter()
    second.name = "router-2"
    assert _errors(_with_filters(b.router_filter(), second)) == (
        f"{_F}[1].name: filter 'router-2' comes after the router filter (http_filters[0]), "
        "which must be last",
    )
