"""Cluster choice for a route action (gRFC A28 weighted clusters; Envoy
``RouteAction.cluster_specifier``).

- ``cluster``: that cluster.
- ``weighted_clusters``: a random integer ``r`` in ``[0, total weight)``
  from the injected RNG; the first entry whose cumulative weight exceeds
  ``r`` wins (entries with weight 0 were dropped by the parser), which is
  how Envoy and grpc-go pick.
- ``cluster_header``: the value of that request header (same visibility
  rules as header matching). A missing or empty header yields no cluster;
  the caller fails the request (Envoy answers
  ``cluster_not_found_response_code``, 503 by default).
"""

from __future__ import annotations

import random

from proxyless.resources.model import ClusterWeight, RouteAction
from proxyless.routing.request import RequestInfo, header_value

__all__ = ["choose_cluster"]


def choose_cluster(
    action: RouteAction, request: RequestInfo, rng: random.Random
) -> tuple[str | None, ClusterWeight | None]:
    """``(cluster name, the chosen weighted entry or None)``.

    The name is None only for ``cluster_header`` when the header is missing
    or empty.
    """
    if action.cluster is not None:
        return action.cluster, None
    weighted = action.weighted_clusters
    if weighted is not None:
        if len(weighted) == 1:
            return weighted[0].name, weighted[0]
        total = 0
        for entry in weighted:
            total += entry.weight
        point = rng.randrange(total)
        for entry in weighted:
            point -= entry.weight
            if point < 0:
                return entry.name, entry
        last = weighted[-1]  # unreachable: point < total
        return last.name, last
    if action.cluster_header is not None:
        value = header_value(request, action.cluster_header)
        return (value or None), None
    return None, None
