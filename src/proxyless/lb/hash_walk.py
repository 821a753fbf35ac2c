"""Walking a consistent-hash table to the first usable endpoint.

Ring hash (gRFC A42) and Maglev both map a request hash to a slot of a table
whose entries are endpoint indexes. When the endpoint at that slot is
unusable (unhealthy, outside panic) or excluded (already tried by this
request), both walk the table forward from the slot, wrapping around, to the
next distinct usable endpoint that is not excluded; gRFC A42 walks the ring
the same way. The walk also skips endpoints that are not
:attr:`~proxyless.lb.state.EndpointState.ready` (gRFC A61: ring hash scans
forward to a READY endpoint). When no usable endpoint is both ready and not
excluded, the first one met of the best kind is the fallback, in this order
(the order of :func:`~proxyless.lb.pickers.fallback_candidates`): ready but
excluded; connecting, not excluded; connecting, excluded; in
TRANSIENT_FAILURE, not excluded; in TRANSIENT_FAILURE, excluded. The walk
stops once every endpoint was seen.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from proxyless.lb.pickers import EndpointKey, fallback_rank
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
    best_rank = 6
    for step in range(size):
        index = slots[(start + step) % size]
        if index in seen:
            continue
        seen.add(index)
        endpoint = endpoints[index]
        if panic or endpoint.healthy:
            rank = fallback_rank(endpoint, exclude)
            if rank == 0:
                return endpoint
            if rank < best_rank:
                fallback, best_rank = endpoint, rank
        if len(seen) == len(endpoints):
            break
    return fallback
