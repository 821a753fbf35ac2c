"""Builders for the load-aware LB policies of a Cluster, for tests.

``cluster_with_policy(cluster("c"), weighted_round_robin(blackout_period=0))``
sets the Cluster's ``load_balancing_policy`` to gRFC A58's
``client_side_weighted_round_robin``; :func:`peak_ewma` gives the
``xds.type.v3.TypedStruct`` that selects proxyless' peak-EWMA balancer
(``docs/load-balancing.md``). A ``round_robin`` fallback follows the
policy, as A58's example configuration has it.
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (
    client_side_weighted_round_robin_pb2 as cswrr_pb2,
)
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from google.protobuf import duration_pb2
from xds.type.v3 import typed_struct_pb2

from proxyless.resources.model import PEAK_EWMA_TYPE_URL

__all__ = ["cluster_with_policy", "peak_ewma", "weighted_round_robin"]


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def weighted_round_robin(
    *,
    blackout_period: float | None = None,
    weight_update_period: float | None = None,
    weight_expiration_period: float | None = None,
    error_utilization_penalty: float | None = None,
    oob_reporting_period: float | None = None,
) -> cswrr_pb2.ClientSideWeightedRoundRobin:
    """A ``ClientSideWeightedRoundRobin`` config (unset fields: A58's
    defaults); ``oob_reporting_period`` also sets ``enable_oob_load_report``."""
    msg = cswrr_pb2.ClientSideWeightedRoundRobin()
    if oob_reporting_period is not None:
        msg.enable_oob_load_report.value = True
        msg.oob_reporting_period.CopyFrom(_duration(oob_reporting_period))
    if blackout_period is not None:
        msg.blackout_period.CopyFrom(_duration(blackout_period))
    if weight_update_period is not None:
        msg.weight_update_period.CopyFrom(_duration(weight_update_period))
    if weight_expiration_period is not None:
        msg.weight_expiration_period.CopyFrom(_duration(weight_expiration_period))
    if error_utilization_penalty is not None:
        msg.error_utilization_penalty.value = error_utilization_penalty
    return msg


def peak_ewma(*, decay: str | float | None = None, default_rtt: str | float | None = None) -> Any:
    """The TypedStruct selecting peak EWMA; durations as ``"10s"`` or seconds."""
    typed = typed_struct_pb2.TypedStruct(type_url=PEAK_EWMA_TYPE_URL)
    for key, value in (("decay", decay), ("default_rtt", default_rtt)):
        if isinstance(value, str):
            typed.value.fields[key].string_value = value
        elif value is not None:
            typed.value.fields[key].number_value = float(value)
    return typed


def cluster_with_policy(cluster: cluster_pb2.Cluster, policy: Any) -> cluster_pb2.Cluster:
    """``cluster`` with ``load_balancing_policy`` = [``policy``, round_robin]."""
    cluster.load_balancing_policy.Clear()
    for name, config in (("policy", policy), ("fallback", round_robin_pb2.RoundRobin())):
        entry = cluster.load_balancing_policy.policies.add()
        entry.typed_extension_config.name = name
        entry.typed_extension_config.typed_config.Pack(config)
    return cluster
