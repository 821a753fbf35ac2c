"""Endpoint model (EDS): ``envoy.config.endpoint.v3.ClusterLoadAssignment``.

Follows gRFC A27's validation: priorities contiguous from 0, no duplicate
locality within a priority, no duplicate endpoint address in the whole
assignment, locality weights per priority summing to at most 2^32-1, and
localities with an unset or zero ``load_balancing_weight`` skipped. (Envoy
uses unweighted localities when locality-weighted balancing is off; proxyless
follows gRPC and always skips them.)

Unlike gRPC, every endpoint is kept with its health status; ``usable`` tells
whether a picker may choose it (HEALTHY or UNKNOWN). ``overprovisioning_factor``
(default 140, Envoy ``endpoint.proto``) and drop overloads are kept for
consumers that implement them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

__all__ = [
    "ClusterLoadAssignment",
    "DropOverload",
    "Endpoint",
    "HealthStatus",
    "Locality",
    "LocalityEndpoints",
    "make_endpoint",
]

HealthStatus = Literal["UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED"]


@dataclass(frozen=True, slots=True)
class Locality:
    """``envoy.config.core.v3.Locality``."""

    region: str = ""
    zone: str = ""
    sub_zone: str = ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An ``LbEndpoint`` with a socket address.

    ``address`` is an IP literal or a host name; ``weight`` is the endpoint
    ``load_balancing_weight`` (default 1, >= 1); ``hostname`` is
    ``Endpoint.hostname`` (used for ``auto_host_rewrite``), "" if unset.
    """

    address: str
    port: int
    health: HealthStatus = "UNKNOWN"
    weight: int = 1
    hostname: str = ""

    @property
    def key(self) -> tuple[str, int]:
        """``(address, port)``: identifies the endpoint across updates."""
        return (self.address, self.port)

    @property
    def usable(self) -> bool:
        """True when a picker may choose it: health HEALTHY or UNKNOWN (gRFC A27)."""
        return self.health in ("HEALTHY", "UNKNOWN")


_new_endpoint = Endpoint.__new__
# The slots' own setters: what the frozen __init__ calls, without its per-field lookups.
_set_address, _set_port, _set_health, _set_weight, _set_hostname = (
    Endpoint.__dict__[name].__set__ for name in ("address", "port", "health", "weight", "hostname")
)
if [f.name for f in fields(Endpoint)] != ["address", "port", "health", "weight", "hostname"]:
    raise RuntimeError("make_endpoint does not set every field of Endpoint: update it")


def make_endpoint(address: str, port: int, health: Any, weight: int, hostname: str) -> Endpoint:
    """``Endpoint(address, port, health, weight, hostname)``, made in about
    half the time (an EDS decoder makes one per endpoint, tens of thousands
    at a time). The caller passes valid values, as to the constructor."""
    endpoint = _new_endpoint(Endpoint)
    _set_address(endpoint, address)
    _set_port(endpoint, port)
    _set_health(endpoint, health)
    _set_weight(endpoint, weight)
    _set_hostname(endpoint, hostname)
    return endpoint


@dataclass(frozen=True, slots=True)
class LocalityEndpoints:
    """``LocalityLbEndpoints`` with ``weight`` > 0."""

    locality: Locality
    weight: int
    priority: int
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class DropOverload:
    """``ClusterLoadAssignment.Policy.DropOverload``: drop ``per_million`` of requests."""

    category: str
    per_million: int


@dataclass(frozen=True, slots=True)
class ClusterLoadAssignment:
    """``envoy.config.endpoint.v3.ClusterLoadAssignment``.

    ``priorities[p]`` holds the localities of priority ``p``; priorities are
    contiguous from 0 after zero-weight localities are skipped, so no entry
    is empty (an assignment with no localities has ``priorities == ()``).
    ``endpoint_stale_after`` is float seconds or None.
    """

    cluster_name: str
    priorities: tuple[tuple[LocalityEndpoints, ...], ...]
    overprovisioning_factor: int = 140
    drop_overloads: tuple[DropOverload, ...] = ()
    endpoint_stale_after: float | None = None
    ignored_fields: tuple[str, ...] = ()
