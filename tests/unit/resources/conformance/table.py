"""The conformance table's vocabulary: a case, its verdicts, resource builders.

A case is one validation rule of gRPC C-core's xDS resource parsers
(``src/core/xds/grpc/xds_*_parser.cc``, ``xds_http_*_filter.cc``) or of
Envoy's proto constraints (PGV rules in ``envoy/config/**.proto``), shown on
the smallest resource that exercises it. Resources are written as proto JSON
(field names as in the ``.proto`` files) and merged over a small valid base,
so each case states only what it changes.

``grpc`` is C-core's verdict. ``differs`` is empty when proxyless agrees;
otherwise it says why proxyless decides the other way on purpose, and the
case id is listed in ``docs/resources.md`` ("Where proxyless differs from
gRPC's validation, and why").
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["accept", "nack"]
Kind = Literal["Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"]

#: In a patch, removes the key from the base.
DELETE: Any = object()


@dataclass(frozen=True)
class Replace:
    """In a patch, replaces the base's value instead of merging into it."""

    value: dict[str, Any]


@dataclass(frozen=True)
class Case:
    id: str
    kind: Kind
    resource: dict[str, Any]
    grpc: Verdict
    #: for a NACK by proxyless: the field path its error must name
    path: str = ""
    #: why proxyless' verdict is not gRPC's (empty: they agree)
    differs: str = ""
    #: changes the built message where proto JSON cannot say it (out-of-range values)
    tweak: Callable[[Any], None] | None = None

    @property
    def proxyless(self) -> Verdict:
        if not self.differs:
            return self.grpc
        return "nack" if self.grpc == "accept" else "accept"


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` merged in: dicts recursively, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, Replace):
            out[key] = copy.deepcopy(value.value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and "@type" not in value:
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def typed(type_name: str, **fields: Any) -> dict[str, Any]:
    """A ``google.protobuf.Any`` in proto JSON."""
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


ADS: dict[str, Any] = {"ads": {}}
