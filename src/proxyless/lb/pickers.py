"""Endpoint pickers: round robin, random, least request, pick first.

Each picker serves one list of :class:`~proxyless.lb.state.EndpointState`
(a priority, or a locality within one) and follows Envoy's load balancer
documentation (``arch_overview/upstream/load_balancing/load_balancers``):

- **round robin**: with equal weights a rotation starting at a random
  offset; with differing weights Envoy's earliest-deadline-first (EDF)
  schedule, each endpoint due every ``1/weight``, with a random initial phase
  so that clients do not move in lockstep. gRPC's ``round_robin`` ignores
  weights; proxyless follows Envoy.
- **random**: a random endpoint, weighted by endpoint weight.
- **least request** (gRFC A48, Envoy): with equal weights the best of
  ``choice_count`` random samples (fewest active requests, "power of two
  choices"); with differing weights Envoy's EDF schedule whose weight is
  recomputed at each pick as ``weight / (active + 1) ** active_request_bias``.
- **pick first** (gRFC A62): the first usable endpoint in order, shuffled
  once at build time when ``shuffle_address_list`` is set.

Every pick skips endpoints that are not :attr:`~EndpointState.healthy`
(EDS HEALTHY/UNKNOWN and not ejected) — unless the picker was built for
panic mode, which ignores health as Envoy does — and avoids the endpoint
keys in ``exclude`` (a retry's previous hosts) while another choice exists.
A picker never blocks on I/O and never awaits; the only lock is the
few-microsecond critical section of the EDF heap.

Connectivity, as gRPC's policies use it (round robin, least request and
weighted round robin pick READY subchannels; gRFC A61 ring hash scans on
to a READY one): a pick takes only endpoints that are
:attr:`~EndpointState.ready` (connection READY or IDLE, or not known yet)
while one exists, reading that one attribute per candidate. When no usable
endpoint is ready (:meth:`Picker.fallback`) the pick falls back to the
usable ones, those still connecting before those in TRANSIENT_FAILURE, and
the call waits for that connection within its deadline, as gRPC queues a
pick while a subchannel connects; when all are in TRANSIENT_FAILURE the
attempt goes to one of them and grpcio fails it at once with UNAVAILABLE
(or holds a ``wait_for_ready`` call), which is the answer gRPC gives.
Readiness comes before ``exclude``: an endpoint tried already but ready is
preferred to an untried one that cannot take the call now.

Pickers are built from the endpoints that are usable *at build time*;
:class:`~proxyless.lb.cluster.ClusterLoadBalancer` rebuilds them when health
or membership changes. The per-pick health check covers the gap until then.
"""

from __future__ import annotations

import heapq
import random
import threading
from bisect import bisect_right
from collections.abc import Callable, Container, Sequence
from itertools import accumulate

from proxyless.lb.state import EndpointState

__all__ = [
    "EdfSchedule",
    "EndpointKey",
    "LeastRequestPicker",
    "PickFirstPicker",
    "Picker",
    "RandomPicker",
    "RoundRobinPicker",
    "fallback_candidates",
    "fallback_rank",
]

EndpointKey = tuple[str, int]


def fallback_rank(endpoint: EndpointState, exclude: Container[EndpointKey]) -> int:
    """How good a usable endpoint is as a fallback, 0 (ready, not excluded)
    to 5 (in TRANSIENT_FAILURE and excluded), in the order of
    :func:`fallback_candidates`."""
    base = 0 if endpoint.ready else 4 if endpoint.connectivity == "TRANSIENT_FAILURE" else 2
    return base + (endpoint.key in exclude)


def fallback_candidates(
    candidates: Sequence[EndpointState], exclude: Container[EndpointKey], panic: bool
) -> tuple[list[EndpointState], bool]:
    """:meth:`Picker.fallback` for any list of candidates."""
    usable = [e for e in candidates if panic or e.healthy]
    ready = [e for e in usable if e.ready]
    if not ready:
        ready = [e for e in usable if e.connectivity != "TRANSIENT_FAILURE"] or usable
    preferred = [e for e in ready if e.key not in exclude]
    if preferred:
        return preferred, True
    return ready, False


class Picker:
    """Base of every picker.

    ``endpoints`` are the candidates; ``panic`` true means health is ignored.
    Subclasses implement :meth:`pick`.
    """

    __slots__ = ("endpoints", "panic")

    def __init__(self, endpoints: Sequence[EndpointState], *, panic: bool = False) -> None:
        self.endpoints: tuple[EndpointState, ...] = tuple(endpoints)
        self.panic = panic

    def pick(
        self,
        rng: random.Random,
        request_hash: int | None = None,
        exclude: Container[EndpointKey] = (),
    ) -> EndpointState | None:
        """An endpoint, or None when no candidate is usable."""
        raise NotImplementedError

    def usable(self, endpoint: EndpointState) -> bool:
        """True when this picker may return ``endpoint`` (healthy, or panic mode)."""
        return self.panic or endpoint.healthy

    def fallback(
        self, candidates: Sequence[EndpointState], exclude: Container[EndpointKey]
    ) -> tuple[list[EndpointState], bool]:
        """What to choose from when the fast pass found no ready, usable,
        not excluded endpoint: the ready usable candidates, or when none is
        ready the usable ones not in TRANSIENT_FAILURE, or else every usable
        one; of those, the ones not excluded if any. The flag is True when
        the list holds no excluded endpoint."""
        return fallback_candidates(candidates, exclude, self.panic)

    def __repr__(self) -> str:
        mode = ", panic" if self.panic else ""
        return f"{type(self).__name__}({len(self.endpoints)} endpoints{mode})"


class EdfSchedule:
    """Earliest-deadline-first schedule over indices (Envoy ``EdfScheduler``).

    An entry of weight ``w`` is due every ``1/w``; ties go to the entry
    queued first. ``weight_of`` (if given) recomputes an entry's weight each
    time it is picked, as Envoy's least-request balancer does.
    """

    __slots__ = ("_heap", "_lock", "_seq", "_weight_of", "_weights")

    def __init__(
        self,
        weights: Sequence[float],
        rng: random.Random,
        weight_of: Callable[[int], float] | None = None,
    ) -> None:
        self._weights = list(weights)
        self._weight_of = weight_of
        # A random phase per entry replaces Envoy's "skip seed % n picks" start.
        self._heap = [(rng.random() / w, i, i) for i, w in enumerate(self._weights)]
        heapq.heapify(self._heap)
        self._seq = len(self._heap)
        self._lock = threading.Lock()

    @property
    def weights(self) -> list[float]:
        """The weights the schedule was made with."""
        return list(self._weights)

    def next(self) -> int:
        """The index of the entry due next."""
        with self._lock:
            deadline, _, index = self._heap[0]
            weight = self._weights[index] if self._weight_of is None else self._weight_of(index)
            heapq.heapreplace(self._heap, (deadline + 1.0 / weight, self._seq, index))
            self._seq += 1
        return index


def _weights_of(endpoints: Sequence[EndpointState], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [float(e.weight) for e in endpoints]
    if len(weights) != len(endpoints):
        raise ValueError(f"{len(weights)} weights given for {len(endpoints)} endpoints")
    return [float(w) for w in weights]


def _all_equal(values: Sequence[float]) -> bool:
    return not values or values.count(values[0]) == len(values)


def _positive(weights: list[float]) -> list[float]:
    # Endpoint weights are >= 1 (EDS); derived weights could underflow to 0.
    return [w if w > 0 else 1e-9 for w in weights]


class RoundRobinPicker(Picker):
    """Round robin with a random start; Envoy's EDF schedule when weights differ."""

    __slots__ = ("_edf", "_next")

    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        rng: random.Random,
        *,
        weights: Sequence[float] | None = None,
        panic: bool = False,
    ) -> None:
        super().__init__(endpoints, panic=panic)
        values = _weights_of(self.endpoints, weights)
        self._edf = None if _all_equal(values) else EdfSchedule(_positive(values), rng)
        self._next = rng.randrange(len(self.endpoints)) if self.endpoints else 0

    def _advance(self) -> int:
        if self._edf is not None:
            return self._edf.next()
        index = self._next
        self._next = (index + 1) % len(self.endpoints)
        return index

    def pick(
        self,
        rng: random.Random,
        request_hash: int | None = None,
        exclude: Container[EndpointKey] = (),
    ) -> EndpointState | None:
        endpoints = self.endpoints
        if not endpoints:
            return None
        chosen = endpoints[self._advance()]
        if chosen.ready and (self.panic or chosen.healthy) and chosen.key not in exclude:
            return chosen
        for _ in range(len(endpoints) - 1):
            chosen = endpoints[self._advance()]
            if chosen.ready and (self.panic or chosen.healthy) and chosen.key not in exclude:
                return chosen
        usable, spread = self.fallback(endpoints, exclude)
        if spread and len(usable) > 1:
            # none ready: spread the calls waiting for a connection
            return usable[int(rng.random() * len(usable))]
        return usable[0] if usable else None


class RandomPicker(Picker):
    """A random endpoint, weighted by endpoint weight."""

    __slots__ = ("_cumulative", "_total")

    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        rng: random.Random,
        *,
        weights: Sequence[float] | None = None,
        panic: bool = False,
    ) -> None:
        super().__init__(endpoints, panic=panic)
        values = _weights_of(self.endpoints, weights)
        if _all_equal(values):
            self._cumulative: list[float] | None = None
            self._total = 0.0
        else:
            self._cumulative = list(accumulate(_positive(values)))
            self._total = self._cumulative[-1]

    def _index(self, rng: random.Random) -> int:
        n = len(self.endpoints)
        if self._cumulative is None:
            return int(rng.random() * n)
        return min(bisect_right(self._cumulative, rng.random() * self._total), n - 1)

    def pick(
        self,
        rng: random.Random,
        request_hash: int | None = None,
        exclude: Container[EndpointKey] = (),
    ) -> EndpointState | None:
        endpoints = self.endpoints
        if not endpoints:
            return None
        chosen = endpoints[self._index(rng)]
        if chosen.ready and (self.panic or chosen.healthy) and chosen.key not in exclude:
            return chosen
        candidates, _ = self.fallback(endpoints, exclude)
        if not candidates:
            return None
        weights = [float(e.weight) for e in candidates]
        return rng.choices(candidates, weights=weights)[0]


class LeastRequestPicker(Picker):
    """Least request (gRFC A48, Envoy): P2C over ``choice_count`` samples with
    equal weights; EDF with ``weight / (active + 1) ** bias`` otherwise."""

    __slots__ = ("_bias", "_choice_count", "_edf", "_weights")

    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        rng: random.Random,
        *,
        choice_count: int = 2,
        active_request_bias: float = 1.0,
        weights: Sequence[float] | None = None,
        panic: bool = False,
    ) -> None:
        super().__init__(endpoints, panic=panic)
        self._choice_count = max(1, choice_count)
        self._bias = active_request_bias
        self._weights = _positive(_weights_of(self.endpoints, weights))
        self._edf = (
            None
            if _all_equal(self._weights)
            else EdfSchedule(self._weights, rng, weight_of=self._effective_weight)
        )

    def _effective_weight(self, index: int) -> float:
        active = self.endpoints[index].active_requests + 1
        bias = self._bias
        if bias == 1.0:
            return self._weights[index] / active
        if bias == 0.0:
            return self._weights[index]
        return float(self._weights[index] / active**bias)

    def _p2c(
        self,
        candidates: Sequence[EndpointState],
        rng: random.Random,
        exclude: Container[EndpointKey],
        check: bool,
    ) -> EndpointState | None:
        n = len(candidates)
        best: EndpointState | None = None
        panic = self.panic
        for _ in range(self._choice_count):
            sample = candidates[int(rng.random() * n)]
            if check and (
                not sample.ready or not (panic or sample.healthy) or sample.key in exclude
            ):
                continue
            if best is None or sample.active_requests < best.active_requests:
                best = sample
        return best

    def pick(
        self,
        rng: random.Random,
        request_hash: int | None = None,
        exclude: Container[EndpointKey] = (),
    ) -> EndpointState | None:
        endpoints = self.endpoints
        if not endpoints:
            return None
        if self._edf is not None:
            for _ in range(len(endpoints)):
                chosen = endpoints[self._edf.next()]
                if chosen.ready and (self.panic or chosen.healthy) and chosen.key not in exclude:
                    return chosen
        else:
            best = self._p2c(endpoints, rng, exclude, True)
            if best is not None:
                return best
        candidates, _ = self.fallback(endpoints, exclude)
        if not candidates:
            return None
        return self._p2c(candidates, rng, exclude, False)


class PickFirstPicker(Picker):
    """The first usable endpoint in order (gRFC A62)."""

    __slots__ = ()

    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        rng: random.Random,
        *,
        shuffle: bool = False,
        panic: bool = False,
    ) -> None:
        ordered = list(endpoints)
        if shuffle:
            rng.shuffle(ordered)
        super().__init__(ordered, panic=panic)

    def pick(
        self,
        rng: random.Random,
        request_hash: int | None = None,
        exclude: Container[EndpointKey] = (),
    ) -> EndpointState | None:
        panic = self.panic
        for endpoint in self.endpoints:
            if endpoint.ready and (panic or endpoint.healthy) and endpoint.key not in exclude:
                return endpoint
        usable, _ = self.fallback(self.endpoints, exclude)
        return usable[0] if usable else None
