"""Parse and validate ``envoy.config.route.v3.RouteConfiguration`` (RDS).

This module holds the route configuration, its virtual hosts, routes and
route matches, and the two actions answered without an upstream (redirect,
direct response). A forwarding route's action and its policies are parsed in
:mod:`proxyless.resources.parse.route_action`, header mutations in
:mod:`proxyless.resources.parse.header_mutation`.

Validation follows gRFC A28 (domains, route matchers, regexes), A39
(per-route filter configs) and Envoy's ``route_components.proto`` constraints
for the HTTP features proxyless supports beyond gRPC (redirects, direct
responses). A route whose action is a cluster specifier plugin, or whose
match uses a matcher proxyless cannot evaluate, makes the resource invalid,
as in grpc-go; so does a ``cluster_specifier_plugins`` entry (proxyless
has no plugin) unless it is optional, in which case the routes that use it
are skipped, as in C-core. A forwarding route without a cluster specifier is skipped
(reported in ``ignored_fields``), as C-core's ``xds_route_config_parser.cc``
skips it; a route without any action is invalid, as Envoy's
``route_components.proto`` requires one. Prefixes and paths that cannot
match a gRPC method (``service``, ``/a/b/c``) are kept: they can match an
HTTP request.

``decode_route_configuration`` validates plain virtual hosts ahead and
leaves building their routes (through this module's parsers) to first use:
all at once when every one is plain (:mod:`proxyless.resources.parse.route_bulk`),
else one by one (:mod:`proxyless.resources.parse.route_screen`); the result
is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from envoy.config.route.v3 import route_components_pb2, route_pb2

from proxyless.resources.model.route import (
    Action,
    DirectResponseAction,
    NonForwardingAction,
    RedirectAction,
    Route,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from proxyless.resources.parse.common import (
    WHITESPACE,
    Ctx,
    LastByName,
    fractional_per_million,
    header_matcher,
    join,
    query_parameter_matcher,
    regex,
    regex_rewrite,
    unhandled,
    wrapped,
)
from proxyless.resources.parse.filters import per_filter_configs
from proxyless.resources.parse.header_mutation import header_mutations
from proxyless.resources.parse.resource import decode_resource, parse_resource
from proxyless.resources.parse.route_action import hedge_policy, retry_policy, route_action
from proxyless.resources.parse.route_bulk import screen_configuration, screen_mixed
from proxyless.resources.parse.route_screen import virtual_host_bytes
from proxyless.xds_client.resource_type import DecodeResult

__all__ = [
    "decode_route_configuration",
    "parse_route_configuration",
    "route_configuration",
]

#: Whitespace anywhere in a domain makes it invalid.

_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}


def decode_route_configuration(data: bytes, *, screen: bool = True) -> DecodeResult:
    """Decode serialized RouteConfiguration bytes; never raises.

    ``screen``: validate plain virtual hosts ahead and build their routes on
    first use (:mod:`proxyless.resources.parse.route_bulk`, else
    :mod:`proxyless.resources.parse.route_screen` virtual host by virtual
    host); False parses everything the general way (the same result, built
    whole).
    """

    ahead = _Ahead(data) if screen else None

    def validate(ctx: Ctx, msg: Any) -> RouteConfiguration | None:
        return _top_level(ctx, msg, ahead)

    result = decode_resource(data, route_pb2.RouteConfiguration, validate)
    if ahead is not None and result.value is not None:
        _LAST.put(result.value.name, ahead.kept or None)
    return result


#: The virtual hosts validated ahead of the last configuration accepted
#: under each name, by their bytes, for the next one to reuse.
_LAST: LastByName[dict[bytes, VirtualHost]] = LastByName(16)


@dataclass(slots=True)
class _Ahead:
    """Validating virtual hosts ahead: the bytes the RouteConfiguration was
    parsed from, and (filled in) its virtual hosts validated ahead, by their
    bytes: a control plane resends the whole configuration when one virtual
    host changes (istiod does), and a virtual host of the next one with the
    same bytes is the same one again, reused as it is (built routes
    included)."""

    data: bytes
    kept: dict[bytes, VirtualHost] = field(default_factory=dict)


def parse_route_configuration(msg: Any) -> RouteConfiguration:
    """Validate a RouteConfiguration message; raise ResourceValidationError."""
    return parse_resource(msg, _top_level)


def _top_level(ctx: Ctx, msg: Any, ahead: _Ahead | None = None) -> RouteConfiguration | None:
    # An RDS resource is named; a Listener's inline route_config need not be.
    if not msg.name:
        ctx.error("name", "must not be empty")
    return route_configuration(ctx, "", msg, ahead)


def route_configuration(
    ctx: Ctx, path: str, msg: Any, ahead: _Ahead | None = None
) -> RouteConfiguration | None:
    """Parse a RouteConfiguration at ``path`` (also used for a Listener's
    inline config); with ``ahead``, plain virtual hosts are validated ahead
    (``route_bulk``, ``route_screen``)."""
    unhandled(
        ctx,
        msg,
        path,
        (
            "name",
            "virtual_hosts",
            "vhds",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "typed_per_filter_config",
            "cluster_specifier_plugins",
        ),
    )
    optional_plugins = _cluster_specifier_plugins(ctx, path, msg)
    if msg.HasField("vhds"):
        ctx.error(join(path, "vhds"), "on-demand virtual hosts (VHDS) are not supported")
    vhs_path = join(path, "virtual_hosts")
    vhosts = None
    screened: Callable[[int, Any], VirtualHost | None] | None = None
    hosts = msg.virtual_hosts
    sources = virtual_host_bytes(ahead.data) if ahead is not None else None
    if ahead is not None and sources is not None and len(sources) == len(hosts):
        build = partial(_built_routes, path=vhs_path, optional_plugins=optional_plugins)
        previous = _LAST.get(msg.name) or {}
        kept = ahead.kept
        # Every virtual host plain (the common case): all at once.
        if msg.ByteSize() == len(ahead.data):  # canonical
            vhosts = screen_configuration(ahead.data, hosts, sources, build, previous, kept)
        if vhosts is None:
            screened = screen_mixed(ahead.data, hosts, sources, build, previous, kept)
    if vhosts is None:
        vhosts = _virtual_hosts(ctx, vhs_path, msg, optional_plugins, screened)
    request_add, request_remove, response_add, response_remove = header_mutations(ctx, path, msg)
    filters = per_filter_configs(
        ctx, join(path, "typed_per_filter_config"), msg.typed_per_filter_config
    )
    return RouteConfiguration(
        name=msg.name,
        virtual_hosts=tuple(vhosts),
        request_headers_to_add=request_add,
        request_headers_to_remove=request_remove,
        response_headers_to_add=response_add,
        response_headers_to_remove=response_remove,
        typed_per_filter_config=filters,
        ignored_fields=tuple(ctx.ignored),
    )


def _virtual_hosts(
    ctx: Ctx,
    vhs_path: str,
    msg: Any,
    optional_plugins: frozenset[str],
    screened: Callable[[int, Any], VirtualHost | None] | None,
) -> list[VirtualHost]:
    """The virtual hosts of ``msg`` one by one: ``screened(index, message)``
    gives one validated ahead or reused (``route_screen``), or None for the
    general way."""
    vhosts = []
    seen_domains: dict[str, int] = {}
    for i, vh in enumerate(msg.virtual_hosts):
        vpath = f"{vhs_path}[{i}]"
        vhost = screened(i, vh) if screened is not None else None
        if vhost is None:
            vhost = _virtual_host(ctx, vpath, vh, optional_plugins)
        if vhost is None:
            continue
        for domain in vhost.domains:
            if domain in seen_domains:
                ctx.error(
                    join(vpath, "domains"),
                    f"domain {domain!r} already used by virtual_hosts[{seen_domains[domain]}]",
                )
            else:
                seen_domains[domain] = i
        vhosts.append(vhost)
    return vhosts


def _domain(ctx: Ctx, path: str, domain: str) -> str | None:
    if not domain:
        ctx.error(path, "domain must not be empty")
        return None
    # Envoy (route_components.proto, VirtualHost.domains): a leading ``*``
    # makes a suffix wildcard, else a trailing ``*`` a prefix wildcard, and
    # any other ``*`` (``svc.*:9000``, ``a-*:80``) is part of an exact domain.
    if "/" in domain or WHITESPACE.search(domain) is not None:
        ctx.error(path, f"invalid domain {domain!r}")
        return None
    return domain.lower()


def _cluster_specifier_plugins(ctx: Ctx, path: str, msg: Any) -> frozenset[str]:
    """The names of the optional plugins (whose routes are skipped); a
    required plugin is an error, since proxyless implements none."""
    optional: set[str] = set()
    seen: set[str] = set()
    for i, plugin in enumerate(msg.cluster_specifier_plugins):
        ppath = f"{join(path, 'cluster_specifier_plugins')}[{i}].extension"
        name: str = plugin.extension.name
        if name in seen:
            ctx.error(join(ppath, "name"), f"duplicate cluster specifier plugin {name!r}")
            continue
        seen.add(name)
        if plugin.is_optional:
            optional.add(name)
            ctx.ignore(f"{ppath} ({name}: optional plugin, its routes are skipped)")
        else:
            ctx.error(
                join(ppath, "typed_config"),
                "unsupported cluster specifier plugin "
                f"{plugin.extension.typed_config.type_url or '<empty>'}",
            )
    return frozenset(optional)


def _virtual_host(
    ctx: Ctx, path: str, msg: Any, optional_plugins: frozenset[str] = frozenset()
) -> VirtualHost | None:
    errors = len(ctx.errors)
    unhandled(
        ctx,
        msg,
        path,
        (
            "name",
            "domains",
            "routes",
            "matcher",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "typed_per_filter_config",
            "include_request_attempt_count",
            "include_attempt_count_in_response",
            "retry_policy",
            "hedge_policy",
        ),
    )
    if msg.HasField("matcher"):
        ctx.error(join(path, "matcher"), "matcher-based routing is not supported")
    if not msg.domains:
        ctx.error(join(path, "domains"), "at least one domain is required")
    domains: list[str] = []
    for i, d in enumerate(msg.domains):
        dom = _domain(ctx, f"{join(path, 'domains')}[{i}]", d)
        if dom is None:
            continue
        if dom in domains:
            ctx.error(f"{join(path, 'domains')}[{i}]", f"duplicate domain {dom!r}")
            continue
        domains.append(dom)
    routes = []
    for i, r in enumerate(msg.routes):
        route = _route(ctx, f"{join(path, 'routes')}[{i}]", r, optional_plugins)
        if route is not None:
            routes.append(route)
    retry = (
        retry_policy(ctx, join(path, "retry_policy"), msg.retry_policy)
        if msg.HasField("retry_policy")
        else None
    )
    hedge = (
        hedge_policy(ctx, join(path, "hedge_policy"), msg.hedge_policy)
        if msg.HasField("hedge_policy")
        else None
    )
    request_add, request_remove, response_add, response_remove = header_mutations(ctx, path, msg)
    filters = per_filter_configs(
        ctx, join(path, "typed_per_filter_config"), msg.typed_per_filter_config
    )
    if len(ctx.errors) != errors:
        return None
    return VirtualHost(
        name=msg.name,
        domains=tuple(domains),
        routes=tuple(routes),
        retry_policy=retry,
        hedge_policy=hedge,
        request_headers_to_add=request_add,
        request_headers_to_remove=request_remove,
        response_headers_to_add=response_add,
        response_headers_to_remove=response_remove,
        typed_per_filter_config=filters,
        include_request_attempt_count=bool(msg.include_request_attempt_count),
        include_attempt_count_in_response=bool(msg.include_attempt_count_in_response),
    )


def _built_routes(
    source: bytes, *, path: str, optional_plugins: frozenset[str]
) -> tuple[Route, ...]:
    """The routes of a virtual host validated ahead (``route_bulk``,
    ``route_screen``), from its bytes; ``path``: where its configuration
    keeps its virtual hosts."""
    msg = route_components_pb2.VirtualHost.FromString(source)
    ctx = Ctx()
    path = f"{path}[name={msg.name!r}]"
    routes_path = join(path, "routes")
    routes = [
        _route(ctx, f"{routes_path}[{i}]", r, optional_plugins) for i, r in enumerate(msg.routes)
    ]
    built = tuple(r for r in routes if r is not None)
    if ctx.errors or ctx.ignored or len(built) != len(routes):
        raise RuntimeError(f"{path} was validated ahead, yet: {ctx.errors or ctx.ignored}")
    return built


def _route(ctx: Ctx, path: str, msg: Any, optional_plugins: frozenset[str]) -> Route | None:
    errors = len(ctx.errors)
    unhandled(
        ctx,
        msg,
        path,
        (
            "name",
            "match",
            "route",
            "redirect",
            "direct_response",
            "filter_action",
            "non_forwarding_action",
            "typed_per_filter_config",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
        ),
    )
    match = None
    if not msg.HasField("match"):
        ctx.error(join(path, "match"), "is required")
    else:
        match = _route_match(ctx, join(path, "match"), msg.match)
    which = msg.WhichOneof("action")
    action: Action | None = None
    apath = join(path, which or "action")
    if which == "route" and msg.route.WhichOneof("cluster_specifier") is None:
        ctx.ignore(f"{path} (no cluster specifier: route skipped)")
        return None
    if which == "route" and msg.route.cluster_specifier_plugin in optional_plugins:
        ctx.ignore(f"{path} (optional cluster specifier plugin: route skipped)")
        return None
    if which == "route":
        action = route_action(ctx, apath, msg.route, match)
    elif which == "redirect":
        action = _redirect(ctx, apath, msg.redirect)
    elif which == "direct_response":
        action = _direct_response(ctx, apath, msg.direct_response)
    elif which == "non_forwarding_action":
        unhandled(ctx, msg.non_forwarding_action, apath, ())
        action = NonForwardingAction()
    elif which is None:
        ctx.error(path, "no action (route, redirect, direct_response or non_forwarding_action)")
    else:
        ctx.error(apath, "unsupported route action")
    request_add, request_remove, response_add, response_remove = header_mutations(ctx, path, msg)
    filters = per_filter_configs(
        ctx, join(path, "typed_per_filter_config"), msg.typed_per_filter_config
    )
    if len(ctx.errors) != errors or match is None or action is None:
        return None
    return Route(
        name=msg.name,
        match=match,
        action=action,
        typed_per_filter_config=filters,
        request_headers_to_add=request_add,
        request_headers_to_remove=request_remove,
        response_headers_to_add=response_add,
        response_headers_to_remove=response_remove,
    )


def _route_match(ctx: Ctx, path: str, msg: Any) -> RouteMatch | None:
    errors = len(ctx.errors)
    unhandled(
        ctx,
        msg,
        path,
        (
            "prefix",
            "path",
            "safe_regex",
            "connect_matcher",
            "path_separated_prefix",
            "path_match_policy",
            "case_sensitive",
            "runtime_fraction",
            "headers",
            "query_parameters",
            "grpc",
            "tls_context",
            "dynamic_metadata",
            "filter_state",
        ),
    )
    which = msg.WhichOneof("path_specifier")
    compiled = None
    value = ""
    if which in ("prefix", "path"):
        value = getattr(msg, which)
    elif which == "path_separated_prefix":
        value = msg.path_separated_prefix
        if not value.startswith("/") or value.endswith("/") or "?" in value or "#" in value:
            ctx.error(
                join(path, which),
                f"{value!r} must start with '/', not end with '/', and hold no '?' or '#'",
            )
    elif which == "safe_regex":
        value = msg.safe_regex.regex
        compiled = regex(ctx, join(path, "safe_regex"), msg.safe_regex)
    elif which is None:
        ctx.error(path, "no path specifier (prefix, path, safe_regex or path_separated_prefix)")
    else:
        ctx.error(join(path, which), "unsupported path specifier")
    for unsupported in ("tls_context", "dynamic_metadata", "filter_state"):
        if msg.HasField(unsupported) if unsupported == "tls_context" else getattr(msg, unsupported):
            ctx.error(join(path, unsupported), "unsupported match criterion")
    headers = []
    for i, h in enumerate(msg.headers):
        hm = header_matcher(ctx, f"{join(path, 'headers')}[{i}]", h)
        if hm is not None:
            headers.append(hm)
    params = []
    for i, q in enumerate(msg.query_parameters):
        qm = query_parameter_matcher(ctx, f"{join(path, 'query_parameters')}[{i}]", q)
        if qm is not None:
            params.append(qm)
    fraction = None
    if msg.HasField("runtime_fraction"):
        fpath = join(path, "runtime_fraction")
        if msg.runtime_fraction.runtime_key:
            ctx.ignore(join(fpath, "runtime_key"))
        fraction = fractional_per_million(
            ctx, join(fpath, "default_value"), msg.runtime_fraction.default_value
        )
    if msg.HasField("grpc"):
        unhandled(ctx, msg.grpc, join(path, "grpc"), ())
    if len(ctx.errors) != errors or which is None:
        return None
    return RouteMatch(
        path_kind=which,
        path=value,
        regex=compiled,
        case_sensitive=bool(wrapped(msg, "case_sensitive", True)),
        headers=tuple(headers),
        query_parameters=tuple(params),
        runtime_fraction_per_million=fraction,
        grpc=msg.HasField("grpc"),
    )


def _redirect(ctx: Ctx, path: str, msg: Any) -> RedirectAction | None:
    errors = len(ctx.errors)
    unhandled(
        ctx,
        msg,
        path,
        (
            "https_redirect",
            "scheme_redirect",
            "host_redirect",
            "port_redirect",
            "path_redirect",
            "prefix_rewrite",
            "regex_rewrite",
            "response_code",
            "strip_query",
        ),
    )
    scheme_which = msg.WhichOneof("scheme_rewrite_specifier")
    scheme = None
    if scheme_which == "https_redirect" and msg.https_redirect:
        scheme = "https"
    elif scheme_which == "scheme_redirect" and msg.scheme_redirect:
        scheme = msg.scheme_redirect.lower()
    path_which = msg.WhichOneof("path_rewrite_specifier")
    rewrite = None
    if path_which == "regex_rewrite":
        rewrite = regex_rewrite(ctx, join(path, "regex_rewrite"), msg.regex_rewrite)
    code = _REDIRECT_CODES.get(int(msg.response_code))
    if code is None:
        ctx.error(join(path, "response_code"), f"unknown response code {msg.response_code}")
    port = int(msg.port_redirect)
    if port > 65535:
        ctx.error(join(path, "port_redirect"), f"{port} is not a valid port")
    if len(ctx.errors) != errors or code is None:
        return None
    return RedirectAction(
        scheme=scheme,
        host=msg.host_redirect or None,
        port=port or None,
        path=msg.path_redirect if path_which == "path_redirect" else None,
        prefix_rewrite=msg.prefix_rewrite if path_which == "prefix_rewrite" else None,
        regex_rewrite=rewrite,
        response_code=code,
        strip_query=bool(msg.strip_query),
    )


def _direct_response(ctx: Ctx, path: str, msg: Any) -> DirectResponseAction | None:
    unhandled(ctx, msg, path, ("status", "body"))
    status = int(msg.status)
    ok = True
    if not 200 <= status < 600:
        ctx.error(join(path, "status"), f"{status} must be in [200, 600)")
        ok = False
    body = b""
    if msg.HasField("body"):
        which = msg.body.WhichOneof("specifier")
        if which == "inline_bytes":
            body = bytes(msg.body.inline_bytes)
        elif which == "inline_string":
            body = msg.body.inline_string.encode()
        elif which is not None:
            ctx.error(join(path, f"body.{which}"), "only inline bodies are supported")
            ok = False
    return DirectResponseAction(status=status, body=body) if ok else None
