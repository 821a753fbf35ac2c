"""Cluster load-balancing policy: legacy ``lb_policy`` enum or ``load_balancing_policy``.

``load_balancing_policy`` wins when set (gRFC A52): its ``policies`` are tried
in order and the first one whose type proxyless supports is used; unknown
types are skipped; a supported type with a bad config, or no supported type
at all, makes the Cluster invalid; nesting (``wrr_locality``) is limited to
16 levels. Constraints: ring hash (gRFC A42) XX_HASH only and
1 <= minimum_ring_size <= maximum_ring_size <= 8,388,608; least request
(gRFC A48, Envoy) choice_count >= 2; Maglev table size prime and
<= 5,000,011 (Envoy ``maglev.proto``); client-side weighted round robin
(gRFC A58) and peak EWMA are parsed by
:mod:`proxyless.resources.parse.lb_load_aware`.
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.pick_first.v3 import pick_first_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2

from proxyless.resources.model.cluster import (
    LbPolicy,
    LeastRequest,
    Maglev,
    PickFirst,
    Random,
    RingHash,
    RoundRobin,
    WrrLocality,
)
from proxyless.resources.parse.common import Ctx, join, type_name, unhandled, unpack, wrapped
from proxyless.resources.parse.lb_load_aware import NOT_LOAD_AWARE, load_aware_policy

__all__ = ["cluster_lb_policy"]

MAX_RING_SIZE = 8_388_608
MAX_MAGLEV_TABLE = 5_000_011
MAX_DEPTH = 16

_LEGACY_CONFIG_FIELDS = {
    "ring_hash_lb_config": 2,
    "least_request_lb_config": 1,
    "maglev_lb_config": 5,
    "round_robin_lb_config": 0,
}


def cluster_lb_policy(ctx: Ctx, msg: Any) -> LbPolicy | None:
    """The LB policy of a Cluster message (fields ``lb_policy``, ``*_lb_config``,
    ``load_balancing_policy``)."""
    legacy = int(msg.lb_policy)
    if msg.HasField("load_balancing_policy"):
        for name in _LEGACY_CONFIG_FIELDS:
            if msg.HasField(name):
                ctx.ignore(f"{name} (load_balancing_policy is set)")
        if legacy not in (0, 7):
            ctx.ignore("lb_policy (load_balancing_policy is set)")
        return _policy_list(ctx, "load_balancing_policy", msg.load_balancing_policy, 1)
    for name, owner in _LEGACY_CONFIG_FIELDS.items():
        if msg.HasField(name) and owner != legacy:
            ctx.ignore(name)
    if legacy == 0:
        if msg.HasField("round_robin_lb_config"):
            unhandled(ctx, msg.round_robin_lb_config, "round_robin_lb_config", ())
        return RoundRobin()
    if legacy == 1:
        if not msg.HasField("least_request_lb_config"):
            return LeastRequest()
        cfg = msg.least_request_lb_config
        path = "least_request_lb_config"
        unhandled(ctx, cfg, path, ("choice_count", "active_request_bias"))
        return _least_request(ctx, path, cfg)
    if legacy == 2:
        if not msg.HasField("ring_hash_lb_config"):
            return RingHash()
        cfg = msg.ring_hash_lb_config
        path = "ring_hash_lb_config"
        unhandled(ctx, cfg, path, ("minimum_ring_size", "maximum_ring_size", "hash_function"))
        if int(cfg.hash_function) != 0:  # XX_HASH = 0, MURMUR_HASH_2 = 1
            ctx.error(join(path, "hash_function"), "only XX_HASH is supported")
            return None
        return _ring_sizes(ctx, path, cfg)
    if legacy == 3:
        return Random()
    if legacy == 5:
        if not msg.HasField("maglev_lb_config"):
            return Maglev()
        unhandled(ctx, msg.maglev_lb_config, "maglev_lb_config", ("table_size",))
        return _maglev(ctx, "maglev_lb_config", msg.maglev_lb_config)
    if legacy == 7:
        ctx.error(
            "load_balancing_policy", "is required when lb_policy is LOAD_BALANCING_POLICY_CONFIG"
        )
        return None
    ctx.error("lb_policy", f"unsupported lb_policy {_legacy_name(legacy)}")
    return None


def _legacy_name(value: int) -> str:
    try:
        return str(cluster_pb2.Cluster.LbPolicy.Name(value))
    except ValueError:
        return str(value)


def _least_request(ctx: Ctx, path: str, cfg: Any) -> LeastRequest | None:
    choice = int(wrapped(cfg, "choice_count", 2))
    bias = 1.0
    if cfg.HasField("active_request_bias"):
        bias = float(cfg.active_request_bias.default_value)
        if cfg.active_request_bias.runtime_key:
            ctx.ignore(join(path, "active_request_bias.runtime_key"))
    ok = True
    if choice < 2:
        ctx.error(join(path, "choice_count"), f"{choice} must be >= 2")
        ok = False
    if bias < 0 or bias != bias:
        ctx.error(join(path, "active_request_bias"), f"{bias} must be >= 0")
        ok = False
    return LeastRequest(choice_count=choice, active_request_bias=bias) if ok else None


def _ring_sizes(ctx: Ctx, path: str, cfg: Any) -> RingHash | None:
    minimum = int(wrapped(cfg, "minimum_ring_size", 1024))
    maximum = int(wrapped(cfg, "maximum_ring_size", MAX_RING_SIZE))
    ok = True
    if minimum < 1:
        ctx.error(join(path, "minimum_ring_size"), "must be >= 1")
        ok = False
    if minimum > MAX_RING_SIZE:
        ctx.error(join(path, "minimum_ring_size"), f"{minimum} exceeds {MAX_RING_SIZE}")
        ok = False
    if maximum > MAX_RING_SIZE:
        ctx.error(join(path, "maximum_ring_size"), f"{maximum} exceeds {MAX_RING_SIZE}")
        ok = False
    if ok and minimum > maximum:
        ctx.error(path, f"minimum_ring_size {minimum} exceeds maximum_ring_size {maximum}")
        ok = False
    return RingHash(minimum_ring_size=minimum, maximum_ring_size=maximum) if ok else None


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def _maglev(ctx: Ctx, path: str, cfg: Any) -> Maglev | None:
    size = int(wrapped(cfg, "table_size", 65537))
    if size > MAX_MAGLEV_TABLE:
        ctx.error(join(path, "table_size"), f"{size} exceeds {MAX_MAGLEV_TABLE}")
        return None
    if not _is_prime(size):
        ctx.error(join(path, "table_size"), f"{size} is not a prime number")
        return None
    return Maglev(table_size=size)


def _policy_list(ctx: Ctx, path: str, msg: Any, depth: int) -> LbPolicy | None:
    if depth > MAX_DEPTH:
        ctx.error(path, f"load balancing policies nested deeper than {MAX_DEPTH}")
        return None
    ppath = join(path, "policies")
    skipped = []
    for i, policy in enumerate(msg.policies):
        epath = f"{ppath}[{i}].typed_extension_config"
        config = policy.typed_extension_config
        result = _typed_policy(ctx, join(epath, "typed_config"), config.typed_config, depth)
        if result is _UNSUPPORTED:
            skipped.append(type_name(config.typed_config) or config.name or "<empty>")
            ctx.ignore(f"{ppath}[{i}] ({skipped[-1]}: unsupported, skipped)")
            continue
        return result  # type: ignore[no-any-return]
    listed = f" (skipped: {', '.join(skipped)})" if skipped else ""
    ctx.error(ppath, f"no supported load balancing policy{listed}")
    return None


_UNSUPPORTED: Any = object()


def _typed_policy(ctx: Ctx, path: str, any_msg: Any, depth: int) -> Any:
    name = type_name(any_msg)
    if name == round_robin_pb2.RoundRobin.DESCRIPTOR.full_name:
        cfg = unpack(ctx, path, any_msg, round_robin_pb2.RoundRobin)
        if cfg is None:
            return None
        unhandled(ctx, cfg, path, ())
        return RoundRobin()
    if name == random_pb2.Random.DESCRIPTOR.full_name:
        rnd = unpack(ctx, path, any_msg, random_pb2.Random)
        if rnd is None:
            return None
        unhandled(ctx, rnd, path, ())
        return Random()
    if name == pick_first_pb2.PickFirst.DESCRIPTOR.full_name:
        pf = unpack(ctx, path, any_msg, pick_first_pb2.PickFirst)
        return None if pf is None else PickFirst(shuffle_address_list=bool(pf.shuffle_address_list))
    if name == least_request_pb2.LeastRequest.DESCRIPTOR.full_name:
        lr = unpack(ctx, path, any_msg, least_request_pb2.LeastRequest)
        if lr is None:
            return None
        unhandled(ctx, lr, path, ("choice_count", "active_request_bias"))
        return _least_request(ctx, path, lr)
    if name == ring_hash_pb2.RingHash.DESCRIPTOR.full_name:
        rh = unpack(ctx, path, any_msg, ring_hash_pb2.RingHash)
        if rh is None:
            return None
        unhandled(ctx, rh, path, ("hash_function", "minimum_ring_size", "maximum_ring_size"))
        if int(rh.hash_function) not in (0, 1):  # DEFAULT_HASH, XX_HASH
            ctx.error(join(path, "hash_function"), "only XX_HASH is supported")
            return None
        return _ring_sizes(ctx, path, rh)
    if name == maglev_pb2.Maglev.DESCRIPTOR.full_name:
        mg = unpack(ctx, path, any_msg, maglev_pb2.Maglev)
        if mg is None:
            return None
        unhandled(ctx, mg, path, ("table_size",))
        return _maglev(ctx, path, mg)
    if name == wrr_locality_pb2.WrrLocality.DESCRIPTOR.full_name:
        wl = unpack(ctx, path, any_msg, wrr_locality_pb2.WrrLocality)
        if wl is None:
            return None
        unhandled(ctx, wl, path, ("endpoint_picking_policy",))
        if not wl.HasField("endpoint_picking_policy"):
            ctx.error(join(path, "endpoint_picking_policy"), "is required")
            return None
        child = _policy_list(
            ctx, join(path, "endpoint_picking_policy"), wl.endpoint_picking_policy, depth + 1
        )
        return None if child is None else WrrLocality(child=child)
    load_aware = load_aware_policy(ctx, path, any_msg)
    return _UNSUPPORTED if load_aware is NOT_LOAD_AWARE else load_aware
