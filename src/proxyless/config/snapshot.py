"""The complete xDS config for one target, as consumers see it.

An :class:`XdsConfig` is one read-only snapshot of everything a target
needs: its Listener, the RouteConfiguration it names, and for every cluster
the routes can reach, the Cluster and its endpoints — or the error that makes
it unusable. It is swapped by reference; nothing in it changes (grpc-go's
``XdsConfig``, ``xds_dependency_manager.go``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from proxyless.resources.model import Cluster, ClusterLoadAssignment, Listener, RouteConfiguration

__all__ = ["ClusterConfig", "XdsConfig"]


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """One cluster of a snapshot.

    For an EDS, STATIC or LOGICAL_DNS cluster ``endpoints`` holds its
    endpoints. For an aggregate cluster ``children`` lists its leaf clusters
    in priority order (each also present in :attr:`XdsConfig.clusters`).
    ``error`` is set when the cluster cannot be used; then the other fields
    may be None.
    """

    name: str
    cluster: Cluster | None
    endpoints: ClusterLoadAssignment | None = None
    children: tuple[str, ...] = ()
    error: Exception | None = None

    @property
    def usable(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class XdsConfig:
    """A complete snapshot for one listener (one target), or the error that
    prevents one. ``version`` counts the snapshots published for the target.
    ``hosts``: the authorities whose virtual host's clusters ``clusters``
    holds (what gRPC channels route with, gRFC A74); None: every virtual
    host's (what an HTTP client, routing by any ``Host``, needs)."""

    listener_name: str
    listener: Listener | None
    route_config: RouteConfiguration | None
    clusters: Mapping[str, ClusterConfig] = field(default_factory=dict)
    error: Exception | None = None
    version: int = 0
    hosts: frozenset[str] | None = None

    @property
    def usable(self) -> bool:
        return self.error is None and self.route_config is not None

    def covers(self, host: str | None) -> bool:
        """Whether ``clusters`` holds what routing requests for ``host``
        needs (None: requests for any host)."""
        return self.hosts is None or (host is not None and host in self.hosts)
