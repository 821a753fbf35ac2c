"""The xDS v3 resource types proxyless understands, as plug-ins for the xDS client.

Type URLs are those of Envoy's v3 API (``type.googleapis.com/envoy.config...``);
LDS and CDS State-of-the-World responses carry every subscribed resource, so a
missing one was deleted (gRFC A27). Each ``decode`` is a parser from
:mod:`proxyless.resources.parse` that never raises and returns the resource
name even for an invalid resource (gRFC A46).
"""

from __future__ import annotations

from proxyless.resources.parse.cluster import decode_cluster
from proxyless.resources.parse.endpoint import decode_cluster_load_assignment
from proxyless.resources.parse.listener import decode_listener
from proxyless.resources.parse.route import decode_route_configuration
from proxyless.resources.parse.secret import decode_secret
from proxyless.xds_client.resource_type import ResourceType

__all__ = [
    "ALL_TYPES",
    "BY_TYPE_URL",
    "CLUSTER",
    "CLUSTER_LOAD_ASSIGNMENT",
    "LISTENER",
    "ROUTE_CONFIGURATION",
    "SECRET",
]

_PREFIX = "type.googleapis.com/"

LISTENER = ResourceType(
    type_url=_PREFIX + "envoy.config.listener.v3.Listener",
    short_name="LDS",
    all_required_in_sotw=True,
    decode=decode_listener,
)
ROUTE_CONFIGURATION = ResourceType(
    type_url=_PREFIX + "envoy.config.route.v3.RouteConfiguration",
    short_name="RDS",
    all_required_in_sotw=False,
    decode=decode_route_configuration,
)
CLUSTER = ResourceType(
    type_url=_PREFIX + "envoy.config.cluster.v3.Cluster",
    short_name="CDS",
    all_required_in_sotw=True,
    decode=decode_cluster,
)
CLUSTER_LOAD_ASSIGNMENT = ResourceType(
    type_url=_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment",
    short_name="EDS",
    all_required_in_sotw=False,
    decode=decode_cluster_load_assignment,
)
SECRET = ResourceType(
    type_url=_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret",
    short_name="SDS",
    all_required_in_sotw=False,
    decode=decode_secret,
)

ALL_TYPES: tuple[ResourceType, ...] = (
    LISTENER,
    ROUTE_CONFIGURATION,
    CLUSTER,
    CLUSTER_LOAD_ASSIGNMENT,
    SECRET,
)
BY_TYPE_URL: dict[str, ResourceType] = {t.type_url: t for t in ALL_TYPES}
