"""Per-endpoint runtime state shared by pickers and the resilience layer.

One :class:`EndpointState` exists per endpoint address of a cluster and
outlives EDS updates that keep the address, so counters and ejections
survive config pushes. Request paths update it with plain attribute
arithmetic (O(1), no lock: a lost increment under a thread race is
tolerated the way grpc-go's atomic counters tolerate staleness; the values
are load hints, not accounting).

Connectivity (gRPC): the transport that holds a connection to the endpoint
reports its state with :meth:`EndpointState.set_connectivity` (gRPC's
``ChannelConnectivity`` names: ``IDLE``, ``CONNECTING``, ``READY``,
``TRANSIENT_FAILURE``, ``SHUTDOWN``); pickers read :attr:`EndpointState.ready`
only, one attribute per candidate. ``ready`` is true for ``READY`` and
``IDLE`` (a call on an idle connection makes it connect) and while the state
is unknown (``connectivity`` None: no connection was made yet, or the
endpoint is reached by a transport that does not report, like httpx), so an
endpoint never seen is picked and its first call connects it. The rules that
use it are in :mod:`proxyless.lb.pickers` and ``docs/load-balancing.md``.
"""

from __future__ import annotations

from typing import Any

from proxyless.resources.model import Endpoint, Locality

__all__ = ["PICKABLE_STATES", "EndpointState"]

#: Connectivity states in which an endpoint counts as :attr:`EndpointState.ready`.
PICKABLE_STATES = frozenset({"READY", "IDLE"})


class EndpointState:
    """Mutable state of one endpoint (see the module docstring)."""

    __slots__ = (
        "__weakref__",
        "active_requests",
        "address",
        "cluster",
        "connectivity",
        "draining",
        "ejected",
        "endpoint",
        "key",
        "locality",
        "orca",
        "outlier",
        "priority",
        "ready",
        "rtt",
        "total_errors",
        "total_requests",
        "total_successes",
        "watcher",
        "weight",
    )

    def __init__(
        self, endpoint: Endpoint, locality: Locality, priority: int, cluster: str = ""
    ) -> None:
        self.endpoint = endpoint
        #: the cluster whose endpoints list this one: for an aggregate
        #: cluster's endpoint, the leaf cluster, whose transport socket and
        #: protocol options say how to reach it
        self.cluster = cluster
        self.key: tuple[str, int] = (endpoint.address, endpoint.port)
        self.address = f"{endpoint.address}:{endpoint.port}"
        if ":" in endpoint.address:  # IPv6 literal
            self.address = f"[{endpoint.address}]:{endpoint.port}"
        self.locality = locality
        self.priority = priority
        self.weight = endpoint.weight
        #: requests in flight (least_request reads it; the adapter bumps it)
        self.active_requests = 0
        self.total_requests = 0
        #: attempts that ended in success / in failure (load reports read them)
        self.total_successes = 0
        self.total_errors = 0
        #: set by outlier detection; pickers skip ejected endpoints
        self.ejected = False
        #: the endpoint left EDS and waits for its in-flight requests to end
        self.draining = False
        #: per-endpoint data owned by outlier detection (proxyless.resilience)
        self.outlier: Any = None
        #: load-aware balancing (proxyless.lb.load_state): the ORCA weight of a
        #: weighted round robin cluster's endpoint, the RTT estimate of a
        #: peak-EWMA one; None otherwise
        self.orca: Any = None
        self.rtt: Any = None
        #: the connection's state as last reported (None: unknown), and whether
        #: pickers may choose the endpoint while others are ready (module docstring)
        self.connectivity: str | None = None
        self.ready = True
        #: the connection that last registered to report this endpoint's state
        self.watcher: object = None

    def update(
        self, endpoint: Endpoint, locality: Locality, priority: int, cluster: str = ""
    ) -> None:
        """Take the new EDS view of the same address."""
        self.endpoint = endpoint
        self.cluster = cluster
        self.locality = locality
        self.priority = priority
        self.weight = endpoint.weight
        self.draining = False

    def set_connectivity(self, state: str | None) -> None:
        """Take the connection's state (a ``ChannelConnectivity`` name; None
        when it is unknown again, e.g. the connection was closed)."""
        self.connectivity = state
        self.ready = state is None or state in PICKABLE_STATES

    @property
    def healthy(self) -> bool:
        """Usable by EDS health (HEALTHY or UNKNOWN) and not ejected."""
        return self.endpoint.health in ("HEALTHY", "UNKNOWN") and not self.ejected

    def __repr__(self) -> str:
        flags = "".join(
            f" {n}" for n, on in (("ejected", self.ejected), ("draining", self.draining)) if on
        )
        if self.connectivity is not None:
            flags += f" {self.connectivity}"
        return (
            f"EndpointState({self.address} p{self.priority} w{self.weight} "
            f"{self.endpoint.health} active={self.active_requests}{flags})"
        )
