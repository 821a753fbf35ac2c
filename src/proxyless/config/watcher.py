"""Follow a target's dependency chain LDS -> RDS -> CDS -> EDS.

A :class:`ConfigWatcher` watches one Listener, the RouteConfiguration it
names (unless inline), every Cluster its routes can reach (weighted
clusters, mirror clusters, aggregate clusters' children to a depth of 16 —
gRFC A37), and the endpoints of each leaf cluster (EDS, or for a STRICT_DNS
cluster the addresses :mod:`proxyless.runtime.dns` resolves).

Which routes: those of the virtual hosts its users route with. A gRPC
channel routes every call with its target's authority, so for gRPC channels
only the virtual host that authority selects counts, as in gRPC's own
dependency manager (gRFC A74): a RouteConfiguration of 5,000 virtual hosts
costs a channel the clusters of one. An HTTP client routes by the request's
``Host``, so an httpx transport needs every virtual host's clusters. Users
say which (:meth:`ConfigWatcher.want`); the scope only widens, and each
snapshot says what it covers (``XdsConfig.hosts``). It publishes a new
:class:`~proxyless.config.snapshot.XdsConfig` only when the chain is
complete: every resource has either a value or an error. Until then the
previous snapshot stays in force, so a route pointing at a cluster that has
not arrived yet never fails a request (grpc-go's dependency manager does the
same).

Errors follow the watcher semantics of :mod:`proxyless.xds_client.watcher`:
a resource error on the Listener or RouteConfiguration replaces the snapshot
with an error snapshot; on a Cluster or its endpoints it marks that cluster
unusable; ambient errors keep everything and are logged.

Runs on the Mesh's loop; :attr:`ConfigWatcher.snapshot` may be read from any
thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from proxyless.config.snapshot import ClusterConfig, XdsConfig
from proxyless.errors import ClusterNotAvailable, XdsConfigError
from proxyless.resources.model import (
    Cluster,
    ClusterLoadAssignment,
    Endpoint,
    LazyRoutes,
    Listener,
    Locality,
    LocalityEndpoints,
    RouteAction,
    RouteConfiguration,
    VirtualHost,
)
from proxyless.resources.types import (
    CLUSTER,
    CLUSTER_LOAD_ASSIGNMENT,
    LISTENER,
    ROUTE_CONFIGURATION,
)
from proxyless.routing.vhost import VirtualHostCache
from proxyless.runtime.dns import DnsResolution
from proxyless.xds_client import ResourceType, XdsClient

__all__ = ["MAX_AGGREGATE_DEPTH", "ConfigWatcher", "clusters_of_route_config"]

log = logging.getLogger("proxyless.config")

MAX_AGGREGATE_DEPTH = 16

_PENDING = object()


class _Watch:
    """One xDS watch; remembers the value or the resource error."""

    __slots__ = ("_cancel", "error", "name", "owner", "rtype", "value")

    def __init__(self, owner: ConfigWatcher, rtype: ResourceType, name: str) -> None:
        self.owner = owner
        self.rtype = rtype
        self.name = name
        self.value: Any = _PENDING
        self.error: Exception | None = None
        self._cancel: Callable[[], None] | None = None

    def start(self) -> _Watch:
        self._cancel = self.owner._client.watch(self.rtype, self.name, self)
        return self

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel()
            self._cancel = None

    @property
    def resolved(self) -> bool:
        return self.value is not _PENDING or self.error is not None

    def on_changed(self, value: Any) -> None:
        self.value, self.error = value, None
        self.owner._changed()

    def on_resource_error(self, error: Exception) -> None:
        self.value, self.error = _PENDING, error
        self.owner._changed()

    def on_ambient_error(self, error: Exception) -> None:
        # The xDS client logs one line per failure for all its resources.
        log.debug("%s", error)


def clusters_of_route_config(
    rc: RouteConfiguration, hosts: Iterable[VirtualHost] | None = None
) -> list[str]:
    """Every cluster name a route configuration (or of it, the virtual hosts
    ``hosts``) can send traffic to, in order."""
    names: dict[str, None] = {}
    for vh in rc.virtual_hosts if hosts is None else hosts:
        routes = vh.routes
        if isinstance(routes, LazyRoutes):  # plain: one cluster per route, known unbuilt
            names.update(dict.fromkeys(routes.clusters))
            continue
        for route in routes:
            action = route.action
            if not isinstance(action, RouteAction):
                continue
            if action.cluster:
                names[action.cluster] = None
            for cw in action.weighted_clusters or ():
                names[cw.name] = None
            for mirror in action.request_mirror_policies:
                names[mirror.cluster] = None
    return list(names)


class ConfigWatcher:
    """Keeps the complete config of one listener (see the module docstring)."""

    def __init__(
        self,
        client: XdsClient,
        listener_name: str,
        *,
        on_update: Callable[[XdsConfig], None] | None = None,
        host: str | None = None,
    ) -> None:
        self._client = client
        self.listener_name = listener_name
        #: the authorities whose virtual host's clusters are watched; None:
        #: every virtual host's (changed on the Mesh thread only)
        self._hosts: frozenset[str] | None = None if host is None else frozenset((host,))
        self._selector: VirtualHostCache | None = None
        self._listeners: list[Callable[[XdsConfig], None]] = [on_update] if on_update else []
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._version = 0
        self.snapshot: XdsConfig | None = None
        self._lds: _Watch | None = None
        self._rds: _Watch | None = None
        self._cds: dict[str, _Watch] = {}
        self._eds: dict[str, _Watch] = {}
        self._dns: dict[str, DnsResolution] = {}
        self._closed = False
        self._recomputing = False
        self._dirty = False
        self._scheduled = False
        client._call_on_loop(self._start)

    # -- public --------------------------------------------------------------------------
    def add_listener(self, fn: Callable[[XdsConfig], None]) -> None:
        """Call ``fn`` with the current snapshot, if any, and every new one.

        Every call happens on the Mesh thread, in publication order, so
        listeners added earlier (the Mesh's cluster registry) have always
        seen a snapshot before listeners added later (a target's router).
        """
        with self._lock:
            self._listeners.append(fn)

        def deliver_current() -> None:
            snap = self.snapshot
            if snap is not None:
                fn(snap)

        self._client._call_on_loop(deliver_current)

    def want(self, host: str | None) -> None:
        """Watch the clusters of the virtual host ``host`` selects too (None:
        of every virtual host); the snapshots after this cover it."""

        def widen() -> None:
            hosts = self._hosts
            if hosts is None or (host is not None and host in hosts):
                return
            self._hosts = None if host is None else hosts | {host}
            self._changed()

        self._client._call_on_loop(widen)

    def wait(self, timeout: float | None) -> XdsConfig | None:
        """Block until the first snapshot (usable or error) or ``timeout``."""
        self._ready.wait(timeout)
        return self.snapshot

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client._call_on_loop(self._stop)

    # -- loop side -------------------------------------------------------------------------
    def _start(self) -> None:
        if not self._closed:
            self._lds = _Watch(self, LISTENER, self.listener_name)
            self._lds.start()

    def _stop(self) -> None:
        for w in [self._lds, self._rds, *self._cds.values(), *self._eds.values()]:
            if w is not None:
                w.cancel()
        for resolution in self._dns.values():
            resolution.cancel()
        self._lds = self._rds = None
        self._cds.clear()
        self._eds.clear()
        self._dns.clear()

    def _publish(self, cfg: XdsConfig) -> None:
        with self._lock:
            self._version += 1
            cfg = XdsConfig(
                cfg.listener_name,
                cfg.listener,
                cfg.route_config,
                cfg.clusters,
                cfg.error,
                self._version,
                cfg.hosts,
            )
            self.snapshot = cfg
            listeners = list(self._listeners)
        self._ready.set()
        for fn in listeners:
            try:
                fn(cfg)
            except Exception:
                log.exception("config listener %r failed", fn)

    def _changed(self) -> None:
        # One xDS response updates many resources, each calling here: walk
        # the chain once for all of them, after the response is handled
        # (a walk per update made a response of N clusters cost N walks of
        # N clusters).
        if self._recomputing:
            self._dirty = True
            return
        if not self._scheduled:
            self._scheduled = True
            self._client.call_soon(self._update)

    def _update(self) -> None:
        # Starting a watch may deliver a cached value at once, re-entering
        # _changed: note it and recompute again once the current pass is
        # done. Only the config of the last pass is published, so one change
        # publishes once; a change arriving while listeners run is handled
        # after them.
        self._scheduled = False
        if self._recomputing:
            self._dirty = True
            return
        self._recomputing = True
        try:
            self._dirty = True
            while self._dirty:
                cfg: XdsConfig | None = None
                while self._dirty:
                    self._dirty = False
                    cfg = self._recompute()
                if cfg is not None:
                    self._publish(cfg)
        finally:
            self._recomputing = False

    def _recompute(self) -> XdsConfig | None:
        """The config to publish now, or None while the chain is incomplete."""
        if self._closed or self._lds is None:
            return None
        lds = self._lds
        if lds.error is not None:
            self._drop_below_listener()
            return XdsConfig(self.listener_name, None, None, error=lds.error)
        if lds.value is _PENDING:
            return None
        if not isinstance(lds.value, Listener):
            # An inbound (server) Listener: nothing a client can route with.
            self._drop_below_listener()
            error = XdsConfigError(
                f"listener {self.listener_name!r} is a server listener (no api_listener)"
            )
            return XdsConfig(self.listener_name, None, None, error=error)
        listener: Listener = lds.value
        rc = self._route_config(listener)
        if rc is None:
            if self._rds is not None and self._rds.error is not None:
                self._sync_clusters([])
                return XdsConfig(self.listener_name, listener, None, error=self._rds.error)
            return None
        hosts = self._hosts
        if hosts is None:
            roots = clusters_of_route_config(rc)
        else:
            selector = self._selector
            if selector is None or selector.route_config is not rc:
                selector = self._selector = VirtualHostCache(rc)
            selected = {id(vh): vh for h in sorted(hosts) if (vh := selector.select(h))}
            roots = clusters_of_route_config(rc, selected.values())
        clusters, complete = self._sync_clusters(roots)
        if complete:
            return XdsConfig(self.listener_name, listener, rc, clusters, hosts=hosts)
        return None

    def _drop_below_listener(self) -> None:
        if self._rds is not None:
            self._rds.cancel()
            self._rds = None
        self._sync_clusters([])

    def _route_config(self, listener: Listener) -> RouteConfiguration | None:
        if listener.route_config is not None:
            if self._rds is not None:
                self._rds.cancel()
                self._rds = None
            return listener.route_config
        name = listener.route_config_name or ""
        if self._rds is None or self._rds.name != name:
            if self._rds is not None:
                self._rds.cancel()
            self._rds = _Watch(self, ROUTE_CONFIGURATION, name)
            self._rds.start()
        if self._rds.value is _PENDING:
            return None
        value: RouteConfiguration = self._rds.value
        return value

    def _sync_clusters(self, roots: list[str]) -> tuple[dict[str, ClusterConfig], bool]:
        """Watch what ``roots`` need; return the cluster configs and completeness."""
        out: dict[str, ClusterConfig] = {}
        wanted_cds: set[str] = set()
        wanted_eds: set[str] = set()
        wanted_dns: set[str] = set()
        complete = True

        def cds(name: str) -> _Watch:
            w = self._cds.get(name)
            if w is None:
                w = self._cds[name] = _Watch(self, CLUSTER, name)
                w.start()
            return w

        def eds(name: str) -> _Watch:
            w = self._eds.get(name)
            if w is None:
                w = self._eds[name] = _Watch(self, CLUSTER_LOAD_ASSIGNMENT, name)
                w.start()
            return w

        def visit(name: str, depth: int, path: tuple[str, ...]) -> list[str] | None:
            """Leaf clusters under ``name``; None while something is pending."""
            nonlocal complete
            wanted_cds.add(name)
            if name in path:
                out[name] = ClusterConfig(
                    name,
                    None,
                    error=ClusterNotAvailable(
                        f"aggregate cluster loop: {' -> '.join((*path, name))}"
                    ),
                )
                return []
            if depth > MAX_AGGREGATE_DEPTH:
                out[name] = ClusterConfig(
                    name,
                    None,
                    error=ClusterNotAvailable(
                        f"aggregate cluster {path[0]!r} nests deeper than {MAX_AGGREGATE_DEPTH}"
                    ),
                )
                return []
            w = cds(name)
            if w.error is not None:
                out[name] = ClusterConfig(name, None, error=_cluster_error(name, w.error))
                return []
            if w.value is _PENDING:
                complete = False
                return None
            cluster: Cluster = w.value
            if cluster.type == "AGGREGATE":
                leaves: list[str] = []
                pending = False
                for child in cluster.aggregate_clusters:
                    got = visit(child, depth + 1, (*path, name))
                    if got is None:
                        pending = True
                    else:
                        leaves.extend(x for x in got if x not in leaves)
                if pending:
                    return None
                usable = [x for x in leaves if out.get(x) is not None and out[x].usable]
                error: Exception | None = None
                if not usable:
                    # A loop back to this cluster was found below it: keep saying so.
                    looped = out.get(name)
                    error = (
                        looped.error
                        if looped is not None and looped.error is not None
                        else ClusterNotAvailable(
                            f"aggregate cluster {name!r} has no usable child cluster"
                        )
                    )
                out[name] = ClusterConfig(name, cluster, None, tuple(leaves), error)
                return leaves
            if cluster.type == "EDS":
                ew = eds(cluster.eds_service_name or name)
                wanted_eds.add(ew.name)
                if ew.error is not None:
                    out[name] = ClusterConfig(name, cluster, error=_cluster_error(name, ew.error))
                elif ew.value is _PENDING:
                    complete = False
                    return None
                else:
                    out[name] = ClusterConfig(name, cluster, ew.value)
            elif cluster.type == "LOGICAL_DNS":
                out[name] = ClusterConfig(name, cluster, _dns_assignment(cluster))
            elif cluster.type == "STRICT_DNS":
                wanted_dns.add(name)
                resolution = self._resolution(name, cluster)
                if resolution.error is not None:
                    out[name] = ClusterConfig(name, cluster, error=resolution.error)
                elif resolution.value is None:
                    complete = False
                    return None
                else:
                    out[name] = ClusterConfig(name, cluster, resolution.value)
            else:  # STATIC
                out[name] = ClusterConfig(name, cluster, cluster.load_assignment)
            return [name]

        for root in roots:
            visit(root, 1, ())
        for name in [n for n in self._cds if n not in wanted_cds]:
            self._cds.pop(name).cancel()
        for name in [n for n in self._eds if n not in wanted_eds]:
            self._eds.pop(name).cancel()
        for name in [n for n in self._dns if n not in wanted_dns]:
            self._dns.pop(name).cancel()
        return out, complete

    def _resolution(self, name: str, cluster: Cluster) -> DnsResolution:
        """The DNS resolution of a STRICT_DNS cluster, restarted when the cluster changed."""
        current = self._dns.get(name)
        if current is not None and current.cluster == cluster:
            return current
        if current is not None:
            current.cancel()
        client = self._client
        resolution = DnsResolution(
            cluster,
            clock=client._clock,
            post=lambda fn: client._call_on_loop(fn),
            on_change=self._changed,
        )
        self._dns[name] = resolution
        return resolution.start()

    # -- diagnostics ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        snap = self.snapshot
        state = "pending" if snap is None else ("ok" if snap.usable else f"error: {snap.error}")
        return f"ConfigWatcher({self.listener_name!r}, {state})"


def _cluster_error(name: str, error: Exception) -> Exception:
    if isinstance(error, XdsConfigError):
        wrapped = ClusterNotAvailable(f"cluster {name!r}: {error}")
        wrapped.__cause__ = error
        return wrapped
    return error


def _dns_assignment(cluster: Cluster) -> ClusterLoadAssignment:
    """LOGICAL_DNS (gRFC A37): one endpoint named by host and port; the
    per-endpoint connection resolves it."""
    ep = Endpoint(address=cluster.dns_address, port=cluster.dns_port, hostname=cluster.dns_address)
    return ClusterLoadAssignment(
        cluster_name=cluster.name,
        priorities=((LocalityEndpoints(Locality(), 1, 0, (ep,)),),),
    )
