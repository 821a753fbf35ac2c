"""HTTP filter configs: router, fault (gRFC A33), RBAC (gRFC A41); gRFC A39 rules.

Top-level configs come from ``HttpConnectionManager.http_filters[].typed_config``;
overrides from ``typed_per_filter_config`` maps on virtual hosts, routes and
weighted clusters, possibly wrapped in ``envoy.config.route.v3.FilterConfig``.
An unknown filter type is an error unless the filter is marked optional; a
``typed_per_filter_config`` key must not be empty (C-core
``xds_route_config_parser.cc``). A fault abort's ``grpc_status`` must be a
gRPC status code (0-16, C-core ``xds_http_fault_filter.cc``); Envoy's
``fault.proto`` adds: an abort needs an error type, a delay a kind, and an
``http_status`` is in [200, 600).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2

from proxyless.resources.model.filters import (
    DisabledFilterConfig,
    FaultAbort,
    FaultDelay,
    FaultFilterConfig,
    FilterConfig,
    RbacFilterConfig,
    RouterFilterConfig,
)
from proxyless.resources.model.listener import HttpFilter
from proxyless.resources.parse.common import (
    Ctx,
    duration,
    fractional_per_million,
    header_matcher,
    join,
    type_name,
    unhandled,
    unpack,
    wrapped,
)
from proxyless.resources.parse.rbac import policy

__all__ = [
    "FAULT_TYPE",
    "RBAC_PER_ROUTE_TYPE",
    "RBAC_TYPE",
    "ROUTER_TYPE",
    "UNKNOWN",
    "filter_config",
    "http_filters",
    "per_filter_configs",
]

ROUTER_TYPE = router_pb2.Router.DESCRIPTOR.full_name
FAULT_TYPE = fault_pb2.HTTPFault.DESCRIPTOR.full_name
RBAC_TYPE = rbac_pb2.RBAC.DESCRIPTOR.full_name
RBAC_PER_ROUTE_TYPE = rbac_pb2.RBACPerRoute.DESCRIPTOR.full_name
_FILTER_CONFIG_TYPE = route_components_pb2.FilterConfig.DESCRIPTOR.full_name

#: Returned by :func:`filter_config` for a type it does not know.
UNKNOWN: Any = object()

_RBAC_ACTIONS = {0: "ALLOW", 1: "DENY", 2: "LOG"}


def filter_config(ctx: Ctx, path: str, any_msg: Any, *, top_level: bool) -> Any:
    """Parse one filter config ``Any``: a FilterConfig, None on error, or UNKNOWN."""
    name = type_name(any_msg)
    if name == ROUTER_TYPE and top_level:
        router = unpack(ctx, path, any_msg, router_pb2.Router)
        if router is None:
            return None
        unhandled(ctx, router, path, ())
        return RouterFilterConfig()
    if name == FAULT_TYPE:
        fault = unpack(ctx, path, any_msg, fault_pb2.HTTPFault)
        return None if fault is None else _fault(ctx, path, fault)
    if name == RBAC_TYPE:
        rbac = unpack(ctx, path, any_msg, rbac_pb2.RBAC)
        return None if rbac is None else _rbac(ctx, path, rbac)
    if name == RBAC_PER_ROUTE_TYPE and not top_level:
        per_route = unpack(ctx, path, any_msg, rbac_pb2.RBACPerRoute)
        if per_route is None:
            return None
        if not per_route.HasField("rbac"):
            return RbacFilterConfig()
        return _rbac(ctx, join(path, "rbac"), per_route.rbac)
    return UNKNOWN


def _fault(ctx: Ctx, path: str, msg: Any) -> FaultFilterConfig | None:
    errors = len(ctx.errors)
    unhandled(
        ctx,
        msg,
        path,
        ("delay", "abort", "upstream_cluster", "headers", "downstream_nodes", "max_active_faults"),
    )
    delay = None
    if msg.HasField("delay"):
        dpath = join(path, "delay")
        d = msg.delay
        which = d.WhichOneof("fault_delay_secifier")
        per_million = fractional_per_million(ctx, join(dpath, "percentage"), d.percentage)
        if which == "fixed_delay":
            delay = FaultDelay(
                fixed_delay=duration(ctx, join(dpath, "fixed_delay"), d.fixed_delay),
                per_million=per_million,
            )
        elif which == "header_delay":
            delay = FaultDelay(fixed_delay=None, per_million=per_million, header_controlled=True)
        else:
            ctx.error(dpath, "one of fixed_delay or header_delay is required")
    abort = None
    if msg.HasField("abort"):
        apath = join(path, "abort")
        a = msg.abort
        which = a.WhichOneof("error_type")
        per_million = fractional_per_million(ctx, join(apath, "percentage"), a.percentage)
        if which == "http_status":
            status = int(a.http_status)
            if not 200 <= status < 600:
                ctx.error(join(apath, "http_status"), f"{status} must be in [200, 600)")
            abort = FaultAbort(http_status=status, grpc_status=None, per_million=per_million)
        elif which == "grpc_status":
            if int(a.grpc_status) > 16:
                ctx.error(
                    join(apath, "grpc_status"), f"{a.grpc_status} is not a gRPC status code (0-16)"
                )
            abort = FaultAbort(
                http_status=None, grpc_status=int(a.grpc_status), per_million=per_million
            )
        elif which == "header_abort":
            abort = FaultAbort(
                http_status=None, grpc_status=None, per_million=per_million, header_controlled=True
            )
        else:
            ctx.error(apath, "one of http_status, grpc_status or header_abort is required")
    headers = []
    for i, h in enumerate(msg.headers):
        hm = header_matcher(ctx, f"{join(path, 'headers')}[{i}]", h)
        if hm is not None:
            headers.append(hm)
    if len(ctx.errors) != errors:
        return None
    return FaultFilterConfig(
        delay=delay,
        abort=abort,
        max_active_faults=wrapped(msg, "max_active_faults", None),
        headers=tuple(headers),
        upstream_cluster=msg.upstream_cluster,
        downstream_nodes=tuple(msg.downstream_nodes),
    )


def _rbac(ctx: Ctx, path: str, msg: Any) -> RbacFilterConfig | None:
    unhandled(ctx, msg, path, ("rules", "matcher"))
    if msg.HasField("matcher"):
        ctx.error(join(path, "matcher"), "matcher-based RBAC is not supported")
        return None
    if not msg.HasField("rules"):
        return RbacFilterConfig()
    rules = msg.rules
    rpath = join(path, "rules")
    unhandled(ctx, rules, rpath, ("action", "policies"))
    errors = len(ctx.errors)
    policies = []
    for name in sorted(rules.policies):
        ppath = f"{join(rpath, 'policies')}[{name!r}]"
        parsed = policy(ctx, ppath, name, rules.policies[name])
        if parsed is not None:
            policies.append(parsed)
    action = _RBAC_ACTIONS.get(int(rules.action))
    if action is None:
        ctx.error(join(rpath, "action"), f"unknown action {rules.action}")
        return None
    if len(ctx.errors) != errors:
        return None
    return RbacFilterConfig(
        action=action,  # type: ignore[arg-type]
        policy_names=tuple(sorted(rules.policies)),
        policies=tuple(policies),
    )


def per_filter_configs(ctx: Ctx, path: str, configs: Any) -> Mapping[str, FilterConfig]:
    """Parse a ``typed_per_filter_config`` map (gRFC A39)."""
    out: dict[str, FilterConfig] = {}
    for name in sorted(configs):
        any_msg = configs[name]
        epath = f"{path}[{name!r}]"
        if not name:
            ctx.error(epath, "the filter name (key) must not be empty")
            continue
        optional = False
        if type_name(any_msg) == _FILTER_CONFIG_TYPE:
            wrapper = unpack(ctx, epath, any_msg, route_components_pb2.FilterConfig)
            if wrapper is None:
                continue
            optional = bool(wrapper.is_optional)
            if wrapper.disabled:
                out[name] = DisabledFilterConfig()
                continue
            if not wrapper.HasField("config"):
                ctx.error(join(epath, "config"), "must be set unless disabled")
                continue
            any_msg = wrapper.config
            epath = join(epath, "config")
        parsed = filter_config(ctx, epath, any_msg, top_level=False)
        if parsed is UNKNOWN:
            if optional:
                ctx.ignore(f"{epath} ({type_name(any_msg)})")
            else:
                ctx.error(
                    epath, f"unsupported filter config type {type_name(any_msg) or '<empty>'}"
                )
            continue
        if parsed is not None:
            out[name] = parsed
    return MappingProxyType(out)


def http_filters(ctx: Ctx, path: str, msgs: Any) -> tuple[HttpFilter, ...]:
    """``HttpConnectionManager.http_filters`` (gRFC A39): unique names, router last,
    unknown filters an error unless optional."""
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
