"""Parse and validate ``envoy.config.listener.v3.Listener`` (LDS) for a client.

Follows gRFC A27/A28 (the ``api_listener`` holds an HttpConnectionManager
whose routes come from RDS over ADS, or inline), A31
(``common_http_protocol_options.max_stream_duration``) and A39 (HTTP filters:
the router must be present and last, names are unique, an unknown filter is
an error unless ``is_optional``). A Listener without ``api_listener`` is a
socket listener for a proxy or server and is invalid for a client.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from proxyless.resources.model.filters import RouterFilterConfig
from proxyless.resources.model.listener import HttpFilter, Listener
from proxyless.resources.model.route import RouteConfiguration
from proxyless.resources.parse.common import (
    Ctx,
    check_config_source,
    join,
    opt_duration,
    type_name,
    unhandled,
    unpack,
)
from proxyless.resources.parse.filters import UNKNOWN, filter_config
from proxyless.resources.parse.resource import decode_resource, parse_resource
from proxyless.resources.parse.route import route_configuration
from proxyless.xds_client.resource_type import DecodeResult

__all__ = ["decode_listener", "parse_listener"]

HCM_TYPE = hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


def decode_listener(data: bytes) -> DecodeResult:
    """Decode serialized Listener bytes; never raises."""
    return decode_resource(data, listener_pb2.Listener, _listener)


def parse_listener(msg: Any) -> Listener:
    """Validate a Listener message; raise ResourceValidationError."""
    return parse_resource(msg, _listener)


def _listener(ctx: Ctx, msg: Any) -> Listener | None:
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
            # Required by Envoy, meaningless to a client.
            "stat_prefix",
            "codec_type",
        ),
    )
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
    filters = _http_filters(ctx, join(path, "http_filters"), hcm.http_filters)
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


def _http_filters(ctx: Ctx, path: str, msgs: Any) -> tuple[HttpFilter, ...]:
    out: list[HttpFilter] = []
    names: dict[str, int] = {}
    router_at = None
    for i, f in enumerate(msgs):
        fpath = f"{path}[{i}]"
        unhandled(
            ctx, f, fpath, ("name", "typed_config", "config_discovery", "is_optional", "disabled")
        )
        if not f.name:
            ctx.error(join(fpath, "name"), "must not be empty")
            continue
        if f.name in names:
            ctx.error(
                join(fpath, "name"),
                f"duplicate filter name {f.name!r} (also http_filters[{names[f.name]}])",
            )
            continue
        names[f.name] = i
        optional = bool(f.is_optional)
        if f.disabled:
            ctx.ignore(f"{fpath} ({f.name}, disabled)")
            continue
        which = f.WhichOneof("config_type")
        if which != "typed_config":
            if optional:
                ctx.ignore(f"{fpath} ({f.name})")
            elif which == "config_discovery":
                ctx.error(
                    join(fpath, "config_discovery"), "filter config discovery is not supported"
                )
            else:
                ctx.error(join(fpath, "typed_config"), "is required")
            continue
        tpath = join(fpath, "typed_config")
        config = filter_config(ctx, tpath, f.typed_config, top_level=True)
        if config is UNKNOWN:
            if optional:
                ctx.ignore(f"{fpath} ({f.name})")
            else:
                ctx.error(
                    tpath,
                    f"unsupported filter type {type_name(f.typed_config) or '<empty>'} for filter {f.name!r}",
                )
            continue
        if config is None:
            continue
        if isinstance(config, RouterFilterConfig) and router_at is None:
            router_at = i
        elif router_at is not None:
            ctx.error(
                join(fpath, "name"),
                f"filter {f.name!r} comes after the router filter (http_filters[{router_at}]), which must be last",
            )
        out.append(
            HttpFilter(
                name=f.name, type_url=f.typed_config.type_url, config=config, is_optional=optional
            )
        )
    if router_at is None:
        ctx.error(
            path, "the router filter (envoy.extensions.filters.http.router.v3.Router) is required"
        )
    return tuple(out)
