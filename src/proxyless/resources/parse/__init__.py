"""proxyless.resources.parse: Envoy v3 protos -> validated model.

The only place in proxyless that imports Envoy resource protos. Each resource
has a ``decode_*`` (bytes -> DecodeResult, never raises) and a ``parse_*``
(message -> model, raises ResourceValidationError).
"""

from __future__ import annotations

from proxyless.resources.parse.cluster import decode_cluster, parse_cluster
from proxyless.resources.parse.endpoint import (
    decode_cluster_load_assignment,
    parse_cluster_load_assignment,
)
from proxyless.resources.parse.listener import decode_listener, parse_listener
from proxyless.resources.parse.route import (
    decode_route_configuration,
    parse_route_configuration,
)
from proxyless.resources.parse.secret import decode_secret, parse_secret

__all__ = [
    "decode_cluster",
    "decode_cluster_load_assignment",
    "decode_listener",
    "decode_route_configuration",
    "decode_secret",
    "parse_cluster",
    "parse_cluster_load_assignment",
    "parse_listener",
    "parse_route_configuration",
    "parse_secret",
]
