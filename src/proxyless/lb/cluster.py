"""Per-cluster load balancer state: priorities, localities, pickers, drops.

One :class:`ClusterLoadBalancer` exists per cluster. It is fed whole
:class:`~proxyless.config.snapshot.ClusterConfig` snapshots and keeps one
:class:`~proxyless.lb.state.EndpointState` per endpoint address across
updates, so active-request counts and outlier ejections survive EDS pushes.
Endpoints that leave EDS are marked ``draining`` and handed back from
:meth:`ClusterLoadBalancer.update` so the connection layer can close them
once their in-flight requests finish (:meth:`ClusterLoadBalancer.apply`
hands back the new ones as well, so nobody compares address sets).

A pick (Envoy ``LoadBalancerBase::chooseHost``; gRFC A27/A42/A56):

1. choose a priority from the :class:`~proxyless.lb.priority.PriorityLoad`
   (by ``hash % 100`` for ring_hash/maglev, as Envoy's thread-aware
   balancers do, else at random);
2. in that priority, the picker built for the cluster's policy — with
   locality weighting when the policy is ``wrr_locality`` or the cluster
   sets ``locality_weighted_lb_config`` — or, when the priority is in
   panic, a picker over all its endpoints regardless of health;
3. skip endpoints whose health changed since the pickers were built, and
   endpoints whose connection is not ready while others are
   (:mod:`proxyless.lb.pickers`); when the chosen priority has no ready
   endpoint, a ready one of another priority is taken (gRFC A56 fails over
   from a priority that cannot connect).

Pickers are rebuilt only for priorities whose set of usable endpoints
changed. Health changes that do not come through EDS (outlier ejection)
should be made with :meth:`ClusterLoadBalancer.set_ejected` (or followed by
:meth:`ClusterLoadBalancer.refresh_health`), which rebuilds on the caller's
thread. Pickers also check health at pick time, and a pick that finds
nothing usable rebuilds before giving up, so a change made behind the
balancer's back is noticed at the latest when it matters.

Aggregate clusters (gRFC A37; Envoy ``aggregate`` cluster): the priorities
of the leaf clusters are concatenated in order, each keeping its own
cluster's policy; the aggregate's panic threshold applies. Drop overloads
are not applied for aggregate clusters.

EDS ``drop_overloads``: :meth:`ClusterLoadBalancer.check_drop` draws once
per category, in order, and returns the first category that drops the
request (gRFC A27 / Envoy ``DropOverload``).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from proxyless.config.snapshot import ClusterConfig
from proxyless.errors import ClusterNotAvailable, NoHealthyEndpoints
from proxyless.lb.build import build_picker, is_hash_policy, picker_members
from proxyless.lb.load_state import attach_load_state, detach_load_state, monotonic
from proxyless.lb.locality import locality_name
from proxyless.lb.peak_ewma import LatencyFeedback
from proxyless.lb.pickers import EndpointKey, Picker
from proxyless.lb.priority import PriorityLoad, PriorityMode, priority_load
from proxyless.lb.state import EndpointState
from proxyless.resources.model import (
    Cluster,
    ClusterLoadAssignment,
    DropOverload,
    LbPolicy,
    Locality,
    WrrLocality,
)

__all__ = ["ClusterLoadBalancer", "EndpointChanges"]

#: What a priority's picker was built from: its members (by identity, so an
#: endpoint that left and came back is a new member), their weights, and
#: each locality with its number of members (members are in locality order).
_Signature = tuple[tuple[EndpointState, ...], tuple[int, ...], tuple[tuple[Locality, int], ...]]
_weight = attrgetter("weight")


@dataclass(frozen=True, slots=True)
class EndpointChanges:
    """The endpoints an update added (new addresses, in priority and
    locality order) and removed (now ``draining``)."""

    added: tuple[EndpointState, ...]
    removed: tuple[EndpointState, ...]


class _Priority:
    """One priority level: its endpoints by locality and its pickers."""

    __slots__ = (
        "cluster",
        "endpoints",
        "localities",
        "locality_weights",
        "overprovisioning_factor",
        "panic_picker",
        "picker",
        "policy",
        "signature",
    )

    def __init__(
        self,
        cluster: str,
        policy: LbPolicy,
        localities: tuple[tuple[Locality, int, tuple[EndpointState, ...]], ...],
        locality_weighted: bool,
        overprovisioning_factor: int,
    ) -> None:
        self.cluster = cluster
        self.policy = policy
        self.localities = localities
        self.endpoints: tuple[EndpointState, ...] = (
            localities[0][2]
            if len(localities) == 1
            else tuple(e for _, _, eps in localities for e in eps)
        )
        self.locality_weights: dict[Locality, int] | None = (
            {loc: weight for loc, weight, _ in localities} if locality_weighted else None
        )
        self.overprovisioning_factor = overprovisioning_factor
        self.picker: Picker | None = None
        self.panic_picker: Picker | None = None
        self.signature: _Signature | None = None

    def current_members(self) -> tuple[list[EndpointState], _Signature]:
        """The endpoints a (non-panic) picker includes now, and their signature."""
        policy = self.policy
        if len(self.localities) == 1:
            locality, _, states = self.localities[0]
            members = picker_members(policy, states)
            groups: tuple[tuple[Locality, int], ...] = ((locality, len(members)),)
        else:
            members = []
            counts = []
            for locality, _, states in self.localities:
                chosen = picker_members(policy, states)
                members += chosen
                counts.append((locality, len(chosen)))
            groups = tuple(counts)
        return members, (tuple(members), tuple(map(_weight, members)), groups)

    def same_shape(self, other: _Priority) -> bool:
        return (
            self.policy == other.policy
            and self.locality_weights == other.locality_weights
            and self.overprovisioning_factor == other.overprovisioning_factor
        )


class _View:
    """What a pick reads, swapped as one reference so a pick never mixes an
    old priority list with a new load."""

    __slots__ = ("endpoints", "hash_based", "load", "priorities", "single")

    def __init__(
        self, priorities: tuple[_Priority, ...], load: PriorityLoad, hash_based: bool
    ) -> None:
        self.priorities = priorities
        self.endpoints: tuple[EndpointState, ...] = (
            priorities[0].endpoints
            if len(priorities) == 1
            else tuple(e for p in priorities for e in p.endpoints)
        )
        self.load = load
        self.hash_based = hash_based
        self.single = len(load.loads) == 1 and load.loads[0] == 100 and not load.panic[0]


class ClusterLoadBalancer:
    """Load balancing state of one cluster (see the module docstring).

    ``rng`` seeds picker construction (round-robin start offsets, EDF
    phases, pick_first shuffles); per-pick randomness is passed to
    :meth:`pick`. ``mode`` selects the priority behaviour
    (:mod:`proxyless.lb.priority`).
    """

    __slots__ = (
        "_clock",
        "_drops",
        "_lock",
        "_panic_threshold",
        "_rng",
        "_states",
        "_view",
        "cluster",
        "latency",
        "mode",
        "name",
    )

    def __init__(
        self,
        cluster_config: ClusterConfig,
        rng: random.Random,
        *,
        mode: PriorityMode = "envoy",
        clusters: Mapping[str, ClusterConfig] | None = None,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        if mode not in ("envoy", "grpc"):
            raise ValueError(f"priority mode must be 'envoy' or 'grpc', not {mode!r}")
        self.name = cluster_config.name
        self.mode: PriorityMode = mode
        self.cluster: Cluster | None = None
        self._rng = rng
        self._clock = clock
        #: the peak-EWMA hooks of the request path, or None (proxyless.lb.peak_ewma)
        self.latency: LatencyFeedback | None = None
        self._states: dict[EndpointKey, EndpointState] = {}
        self._view = _View((), PriorityLoad(mode, (), (), (), 0), False)
        self._drops: tuple[DropOverload, ...] = ()
        self._panic_threshold = 50.0
        # Serializes update/refresh (config side only; picks take no lock).
        self._lock = threading.Lock()
        self.update(cluster_config, clusters)

    # -- configuration -------------------------------------------------------

    def update(
        self,
        cluster_config: ClusterConfig,
        clusters: Mapping[str, ClusterConfig] | None = None,
    ) -> list[EndpointState]:
        """Take a new snapshot of the cluster; return the endpoints that left.

        Endpoints that stay keep their :class:`EndpointState` (counters,
        ejection). Removed ones are marked ``draining``. ``clusters`` resolves
        an aggregate cluster's children.
        """
        return list(self.apply(cluster_config, clusters).removed)

    def apply(
        self,
        cluster_config: ClusterConfig,
        clusters: Mapping[str, ClusterConfig] | None = None,
    ) -> EndpointChanges:
        """:meth:`update`, returning the endpoints added as well as those removed."""
        with self._lock:
            return self._update_locked(cluster_config, clusters)

    def _update_locked(
        self,
        cluster_config: ClusterConfig,
        clusters: Mapping[str, ClusterConfig] | None,
    ) -> EndpointChanges:
        if cluster_config.name != self.name:
            raise ValueError(
                f"ClusterLoadBalancer for {self.name!r} given config of {cluster_config.name!r}"
            )
        cluster = cluster_config.cluster
        if cluster_config.error is not None or cluster is None:
            raise ClusterNotAvailable(
                f"cluster {self.name!r} is not usable: {cluster_config.error or 'no Cluster resource'}"
            )
        sources: list[tuple[Cluster, ClusterLoadAssignment]] = []
        if cluster_config.children:
            for child in cluster_config.children:
                config = (clusters or {}).get(child)
                if (
                    config is not None
                    and config.usable
                    and config.cluster is not None
                    and config.endpoints is not None
                ):
                    sources.append((config.cluster, config.endpoints))
            drops: tuple[DropOverload, ...] = ()
        else:
            assignment = cluster_config.endpoints or ClusterLoadAssignment(self.name, ())
            sources.append((cluster, assignment))
            drops = assignment.drop_overloads

        old_states = self._states
        states: dict[EndpointKey, EndpointState] = {}
        added: list[EndpointState] = []
        priorities: list[_Priority] = []
        for source, assignment in sources:
            weighted = isinstance(source.lb_policy, WrrLocality) or source.locality_weighted_lb
            for level in assignment.priorities:
                index = len(priorities)
                localities = []
                for group in level:
                    members = []
                    for endpoint in group.endpoints:
                        key = (endpoint.address, endpoint.port)
                        if key in states:
                            continue  # duplicate address (only possible across aggregate children)
                        state = old_states.get(key)
                        if state is None:
                            state = EndpointState(endpoint, group.locality, index, source.name)
                            added.append(state)
                        else:
                            state.update(endpoint, group.locality, index, source.name)
                        states[key] = state
                        members.append(state)
                    localities.append((group.locality, group.weight, tuple(members)))
                priorities.append(
                    _Priority(
                        source.name,
                        source.lb_policy,
                        tuple(localities),
                        weighted,
                        assignment.overprovisioning_factor,
                    )
                )

        removed = tuple([state for key, state in old_states.items() if key not in states])
        for state in removed:
            state.draining = True
            if state.orca is not None:
                detach_load_state(state)

        previous_priorities = self._view.priorities
        for index, priority in enumerate(priorities):
            if index < len(previous_priorities):
                previous = previous_priorities[index]
                if priority.same_shape(previous):
                    priority.picker = previous.picker
                    priority.signature = previous.signature

        self.latency = attach_load_state(((p.policy, p.endpoints) for p in priorities), self._clock)
        self.cluster = cluster
        self._states = states
        self._drops = drops
        self._panic_threshold = cluster.healthy_panic_threshold
        self._refresh_locked(tuple(priorities))
        return EndpointChanges(tuple(added), removed)

    def set_ejected(self, endpoint: EndpointState, ejected: bool, *, refresh: bool = True) -> None:
        """Eject or restore ``endpoint`` (outlier detection) and rebuild the
        affected pickers now, on the caller's thread, so no request pays for
        it. Pass ``refresh=False`` when changing several endpoints, then call
        :meth:`refresh_health` once."""
        if endpoint.ejected != ejected:
            endpoint.ejected = ejected
            if refresh:
                self.refresh_health()

    def refresh_health(self) -> None:
        """Recompute priority load and rebuild the pickers whose usable
        endpoints changed. Call after changing health outside :meth:`update`."""
        with self._lock:
            self._refresh_locked(self._view.priorities)

    def _refresh_locked(self, priorities: tuple[_Priority, ...]) -> None:
        for priority in priorities:
            members, signature = priority.current_members()
            if priority.picker is None or signature != priority.signature:
                priority.picker = build_picker(
                    priority.policy,
                    priority.endpoints,
                    self._rng,
                    locality_weights=priority.locality_weights,
                    overprovisioning_factor=priority.overprovisioning_factor,
                    clock=self._clock,
                    members=members,
                )
                priority.signature = signature
            priority.panic_picker = None
        factor = priorities[0].overprovisioning_factor if priorities else 140
        load = priority_load(
            [p.endpoints for p in priorities],
            factor,
            self._panic_threshold,
            mode=self.mode,
        )
        self._view = _View(priorities, load, any(is_hash_policy(p.policy) for p in priorities))

    # -- request path --------------------------------------------------------

    def check_drop(self, rng: random.Random) -> DropOverload | None:
        """The EDS drop category that drops this request, or None."""
        for drop in self._drops:
            if rng.randrange(1_000_000) < drop.per_million:
                return drop
        return None

    def pick(
        self,
        request_hash: int | None,
        rng: random.Random,
        exclude: Container[EndpointKey] = (),
    ) -> EndpointState:
        """Choose an endpoint; raise :class:`~proxyless.errors.NoHealthyEndpoints`.

        ``request_hash`` is used by ring_hash/maglev (a random one is drawn
        when None); ``exclude`` holds endpoint keys to avoid while another
        choice exists (a retry's previous hosts).
        """
        view = self._view
        if view.hash_based and request_hash is None:
            request_hash = rng.getrandbits(64)
        if view.single:
            picker = view.priorities[0].picker
            assert picker is not None
            chosen = picker.pick(rng, request_hash, exclude)
            if chosen is not None:
                return chosen
            return self._pick_again(request_hash, rng, exclude)
        value = (
            request_hash
            if view.hash_based and request_hash is not None
            else int(rng.random() * 100)
        )
        index = view.load.choose(value)
        if index is not None:
            chosen = self._picker_for(view, index).pick(rng, request_hash, exclude)
            if chosen is not None:
                if chosen.ready:
                    return chosen
                return self._ready_elsewhere(view, index, request_hash, rng, exclude) or chosen
        return self._pick_again(request_hash, rng, exclude)

    def _ready_elsewhere(
        self,
        view: _View,
        skip: int,
        request_hash: int | None,
        rng: random.Random,
        exclude: Container[EndpointKey],
    ) -> EndpointState | None:
        """The chosen priority has no ready endpoint: a ready, not excluded
        endpoint of another priority (in priority order), if one has it, as
        gRFC A56 fails over from a priority whose connections are not up."""
        for index, priority in enumerate(view.priorities):
            picker = priority.picker
            if index == skip or picker is None:
                continue
            other = picker.pick(rng, request_hash, exclude)
            if other is not None and other.ready and other.key not in exclude:
                return other
        return None

    def _picker_for(self, view: _View, index: int) -> Picker:
        priority = view.priorities[index]
        if not view.load.panic[index]:
            assert priority.picker is not None
            return priority.picker
        panic_picker = priority.panic_picker
        if panic_picker is None:
            panic_picker = priority.panic_picker = build_picker(
                priority.policy,
                priority.endpoints,
                self._rng,
                locality_weights=priority.locality_weights,
                overprovisioning_factor=priority.overprovisioning_factor,
                panic=True,
                clock=self._clock,
            )
        return panic_picker

    def _pick_again(
        self, request_hash: int | None, rng: random.Random, exclude: Container[EndpointKey]
    ) -> EndpointState:
        """The chosen priority could not serve: health changed since the
        pickers were built. Rebuild, then try every priority that takes load."""
        self.refresh_health()
        view = self._view
        for index, share in enumerate(view.load.loads):
            if share <= 0:
                continue
            chosen = self._picker_for(view, index).pick(rng, request_hash, exclude)
            if chosen is not None:
                return chosen
        raise NoHealthyEndpoints(self.no_healthy_message())

    def no_healthy_message(self) -> str:
        """Why no endpoint can be chosen, per priority."""
        priorities = self._view.priorities
        if not priorities:
            return f"cluster {self.name!r} has no endpoints"
        parts = []
        for index, priority in enumerate(priorities):
            total = len(priority.endpoints)
            healthy = sum(1 for e in priority.endpoints if e.healthy)
            ejected = sum(1 for e in priority.endpoints if e.ejected)
            unhealthy = sum(1 for e in priority.endpoints if not e.endpoint.usable)
            parts.append(
                f"priority {index}: {total} endpoints, {healthy} healthy, "
                f"{unhealthy} unhealthy in EDS, {ejected} ejected"
            )
        mode = "" if self.mode == "envoy" else " (grpc priority mode: no panic)"
        return f"no healthy endpoint in cluster {self.name!r}{mode}: " + "; ".join(parts)

    # -- introspection -------------------------------------------------------

    @property
    def endpoints(self) -> tuple[EndpointState, ...]:
        """Every current endpoint, in priority/locality order."""
        return self._view.endpoints

    @property
    def load(self) -> PriorityLoad:
        """The current priority load."""
        return self._view.load

    @property
    def drop_overloads(self) -> tuple[DropOverload, ...]:
        return self._drops

    def endpoint(self, key: EndpointKey) -> EndpointState | None:
        """The state of the endpoint with ``key``, if it is current."""
        return self._states.get(key)

    def debug_state(self) -> dict[str, Any]:
        """Priorities, localities and endpoints with their health, for
        ``explain`` and status output."""
        view = self._view
        load = view.load
        priorities = []
        for index, priority in enumerate(view.priorities):
            localities = []
            for locality, weight, members in priority.localities:
                localities.append(
                    {
                        "locality": locality_name(locality),
                        "weight": weight,
                        "endpoints": [_endpoint_debug(e) for e in members],
                    }
                )
            priorities.append(
                {
                    "priority": index,
                    "cluster": priority.cluster,
                    "policy": type(priority.policy).__name__,
                    "load_percent": load.loads[index],
                    "health_percent": load.health[index],
                    "panic": load.panic[index],
                    "picker": repr(priority.picker),
                    "localities": localities,
                }
            )
        return {
            "cluster": self.name,
            "priority_mode": self.mode,
            "panic_threshold": self._panic_threshold,
            "total_availability": load.total_availability,
            "drop_overloads": [
                {"category": d.category, "per_million": d.per_million} for d in self._drops
            ],
            "priorities": priorities,
        }

    def __repr__(self) -> str:
        return f"ClusterLoadBalancer({self.name!r}, {len(self._states)} endpoints, {self._view.load.describe()})"


def _endpoint_debug(e: EndpointState) -> dict[str, Any]:
    state: dict[str, Any] = {
        "address": e.address,
        "health": e.endpoint.health,
        "weight": e.weight,
        "healthy": e.healthy,
        "ejected": e.ejected,
        "draining": e.draining,
        "connectivity": e.connectivity,
        "active_requests": e.active_requests,
    }
    if e.orca is not None:  # weighted round robin: the last ORCA weight
        state["orca_weight"] = e.orca.weight
    if e.rtt is not None:  # peak EWMA: the RTT estimate as last updated
        state["rtt_ms"] = round(e.rtt.estimate * 1000, 3)
    return state
