"""Maglev consistent hashing (Envoy ``maglev_lb``; Eisenbud et al., NSDI 2016).

Table construction follows Envoy's implementation of the paper's
"Listing 1", with Envoy's weighting:

- endpoints are sorted by their hash key (``address:port``) so the table
  does not depend on EDS order;
- per endpoint, ``offset = XXH64(key, seed 0) % M`` and
  ``skip = XXH64(key, seed 1) % (M - 1) + 1`` define its preference list
  ``(offset + j * skip) % M``;
- the table (``M`` = ``table_size``, a prime, default 65537) is filled in
  rounds; in round ``r`` an endpoint takes its next free preferred slot when
  ``r * weight >= target``, then ``target += max_weight`` — so an endpoint
  with the largest weight fills a slot every round and one with a third of
  it every third round.

A pick reads ``table[hash % M]``. If that endpoint is unusable, excluded or
not ready (:mod:`proxyless.lb.hash_walk`),
the hash is perturbed as Envoy does for retries (``hash ^ (2**64 -
attempt)``) for a few attempts, then the table is walked from the slot to
the next usable endpoint.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Container, Sequence

import xxhash

from proxyless.lb.hash_walk import walk_from
from proxyless.lb.pickers import EndpointKey, Picker
from proxyless.lb.state import EndpointState

__all__ = ["DEFAULT_TABLE_SIZE", "MaglevPicker", "build_maglev_table"]

DEFAULT_TABLE_SIZE = 65537

_MASK = (1 << 64) - 1
_PERTURB_ATTEMPTS = 8
_xxh64 = xxhash.xxh64_intdigest


def build_maglev_table(
    keys: Sequence[str], weights: Sequence[float], table_size: int
) -> array[int]:
    """Slot -> index into ``keys`` (see the module docstring). ``table_size`` must be prime."""
    n = len(keys)
    if n == 0:
        return array("I")
    size = table_size
    order = sorted(range(n), key=lambda i: keys[i])
    total = float(sum(weights)) or 1.0
    norm = [weights[i] / total for i in order]
    max_weight = max(norm)
    positions: list[int] = []
    skips: list[int] = []
    for i in order:
        key = keys[i].encode()
        positions.append(_xxh64(key, 0) % size)
        skips.append(_xxh64(key, 1) % (size - 1) + 1)
    targets = [0.0] * n
    table = [-1] * size
    filled = 0
    iteration = 1
    while filled < size:
        for k in range(n):
            if iteration * norm[k] < targets[k]:
                continue
            targets[k] += max_weight
            slot = positions[k]
            skip = skips[k]
            while table[slot] >= 0:
                slot += skip
                if slot >= size:
                    slot -= size
            table[slot] = order[k]
            slot += skip
            if slot >= size:
                slot -= size
            positions[k] = slot
            filled += 1
            if filled == size:
                break
        iteration += 1
    return array("I", table)


class MaglevPicker(Picker):
    """Maglev lookup table over the endpoints (see the module docstring)."""

    __slots__ = ("_table", "table_size")

    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        *,
        weights: Sequence[float] | None = None,
        table_size: int = DEFAULT_TABLE_SIZE,
        panic: bool = False,
    ) -> None:
        super().__init__(endpoints, panic=panic)
        eps = self.endpoints
        raw = [float(e.weight) for e in eps] if weights is None else [float(w) for w in weights]
        if len(raw) != len(eps):
            raise ValueError(f"{len(raw)} weights given for {len(eps)} endpoints")
        if table_size < 2:
            raise ValueError(f"maglev table_size must be a prime > 1, got {table_size}")
        self.table_size = table_size
        self._table = build_maglev_table([e.address for e in eps], raw, table_size)

    def pick(
        self,
        rng: random.Random,
        request_hash: int | None = None,
        exclude: Container[EndpointKey] = (),
    ) -> EndpointState | None:
        table = self._table
        if not table:
            return None
        h = request_hash if request_hash is not None else rng.getrandbits(64)
        size = self.table_size
        endpoints = self.endpoints
        panic = self.panic
        chosen = endpoints[table[h % size]]
        if chosen.ready and (panic or chosen.healthy) and chosen.key not in exclude:
            return chosen
        for attempt in range(1, _PERTURB_ATTEMPTS + 1):
            chosen = endpoints[table[(h ^ ((_MASK - attempt + 1) & _MASK)) % size]]
            if chosen.ready and (panic or chosen.healthy) and chosen.key not in exclude:
                return chosen
        return walk_from(table, h % size, endpoints, exclude, panic=panic)

    def entries_per_endpoint(self) -> dict[str, int]:
        """How many table slots each endpoint owns (for tests and debugging)."""
        counts: dict[str, int] = {}
        for index in self._table:
            address = self.endpoints[index].address
            counts[address] = counts.get(address, 0) + 1
        return counts
