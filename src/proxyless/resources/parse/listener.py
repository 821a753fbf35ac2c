"""Parse and validate ``envoy.config.listener.v3.Listener`` (LDS) for a client.

Follows gRFC A27/A28 (the ``api_listener`` holds an HttpConnectionManager
whose routes come from RDS over ADS, or inline), A31
(``common_http_protocol_options.max_stream_duration``), A39 (HTTP filters:
the router must be present and last, names are unique, an unknown filter is
an error unless ``is_optional``) and A41 (``xff_num_trusted_hops`` must be 0
and ``original_ip_detection_extensions`` empty), as C-core's
``xds_listener_parser.cc`` checks them. A Listener without ``api_listener`` but
with ``filter_chains`` (or a ``default_filter_chain``) is an inbound listener for an
xDS-enabled server (gRFC A36), parsed by
:mod:`proxyless.resources.parse.server_listener` into a ``ServerListener``;
a client watching such a name gets a resource error.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from proxyless.resources.model.listener import Listener
from proxyless.resources.model.route import RouteConfiguration
from proxyless.resources.model.server_listener import ServerListener
from proxyless.resources.parse.common import (
    Ctx,
    check_config_source,
    join,
    opt_duration,
    unhandled,
    unpack,
)
from proxyless.resources.parse.filters import http_filters
from proxyless.resources.parse.resource import decode_resource, parse_resource
from proxyless.resources.parse.route import route_configuration
from proxyless.resources.parse.server_listener import server_listener
from proxyless.xds_client.resource_type import DecodeResult

__all__ = ["decode_listener", "parse_listener"]

HCM_TYPE = hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


def decode_listener(data: bytes) -> DecodeResult:
    """Decode serialized Listener bytes; never raises."""
    return decode_resource(data, listener_pb2.Listener, _listener)


def parse_listener(msg: Any) -> Listener | ServerListener:
    """Validate a Listener message; raise ResourceValidationError."""
    parsed: Listener | ServerListener = parse_resource(msg, _listener)  # type: ignore[assignment]
    return parsed


def _listener(ctx: Ctx, msg: Any) -> Listener | ServerListener | None:
    if not msg.HasField("api_listener") and (
        msg.filter_chains or msg.HasField("default_filter_chain")
    ):
        return server_listener(ctx, msg)
    unhandled(ctx, msg, "", ("name", "api_listener"))
    if not msg.name:
        ctx.error("name", "must not be empty")
    if not msg.HasField("api_listener"):
        ctx.error("api_listener", "listener has no api_listener")
        return None
    path = "api_listener.api_listener"
    hcm = unpack(ctx, path, msg.api_listener.api_listener, hcm_pb2.HttpConnectionManager)
    if hcm is None:
        return None
    unhandled(
        ctx,
        hcm,
        path,
        (
            "rds",
            "route_config",
            "scoped_routes",
            "http_filters",
            "common_http_protocol_options",
            "xff_num_trusted_hops",
            "original_ip_detection_extensions",
            # Required by Envoy, meaningless to a client.
            "stat_prefix",
            "codec_type",
        ),
    )
    if hcm.xff_num_trusted_hops:
        ctx.error(join(path, "xff_num_trusted_hops"), "must be 0 (gRFC A41)")
    if hcm.original_ip_detection_extensions:
        ctx.error(join(path, "original_ip_detection_extensions"), "must be empty (gRFC A41)")
    which = hcm.WhichOneof("route_specifier")
    route_config_name = None
    route_config = None
    if which == "rds":
        rpath = join(path, "rds")
        unhandled(ctx, hcm.rds, rpath, ("config_source", "route_config_name"))
        if not hcm.rds.HasField("config_source"):
            ctx.error(join(rpath, "config_source"), "is required")
        else:
            check_config_source(ctx, join(rpath, "config_source"), hcm.rds.config_source)
        route_config_name = hcm.rds.route_config_name
        if not route_config_name:
            ctx.error(join(rpath, "route_config_name"), "must not be empty")
    elif which == "route_config":
        inner = Ctx()
        route_config = route_configuration(inner, join(path, "route_config"), hcm.route_config)
        ctx.errors.extend(inner.errors)
        ctx.ignored.extend(inner.ignored)
        if route_config is not None:
            # Ignored paths are reported on the Listener, relative to it.
            route_config = _without_ignored(route_config)
    elif which == "scoped_routes":
        ctx.error(join(path, "scoped_routes"), "scoped routes are not supported")
    else:
        ctx.error(path, "neither rds nor route_config is set")
    filters = http_filters(ctx, join(path, "http_filters"), hcm.http_filters)
    max_stream = None
    if hcm.HasField("common_http_protocol_options"):
        opath = join(path, "common_http_protocol_options")
        options = hcm.common_http_protocol_options
        unhandled(ctx, options, opath, ("max_stream_duration",))
        max_stream = opt_duration(ctx, options, "max_stream_duration", opath)
    if ctx.errors:
        return None
    return Listener(
        name=msg.name,
        route_config_name=route_config_name,
        route_config=route_config,
        http_filters=filters,
        max_stream_duration=max_stream,
        ignored_fields=tuple(ctx.ignored),
    )


def _without_ignored(route_config: RouteConfiguration) -> RouteConfiguration:
    return replace(route_config, ignored_fields=())
