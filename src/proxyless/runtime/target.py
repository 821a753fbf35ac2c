"""What a channel or transport needs of one target, transport-agnostic.

A :class:`TargetRuntime` follows the target's :class:`~proxyless.config.ConfigWatcher`
and keeps the newest usable snapshot with its virtual-host index, swapped
by reference. Per request it answers, without locks or I/O
(``docs/architecture.md``, "The request path"): which route and cluster (:func:`proxyless.routing.resolve`),
which cluster runtime, and — when there is no usable config yet — an error
that says why, with the status of every xDS resource involved.

The gRPC channel and the httpx transports both call it; neither knows
about xDS resources. It reads what it needs of its Mesh through
:class:`MeshView`, so this module does not depend on ``proxyless.mesh``.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Protocol

from proxyless.config.snapshot import XdsConfig
from proxyless.errors import ClusterNotAvailable, ControlPlaneUnreachable, XdsConfigError
from proxyless.resilience.retry import CompiledRetryPolicy, HedgePlan
from proxyless.resources.model import FaultFilterConfig
from proxyless.routing import (
    RequestInfo,
    RouteResult,
    VirtualHostCache,
    grpc_cap,
    http_cap,
    resolve,
)
from proxyless.runtime.cluster import ClusterRegistry, ClusterRuntime
from proxyless.target import Target

if TYPE_CHECKING:
    from proxyless.bootstrap import Bootstrap
    from proxyless.config import ConfigWatcher
    from proxyless.xds_client import XdsClient

__all__ = [
    "DEFAULT_CONFIG_WAIT",
    "MeshView",
    "RoutePlan",
    "TargetRuntime",
    "deterministic",
    "path_determined",
]

#: How long a call waits for the first config when it has no deadline: a
#: little longer than the does-not-exist timer, so a missing resource is
#: reported as such rather than as a timeout.
DEFAULT_CONFIG_WAIT = 20.0


_ROUTE_MEMO_SIZE = 256
_deterministic_vhosts: dict[int, tuple[object, bool]] = {}


def deterministic(result: RouteResult) -> bool:
    """Whether routing this request again would give the same result: a
    single-cluster action, and no route of the virtual host matching by a
    random runtime fraction."""
    action = result.route_action
    if action is None or action.weighted_clusters is not None or action.cluster_header:
        return False
    vhost = result.virtual_host
    hit = _deterministic_vhosts.get(id(vhost))
    if hit is not None and hit[0] is vhost:
        return hit[1]
    value = all(r.match.runtime_fraction_per_million is None for r in vhost.routes)
    if len(_deterministic_vhosts) > 1024:
        _deterministic_vhosts.clear()
    _deterministic_vhosts[id(vhost)] = (vhost, value)
    return value


_path_determined: dict[int, tuple[object, object, bool]] = {}


def path_determined(result: RouteResult) -> bool:
    """Whether every request with the same authority and ``:path`` routes to
    this same result: :func:`deterministic`, and no route of the virtual
    host up to and including the matched one looks at headers, query
    parameters, the gRPC content-type or a runtime fraction. Transports use
    it to route such requests once per snapshot (their fast path)."""
    route = result.route
    hit = _path_determined.get(id(route))
    vhost = result.virtual_host
    if hit is not None and hit[0] is route and hit[1] is vhost:
        return hit[2]
    value = deterministic(result)
    if value:
        for r in vhost.routes:
            m = r.match
            if (
                m.headers
                or m.query_parameters
                or m.grpc
                or m.runtime_fraction_per_million is not None
            ):
                value = False
                break
            if r is route:
                break
    if len(_path_determined) > 4096:
        _path_determined.clear()
    _path_determined[id(route)] = (route, vhost, value)
    return value


class MeshView(Protocol):
    """What a :class:`TargetRuntime` reads of the Mesh that owns it: the
    bootstrap (listener name, node id), the shared RNG, the cluster
    registry, the xDS client (resource status for errors) and the shared
    config watcher of a listener. :class:`proxyless.Mesh` provides it."""

    @property
    def bootstrap(self) -> Bootstrap: ...

    @property
    def rng(self) -> random.Random: ...

    @property
    def clusters(self) -> ClusterRegistry: ...

    @property
    def xds_client(self) -> XdsClient: ...

    def config(self, listener_name: str, host: str | None = None) -> ConfigWatcher: ...


class RoutePlan:
    """What every request on one route of one snapshot shares, worked out once:
    the cluster runtime and its breaker, the compiled retry policy, the
    deadline cap and the listener's fault filters."""

    __slots__ = ("breaker", "cap", "cluster", "faults", "hedge", "retry_policy", "route")

    def __init__(
        self,
        route: RouteResult,
        cluster: ClusterRuntime,
        retry_policy: CompiledRetryPolicy,
        cap: float | None,
        faults: tuple[tuple[str, FaultFilterConfig], ...],
    ) -> None:
        self.route = route
        self.cluster = cluster
        self.breaker = cluster.breakers.default
        self.retry_policy = retry_policy
        self.cap = cap
        self.faults = faults
        self.hedge = HedgePlan.from_policy(route.hedge_policy)


class TargetRuntime:
    """Routing state of one target (see the module docstring)."""

    def __init__(self, mesh: MeshView, target: Target, *, every_host: bool = True) -> None:
        self.mesh = mesh
        self.target = target
        self.authority = target.name
        #: the host a snapshot must cover for this runtime's requests (None:
        #: any, they may carry any authority); see ``Mesh.target``
        self.host: str | None = None if every_host else self.authority
        self.listener_name = target.listener_name(mesh.bootstrap)
        self.rng: random.Random = mesh.rng
        self._state: tuple[XdsConfig, VirtualHostCache] | None = None
        self._faults: tuple[XdsConfig | None, tuple[tuple[str, FaultFilterConfig], ...]] = (
            None,
            (),
        )
        self._last: XdsConfig | None = None
        #: cluster runtimes as they were when recent snapshots were published,
        #: so a request still routing on an older snapshot finds a cluster the
        #: newest config dropped (the runtime lives while anything holds it)
        self._runtimes: dict[int, dict[str, ClusterRuntime]] = {}
        self._plans: tuple[XdsConfig | None, dict[tuple[int, bool], RoutePlan]] = (None, {})
        self._route_memo: tuple[
            tuple[XdsConfig, VirtualHostCache] | None,
            dict[int, tuple[RequestInfo, RouteResult]],
        ] = (None, {})
        self.watcher = mesh.config(self.listener_name, self.host)
        self.watcher.add_listener(self._on_snapshot)

    def _on_snapshot(self, snap: XdsConfig) -> None:
        self._last = snap
        registry = self.mesh.clusters
        runtimes = {name: rt for name in snap.clusters if (rt := registry.get(name)) is not None}
        recent = dict(self._runtimes)
        recent[snap.version] = runtimes
        for version in sorted(recent)[:-4]:
            del recent[version]
        self._runtimes = recent
        if snap.usable and snap.route_config is not None:
            if not snap.covers(self.host):
                return  # published before this runtime's hosts were added: wait
            self._state = (snap, VirtualHostCache(snap.route_config))
        elif snap.error is not None and not isinstance(snap.error, ControlPlaneUnreachable):
            # The listener or its routes are gone or invalid: stop routing with
            # the old config (resource error semantics).
            self._state = None

    # -- request path -------------------------------------------------------------
    @property
    def current(self) -> tuple[XdsConfig, VirtualHostCache] | None:
        """The usable snapshot and its virtual-host index, or None (no wait)."""
        return self._state

    def config_error(self, error: Exception | None, waited: float = 0.0) -> XdsConfigError:
        """The error for "no usable config", with the status of every xDS
        resource involved and the xDS server's connection state."""
        return self._config_error(error, waited)

    def state(
        self, timeout: float | None = None, wait_for_ready: bool = False
    ) -> tuple[XdsConfig, VirtualHostCache]:
        """The current usable snapshot; waits for the first one.

        Waits up to ``timeout`` (else :data:`DEFAULT_CONFIG_WAIT`). Fails at
        once on a config error unless ``wait_for_ready``.
        """
        st = self._state
        if st is not None:
            return st
        return self._wait_state(timeout, wait_for_ready)

    def _wait_state(
        self, timeout: float | None, wait_for_ready: bool
    ) -> tuple[XdsConfig, VirtualHostCache]:
        budget = DEFAULT_CONFIG_WAIT if timeout is None else max(0.0, timeout)
        deadline = time.monotonic() + budget
        while True:
            st = self._state
            if st is not None:
                return st
            last = self._last
            if last is not None and last.error is not None and not wait_for_ready:
                raise self._config_error(last.error)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._config_error(None, waited=budget)
            if last is None:
                self.watcher.wait(min(remaining, 0.05))
            else:
                time.sleep(min(remaining, 0.02))

    def route(
        self,
        request: RequestInfo,
        state: tuple[XdsConfig, VirtualHostCache],
        *,
        shared: bool = False,
    ) -> RouteResult:
        """Route ``request``. A ``shared`` request object (a channel's calls
        without metadata share one per method) whose routing involves no
        randomness is routed once per snapshot."""
        if not shared:
            return resolve(state[1], request, self.rng)
        memo = self._route_memo
        if memo[0] is state:
            hit = memo[1].get(id(request))
            if hit is not None and hit[0] is request:
                return hit[1]
        result = resolve(state[1], request, self.rng)
        if deterministic(result):
            if memo[0] is not state:
                memo = self._route_memo = (state, {})
            if len(memo[1]) < _ROUTE_MEMO_SIZE:
                memo[1][id(request)] = (request, result)
        return result

    def plan(self, snap: XdsConfig, route: RouteResult, is_grpc: bool) -> RoutePlan:
        """The :class:`RoutePlan` of a forwarding ``route`` in ``snap``;
        raises ClusterNotAvailable."""
        snap_plans = self._plans
        if snap_plans[0] is not snap:
            snap_plans = self._plans = (snap, {})
        key = (id(route), is_grpc)
        plan = snap_plans[1].get(key)
        if plan is not None and plan.route is route:
            return plan
        name = route.cluster_name
        action = route.route_action
        assert name is not None and action is not None
        cluster = self.cluster(snap, name)
        listener = snap.listener
        cap = (
            grpc_cap(action, listener.max_stream_duration if listener else None)
            if is_grpc
            else http_cap(action)
        )
        plan = RoutePlan(
            route,
            cluster,
            CompiledRetryPolicy.from_policy(route.retry_policy, is_grpc),
            cap,
            self.fault_filters(snap),
        )
        snap_plans[1][key] = plan
        return plan

    def fault_filters(self, snap: XdsConfig) -> tuple[tuple[str, FaultFilterConfig], ...]:
        """The listener's fault filters as (filter name, config), in chain order."""
        cached = self._faults
        if cached[0] is snap:
            return cached[1]
        filters = tuple(
            (f.name, f.config)
            for f in (snap.listener.http_filters if snap.listener else ())
            if isinstance(f.config, FaultFilterConfig)
        )
        self._faults = (snap, filters)
        return filters

    def cluster(self, snap: XdsConfig, name: str) -> ClusterRuntime:
        """The runtime of cluster ``name``; raises ClusterNotAvailable."""
        cc = snap.clusters.get(name)
        if cc is not None and cc.error is None:
            rt = self.mesh.clusters.get(name)
            if rt is not None:
                return rt
            held = self._runtimes.get(snap.version)
            if held is not None and (rt := held.get(name)) is not None:
                return rt
        if cc is None:
            raise ClusterNotAvailable(
                f"cluster {name!r} is not part of the config of listener {self.listener_name!r}"
            )
        raise ClusterNotAvailable(str(cc.error) if cc.error else f"cluster {name!r} is not ready")

    # -- errors -------------------------------------------------------------------------
    def _config_error(self, error: Exception | None, waited: float = 0.0) -> XdsConfigError:
        head = f"no usable xDS config for {self.target.uri} (listener {self.listener_name!r})"
        try:
            statuses = self.mesh.xds_client.dump(timeout=1.0)
            servers = self.mesh.xds_client.server_states(timeout=1.0)
        except Exception:
            statuses, servers = [], []
        parts = []
        if error is not None:
            parts.append(str(error))
        elif waited:
            parts.append(f"nothing usable after waiting {waited:g}s")
        for s in servers:
            if not s["connected"]:
                parts.append(
                    f"xDS server {s['server_uri']} not connected: {s['last_error'] or 'no answer yet'}"
                )
        listed = [
            f"{s.type_name} {s.name!r} {s.status.value}" + (f" ({s.error})" if s.error else "")
            for s in statuses
            if s.type_name in ("LDS", "RDS") or s.status.value != "ACKED"
        ]
        if listed:
            parts.append("resources: " + "; ".join(listed[:8]))
        parts.append(f"node id {self.mesh.bootstrap.node.id!r}")
        cls = type(error) if isinstance(error, XdsConfigError) else XdsConfigError
        err = cls(f"{head}: " + "; ".join(parts))
        err.__cause__ = error
        return err

    def __repr__(self) -> str:
        return f"TargetRuntime({self.target.uri!r}, listener={self.listener_name!r})"
