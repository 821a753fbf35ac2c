"""Priority levels: how traffic spreads over EDS priorities, and panic.

Two behaviours, chosen per cluster load balancer with ``mode``:

``"envoy"`` (the default) — Envoy's documented priority levels
(``arch_overview/upstream/load_balancing/priority``, ``panic_threshold``)
and its ``LoadBalancerBase`` arithmetic:

- the *health* of priority P is ``min(100, overprovisioning_factor *
  healthy / total)`` in integer percent (factor 140 by default: a level
  stays at 100 while at least ~71% (1/1.4) of its endpoints are healthy);
- levels take load in order, each as much as its health allows, scaled by
  the *normalized total availability* ``min(100, sum of healths)``;
  rounding leftovers go to the first level with any health;
- a level is in *panic* when the normalized total availability is below
  100 and the level's healthy percentage is below ``panic_threshold``
  (50% by default; 0 disables panic); a level in panic balances over all
  of its endpoints, healthy or not;
- when every level is in panic (*total panic*) load is split by endpoint
  count instead of health.

``"grpc"`` — gRFC A56's priority policy without its timers: all traffic to
the first priority that has a healthy endpoint; no overprovisioning, no
panic; when no priority has a healthy endpoint the request fails fast.
(gRPC fails over on a child's connectivity state; with endpoint health as
the signal this is the same order.)

Why Envoy by default: the proxyless client replaces a sidecar, and users
moving from one expect the sidecar's gradual spill-over (a 75% healthy
priority 0 still keeps all the traffic; 50% keeps 70% of it) rather than
an all-or-nothing switch. Panic keeps a badly degraded cluster serving
rather than failing every request.

Worked examples (one priority unless stated; ``load`` is % of requests):

======================  ============  ==========  ===========================
endpoints healthy       health        panic       load
======================  ============  ==========  ===========================
1 of 1 (100%)           100           no          P0 100
2 of 3 (67%)            93            no          P0 100 (total scaled up)
1 of 2 (50%)            70            no          P0 100 (only level)
0 of 1 (0%)             0             yes (total) P0 100 over all endpoints
P0 2/3, P1 3/3          93, 100       no          P0 93, P1 7
P0 1/2, P1 2/2          70, 100       no          P0 70, P1 30
P0 0/3, P1 1/1          0, 100        no          P1 100
P0 1/3, P1 1/3          46, 46        yes, yes    P0 50, P1 50 (total panic:
                                                  by endpoint count)
======================  ============  ==========  ===========================

The same rows in ``"grpc"`` mode give P0 100 whenever P0 has a healthy
endpoint, P1 100 when only P1 has one, and a failure when none has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from proxyless.lb.state import EndpointState

__all__ = ["PriorityLoad", "PriorityMode", "priority_load"]

PriorityMode = Literal["envoy", "grpc"]


@dataclass(frozen=True, slots=True)
class PriorityLoad:
    """Per-priority load, health and panic flags.

    ``loads`` are integer percentages summing to 100, or all 0 when no
    priority can take traffic (grpc mode with nothing healthy, or no
    priorities at all). ``health`` is Envoy's per-level health (grpc mode:
    the plain healthy percentage). ``total_availability`` is the
    normalized total availability (0-100).
    """

    mode: PriorityMode
    loads: tuple[int, ...]
    health: tuple[int, ...]
    panic: tuple[bool, ...]
    total_availability: int

    def choose(self, value: int) -> int | None:
        """The priority for a random or hash ``value``: ``value % 100 + 1`` falls
        in a level's cumulative share (Envoy ``choosePriority``). None when
        no level takes load."""
        point = value % 100 + 1
        cumulative = 0
        for index, load in enumerate(self.loads):
            cumulative += load
            if point <= cumulative:
                return index
        return None

    @property
    def total_panic(self) -> bool:
        return bool(self.panic) and all(self.panic)

    def describe(self) -> str:
        """``P0 70% (health 70), P1 30% (health 100)``."""
        parts = []
        for index, load in enumerate(self.loads):
            flag = ", panic" if self.panic[index] else ""
            parts.append(f"P{index} {load}% (health {self.health[index]}{flag})")
        return ", ".join(parts) if parts else "no priorities"


def _counts(endpoints: Sequence[EndpointState], weighted: bool) -> tuple[int, int, int, int]:
    """(total, healthy, total count, healthy count)."""
    count = len(endpoints)
    healthy_count = 0
    total_weight = 0
    healthy_weight = 0
    for endpoint in endpoints:
        if endpoint.healthy:
            healthy_count += 1
            healthy_weight += endpoint.weight
        total_weight += endpoint.weight
    if weighted:
        return total_weight, healthy_weight, count, healthy_count
    return count, healthy_count, count, healthy_count


def priority_load(
    priorities: Sequence[Sequence[EndpointState]],
    overprovisioning_factor: int = 140,
    panic_threshold: float = 50.0,
    *,
    mode: PriorityMode = "envoy",
    weighted: bool = False,
) -> PriorityLoad:
    """Compute the load per priority (see the module docstring).

    ``weighted`` measures health by endpoint weight rather than count
    (Envoy's ``ClusterLoadAssignment.Policy.weighted_priority_health``; off
    by default as in Envoy). Panic always compares endpoint counts.
    """
    n = len(priorities)
    counts = [_counts(level, weighted) for level in priorities]
    if mode == "grpc":
        first = next((i for i, c in enumerate(counts) if c[3] > 0), None)
        loads = [0] * n
        if first is not None:
            loads[first] = 100
        health = tuple(100 * c[3] // c[2] if c[2] else 0 for c in counts)
        return PriorityLoad("grpc", tuple(loads), health, (False,) * n, 0 if first is None else 100)
    if mode != "envoy":
        raise ValueError(f"priority mode must be 'envoy' or 'grpc', not {mode!r}")
    health_list = [
        min(100, overprovisioning_factor * healthy // total) if total > 0 else 0
        for total, healthy, _, _ in counts
    ]
    availability = min(100, sum(health_list))
    loads = [0] * n
    if availability > 0:
        remaining = 100
        first_available = -1
        for index, level_health in enumerate(health_list):
            if first_available < 0 and level_health > 0:
                first_available = index
            share = min(remaining, level_health * 100 // availability)
            loads[index] = share
            remaining -= share
        if remaining:
            loads[first_available] += remaining
    threshold = min(100.0, panic_threshold)
    if threshold <= 0 and availability == 0:
        # Panic disabled and nothing healthy: Envoy puts the (unservable)
        # load on P0 so the pick fails there.
        if n:
            loads = [100] + [0] * (n - 1)
        return PriorityLoad("envoy", tuple(loads), tuple(health_list), (False,) * n, 0)
    panic = [
        availability < 100 and (100.0 * c[3] / c[2] if c[2] else 0.0) < threshold for c in counts
    ]
    if n and all(panic):
        loads = _total_panic_loads([c[2] for c in counts])
    return PriorityLoad("envoy", tuple(loads), tuple(health_list), tuple(panic), availability)


def _total_panic_loads(sizes: Sequence[int]) -> list[int]:
    total = sum(sizes)
    loads = [0] * len(sizes)
    if total == 0:
        loads[0] = 100
        return loads
    remaining = 100
    first_nonempty = -1
    for index, size in enumerate(sizes):
        if first_nonempty < 0 and size:
            first_nonempty = index
        loads[index] = 100 * size // total
        remaining -= loads[index]
    loads[first_nonempty] += remaining
    return loads
