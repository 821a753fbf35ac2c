"""proxyless.resources: xDS v3 resources parsed into a frozen, validated model.

- :mod:`proxyless.resources.model`: the dataclasses every other layer reads.
- :mod:`proxyless.resources.parse`: ``decode_*``/``parse_*`` per resource.
- :mod:`proxyless.resources.types`: the :class:`ResourceType` plug-ins
  (LDS, RDS, CDS, EDS, SDS) for the generic xDS client.

See ``docs/resources.md`` for the field-level support matrix.
"""

from __future__ import annotations

from proxyless.resources.types import (
    ALL_TYPES,
    BY_TYPE_URL,
    CLUSTER,
    CLUSTER_LOAD_ASSIGNMENT,
    LISTENER,
    ROUTE_CONFIGURATION,
    SECRET,
)

__all__ = [
    "ALL_TYPES",
    "BY_TYPE_URL",
    "CLUSTER",
    "CLUSTER_LOAD_ASSIGNMENT",
    "LISTENER",
    "ROUTE_CONFIGURATION",
    "SECRET",
]
