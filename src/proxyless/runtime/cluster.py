"""Per-cluster runtime state, shared by every target and transport.

A :class:`ClusterRuntime` is what the request path needs of one cluster: its
load balancer (:mod:`proxyless.lb`), circuit breakers and retry budget, and
outlier detector (:mod:`proxyless.resilience`). One exists per cluster name
per Mesh; config pushes update it in place so counters, ejections and
active-request counts survive them (Envoy keeps a cluster's state across CDS
updates that do not change it the same way).

The :class:`ClusterRegistry` applies whole snapshots on the Mesh thread and
tells endpoint pools (``retain``/``release``) when an address joins or leaves
a cluster, which is how removed endpoints get drained: the pool closes a
connection once no cluster lists its address and its in-flight calls ended.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from proxyless.clock import Clock, SystemClock, TimerHandle
from proxyless.config.snapshot import ClusterConfig, XdsConfig
from proxyless.errors import ClusterNotAvailable
from proxyless.lb.cluster import ClusterLoadBalancer, EndpointChanges
from proxyless.lb.priority import PriorityMode
from proxyless.lb.state import EndpointState
from proxyless.resilience.breaker import ClusterCircuitBreakers
from proxyless.resilience.outlier import OutlierDetector
from proxyless.security.credentials import ClusterCredentials, SecretSources

__all__ = ["ClusterRegistry", "ClusterRuntime", "EndpointPool", "release_refs", "retain_refs"]

log = logging.getLogger("proxyless.runtime")


class EndpointPool(Protocol):
    """Connections per endpoint address, told when addresses join (``retain``)
    or leave (``release``) a cluster; each call carries a whole update."""

    def retain(self, addresses: Sequence[str]) -> None: ...

    def release(self, addresses: Sequence[str]) -> None: ...


def retain_refs(refs: dict[str, int], addresses: Sequence[str]) -> None:
    """Count one more cluster listing each of ``addresses`` (an EndpointPool's books)."""
    get = refs.get
    for address in addresses:
        refs[address] = get(address, 0) + 1


def release_refs(refs: dict[str, int], addresses: Sequence[str]) -> set[str]:
    """Count one cluster less for each of ``addresses``; return those no cluster lists now."""
    gone: set[str] = set()
    get = refs.get
    for address in addresses:
        left = get(address, 0) - 1
        if left > 0:
            refs[address] = left
        else:
            refs.pop(address, None)
            gone.add(address)
    return gone


class ClusterRuntime:
    """Load balancer + breakers + outlier detection of one cluster."""

    __slots__ = (
        "_clock",
        "_rng",
        "_schedule",
        "_sources",
        "_sweep_timer",
        "breakers",
        "config",
        "drops",
        "lb",
        "name",
        "outlier",
        "tls",
    )

    def __init__(
        self,
        config: ClusterConfig,
        clusters: Mapping[str, ClusterConfig],
        rng: random.Random,
        mode: PriorityMode,
        clock: Clock,
        schedule: Callable[[Callable[[], None]], None] | None = None,
        sources: SecretSources | None = None,
    ) -> None:
        self.name = config.name
        self._sources = sources
        self._schedule = schedule
        self.config = config
        self._rng = rng
        self._clock = clock
        self.lb = ClusterLoadBalancer(config, rng, mode=mode, clusters=clusters)
        #: requests dropped by EDS ``drop_overloads``, per category (load reports)
        self.drops: dict[str, int] = {}
        cluster = config.cluster
        self.breakers = ClusterCircuitBreakers(
            config.name, cluster.circuit_breakers if cluster is not None else None
        )
        self.outlier: OutlierDetector | None = None
        self._sweep_timer: TimerHandle | None = None
        self._sync_outlier()
        #: the credentials of a TLS cluster's connections (None: plaintext)
        self.tls: ClusterCredentials | None = None
        self._sync_tls()

    def update(
        self, config: ClusterConfig, clusters: Mapping[str, ClusterConfig]
    ) -> EndpointChanges:
        """Take a new snapshot of the cluster; the endpoints it added and removed."""
        self.config = config
        changes = self.lb.apply(config, clusters)
        if config.cluster is not None:
            self.breakers.update(config.cluster.circuit_breakers)
        self._sync_outlier()
        self._sync_tls()
        return changes

    # -- outlier detection (Mesh thread) ---------------------------------------------
    def _sync_tls(self) -> None:
        """Follow the cluster's ``transport_socket``: TLS clusters get
        :class:`~proxyless.security.credentials.ClusterCredentials`."""
        cluster = self.config.cluster
        context = cluster.upstream_tls if cluster is not None else None
        if context is None:
            if self.tls is not None:
                self.tls.close()
                self.tls = None
        elif self.tls is None:
            self.tls = ClusterCredentials(self.name, context, self._sources or SecretSources())
        else:
            self.tls.update(context)

    def _sync_outlier(self) -> None:
        cluster = self.config.cluster
        od = cluster.outlier_detection if cluster is not None else None
        if od is None:
            if self.outlier is not None:
                self.close()
            return
        if self.outlier is None:
            self.outlier = OutlierDetector(
                self.name, od, self._clock, self._rng, on_change=self.lb.refresh_health
            )
        elif self.outlier.config is not od:
            self.outlier.update_config(od)
        self.outlier.set_endpoints(self.lb.endpoints)
        self._arm_sweep()

    def _arm_sweep(self) -> None:
        """(Re)start the sweep timer on the Mesh thread."""
        if self._schedule is not None:
            self._schedule(self._arm_sweep_now)
        else:
            self._arm_sweep_now()

    def _arm_sweep_now(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        detector = self.outlier
        if detector is None:
            return
        try:
            delay = detector.next_sweep_in(self._clock.monotonic())
            self._sweep_timer = self._clock.call_later(delay, self._sweep)
        except RuntimeError:  # no running loop: the owner sweeps by hand (tests)
            self._sweep_timer = None

    def _sweep(self) -> None:
        self._sweep_timer = None
        detector = self.outlier
        if detector is None:
            return
        try:
            detector.sweep(self._clock.monotonic())
        except Exception:
            log.exception("outlier detection sweep failed for cluster %r", self.name)
        self._arm_sweep_now()

    def close(self) -> None:
        """Stop outlier detection (the cluster left every snapshot)."""
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        if self.outlier is not None:
            self.outlier.close()
            self.outlier = None
        if self.tls is not None:
            self.tls.close()
            self.tls = None

    def endpoints(self) -> tuple[EndpointState, ...]:
        return self.lb.endpoints

    def __repr__(self) -> str:
        return f"ClusterRuntime({self.name!r}, {len(self.lb.endpoints)} endpoints)"


class ClusterRegistry:
    """Every :class:`ClusterRuntime` of a Mesh, kept in step with snapshots."""

    def __init__(
        self,
        rng: random.Random,
        *,
        mode: PriorityMode = "envoy",
        clock: Clock | None = None,
        schedule: Callable[[Callable[[], None]], None] | None = None,
        sources: SecretSources | None = None,
    ) -> None:
        self._rng = rng
        self._schedule = schedule
        #: where TLS clusters' certificates come from (the Mesh's handlers)
        self.sources = sources or SecretSources()
        self._clock: Clock = clock or SystemClock()
        self.mode: PriorityMode = mode
        self._clusters: dict[str, ClusterRuntime] = {}
        self._by_listener: dict[str, frozenset[str]] = {}
        self._pools: list[EndpointPool] = []
        self._lock = threading.Lock()
        #: called once a cluster asks for load reports (``lrs_server``)
        self.on_load_reporting: Callable[[], None] | None = None

    def add_pool(self, pool: EndpointPool) -> None:
        """Tell ``pool`` about every address now listed and every later change."""
        with self._lock:
            if any(p is pool for p in self._pools):
                return
            self._pools.append(pool)
            for rt in self._clusters.values():
                pool.retain([es.address for es in rt.endpoints()])

    def get(self, name: str) -> ClusterRuntime | None:
        return self._clusters.get(name)

    def leaf_of(self, cluster: ClusterRuntime, endpoint: EndpointState) -> ClusterRuntime:
        """The cluster whose transport socket and protocol options say how to
        reach ``endpoint``, picked from ``cluster``: the cluster itself, or for
        an aggregate cluster the leaf that lists the endpoint (gRFC A37:
        each child keeps its own ``transport_socket``). An aggregate has none
        of its own, so when that leaf is gone (the endpoint was picked just
        before an update) this fails closed: ``ClusterNotAvailable``, never
        the aggregate's plaintext."""
        children = cluster.config.children
        if not children:
            return cluster
        name = endpoint.cluster
        leaf = self._clusters.get(name) if name in children else None
        if leaf is None:
            raise ClusterNotAvailable(
                f"endpoint {endpoint.address} of aggregate cluster {cluster.name!r} came "
                f"from cluster {name!r}, which it no longer has"
            )
        return leaf

    def apply(self, snap: XdsConfig) -> None:
        """Bring the runtimes of ``snap``'s clusters up to date (Mesh thread)."""
        if not snap.usable:
            return
        reports_load = False  # a new or changed cluster asks for load reports
        with self._lock:
            for name, cc in snap.clusters.items():
                if not cc.usable:
                    continue
                rt = self._clusters.get(name)
                if rt is None or rt.config.cluster is not cc.cluster:
                    reports_load = reports_load or (
                        cc.cluster is not None and cc.cluster.lrs_server
                    )
                if rt is None:
                    try:
                        rt = ClusterRuntime(
                            cc,
                            snap.clusters,
                            self._rng,
                            self.mode,
                            self._clock,
                            self._schedule,
                            self.sources,
                        )
                    except Exception:
                        log.exception("cannot set up cluster %r", name)
                        continue
                    self._clusters[name] = rt
                    self._notify([es.address for es in rt.endpoints()], [])
                    continue
                old = rt.config
                if not cc.children and old.cluster is cc.cluster and old.endpoints is cc.endpoints:
                    rt.config = cc
                    continue
                try:
                    changes = rt.update(cc, snap.clusters)
                except Exception:
                    log.exception("cannot update cluster %r", name)
                    continue
                self._notify(
                    [es.address for es in changes.added], [es.address for es in changes.removed]
                )
            self._by_listener[snap.listener_name] = frozenset(snap.clusters)
            self._collect()
        hook = self.on_load_reporting
        if hook is not None and reports_load:
            self.on_load_reporting = None  # once
            hook()

    def reporting(self) -> dict[str, ClusterRuntime]:
        """The clusters whose load goes to the LRS server (``lrs_server`` set)."""
        return {
            rt.name: rt
            for rt in list(self._clusters.values())
            if rt.config.cluster is not None and rt.config.cluster.lrs_server
        }

    def close(self) -> None:
        """Drop every cluster: stop outlier detection and release every
        address from the pools (the Mesh is closing)."""
        with self._lock:
            self._by_listener.clear()
            self._collect()
            self._pools.clear()

    def _collect(self) -> None:
        live: set[str] = set()
        for names in self._by_listener.values():
            live |= names
        for name in [n for n in self._clusters if n not in live]:
            rt = self._clusters.pop(name)
            rt.close()
            self._notify([], [es.address for es in rt.endpoints()])

    def _notify(self, added: list[str], removed: list[str]) -> None:
        for pool in self._pools:
            if added:
                pool.retain(added)
            if removed:
                pool.release(removed)

    def __iter__(self) -> Any:
        return iter(list(self._clusters.values()))

    def __len__(self) -> int:
        return len(self._clusters)
