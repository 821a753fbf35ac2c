"""EDS rules: C-core ``xds_endpoint_parser.cc`` (``ParseXdsAddress`` in
``xds_common_types_parser.cc``) and Envoy's ``endpoint.proto`` /
``endpoint_components.proto``."""

from __future__ import annotations

from typing import Any

from tests.unit.resources.conformance.table import DELETE, Case, merged

_LB0 = "endpoints[0].lb_endpoints[0]"


def _socket(host: str = "127.0.0.1", port: int = 80) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _lb_endpoint(**patch: Any) -> dict[str, Any]:
    return merged({"endpoint": {"address": _socket()}}, patch)


def _locality(*lb_endpoints: dict[str, Any], **patch: Any) -> dict[str, Any]:
    base = {
        "locality": {"region": "r", "zone": "z"},
        "load_balancing_weight": 1,
        "lb_endpoints": list(lb_endpoints) or [_lb_endpoint()],
    }
    return merged(base, patch)


BASE: dict[str, Any] = {"cluster_name": "c", "endpoints": [_locality()]}


def _case(id: str, patch: dict[str, Any], grpc: str, path: str = "", differs: str = "") -> Case:
    return Case(f"eds-{id}", "ClusterLoadAssignment", merged(BASE, patch), grpc, path, differs)  # type: ignore[arg-type]


def _localities(*localities: dict[str, Any]) -> dict[str, Any]:
    return {"endpoints": list(localities)}


CASES = [
    _case("valid", {}, "accept"),
    _case("no-localities", {"endpoints": []}, "accept"),
    _case("locality-weight-unset", _localities(_locality(load_balancing_weight=DELETE)), "accept"),
    _case("locality-weight-zero", _localities(_locality(load_balancing_weight=0)), "accept"),
    _case(
        "locality-without-locality",
        _localities(_locality(locality=DELETE)),
        "nack",
        "endpoints[0].locality",
    ),
    _case(
        "duplicate-locality",
        _localities(_locality(), _locality(_lb_endpoint(endpoint={"address": _socket(port=81)}))),
        "nack",
        "endpoints[1]",
    ),
    _case(
        "priority-gap",
        _localities(_locality(priority=1)),
        "nack",
        "endpoints",
    ),
    _case(
        "priorities-out-of-order",
        _localities(
            _locality(priority=1),
            _locality(_lb_endpoint(endpoint={"address": _socket(port=81)}), priority=0),
        ),
        "accept",
    ),
    _case(
        "locality-weights-exceed-uint32",
        _localities(
            _locality(load_balancing_weight=4294967295),
            _locality(
                _lb_endpoint(endpoint={"address": _socket(port=81)}),
                locality={"region": "other"},
                load_balancing_weight=1,
            ),
        ),
        "nack",
        "endpoints",
    ),
    # lb_endpoints
    _case(
        "endpoint-weight-zero",
        _localities(_locality(_lb_endpoint(load_balancing_weight=0))),
        "nack",
        f"{_LB0}.load_balancing_weight",
    ),
    _case(
        "endpoint-weight-set",
        _localities(_locality(_lb_endpoint(load_balancing_weight=5))),
        "accept",
    ),
    _case(
        "lb-endpoint-without-endpoint",
        _localities(_locality({"endpoint_name": "e"})),
        "nack",
        _LB0,
    ),
    _case(
        "endpoint-without-address",
        _localities(_locality({"endpoint": {"hostname": "h"}})),
        "nack",
        f"{_LB0}.endpoint.address",
    ),
    _case(
        "endpoint-pipe-address",
        _localities(_locality({"endpoint": {"address": {"pipe": {"path": "/s"}}}})),
        "nack",
        f"{_LB0}.endpoint.address",
    ),
    _case(
        "endpoint-port-too-big",
        _localities(_locality(_lb_endpoint(endpoint={"address": _socket(port=65536)}))),
        "nack",
        f"{_LB0}.endpoint.address.socket_address.port_value",
    ),
    _case(
        "endpoint-port-zero",
        _localities(_locality(_lb_endpoint(endpoint={"address": _socket(port=0)}))),
        "accept",
    ),
    _case(
        "endpoint-udp",
        _localities(
            _locality(
                _lb_endpoint(
                    endpoint={"address": {"socket_address": {"protocol": "UDP"}}},
                )
            )
        ),
        "accept",
        f"{_LB0}.endpoint.address.socket_address.protocol",
        differs="proxyless connects over TCP only, so a UDP endpoint is refused rather than dialled over TCP; C-core does not look at the protocol",
    ),
    _case(
        "endpoint-named-port",
        _localities(
            _locality(
                _lb_endpoint(
                    endpoint={
                        "address": {"socket_address": {"port_value": DELETE, "named_port": "grpc"}}
                    },
                )
            )
        ),
        "accept",
        f"{_LB0}.endpoint.address.socket_address.port_value",
        differs="a named port cannot be resolved (Envoy does not resolve one either); C-core reads it as port 0",
    ),
    _case(
        "endpoint-ipv6",
        _localities(_locality(_lb_endpoint(endpoint={"address": _socket(host="::1")}))),
        "accept",
    ),
    _case(
        "endpoint-host-name",
        _localities(_locality(_lb_endpoint(endpoint={"address": _socket(host="db.example")}))),
        "nack",
        differs=(
            "a host name in an EDS endpoint is kept and resolved when the "
            "connection is made, as for STATIC clusters (one endpoint model); "
            "gRPC takes IP literals only"
        ),
    ),
    _case(
        "endpoint-duplicate-address",
        _localities(_locality(_lb_endpoint(), _lb_endpoint())),
        "nack",
        "endpoints[0].lb_endpoints[1]",
    ),
    _case(
        "endpoint-duplicate-address-across-localities",
        _localities(_locality(), _locality(locality={"region": "other"})),
        "nack",
        "endpoints[1].lb_endpoints[0]",
    ),
    _case(
        "endpoint-unknown-health-status",
        _localities(_locality(_lb_endpoint(health_status=99))),
        "accept",
    ),
    _case(
        "endpoint-health-status-draining",
        _localities(_locality(_lb_endpoint(health_status="DRAINING"))),
        "accept",
    ),
    # additional_addresses (gRFC A61)
    _case(
        "additional-address",
        _localities(
            _locality(
                _lb_endpoint(
                    endpoint={"additional_addresses": [{"address": _socket(host="::1", port=80)}]}
                )
            )
        ),
        "accept",
    ),
    _case(
        "additional-address-invalid-port",
        _localities(
            _locality(
                _lb_endpoint(endpoint={"additional_addresses": [{"address": _socket(port=70000)}]})
            )
        ),
        "nack",
        f"{_LB0}.endpoint.additional_addresses[0].address.socket_address.port_value",
    ),
    _case(
        "additional-address-missing",
        _localities(_locality(_lb_endpoint(endpoint={"additional_addresses": [{}]}))),
        "nack",
        f"{_LB0}.endpoint.additional_addresses[0].address",
    ),
    _case(
        "additional-address-duplicates-another-endpoint",
        _localities(
            _locality(
                _lb_endpoint(),
                _lb_endpoint(
                    endpoint={
                        "address": _socket(port=81),
                        "additional_addresses": [{"address": _socket(port=80)}],
                    }
                ),
            )
        ),
        "nack",
        "endpoints[0].lb_endpoints[1]",
    ),
    # policy.drop_overloads
    _case(
        "drop-overload",
        {
            "policy": {
                "drop_overloads": [
                    {
                        "category": "lb",
                        "drop_percentage": {"numerator": 5, "denominator": "HUNDRED"},
                    }
                ]
            }
        },
        "accept",
    ),
    _case(
        "drop-overload-above-100-percent",
        {
            "policy": {
                "drop_overloads": [
                    {
                        "category": "lb",
                        "drop_percentage": {"numerator": 500, "denominator": "HUNDRED"},
                    }
                ]
            }
        },
        "accept",
    ),
    _case(
        "drop-overload-without-category",
        {"policy": {"drop_overloads": [{"drop_percentage": {"numerator": 5}}]}},
        "nack",
        "policy.drop_overloads[0].category",
    ),
    _case(
        "drop-overload-without-percentage",
        {"policy": {"drop_overloads": [{"category": "lb"}]}},
        "nack",
        "policy.drop_overloads[0].drop_percentage",
    ),
    _case(
        "drop-overload-unknown-denominator",
        {
            "policy": {
                "drop_overloads": [
                    {"category": "lb", "drop_percentage": {"numerator": 5, "denominator": 7}}
                ]
            }
        },
        "nack",
        "policy.drop_overloads[0].drop_percentage.denominator",
    ),
    # Envoy PGV rules gRPC does not read
    _case(
        "overprovisioning-factor-zero",
        {"policy": {"overprovisioning_factor": 0}},
        "accept",
        "policy.overprovisioning_factor",
        differs="Envoy requires overprovisioning_factor > 0 (endpoint.proto); gRPC does not read it",
    ),
    _case(
        "priority-129",
        _localities(_locality(priority=129)),
        "nack",
        "endpoints[0].priority",
    ),
]
