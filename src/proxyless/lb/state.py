"""Per-endpoint runtime state shared by pickers and the resilience layer.

One :class:`EndpointState` exists per endpoint address of a cluster and
outlives EDS updates that keep the address, so counters and ejections
survive config pushes. Request paths update it with plain attribute
arithmetic (O(1), no lock: a lost increment under a thread race is
tolerated the way grpc-go's atomic counters tolerate staleness; the values
are load hints, not accounting).
"""

from __future__ import annotations

from typing import Any

from proxyless.resources.model import Endpoint, Locality

__all__ = ["EndpointState"]


class EndpointState:
    """Mutable state of one endpoint (see the module docstring)."""

    __slots__ = (
        "active_requests",
        "address",
        "draining",
        "ejected",
        "endpoint",
        "key",
        "locality",
        "outlier",
        "priority",
        "total_requests",
        "weight",
    )

    def __init__(self, endpoint: Endpoint, locality: Locality, priority: int) -> None:
        self.endpoint = endpoint
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
        #: set by outlier detection; pickers skip ejected endpoints
        self.ejected = False
        #: the endpoint left EDS and waits for its in-flight requests to end
        self.draining = False
        #: per-endpoint data owned by outlier detection (proxyless.resilience)
        self.outlier: Any = None

    def update(self, endpoint: Endpoint, locality: Locality, priority: int) -> None:
        """Take the new EDS view of the same address."""
        self.endpoint = endpoint
        self.locality = locality
        self.priority = priority
        self.weight = endpoint.weight
        self.draining = False

    @property
    def healthy(self) -> bool:
        """Usable by EDS health (HEALTHY or UNKNOWN) and not ejected."""
        return self.endpoint.health in ("HEALTHY", "UNKNOWN") and not self.ejected

    def __repr__(self) -> str:
        flags = "".join(
            f" {n}" for n, on in (("ejected", self.ejected), ("draining", self.draining)) if on
        )
        return (
            f"EndpointState({self.address} p{self.priority} w{self.weight} "
            f"{self.endpoint.health} active={self.active_requests}{flags})"
        )
