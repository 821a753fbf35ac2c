"""Cluster ``load_balancing_policy``: client_side_weighted_round_robin (gRFC
A58) and the TypedStruct selecting peak EWMA, with the field path of every
error."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
from udpa.type.v1 import typed_struct_pb2 as udpa_typed_struct_pb2
from xds.type.v3 import typed_struct_pb2

from proxyless.resources.model import (
    PEAK_EWMA_TYPE_URL,
    ClientSideWeightedRoundRobin,
    Cluster,
    PeakEwma,
    RoundRobin,
    WrrLocality,
)
from proxyless.resources.parse.cluster import decode_cluster
from proxyless.testing.lb_policies import cluster_with_policy, peak_ewma, weighted_round_robin
from proxyless.testing.resources import cluster

POLICY = "load_balancing_policy.policies[0].typed_extension_config.typed_config"


def _parse(policy: Any) -> tuple[Any, tuple[str, ...]]:
    result = decode_cluster(cluster_with_policy(cluster("c"), policy).SerializeToString())
    value = result.value
    return (value.lb_policy if isinstance(value, Cluster) else None), tuple(result.errors)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param(weighted_round_robin(), ClientSideWeightedRoundRobin(), id="wrr-defaults"),
        pytest.param(
            weighted_round_robin(
                blackout_period=0,
                weight_update_period=0.5,
                weight_expiration_period=60,
                error_utilization_penalty=2.0,
            ),
            ClientSideWeightedRoundRobin(
                blackout_period=0.0,
                weight_update_period=0.5,
                weight_expiration_period=60.0,
                error_utilization_penalty=2.0,
            ),
            id="wrr-fields",
        ),
        pytest.param(
            weighted_round_robin(weight_update_period=0.01),
            ClientSideWeightedRoundRobin(weight_update_period=0.1),
            id="wrr-update-period-raised-to-100ms",
        ),
        pytest.param(
            weighted_round_robin(oob_reporting_period=2.5),
            ClientSideWeightedRoundRobin(enable_oob_load_report=True, oob_reporting_period=2.5),
            id="wrr-out-of-band",
        ),
        pytest.param(peak_ewma(), PeakEwma(), id="peak-ewma-defaults"),
        pytest.param(
            peak_ewma(decay="5s", default_rtt="0.050s"),
            PeakEwma(decay=5.0, default_rtt=0.05),
            id="peak-ewma-duration-strings",
        ),
        pytest.param(
            peak_ewma(decay=2, default_rtt=0.01),
            PeakEwma(decay=2.0, default_rtt=0.01),
            id="peak-ewma-seconds",
        ),
        pytest.param(
            udpa_typed_struct_pb2.TypedStruct(type_url=PEAK_EWMA_TYPE_URL),
            PeakEwma(),
            id="peak-ewma-udpa-typed-struct",
        ),
        pytest.param(
            typed_struct_pb2.TypedStruct(type_url="type.googleapis.com/some.Other"),
            RoundRobin(),
            id="other-typed-struct-skipped-for-the-fallback",
        ),
    ],
)
def test_accepted(policy: Any, expected: Any) -> None:
    value, errors = _parse(policy)
    assert errors == ()
    assert value == expected
    assert type(value) is type(expected)


def test_wrr_under_wrr_locality() -> None:
    inner = cluster_with_policy(cluster("x"), weighted_round_robin()).load_balancing_policy
    value, errors = _parse(wrr_locality_pb2.WrrLocality(endpoint_picking_policy=inner))
    assert errors == ()
    assert value == WrrLocality(ClientSideWeightedRoundRobin())


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        pytest.param(
            weighted_round_robin(error_utilization_penalty=-1.0),
            f"{POLICY}.error_utilization_penalty: -1.0 must be >= 0",
            id="wrr-negative-penalty",
        ),
        pytest.param(
            peak_ewma(decay="0s"), f"{POLICY}.value.decay: 0 s must be > 0", id="zero-decay"
        ),
        pytest.param(
            peak_ewma(default_rtt=-1),
            f"{POLICY}.value.default_rtt: -1 s must be > 0",
            id="negative-default-rtt",
        ),
        pytest.param(
            peak_ewma(decay="soon"),
            f'{POLICY}.value.decay: must be a duration such as "10s" or a number of seconds',
            id="not-a-duration",
        ),
    ],
)
def test_rejected(policy: Any, error: str) -> None:
    value, errors = _parse(policy)
    assert value is None
    assert error in errors, errors


def test_peak_ewma_unknown_field_is_an_error() -> None:
    typed = peak_ewma()
    typed.value.fields["window"].number_value = 3
    value, errors = _parse(typed)
    assert value is None
    assert f"{POLICY}.value.window: unknown field (expected decay, default_rtt)" in errors
