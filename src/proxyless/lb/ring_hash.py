"""Ring hash (gRFC A42; Envoy ``ring_hash_lb``).

Building the ring, as Envoy and gRPC do:

1. Normalize weights so they sum to 1 (with locality weighting, an
   endpoint's weight is its share of its locality times the locality's
   share, Envoy ``normalizeLocalityWeights``).
2. ``scale = min(ceil(min_weight * minimum_ring_size) / min_weight,
   maximum_ring_size)`` so the lightest endpoint gets a whole number of
   entries, and walk the endpoints keeping running sums of the target and
   actual entry counts, so fractional shares spread evenly.
3. Entry ``i`` of an endpoint hashes ``"<address>:<port>_<i>"`` (IPv6 in
   brackets) with XXH64, seed 0; the ring is sorted by hash.

A pick takes the first entry whose hash is >= the request hash, wrapping
to the start (binary search, Envoy's ketama port). When that endpoint is
unusable, excluded or not ready (its connection is not READY or IDLE), the
walk continues clockwise to the next distinct usable endpoint
(:mod:`proxyless.lb.hash_walk`; gRFC A42 and A61 walk the ring the same
way; Envoy's retry ``attempt`` moves forward by one entry per attempt).

Adding one endpoint to N moves somewhat more than 1/(N+1) of the keys:
the newcomer's entries take over the arcs just before them, and because the
ring size is shared out again every endpoint's entry count is rescaled
(with 3 endpoints on a 1,024-entry ring each has 342 entries, with 4 each
has 256), so a few keys also move between the old endpoints. Adding a 4th
endpoint moves about 35% of keys, most of them to the newcomer; Envoy and
gRFC A42 build rings the same way.

The ring is capped at :data:`RING_SIZE_CAP` entries (Envoy allows up to
8,388,608; gRPC caps at 4,096 by default). A ring only grows past the
default 1,024 entries with very many endpoints or very skewed weights.
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_left
from collections.abc import Container, Sequence

import xxhash

from proxyless.lb.hash_walk import walk_from
from proxyless.lb.pickers import EndpointKey, Picker
from proxyless.lb.state import EndpointState

__all__ = ["RING_SIZE_CAP", "RingHashPicker", "ring_size"]

#: Upper bound on ring entries, whatever ``maximum_ring_size`` says.
RING_SIZE_CAP = 65_536

_xxh64 = xxhash.xxh64_intdigest


def ring_size(normalized: Sequence[float], minimum: int, maximum: int) -> tuple[float, int]:
    """Envoy's ``(scale, ring size)`` for normalized weights (sum 1)."""
    if not normalized:
        return 0.0, 0
    maximum = min(maximum, RING_SIZE_CAP)
    lightest = min(normalized)
    scale = min(math.ceil(lightest * minimum) / lightest, float(maximum))
    return scale, math.ceil(scale)


class RingHashPicker(Picker):
    """Consistent hashing over a ring of XXH64 hashes (see the module docstring)."""

    __slots__ = ("_hashes", "_owners", "size")

    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        *,
        weights: Sequence[float] | None = None,
        minimum_ring_size: int = 1024,
        maximum_ring_size: int = 8_388_608,
        panic: bool = False,
    ) -> None:
        super().__init__(endpoints, panic=panic)
        eps = self.endpoints
        raw = [float(e.weight) for e in eps] if weights is None else [float(w) for w in weights]
        if len(raw) != len(eps):
            raise ValueError(f"{len(raw)} weights given for {len(eps)} endpoints")
        total = sum(raw)
        entries: list[tuple[int, int]] = []
        if eps and total > 0:
            normalized = [w / total for w in raw]
            scale, _ = ring_size(
                [w for w in normalized if w > 0], minimum_ring_size, maximum_ring_size
            )
            current = 0.0
            target = 0.0
            for index, endpoint in enumerate(eps):
                prefix = f"{endpoint.address}_"
                target += scale * normalized[index]
                i = 0
                while current < target:
                    entries.append((_xxh64(f"{prefix}{i}".encode(), 0), index))
                    i += 1
                    current += 1
            entries.sort(key=lambda entry: entry[0])
        self._hashes = array("Q", [h for h, _ in entries])
        self._owners = array("I", [owner for _, owner in entries])
        #: number of entries on the ring
        self.size = len(entries)

    def pick(
        self,
        rng: random.Random,
        request_hash: int | None = None,
        exclude: Container[EndpointKey] = (),
    ) -> EndpointState | None:
        size = self.size
        if size == 0:
            return None
        h = request_hash if request_hash is not None else rng.getrandbits(64)
        slot = bisect_left(self._hashes, h)
        if slot == size:
            slot = 0
        endpoints = self.endpoints
        chosen = endpoints[self._owners[slot]]
        if chosen.ready and (self.panic or chosen.healthy) and chosen.key not in exclude:
            return chosen
        return walk_from(self._owners, slot, endpoints, exclude, panic=self.panic)

    def __repr__(self) -> str:
        return f"RingHashPicker({len(self.endpoints)} endpoints, {self.size} entries)"
