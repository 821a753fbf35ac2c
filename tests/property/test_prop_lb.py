"""Properties of the endpoint pickers (``proxyless.lb``).

=====================================  ===========================================  ========
property                               why (the rule)                               examples
=====================================  ===========================================  ========
ring hash: adding one endpoint to N    consistent hashing (gRFC A42): about         40
moves few keys                         1/(N+1) of 400 keys move, bounded loosely
                                       by 2/(N+1) + 0.1 (the ring is re-shared,
                                       see ``lb/ring_hash.py``); at most about
                                       1/(N+1) move between old endpoints
ring hash and Maglev: stable and live  the same key maps to the same endpoint,      60
                                       on the same or a rebuilt picker; it is
                                       healthy whenever one is, else None
round robin, equal weights             k picks visit each of the k healthy          100
                                       endpoints once; ejected and unhealthy
                                       endpoints are never picked
round robin, weighted (EDF)            every healthy endpoint is picked, none       60
                                       other, in shares close to the weights
excluded endpoints (retries)           a pick avoids the excluded keys while a      100
                                       healthy endpoint outside them exists
=====================================  ===========================================  ========
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from proxyless.lb import EndpointState, MaglevPicker, RingHashPicker, RoundRobinPicker
from proxyless.resources.model import Endpoint, Locality

from .support import examples

_LOCALITY = Locality(region="r", zone="z")
_HEALTH = st.sampled_from(("HEALTHY", "UNKNOWN", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED"))


def endpoint(
    index: int, *, health: str = "HEALTHY", weight: int = 1, ejected: bool = False
) -> EndpointState:
    state = EndpointState(
        Endpoint(
            address=f"10.0.{index // 250}.{index % 250 + 1}",
            port=8080,
            health=health,  # type: ignore[arg-type]
            weight=weight,
        ),
        _LOCALITY,
        0,
    )
    state.ejected = ejected
    return state


@st.composite
def endpoint_lists(
    draw: st.DrawFn, min_size: int = 1, max_size: int = 10, weighted: bool = False
) -> list[EndpointState]:
    n = draw(st.integers(min_size, max_size))
    return [
        endpoint(
            i,
            health=draw(_HEALTH),
            weight=draw(st.integers(1, 10)) if weighted else 1,
            ejected=draw(st.booleans()) and draw(st.booleans()),
        )
        for i in range(n)
    ]


def _keys(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.getrandbits(64) for _ in range(n)]


@settings(max_examples=examples(40))
@given(n=st.integers(1, 24), seed=st.integers(0, 2**32 - 1))
def test_ring_hash_adding_an_endpoint_moves_few_keys(n: int, seed: int) -> None:
    before = RingHashPicker([endpoint(i) for i in range(n)])
    after = RingHashPicker([endpoint(i) for i in range(n + 1)])
    rng = random.Random(0)
    keys = _keys(seed, 400)
    moved = 0
    to_newcomer = 0
    for key in keys:
        old = before.pick(rng, key)
        new = after.pick(rng, key)
        assert old is not None and new is not None
        if old.key != new.key:
            moved += 1
            to_newcomer += new.key == after.endpoints[n].key
    assert moved / len(keys) <= 2 / (n + 1) + 0.1, (n, moved)
    # Keys also move between old endpoints, as each one's share of the ring
    # is cut to make room, but no more than the newcomer's share.
    assert (moved - to_newcomer) / len(keys) <= 1 / (n + 1) + 0.1, (n, moved, to_newcomer)


@settings(max_examples=examples(60))
@given(
    endpoints=endpoint_lists(weighted=True),
    seed=st.integers(0, 2**32 - 1),
    maglev=st.booleans(),
)
def test_hash_pickers_are_stable_and_live(
    endpoints: list[EndpointState], seed: int, maglev: bool
) -> None:
    def build() -> RingHashPicker | MaglevPicker:
        if maglev:
            return MaglevPicker(endpoints, table_size=251)
        return RingHashPicker(endpoints, minimum_ring_size=64)

    picker, rebuilt = build(), build()
    rng = random.Random(0)
    healthy = {e.key for e in endpoints if e.healthy}
    for key in _keys(seed, 50):
        chosen = picker.pick(rng, key)
        if not healthy:
            assert chosen is None
            continue
        assert chosen is not None and chosen.key in healthy
        assert picker.pick(rng, key) is chosen
        again = rebuilt.pick(rng, key)
        assert again is not None and again.key == chosen.key


@settings(max_examples=examples(100))
@given(endpoints=endpoint_lists(max_size=12), seed=st.integers(0, 2**32 - 1))
def test_round_robin_visits_every_healthy_endpoint(
    endpoints: list[EndpointState], seed: int
) -> None:
    rng = random.Random(seed)
    picker = RoundRobinPicker(endpoints, rng)
    healthy = [e.key for e in endpoints if e.healthy]
    picks = [picker.pick(rng) for _ in range(max(len(healthy), 1) * 3)]
    if not healthy:
        assert picks == [None] * len(picks)
        return
    keys = [p.key for p in picks if p is not None]
    assert len(keys) == len(picks)
    for start in range(0, len(keys), len(healthy)):
        assert sorted(keys[start : start + len(healthy)]) == sorted(healthy)


@settings(max_examples=examples(60))
@given(endpoints=endpoint_lists(max_size=8, weighted=True), seed=st.integers(0, 2**32 - 1))
def test_weighted_round_robin_follows_weights(endpoints: list[EndpointState], seed: int) -> None:
    rng = random.Random(seed)
    picker = RoundRobinPicker(endpoints, rng)
    healthy = {e.key: e.weight for e in endpoints if e.healthy}
    rounds = 600
    counts = Counter(
        p.key if p is not None else None for p in (picker.pick(rng) for _ in range(rounds))
    )
    if not healthy:
        assert set(counts) == {None}
        return
    assert set(counts) == set(healthy)
    if len(healthy) == len(endpoints):
        total = sum(healthy.values())
        for key, weight in healthy.items():
            assert abs(counts[key] - rounds * weight / total) <= 0.05 * rounds + 2, counts


@settings(max_examples=examples(100))
@given(
    endpoints=endpoint_lists(max_size=8),
    picker_kind=st.sampled_from(("round_robin", "ring_hash", "maglev")),
    data=st.data(),
)
def test_excluded_endpoints_are_avoided(
    endpoints: list[EndpointState], picker_kind: str, data: st.DataObject
) -> None:
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    if picker_kind == "round_robin":
        picker: RoundRobinPicker | RingHashPicker | MaglevPicker = RoundRobinPicker(endpoints, rng)
    elif picker_kind == "ring_hash":
        picker = RingHashPicker(endpoints, minimum_ring_size=64)
    else:
        picker = MaglevPicker(endpoints, table_size=251)
    exclude = {e.key for e in endpoints if data.draw(st.booleans())}
    healthy = {e.key for e in endpoints if e.healthy}
    chosen = picker.pick(rng, rng.getrandbits(64), exclude)
    if not healthy:
        assert chosen is None
    elif healthy - exclude:
        assert chosen is not None and chosen.key in healthy - exclude
    else:
        assert chosen is not None and chosen.key in healthy
