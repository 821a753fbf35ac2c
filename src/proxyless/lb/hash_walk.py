"""Walking a consistent-hash table to the first usable endpoint.

Ring hash (gRFC A42) and Maglev both map a request hash to a slot of a table
whose entries are endpoint indexes. When the endpoint at that slot is
unusable (unhealthy, outside panic) or excluded (already tried by this
request), both walk the table forward from the slot, wrapping around, to the
next distinct usable endpoint that is not excluded; gRFC A42 walks the ring
the same way. An excluded but usable endpoint is the fallback when every
usable endpoint is excluded; the walk stops once every endpoint was seen.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from proxyless.lb.pickers import EndpointKey
from proxyless.lb.state import EndpointState

__all__ = ["walk_from"]


def walk_from(
    slots: Sequence[int],
    start: int,
    endpoints: Sequence[EndpointState],
    exclude: Container[EndpointKey],
    *,
    panic: bool,
) -> EndpointState | None:
    """The first usable endpoint met walking ``slots`` (endpoint indexes) from ``start``."""
    size = len(slots)
    seen: set[int] = set()
    fallback: EndpointState | None = None
    for step in range(size):
        index = slots[(start + step) % size]
        if index in seen:
            continue
        seen.add(index)
        endpoint = endpoints[index]
        if panic or endpoint.healthy:
            if endpoint.key not in exclude:
                return endpoint
            if fallback is None:
                fallback = endpoint
        if len(seen) == len(endpoints):
            break
    return fallback
