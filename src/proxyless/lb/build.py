"""Build a picker for an LB policy: a pure function of policy, endpoints and RNG.

:func:`build_picker` takes *all* endpoints of one priority and builds the
picker over those that are usable now (EDS HEALTHY/UNKNOWN, not ejected;
maglev keeps ejected endpoints in its table, see :func:`member_of_picker`),
or over all of them in panic mode. Locality weighting applies when the
policy is ``wrr_locality`` or when ``locality_weights`` is given (Envoy's
``locality_weighted_lb_config``):

- for round robin, random, least request and pick first: a
  :class:`~proxyless.lb.locality.LocalityPicker` over one child picker per
  locality, with Envoy's health-scaled effective locality weights (in panic
  mode localities are ignored, as Envoy balances over all hosts);
- for ring hash and maglev: one table whose endpoint weights are the
  endpoint's share of its locality times the locality's share (Envoy
  ``normalizeLocalityWeights``).

Client-side weighted round robin (gRFC A58, :mod:`proxyless.lb.wrr`) and
peak EWMA (:mod:`proxyless.lb.peak_ewma`) take their weights from load
reports and latency, not from EDS endpoint weights, which they ignore.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from proxyless.lb.load_state import monotonic
from proxyless.lb.locality import LocalityPicker, effective_locality_weight
from proxyless.lb.maglev import MaglevPicker
from proxyless.lb.peak_ewma import LatencyFeedback, PeakEwmaPicker
from proxyless.lb.pickers import (
    LeastRequestPicker,
    Picker,
    PickFirstPicker,
    RandomPicker,
    RoundRobinPicker,
)
from proxyless.lb.ring_hash import RingHashPicker
from proxyless.lb.state import EndpointState
from proxyless.lb.wrr import WeightedRoundRobinPicker
from proxyless.resources.model import (
    ClientSideWeightedRoundRobin,
    LbPolicy,
    LeastRequest,
    Locality,
    Maglev,
    PeakEwma,
    PickFirst,
    Random,
    RingHash,
    RoundRobin,
    WrrLocality,
)

__all__ = ["build_picker", "is_hash_policy", "member_of_picker", "picker_members"]


def is_hash_policy(policy: LbPolicy) -> bool:
    """True for ring_hash and maglev (directly or under wrr_locality)."""
    if isinstance(policy, WrrLocality):
        return is_hash_policy(policy.child)
    return isinstance(policy, (RingHash, Maglev))


def member_of_picker(policy: LbPolicy, endpoint: EndpointState) -> bool:
    """Whether a non-panic picker for ``policy`` includes ``endpoint`` at build time.

    Usable endpoints (healthy and not ejected), except for maglev, whose
    table includes ejected endpoints: rebuilding a 65,537-slot table costs
    tens of milliseconds in Python, so an ejection is handled at pick time
    (the pick moves on as it does for Envoy's retries) rather than by a
    rebuild.
    """
    if isinstance(policy, WrrLocality):
        return member_of_picker(policy.child, endpoint)
    if isinstance(policy, Maglev):
        return endpoint.endpoint.usable
    return endpoint.healthy


def picker_members(policy: LbPolicy, endpoints: Sequence[EndpointState]) -> list[EndpointState]:
    """The endpoints of ``endpoints`` for which :func:`member_of_picker` is
    true, in order (one policy test for the whole list)."""
    while isinstance(policy, WrrLocality):
        policy = policy.child
    if isinstance(policy, Maglev):
        return [e for e in endpoints if e.endpoint.usable]
    return [e for e in endpoints if e.healthy]


def build_picker(
    policy: LbPolicy,
    endpoints: Sequence[EndpointState],
    rng: random.Random,
    *,
    locality_weights: Mapping[Locality, int] | None = None,
    overprovisioning_factor: int = 140,
    panic: bool = False,
    clock: Callable[[], float] = monotonic,
    members: Sequence[EndpointState] | None = None,
) -> Picker:
    """A picker for ``policy`` over ``endpoints`` (see the module docstring).

    ``locality_weights`` maps each locality to its EDS
    ``load_balancing_weight``; localities missing from it weigh 1. ``clock``
    (monotonic seconds) is read by the load-aware pickers (weighted round
    robin, peak EWMA). ``members``, when the caller has it already, is
    ``picker_members(policy, endpoints)`` (not used in panic mode).
    """
    if isinstance(policy, WrrLocality):
        return build_picker(
            policy.child,
            endpoints,
            rng,
            locality_weights=locality_weights if locality_weights is not None else {},
            overprovisioning_factor=overprovisioning_factor,
            panic=panic,
            clock=clock,
            members=members,
        )
    if panic:
        candidates = list(endpoints)
    elif members is not None:
        candidates = list(members)
    else:
        candidates = picker_members(policy, endpoints)
    if locality_weights is None:
        return _flat(policy, candidates, rng, None, panic, clock)
    if isinstance(policy, (RingHash, Maglev)):
        return _flat(
            policy, candidates, rng, _folded_weights(candidates, locality_weights), panic, clock
        )
    if panic:
        return _flat(policy, candidates, rng, None, panic, clock)
    groups: dict[Locality, list[EndpointState]] = {}
    for endpoint in endpoints:
        groups.setdefault(endpoint.locality, []).append(endpoint)
    children: list[tuple[Locality, float, Picker]] = []
    for locality, members in groups.items():
        healthy = [e for e in members if e.healthy]
        weight = effective_locality_weight(
            locality_weights.get(locality, 1), len(healthy), len(members), overprovisioning_factor
        )
        children.append((locality, weight, _flat(policy, healthy, rng, None, False, clock)))
    return LocalityPicker(children)


def _folded_weights(
    endpoints: Sequence[EndpointState], locality_weights: Mapping[Locality, int]
) -> list[float]:
    locality_sums: dict[Locality, int] = {}
    for endpoint in endpoints:
        locality_sums[endpoint.locality] = locality_sums.get(endpoint.locality, 0) + endpoint.weight
    total = sum(locality_weights.get(loc, 1) for loc in locality_sums) or 1
    return [
        locality_weights.get(e.locality, 1) / total * e.weight / locality_sums[e.locality]
        for e in endpoints
    ]


def _flat(
    policy: LbPolicy,
    endpoints: Sequence[EndpointState],
    rng: random.Random,
    weights: Sequence[float] | None,
    panic: bool,
    clock: Callable[[], float],
) -> Picker:
    if isinstance(policy, ClientSideWeightedRoundRobin):  # before its base, RoundRobin
        return WeightedRoundRobinPicker(endpoints, rng, policy, clock, panic=panic)
    if isinstance(policy, PeakEwma):
        feedback = LatencyFeedback(policy.decay, policy.default_rtt, clock)
        return PeakEwmaPicker(endpoints, feedback, panic=panic)
    if isinstance(policy, RoundRobin):
        return RoundRobinPicker(endpoints, rng, weights=weights, panic=panic)
    if isinstance(policy, Random):
        return RandomPicker(endpoints, rng, weights=weights, panic=panic)
    if isinstance(policy, LeastRequest):
        return LeastRequestPicker(
            endpoints,
            rng,
            choice_count=policy.choice_count,
            active_request_bias=policy.active_request_bias,
            weights=weights,
            panic=panic,
        )
    if isinstance(policy, RingHash):
        return RingHashPicker(
            endpoints,
            weights=weights,
            minimum_ring_size=policy.minimum_ring_size,
            maximum_ring_size=policy.maximum_ring_size,
            panic=panic,
        )
    if isinstance(policy, Maglev):
        return MaglevPicker(endpoints, weights=weights, table_size=policy.table_size, panic=panic)
    if isinstance(policy, PickFirst):
        return PickFirstPicker(endpoints, rng, shuffle=policy.shuffle_address_list, panic=panic)
    if isinstance(policy, WrrLocality):  # nested wrr_locality: treat as its child
        return _flat(policy.child, endpoints, rng, weights, panic, clock)
    raise TypeError(f"unsupported load balancing policy {policy!r}")
