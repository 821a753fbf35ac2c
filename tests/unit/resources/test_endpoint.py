"""ClusterLoadAssignment parsing and gRFC A27 validation."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2

from proxyless.errors import ResourceValidationError
from proxyless.resources.model import (
    ClusterLoadAssignment,
    DropOverload,
    Endpoint,
    Locality,
)
from proxyless.resources.parse.endpoint import (
    decode_cluster_load_assignment,
    parse_cluster_load_assignment,
)

from . import builders as b


def _decode(msg: endpoint_pb2.ClusterLoadAssignment) -> ClusterLoadAssignment:
    result = decode_cluster_load_assignment(msg.SerializeToString())
    assert result.ok, result.errors
    assert isinstance(result.value, ClusterLoadAssignment)
    return result.value


def _errors(msg: endpoint_pb2.ClusterLoadAssignment) -> tuple[str, ...]:
    result = decode_cluster_load_assignment(msg.SerializeToString())
    assert result.value is None
    assert result.name == msg.cluster_name
    return result.errors


def test_priorities_and_localities() -> None:
    cla = _decode(
        b.assignment(
            localities=[
                b.locality("z2", [b.lb_endpoint("10.0.0.2", weight=3)], weight=2, priority=1),
                b.locality("z1", [b.lb_endpoint("10.0.0.1")], weight=5, priority=0),
                b.locality("z3", [b.lb_endpoint("10.0.0.3")], weight=1, priority=0),
            ]
        )
    )
    assert cla.cluster_name == "cluster-a"
    assert [[loc.locality.zone for loc in prio] for prio in cla.priorities] == [
        ["z1", "z3"],
        ["z2"],
    ]
    first = cla.priorities[0][0]
    assert first.locality == Locality(region="r", zone="z1")
    assert (first.weight, first.priority) == (5, 0)
    assert cla.priorities[1][0].endpoints == (Endpoint("10.0.0.2", 8080, weight=3),)
    assert cla.overprovisioning_factor == 140
    assert cla.drop_overloads == ()


def test_zero_and_unset_weight_localities_are_skipped() -> None:
    cla = _decode(
        b.assignment(
            localities=[
                b.locality("z0", [b.lb_endpoint("10.0.0.1")], weight=0),
                b.locality("zn", [b.lb_endpoint("10.0.0.2")], weight=None),
                b.locality("z1", [b.lb_endpoint("10.0.0.3")], weight=1),
            ]
        )
    )
    assert [loc.locality.zone for loc in cla.priorities[0]] == ["z1"]
    assert cla.ignored_fields == (
        "endpoints[0] (locality weight unset or 0: skipped)",
        "endpoints[1] (locality weight unset or 0: skipped)",
    )


def test_empty_assignment() -> None:
    assert _decode(b.assignment(localities=[])).priorities == ()


@pytest.mark.parametrize(
    ("health", "name", "usable"),
    [
        pytest.param(0, "UNKNOWN", True, id="unknown"),
        pytest.param(1, "HEALTHY", True, id="healthy"),
        pytest.param(2, "UNHEALTHY", False, id="unhealthy"),
        pytest.param(3, "DRAINING", False, id="draining"),
        pytest.param(4, "TIMEOUT", False, id="timeout"),
        pytest.param(5, "DEGRADED", False, id="degraded"),
    ],
)
def test_health_status(health: int, name: str, usable: bool) -> None:
    cla = _decode(b.assignment(localities=[b.locality(endpoints=[b.lb_endpoint(health=health)])]))
    endpoint = cla.priorities[0][0].endpoints[0]
    assert endpoint.health == name
    assert endpoint.usable is usable
    assert endpoint.key == ("10.0.0.1", 8080)


def test_ipv6_is_canonical_and_hostname_kept() -> None:
    ep = b.lb_endpoint("2001:DB8:0:0::1", 443)
    ep.endpoint.hostname = "backend-0"
    endpoint = (
        _decode(b.assignment(localities=[b.locality(endpoints=[ep])])).priorities[0][0].endpoints[0]
    )
    assert endpoint.address == "2001:db8::1"
    assert endpoint.hostname == "backend-0"


def test_policy() -> None:
    msg = b.assignment()
    msg.policy.overprovisioning_factor.value = 200
    msg.policy.endpoint_stale_after.CopyFrom(duration_pb2.Duration(seconds=30))
    msg.policy.drop_overloads.add(
        category="throttle", drop_percentage=percent_pb2.FractionalPercent(numerator=5)
    )
    cla = _decode(msg)
    assert cla.overprovisioning_factor == 200
    assert cla.endpoint_stale_after == 30.0
    assert cla.drop_overloads == (DropOverload("throttle", 50_000),)


_E = "endpoints"


@pytest.mark.parametrize(
    ("localities", "error"),
    [
        pytest.param(
            [
                b.locality("z1", priority=0),
                b.locality("z2", [b.lb_endpoint("10.0.0.2")], priority=2),
            ],
            f"{_E}: priorities [0, 2] are not contiguous from 0",
            id="priorities-gap",
        ),
        pytest.param(
            [b.locality("z1", priority=1)],
            f"{_E}: priorities [1] are not contiguous from 0",
            id="priorities-not-from-0",
        ),
        pytest.param(
            [
                b.locality("z1", [b.lb_endpoint("10.0.0.1")], priority=0),
                b.locality("z2", [b.lb_endpoint("10.0.0.2")], weight=0, priority=1),
                b.locality("z3", [b.lb_endpoint("10.0.0.3")], priority=2),
            ],
            f"{_E}: priorities [0, 2] are not contiguous from 0",
            id="gap-after-skipping-zero-weight",
        ),
        pytest.param(
            [
                b.locality("z1", [b.lb_endpoint("10.0.0.1")]),
                b.locality("z1", [b.lb_endpoint("10.0.0.2")]),
            ],
            f"{_E}[1].locality: duplicate locality {{region='r', zone='z1', sub_zone=''}} "
            "in priority 0 (also endpoints[0])",
            id="duplicate-locality",
        ),
        pytest.param(
            [
                b.locality("z1", [b.lb_endpoint("10.0.0.1")]),
                b.locality("z2", [b.lb_endpoint("10.0.0.1")]),
            ],
            f"{_E}[1].lb_endpoints[0]: duplicate endpoint address 10.0.0.1:8080 "
            "(also endpoints[0].lb_endpoints[0])",
            id="duplicate-address-across-localities",
        ),
        pytest.param(
            [
                b.locality("z1", [b.lb_endpoint("::1")]),
                b.locality("z2", [b.lb_endpoint("0:0::1")], priority=1),
            ],
            f"{_E}[1].lb_endpoints[0]: duplicate endpoint address [::1]:8080",
            id="duplicate-ipv6-spelled-differently",
        ),
        pytest.param(
            [
                b.locality("z1", [b.lb_endpoint("10.0.0.1")], weight=2**32 - 1),
                b.locality("z2", [b.lb_endpoint("10.0.0.2")], weight=1),
            ],
            f"{_E}: sum of locality weights in priority 0 is 4294967296, exceeds 4294967295",
            id="weight-sum-overflow",
        ),
        pytest.param(
            [b.locality(endpoints=[b.lb_endpoint(port=65536)])],
            f"{_E}[0].lb_endpoints[0].endpoint.address.socket_address.port_value: "
            "65536 is not a valid port",
            id="port-too-big",
        ),
        pytest.param(
            [b.locality(endpoints=[b.lb_endpoint(weight=0)])],
            f"{_E}[0].lb_endpoints[0].load_balancing_weight: must be >= 1",
            id="endpoint-weight-zero",
        ),
        pytest.param(
            [b.locality(endpoints=[endpoint_components_pb2.LbEndpoint(endpoint_name="n")])],
            f"{_E}[0].lb_endpoints[0]: an endpoint is required, got endpoint_name",
            id="named-endpoint",
        ),
        pytest.param(
            [
                b.locality(
                    endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(
                                address=address_pb2.Address(pipe=address_pb2.Pipe(path="/s"))
                            )
                        )
                    ]
                )
            ],
            f"{_E}[0].lb_endpoints[0].endpoint.address: only socket_address is supported, got pipe",
            id="pipe-address",
        ),
        pytest.param(
            [b.locality(priority=129)],
            f"{_E}[0].priority: 129 exceeds 128",
            id="priority-too-high",
        ),
    ],
)
def test_assignment_errors(localities: list[Any], error: str) -> None:
    errors = _errors(b.assignment(localities=localities))
    assert any(e.startswith(error) for e in errors), errors


def test_policy_errors() -> None:
    msg = b.assignment()
    msg.policy.overprovisioning_factor.value = 0
    msg.policy.endpoint_stale_after.CopyFrom(duration_pb2.Duration())
    msg.policy.drop_overloads.add(category="")
    assert _errors(msg) == (
        "policy.overprovisioning_factor: must be > 0",
        "policy.drop_overloads[0].category: must not be empty",
        "policy.endpoint_stale_after: must be > 0",
    )


def test_missing_cluster_name() -> None:
    assert _errors(b.assignment(name="")) == ("cluster_name: must not be empty",)


def test_ignored_endpoint_fields() -> None:
    ep = b.lb_endpoint()
    ep.endpoint.health_check_config.CopyFrom(
        endpoint_components_pb2.Endpoint.HealthCheckConfig(port_value=9)
    )
    ep.metadata.filter_metadata["istio"].fields["workload"].string_value = "w"
    cla = _decode(b.assignment(localities=[b.locality(endpoints=[ep])]))
    assert cla.ignored_fields == (
        "endpoints[0].lb_endpoints[0].metadata",
        "endpoints[0].lb_endpoints[0].endpoint.health_check_config",
    )


def test_parse_cluster_load_assignment() -> None:
    assert parse_cluster_load_assignment(b.assignment()).cluster_name == "cluster-a"
    with pytest.raises(ResourceValidationError) as info:
        parse_cluster_load_assignment(b.assignment(localities=[b.locality(priority=1)]))
    assert info.value.type_name == "ClusterLoadAssignment"
    assert info.value.errors == ["endpoints: priorities [1] are not contiguous from 0"]


def _shapes() -> list[Any]:
    """LbEndpoints of every shape the quick reader must agree with the full parser on."""
    plain = b.lb_endpoint()
    weighted = b.lb_endpoint(weight=7, health=1)
    named = b.lb_endpoint("10.0.0.2")
    named.endpoint.hostname = "reviews-v1.default"
    v6 = b.lb_endpoint("0:0::1")
    draining = b.lb_endpoint(health=3)
    with_meta = b.lb_endpoint()
    with_meta.metadata.filter_metadata["istio"].fields["workload"].string_value = "w"
    zero_weight = b.lb_endpoint(weight=0)
    udp = b.lb_endpoint()
    udp.endpoint.address.socket_address.protocol = address_pb2.SocketAddress.UDP
    no_port = b.lb_endpoint(port=0)
    pipe = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(pipe=address_pb2.Pipe(path="/tmp/s"))
        )
    )
    health_check = b.lb_endpoint()
    health_check.endpoint.health_check_config.port_value = 9
    named_port = b.lb_endpoint()
    named_port.endpoint.address.socket_address.named_port = "grpc"
    return [
        plain, weighted, named, v6, draining, with_meta, zero_weight, udp, no_port, pipe,
        health_check, named_port,
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(12))
def test_quick_reader_agrees_with_the_full_parser(index: int) -> None:
    from proxyless.resources.parse.common import Ctx
    from proxyless.resources.parse.endpoint import _lb_endpoint, _plain_lb_endpoint

    msg = _shapes()[index]
    quick = _plain_lb_endpoint(msg)
    ctx = Ctx()
    full = _lb_endpoint(ctx, "p", msg, [])
    if index <= 5:  # the common shapes, istiod's included, are read quickly
        assert quick is not None
    if quick is not None:  # and only when the full parser has nothing else to say
        assert quick == full and not ctx.errors
        assert ctx.ignored in ([], ["p.metadata"])


def test_endpoint_metadata_is_listed_once_per_locality() -> None:
    eps = []
    for i in range(3):
        ep = b.lb_endpoint(f"10.0.0.{i + 1}")
        ep.metadata.filter_metadata["istio"].fields["workload"].string_value = "w"
        eps.append(ep)
    other = b.lb_endpoint("10.0.1.1")
    other.metadata.filter_metadata["istio"].fields["workload"].string_value = "w"
    cla = _decode(
        b.assignment(
            localities=[b.locality(endpoints=eps), b.locality(zone="z2", endpoints=[other])]
        )
    )
    assert cla.ignored_fields == (
        "endpoints[0].lb_endpoints[0].metadata",
        "endpoints[1].lb_endpoints[0].metadata",
    )
    assert [e.address for e in cla.priorities[0][0].endpoints] == [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
    ]


def _big(first_port: int, n: int = 300, odd: Any = None) -> endpoint_pb2.ClusterLoadAssignment:
    eps = [b.lb_endpoint("10.1.0.1", port=first_port + i) for i in range(n)]
    if odd is not None:
        eps[7] = odd
    return b.assignment(localities=[b.locality(endpoints=eps)])


def test_big_assignment_reuses_unchanged_endpoints() -> None:
    first = _decode(_big(1000))
    again = _decode(_big(1000))
    one_moved = _big(1000)
    one_moved.endpoints[0].lb_endpoints[3].endpoint.address.socket_address.port_value = 9
    moved = _decode(one_moved)
    old, new = first.priorities[0][0].endpoints, moved.priorities[0][0].endpoints
    assert again == first
    assert all(a is b for a, b in zip(old, again.priorities[0][0].endpoints, strict=True))
    assert new[3].port == 9 and new[3] is not old[3]
    assert all(new[i] is old[i] for i in range(len(old)) if i != 3)


def test_big_assignment_still_reports_unusual_endpoints_every_time() -> None:
    odd = b.lb_endpoint("10.1.0.1", port=1)
    odd.endpoint.health_check_config.port_value = 9
    for _ in range(2):
        cla = _decode(_big(2000, odd=odd))
        assert cla.ignored_fields == ("endpoints[0].lb_endpoints[7].endpoint.health_check_config",)
