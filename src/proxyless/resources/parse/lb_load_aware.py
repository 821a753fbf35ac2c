"""Load-aware LB policies in a Cluster's ``load_balancing_policy``.

- ``envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3``
  (gRFC A58): durations must not be negative; ``weight_update_period`` below
  0.1 s is raised to 0.1 s (A58); ``error_utilization_penalty`` must be >= 0.
  ``slow_start_config`` is not supported and is ignored (reported).
- ``xds.type.v3.TypedStruct`` / ``udpa.type.v1.TypedStruct`` whose
  ``type_url`` is :data:`~proxyless.resources.model.PEAK_EWMA_TYPE_URL`:
  proxyless' peak-EWMA balancer. Its ``value`` may hold ``decay`` and
  ``default_rtt``, each a protobuf JSON duration string (``"10s"``,
  ``"0.030s"``) or a number of seconds, > 0; other keys are errors. A
  TypedStruct of any other ``type_url`` is a policy proxyless does not know
  and is skipped like any unknown type (gRFC A52).
"""

from __future__ import annotations

from typing import Any

from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (
    client_side_weighted_round_robin_pb2 as cswrr_pb2,
)
from udpa.type.v1 import typed_struct_pb2 as udpa_typed_struct_pb2
from xds.type.v3 import typed_struct_pb2

from proxyless.resources.model.cluster import (
    PEAK_EWMA_TYPE_URL,
    ClientSideWeightedRoundRobin,
    PeakEwma,
)
from proxyless.resources.parse.common import Ctx, join, type_name, unhandled, unpack, wrapped

__all__ = ["NOT_LOAD_AWARE", "load_aware_policy"]

#: Returned by :func:`load_aware_policy` for a type this module does not parse.
NOT_LOAD_AWARE: Any = object()

MIN_WEIGHT_UPDATE_PERIOD = 0.1

_WRR_FIELDS = (
    "enable_oob_load_report",
    "oob_reporting_period",
    "blackout_period",
    "weight_expiration_period",
    "weight_update_period",
    "error_utilization_penalty",
    "metric_names_for_computing_utilization",
)
_TYPED_STRUCTS = {
    typed_struct_pb2.TypedStruct.DESCRIPTOR.full_name: typed_struct_pb2.TypedStruct,
    udpa_typed_struct_pb2.TypedStruct.DESCRIPTOR.full_name: udpa_typed_struct_pb2.TypedStruct,
}


def load_aware_policy(ctx: Ctx, path: str, any_msg: Any) -> Any:
    """The policy in ``any_msg`` (an ``Any`` at ``path``): a
    :class:`ClientSideWeightedRoundRobin`, a :class:`PeakEwma`, None when it
    is one of them but invalid, or :data:`NOT_LOAD_AWARE`."""
    name = type_name(any_msg)
    if name == cswrr_pb2.ClientSideWeightedRoundRobin.DESCRIPTOR.full_name:
        msg = unpack(ctx, path, any_msg, cswrr_pb2.ClientSideWeightedRoundRobin)
        return None if msg is None else _wrr(ctx, path, msg)
    cls = _TYPED_STRUCTS.get(name)
    if cls is None:
        return NOT_LOAD_AWARE
    typed = unpack(ctx, path, any_msg, cls)
    if typed is None:
        return None
    if typed.type_url != PEAK_EWMA_TYPE_URL:
        return NOT_LOAD_AWARE
    return _peak_ewma(ctx, join(path, "value"), typed.value)


def _seconds(ctx: Ctx, path: str, msg: Any, field: str, default: float) -> float:
    if not msg.HasField(field):
        return default
    value = getattr(msg, field)
    seconds = int(value.seconds) + int(value.nanos) / 1e9
    if value.seconds < 0 or value.nanos < 0:
        ctx.error(join(path, field), "duration must not be negative")
    return seconds


def _wrr(ctx: Ctx, path: str, msg: Any) -> ClientSideWeightedRoundRobin | None:
    unhandled(ctx, msg, path, _WRR_FIELDS)
    before = len(ctx.errors)
    penalty = float(wrapped(msg, "error_utilization_penalty", 1.0))
    if penalty < 0 or penalty != penalty:
        ctx.error(join(path, "error_utilization_penalty"), f"{penalty} must be >= 0")
    enable_oob = bool(wrapped(msg, "enable_oob_load_report", False))
    policy = ClientSideWeightedRoundRobin(
        enable_oob_load_report=enable_oob,
        oob_reporting_period=_seconds(ctx, path, msg, "oob_reporting_period", 10.0),
        blackout_period=_seconds(ctx, path, msg, "blackout_period", 10.0),
        weight_expiration_period=_seconds(ctx, path, msg, "weight_expiration_period", 180.0),
        weight_update_period=max(
            MIN_WEIGHT_UPDATE_PERIOD, _seconds(ctx, path, msg, "weight_update_period", 1.0)
        ),
        error_utilization_penalty=penalty,
        metric_names_for_computing_utilization=tuple(msg.metric_names_for_computing_utilization),
    )
    return policy if len(ctx.errors) == before else None


def _peak_ewma(ctx: Ctx, path: str, value: Any) -> PeakEwma | None:
    fields = dict(value.fields)
    ok = True
    for key in sorted(set(fields) - {"decay", "default_rtt"}):
        ctx.error(join(path, key), "unknown field (expected decay, default_rtt)")
        ok = False
    decay = _struct_seconds(ctx, join(path, "decay"), fields.get("decay"), 10.0)
    default_rtt = _struct_seconds(ctx, join(path, "default_rtt"), fields.get("default_rtt"), 0.030)
    if not ok or decay is None or default_rtt is None:
        return None
    return PeakEwma(decay=decay, default_rtt=default_rtt)


def _struct_seconds(ctx: Ctx, path: str, value: Any, default: float) -> float | None:
    """A ``google.protobuf.Value`` holding ``"1.5s"`` or a number of seconds."""
    if value is None:
        return default
    kind = value.WhichOneof("kind")
    seconds: float | None = None
    if kind == "number_value":
        seconds = float(value.number_value)
    elif kind == "string_value" and value.string_value.endswith("s"):
        try:
            seconds = float(value.string_value[:-1])
        except ValueError:
            seconds = None
    if seconds is None:
        ctx.error(path, 'must be a duration such as "10s" or a number of seconds')
        return None
    if not seconds > 0 or seconds == float("inf"):
        ctx.error(path, f"{seconds:g} s must be > 0")
        return None
    return seconds
