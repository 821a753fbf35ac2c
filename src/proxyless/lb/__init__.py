"""proxyless.lb: endpoint picking, locality weighting and priority failover.

- :class:`EndpointState`: per-endpoint runtime state shared with resilience;
- :func:`build_picker` and the pickers (round robin, random, least request,
  ring hash, maglev, pick first, locality-weighted, and the load-aware
  weighted round robin of gRFC A58 and peak EWMA);
- :func:`priority_load` / :class:`PriorityLoad`: Envoy priority levels with
  overprovisioning and panic, or gRFC A56's first-healthy priority;
- :class:`ClusterLoadBalancer`: one per cluster, fed ClusterConfig
  snapshots, answering :meth:`~ClusterLoadBalancer.pick` in microseconds.

Semantics and worked examples: ``docs/load-balancing.md``. Nothing here
blocks, awaits, reads a clock or imports a transport; randomness is passed
in as ``random.Random``.
"""

from __future__ import annotations

from proxyless.lb.build import build_picker, is_hash_policy, member_of_picker
from proxyless.lb.cluster import ClusterLoadBalancer
from proxyless.lb.locality import LocalityPicker, effective_locality_weight, locality_name
from proxyless.lb.maglev import DEFAULT_TABLE_SIZE, MaglevPicker, build_maglev_table
from proxyless.lb.peak_ewma import PeakEwmaPicker
from proxyless.lb.pickers import (
    EndpointKey,
    LeastRequestPicker,
    Picker,
    PickFirstPicker,
    RandomPicker,
    RoundRobinPicker,
)
from proxyless.lb.priority import PriorityLoad, PriorityMode, priority_load
from proxyless.lb.ring_hash import RING_SIZE_CAP, RingHashPicker, ring_size
from proxyless.lb.state import EndpointState
from proxyless.lb.wrr import WeightedRoundRobinPicker

__all__ = [
    "DEFAULT_TABLE_SIZE",
    "RING_SIZE_CAP",
    "ClusterLoadBalancer",
    "EndpointKey",
    "EndpointState",
    "LeastRequestPicker",
    "LocalityPicker",
    "MaglevPicker",
    "PeakEwmaPicker",
    "PickFirstPicker",
    "Picker",
    "PriorityLoad",
    "PriorityMode",
    "RandomPicker",
    "RingHashPicker",
    "RoundRobinPicker",
    "WeightedRoundRobinPicker",
    "build_maglev_table",
    "build_picker",
    "effective_locality_weight",
    "is_hash_policy",
    "locality_name",
    "member_of_picker",
    "priority_load",
    "ring_size",
]
