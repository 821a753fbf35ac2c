"""Locality-weighted picking (Envoy ``locality_weighted_lb_config``; gRFC A52
``wrr_locality``).

A locality is chosen at random in proportion to its *effective* weight,
then the child picker of that locality chooses the endpoint. As in Envoy
(``HostSetImpl::effectiveLocalityWeight``), the effective weight scales the
configured weight by the locality's availability::

    effective = weight * min(1, overprovisioning_factor / 100 * healthy / total)

so a locality keeps its full share while at least 1/1.4 (~71%) of its
endpoints are healthy, and loses share proportionally below that. Envoy
draws localities from an EDF schedule and grpc's ``weighted_target`` draws
them at random; both give the same proportions, proxyless draws at random
(lock-free).

When the chosen locality cannot serve (every endpoint ejected since the
last rebuild, only excluded ones left, or none ready: gRPC's
``weighted_target`` picks among READY localities) the other localities are
tried, and the best fallback of all is taken when none has a ready,
not excluded endpoint (:func:`~proxyless.lb.pickers.fallback_rank`).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Container, Sequence
from itertools import accumulate

from proxyless.lb.pickers import EndpointKey, Picker, fallback_rank
from proxyless.lb.state import EndpointState
from proxyless.resources.model import Locality

__all__ = ["LocalityPicker", "effective_locality_weight", "locality_name"]


def effective_locality_weight(
    weight: float, healthy: int, total: int, overprovisioning_factor: int = 140
) -> float:
    """Envoy's health-scaled locality weight (0 for an empty locality)."""
    if total <= 0 or weight <= 0:
        return 0.0
    return weight * min(1.0, overprovisioning_factor / 100.0 * healthy / total)


def locality_name(locality: Locality) -> str:
    """``region/zone/sub_zone`` with empty parts kept, e.g. ``us-east1/us-east1-b/``."""
    return f"{locality.region}/{locality.zone}/{locality.sub_zone}"


class LocalityPicker(Picker):
    """Weighted locality choice, then the locality's own picker."""

    __slots__ = ("_children", "_cumulative", "_total", "localities", "weights")

    def __init__(
        self,
        children: Sequence[tuple[Locality, float, Picker]],
        *,
        panic: bool = False,
    ) -> None:
        kept = [(loc, w, p) for loc, w, p in children if w > 0 and p.endpoints]
        super().__init__([e for _, _, p in kept for e in p.endpoints], panic=panic)
        self.localities: tuple[Locality, ...] = tuple(loc for loc, _, _ in kept)
        #: effective weight per locality, aligned with :attr:`localities`
        self.weights: tuple[float, ...] = tuple(w for _, w, _ in kept)
        self._children: tuple[Picker, ...] = tuple(p for _, _, p in kept)
        self._cumulative = list(accumulate(self.weights))
        self._total = self._cumulative[-1] if self._cumulative else 0.0

    def pick(
        self,
        rng: random.Random,
        request_hash: int | None = None,
        exclude: Container[EndpointKey] = (),
    ) -> EndpointState | None:
        children = self._children
        if not children:
            return None
        if len(children) == 1:
            first = 0
        else:
            first = min(
                bisect_right(self._cumulative, rng.random() * self._total), len(children) - 1
            )
        chosen = children[first].pick(rng, request_hash, exclude)
        if chosen is not None and chosen.ready and chosen.key not in exclude:
            return chosen
        fallback = chosen
        rank = 6 if chosen is None else fallback_rank(chosen, exclude)
        for index, child in enumerate(children):
            if index == first:
                continue
            other = child.pick(rng, request_hash, exclude)
            if other is not None:
                other_rank = fallback_rank(other, exclude)
                if other_rank == 0:
                    return other
                if other_rank < rank:
                    fallback, rank = other, other_rank
        return fallback

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{locality_name(loc)}={w:g}"
            for loc, w in zip(self.localities, self.weights, strict=True)
        )
        return f"LocalityPicker({parts})"
