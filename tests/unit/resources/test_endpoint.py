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


def _lb(address: str = "10.0.0.1", port: int = 8080, **fields: Any) -> Any:
    """An LbEndpoint with a socket address; ``fields`` are set on it with
    dotted names (``endpoint.hostname="h"``)."""
    msg = b.lb_endpoint(address, port)
    for name, value in fields.items():
        *parents, leaf = name.split(".")
        target = msg
        for parent in parents:
            target = getattr(target, parent)
        if hasattr(value, "DESCRIPTOR"):
            getattr(target, leaf).CopyFrom(value)
        else:
            setattr(target, leaf, value)
    return msg


def _with_metadata(msg: Any, value: str = "w") -> Any:
    msg.metadata.filter_metadata["istio"].fields["workload"].string_value = value
    return msg


def _with_unknown(msg: Any, tag: bytes) -> Any:
    """``msg`` with an unknown field (``tag`` and its value, raw) appended."""
    out = type(msg)()
    out.ParseFromString(msg.SerializeToString() + tag)
    return out


def _shapes() -> list[Any]:
    """LbEndpoints the quick reader must agree with the full parser on: the
    common shapes (read quickly) and one of each thing it must leave to the
    full parser (an id ending in ``/full``)."""
    long_host = "h" * 200  # lengths above 127 take two bytes
    unicode_host = "réviews.example"
    pipe = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(pipe=address_pb2.Pipe(path="/tmp/s"))
        )
    )
    nested_unknown = b.lb_endpoint()
    sock = nested_unknown.endpoint.address.socket_address
    sock.ParseFromString(sock.SerializeToString() + b"\xf8\x07\x01")  # field 127 = 1
    zero_weight_meta = _with_metadata(b.lb_endpoint(weight=0))
    return [
        pytest.param(b.lb_endpoint(), id="plain"),
        pytest.param(b.lb_endpoint(weight=7, health=1), id="weight-healthy"),
        pytest.param(b.lb_endpoint(weight=300, health=5), id="two-byte-weight"),
        pytest.param(b.lb_endpoint(weight=4_294_967_295), id="max-weight"),
        pytest.param(b.lb_endpoint(port=1), id="port-1"),
        pytest.param(b.lb_endpoint(port=200), id="two-byte-port"),
        pytest.param(b.lb_endpoint(port=65535), id="three-byte-port"),
        pytest.param(_lb("10.0.0.2", **{"endpoint.hostname": "reviews-v1.default"}), id="hostname"),
        pytest.param(_lb(**{"endpoint.hostname": long_host}), id="long-hostname"),
        pytest.param(_lb(long_host), id="long-address"),
        pytest.param(_lb("h" * 120, **{"endpoint.hostname": "x" * 120}), id="long-endpoint"),
        pytest.param(_lb(unicode_host), id="unicode-address"),
        pytest.param(_lb(**{"endpoint.hostname": unicode_host}), id="unicode-hostname"),
        pytest.param(b.lb_endpoint("0:0::1"), id="ipv6-spelled-long"),
        pytest.param(b.lb_endpoint("010.0.0.1"), id="ipv4-not-canonical"),
        pytest.param(b.lb_endpoint(health=3), id="draining"),
        pytest.param(_with_metadata(b.lb_endpoint()), id="metadata"),
        pytest.param(_with_metadata(b.lb_endpoint(weight=3, health=2), "x" * 300), id="big-metadata"),
        pytest.param(
            _with_metadata(_lb(**{"endpoint.hostname": "h"})), id="metadata-hostname"
        ),
        pytest.param(b.lb_endpoint(weight=0), id="zero-weight/full"),
        pytest.param(zero_weight_meta, id="zero-weight-metadata/full"),
        pytest.param(b.lb_endpoint(health=6), id="unknown-health/full"),
        pytest.param(_lb(**{"endpoint.address.socket_address.protocol": 1}), id="udp/full"),
        pytest.param(b.lb_endpoint(port=0), id="port-0/full"),
        pytest.param(b.lb_endpoint(port=70000), id="port-too-big/full"),
        pytest.param(b.lb_endpoint(""), id="no-address/full"),
        pytest.param(pipe, id="pipe/full"),
        pytest.param(endpoint_components_pb2.LbEndpoint(), id="empty/full"),
        pytest.param(
            endpoint_components_pb2.LbEndpoint(endpoint_name="leds"), id="endpoint-name/full"
        ),
        pytest.param(
            _lb(**{"endpoint.health_check_config.port_value": 9}), id="health-check/full"
        ),
        pytest.param(
            _lb(**{"endpoint.address.socket_address.named_port": "grpc"}), id="named-port/full"
        ),
        pytest.param(
            _lb(port=0, **{"endpoint.address.socket_address.named_port": ""}),
            id="empty-named-port/full",
        ),
        pytest.param(
            _lb(**{"endpoint.address.socket_address.resolver_name": "dns"}), id="resolver/full"
        ),
        pytest.param(
            _lb(**{"endpoint.address.socket_address.ipv4_compat": True}), id="ipv4-compat/full"
        ),
        pytest.param(
            _with_metadata(_lb(**{"endpoint.address.socket_address.ipv4_compat": True})),
            id="metadata-ipv4-compat/full",
        ),
        pytest.param(
            _additional(),
            id="additional-addresses/full",
        ),
        pytest.param(_with_unknown(b.lb_endpoint(), b"\xf8\x07\x01"), id="unknown-field/full"),
        pytest.param(nested_unknown, id="nested-unknown-field/full"),
    ]  # fmt: skip


def _additional() -> Any:
    msg = b.lb_endpoint()
    msg.endpoint.additional_addresses.add().address.CopyFrom(b.socket("10.0.0.9", 1))
    return msg


@pytest.mark.parametrize("msg", _shapes())
def test_quick_reader_agrees_with_the_full_parser(msg: Any, request: Any) -> None:
    from proxyless.resources.parse.common import Ctx
    from proxyless.resources.parse.endpoint import _lb_endpoint, _plain_lb_endpoint

    quick = _plain_lb_endpoint(msg, msg.ByteSize())
    ctx = Ctx()
    full = _lb_endpoint(ctx, "p", msg, [])
    if request.node.callspec.id.endswith("/full"):
        # not the common shape: left to the full parser, which says why
        assert quick is None
        return
    # the common shapes, istiod's included, are read quickly, and only when
    # the full parser has nothing else to say
    assert quick is not None
    endpoint, metadata = quick
    assert endpoint == full and not ctx.errors
    assert ctx.ignored == (["p.metadata"] if metadata else [])
    assert metadata == msg.HasField("metadata")


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


def _assignments() -> list[Any]:
    """Assignments whose decode must not depend on the quick reader."""
    shapes = [p.values[0] for p in _shapes()]
    dup = b.lb_endpoint("10.0.0.1", 8080)
    many = [b.lb_endpoint("10.2.0.1", port=1000 + i) for i in range(300)]
    meta_late = [b.lb_endpoint("10.3.0.1", 1), _with_metadata(b.lb_endpoint("10.3.0.1", 2))]
    return [
        pytest.param(b.assignment(localities=[b.locality(endpoints=shapes)]), id="every-shape"),
        pytest.param(
            b.assignment(localities=[b.locality(endpoints=[b.lb_endpoint(), dup])]),
            id="duplicate",
        ),
        pytest.param(
            b.assignment(
                localities=[b.locality(endpoints=[_additional()]), b.locality("z2", [dup])]
            ),
            id="duplicate-of-additional-address",
        ),
        pytest.param(b.assignment(localities=[b.locality(endpoints=many)]), id="big"),
        pytest.param(
            b.assignment(localities=[b.locality(endpoints=[*many, dup, b.lb_endpoint()])]),
            id="big-duplicate",
        ),
        pytest.param(
            b.assignment(localities=[b.locality(endpoints=meta_late)]), id="metadata-late"
        ),
    ]


@pytest.mark.parametrize("msg", _assignments())
def test_quick_reader_changes_nothing_in_an_assignment(msg: Any, monkeypatch: Any) -> None:
    from proxyless.resources.parse import endpoint as parse

    data = msg.SerializeToString()
    quick = decode_cluster_load_assignment(data)
    again = decode_cluster_load_assignment(data)  # big ones: taken from the last decode
    monkeypatch.setattr(parse, "_plain_lb_endpoint", lambda msg, size: None)
    parse._last_endpoints.clear()
    full = decode_cluster_load_assignment(data)
    assert quick == full
    assert again == full


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("10.0.0.1", 8080, "UNKNOWN", 1, ""), id="defaults"),
        pytest.param(("::1", 1, "DRAINING", 7, "h.example"), id="every-field"),
    ],
)
def test_make_endpoint_is_the_constructor(args: tuple[Any, ...]) -> None:
    from proxyless.resources.model.endpoint import make_endpoint

    made = make_endpoint(*args)
    built = Endpoint(*args)
    assert made == built and hash(made) == hash(built) and repr(made) == repr(built)
    with pytest.raises(AttributeError):
        made.port = 1  # type: ignore[misc]


def test_big_assignment_with_metadata_reads_the_same_from_the_memo() -> None:
    eps = [_with_metadata(b.lb_endpoint("10.4.0.1", port=1000 + i)) for i in range(300)]
    eps[0] = b.lb_endpoint("10.4.0.1", port=999)  # the first has none
    data = b.assignment(localities=[b.locality(endpoints=eps)]).SerializeToString()
    first = decode_cluster_load_assignment(data)
    again = decode_cluster_load_assignment(data)  # every endpoint from the memo
    assert first.ok and again == first
    assert first.value.ignored_fields == ("endpoints[0].lb_endpoints[1].metadata",)
    old = first.value.priorities[0][0].endpoints
    assert all(a is b for a, b in zip(old, again.value.priorities[0][0].endpoints, strict=True))
