"""Parse and validate ``envoy.config.route.v3.RouteConfiguration`` (RDS).

Validation follows gRFC A28 (domains, route matchers, weighted clusters whose
non-zero weights sum to a value in (0, 2^32-1], regexes), A31 (timeouts),
A39 (per-route filter configs), A42 (hash policies), A44 (retry policy) and
Envoy's ``route_components.proto`` constraints for the HTTP features proxyless
supports beyond gRPC (rewrites, redirects, direct responses, mirroring,
hedging, header mutations). A route whose action is a cluster specifier
plugin, or whose match uses a matcher proxyless cannot evaluate, makes the
resource invalid, as in grpc-go.
"""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_pb2
from google.protobuf.message import DecodeError

from proxyless.errors import ResourceValidationError
from proxyless.resources.model.route import (
    Action,
    ClusterWeight,
    DirectResponseAction,
    HashPolicy,
    HeaderValueOption,
    HedgePolicy,
    MirrorPolicy,
    NonForwardingAction,
    RateLimitedRetryBackOff,
    RedirectAction,
    ResetHeader,
    RetryPolicy,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from proxyless.resources.parse.common import (
    MAX_UINT32,
    Ctx,
    fractional_per_million,
    header_matcher,
    join,
    opt_duration,
    query_parameter_matcher,
    regex,
    regex_rewrite,
    unhandled,
    wrapped,
)
from proxyless.resources.parse.filters import per_filter_configs
from proxyless.xds_client.resource_type import DecodeResult

__all__ = [
    "decode_route_configuration",
    "parse_route_configuration",
    "route_configuration",
]

_TYPE = route_pb2.RouteConfiguration.DESCRIPTOR.full_name

_APPEND_ACTIONS = {
    0: "append_if_exists_or_add",
    1: "add_if_absent",
    2: "overwrite_if_exists_or_add",
    3: "overwrite_if_exists",
}
_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}
_NOT_FOUND_CODES = {0: 503, 1: 404, 2: 500}


def decode_route_configuration(data: bytes) -> DecodeResult:
    """Decode serialized RouteConfiguration bytes; never raises."""
    msg = route_pb2.RouteConfiguration()
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError, TypeError) as exc:
        return DecodeResult(name=None, value=None, errors=(f"could not decode {_TYPE}: {exc}",))
    ctx = Ctx()
    value = _top_level(ctx, msg)
    if ctx.errors or value is None:
        return DecodeResult(name=msg.name, value=None, errors=tuple(ctx.errors))
    return DecodeResult(name=msg.name, value=value)


def parse_route_configuration(msg: Any) -> RouteConfiguration:
    """Validate a RouteConfiguration message; raise ResourceValidationError."""
    ctx = Ctx()
    value = _top_level(ctx, msg)
    if ctx.errors or value is None:
        raise ResourceValidationError("RouteConfiguration", msg.name, ctx.errors)
    return value


def _top_level(ctx: Ctx, msg: Any) -> RouteConfiguration | None:
    # An RDS resource is named; a Listener's inline route_config need not be.
    if not msg.name:
        ctx.error("name", "must not be empty")
    return route_configuration(ctx, "", msg)


def route_configuration(ctx: Ctx, path: str, msg: Any) -> RouteConfiguration | None:
    """Parse a RouteConfiguration at ``path`` (also used for a Listener's inline config)."""
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
        ),
    )
    if msg.HasField("vhds"):
        ctx.error(join(path, "vhds"), "on-demand virtual hosts (VHDS) are not supported")
    vhosts = []
    seen_domains: dict[str, int] = {}
    for i, vh in enumerate(msg.virtual_hosts):
        vpath = f"{join(path, 'virtual_hosts')}[{i}]"
        vhost = _virtual_host(ctx, vpath, vh)
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
    request_add, request_remove, response_add, response_remove = _mutations(ctx, path, msg)
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


def _domain(ctx: Ctx, path: str, domain: str) -> str | None:
    if not domain:
        ctx.error(path, "domain must not be empty")
        return None
    if domain == "*":
        return domain
    stars = domain.count("*")
    if stars > 1 or (stars == 1 and not (domain.startswith("*") or domain.endswith("*"))):
        ctx.error(path, f"invalid domain {domain!r}: one wildcard, at the start or the end")
        return None
    if any(c.isspace() for c in domain) or "/" in domain:
        ctx.error(path, f"invalid domain {domain!r}")
        return None
    return domain.lower()


def _virtual_host(ctx: Ctx, path: str, msg: Any) -> VirtualHost | None:
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
        route = _route(ctx, f"{join(path, 'routes')}[{i}]", r)
        if route is not None:
            routes.append(route)
    retry = (
        _retry_policy(ctx, join(path, "retry_policy"), msg.retry_policy)
        if msg.HasField("retry_policy")
        else None
    )
    hedge = (
        _hedge_policy(ctx, join(path, "hedge_policy"), msg.hedge_policy)
        if msg.HasField("hedge_policy")
        else None
    )
    request_add, request_remove, response_add, response_remove = _mutations(ctx, path, msg)
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


def _route(ctx: Ctx, path: str, msg: Any) -> Route | None:
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
    if which == "route":
        action = _route_action(ctx, apath, msg.route, match)
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
    request_add, request_remove, response_add, response_remove = _mutations(ctx, path, msg)
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


def _route_action(ctx: Ctx, path: str, msg: Any, match: RouteMatch | None) -> RouteAction | None:
    errors = len(ctx.errors)
    unhandled(
        ctx,
        msg,
        path,
        (
            "cluster",
            "cluster_header",
            "weighted_clusters",
            "cluster_specifier_plugin",
            "inline_cluster_specifier_plugin",
            "cluster_not_found_response_code",
            "prefix_rewrite",
            "regex_rewrite",
            "path_rewrite_policy",
            "host_rewrite_literal",
            "auto_host_rewrite",
            "host_rewrite_header",
            "timeout",
            "idle_timeout",
            "retry_policy",
            "request_mirror_policies",
            "hash_policy",
            "hedge_policy",
            "max_stream_duration",
        ),
    )
    which = msg.WhichOneof("cluster_specifier")
    cluster = cluster_header = None
    weighted = None
    if which == "cluster":
        cluster = msg.cluster
        if not cluster:
            ctx.error(join(path, "cluster"), "must not be empty")
    elif which == "cluster_header":
        cluster_header = msg.cluster_header.lower()
        if not cluster_header or cluster_header.startswith(":"):
            ctx.error(join(path, "cluster_header"), f"invalid header name {msg.cluster_header!r}")
    elif which == "weighted_clusters":
        weighted = _weighted_clusters(ctx, join(path, "weighted_clusters"), msg.weighted_clusters)
    elif which is None:
        ctx.error(path, "no cluster specifier (cluster, weighted_clusters or cluster_header)")
    else:
        ctx.error(join(path, which), "cluster specifier plugins are not supported")
    if msg.HasField("path_rewrite_policy"):
        ctx.error(join(path, "path_rewrite_policy"), "path rewrite policies are not supported")
    prefix_rewrite = msg.prefix_rewrite or None
    rewrite = None
    if msg.HasField("regex_rewrite"):
        rewrite = regex_rewrite(ctx, join(path, "regex_rewrite"), msg.regex_rewrite)
        if prefix_rewrite is not None:
            ctx.error(path, "prefix_rewrite and regex_rewrite cannot both be set")
    if prefix_rewrite is not None and match is not None and match.path_kind == "safe_regex":
        ctx.error(join(path, "prefix_rewrite"), "cannot be used with a safe_regex path match")
    host_which = msg.WhichOneof("host_rewrite_specifier")
    host_literal = msg.host_rewrite_literal if host_which == "host_rewrite_literal" else None
    host_header = msg.host_rewrite_header.lower() if host_which == "host_rewrite_header" else None
    auto_host = host_which == "auto_host_rewrite" and bool(msg.auto_host_rewrite.value)
    max_stream = header_max = None
    if msg.HasField("max_stream_duration"):
        mpath = join(path, "max_stream_duration")
        msd = msg.max_stream_duration
        unhandled(ctx, msd, mpath, ("max_stream_duration", "grpc_timeout_header_max"))
        max_stream = opt_duration(ctx, msd, "max_stream_duration", mpath)
        header_max = opt_duration(ctx, msd, "grpc_timeout_header_max", mpath)
    retry = (
        _retry_policy(ctx, join(path, "retry_policy"), msg.retry_policy)
        if msg.HasField("retry_policy")
        else None
    )
    hedge = (
        _hedge_policy(ctx, join(path, "hedge_policy"), msg.hedge_policy)
        if msg.HasField("hedge_policy")
        else None
    )
    hashes = []
    for i, hp in enumerate(msg.hash_policy):
        parsed = _hash_policy(ctx, f"{join(path, 'hash_policy')}[{i}]", hp)
        if parsed is not None:
            hashes.append(parsed)
    mirrors = []
    for i, mp in enumerate(msg.request_mirror_policies):
        mirror = _mirror_policy(ctx, f"{join(path, 'request_mirror_policies')}[{i}]", mp)
        if mirror is not None:
            mirrors.append(mirror)
    not_found = _NOT_FOUND_CODES.get(int(msg.cluster_not_found_response_code))
    if not_found is None:
        ctx.error(
            join(path, "cluster_not_found_response_code"),
            f"unknown code {msg.cluster_not_found_response_code}",
        )
    timeout = opt_duration(ctx, msg, "timeout", path)
    idle = opt_duration(ctx, msg, "idle_timeout", path)
    if len(ctx.errors) != errors or not_found is None:
        return None
    return RouteAction(
        cluster=cluster,
        weighted_clusters=weighted,
        cluster_header=cluster_header,
        timeout=timeout,
        idle_timeout=idle,
        max_stream_duration=max_stream,
        grpc_timeout_header_max=header_max,
        retry_policy=retry,
        hedge_policy=hedge,
        hash_policies=tuple(hashes),
        prefix_rewrite=prefix_rewrite,
        regex_rewrite=rewrite,
        host_rewrite_literal=host_literal,
        auto_host_rewrite=auto_host,
        host_rewrite_header=host_header,
        request_mirror_policies=tuple(mirrors),
        cluster_not_found_response_code=not_found,
    )


def _weighted_clusters(ctx: Ctx, path: str, msg: Any) -> tuple[ClusterWeight, ...] | None:
    unhandled(ctx, msg, path, ("clusters", "total_weight"))
    if msg.HasField("total_weight"):
        ctx.ignore(join(path, "total_weight"))
    cpath = join(path, "clusters")
    if not msg.clusters:
        ctx.error(cpath, "at least one cluster is required")
        return None
    out = []
    total = 0
    for i, cw in enumerate(msg.clusters):
        epath = f"{cpath}[{i}]"
        unhandled(
            ctx,
            cw,
            epath,
            (
                "name",
                "cluster_header",
                "weight",
                "request_headers_to_add",
                "request_headers_to_remove",
                "response_headers_to_add",
                "response_headers_to_remove",
                "typed_per_filter_config",
                "host_rewrite_literal",
            ),
        )
        if cw.cluster_header:
            ctx.error(join(epath, "cluster_header"), "is not supported")
            continue
        if not cw.name:
            ctx.error(join(epath, "name"), "must not be empty")
            continue
        weight = int(wrapped(cw, "weight", 0))
        if weight == 0:
            continue
        total += weight
        request_add, request_remove, response_add, response_remove = _mutations(ctx, epath, cw)
        out.append(
            ClusterWeight(
                name=cw.name,
                weight=weight,
                typed_per_filter_config=per_filter_configs(
                    ctx, join(epath, "typed_per_filter_config"), cw.typed_per_filter_config
                ),
                request_headers_to_add=request_add,
                request_headers_to_remove=request_remove,
                response_headers_to_add=response_add,
                response_headers_to_remove=response_remove,
                host_rewrite_literal=cw.host_rewrite_literal,
            )
        )
    if total == 0:
        ctx.error(cpath, "total weight 0 must be > 0")
        return None
    if total > MAX_UINT32:
        ctx.error(cpath, f"total weight {total} exceeds {MAX_UINT32}")
        return None
    return tuple(out)


def _retry_policy(ctx: Ctx, path: str, msg: Any) -> RetryPolicy | None:
    errors = len(ctx.errors)
    unhandled(
        ctx,
        msg,
        path,
        (
            "retry_on",
            "num_retries",
            "per_try_timeout",
            "per_try_idle_timeout",
            "retry_host_predicate",
            "host_selection_retry_max_attempts",
            "retriable_status_codes",
            "retry_back_off",
            "rate_limited_retry_back_off",
            "retriable_headers",
            "retriable_request_headers",
        ),
    )
    retry_on = frozenset(c.strip().lower() for c in msg.retry_on.split(",") if c.strip())
    base, maximum = 0.025, None
    if msg.HasField("retry_back_off"):
        bpath = join(path, "retry_back_off")
        back_off = msg.retry_back_off
        if not back_off.HasField("base_interval"):
            ctx.error(join(bpath, "base_interval"), "is required")
        else:
            base = opt_duration(ctx, back_off, "base_interval", bpath, positive=True) or base
        maximum = opt_duration(ctx, back_off, "max_interval", bpath, positive=True)
        if maximum is not None and 0 < maximum < base:
            ctx.error(join(bpath, "max_interval"), f"{maximum}s must be >= base_interval {base}s")
    max_attempts = int(msg.host_selection_retry_max_attempts)
    if max_attempts < 0:
        ctx.error(join(path, "host_selection_retry_max_attempts"), "must not be negative")
    headers = _matchers(ctx, join(path, "retriable_headers"), msg.retriable_headers)
    request_headers = _matchers(
        ctx, join(path, "retriable_request_headers"), msg.retriable_request_headers
    )
    rate_limited = None
    if msg.HasField("rate_limited_retry_back_off"):
        rate_limited = _rate_limited(
            ctx, join(path, "rate_limited_retry_back_off"), msg.rate_limited_retry_back_off
        )
    predicates = tuple(p.name for p in msg.retry_host_predicate)
    per_try = opt_duration(ctx, msg, "per_try_timeout", path)
    per_try_idle = opt_duration(ctx, msg, "per_try_idle_timeout", path)
    if len(ctx.errors) != errors:
        return None
    return RetryPolicy(
        retry_on=retry_on,
        num_retries=int(wrapped(msg, "num_retries", 1)),
        per_try_timeout=per_try,
        per_try_idle_timeout=per_try_idle,
        base_interval=base,
        max_interval=maximum if maximum is not None else 10 * base,
        retriable_status_codes=frozenset(int(c) for c in msg.retriable_status_codes),
        retriable_headers=headers,
        retriable_request_headers=request_headers,
        retry_host_predicates=predicates,
        host_selection_retry_max_attempts=max(max_attempts, 1),
        rate_limited_retry_back_off=rate_limited,
    )


def _rate_limited(ctx: Ctx, path: str, msg: Any) -> RateLimitedRetryBackOff | None:
    unhandled(ctx, msg, path, ("reset_headers", "max_interval"))
    if not msg.reset_headers:
        ctx.error(join(path, "reset_headers"), "at least one reset header is required")
        return None
    headers = []
    for i, h in enumerate(msg.reset_headers):
        if not h.name:
            ctx.error(f"{join(path, 'reset_headers')}[{i}].name", "must not be empty")
            continue
        headers.append(
            ResetHeader(
                name=h.name.lower(),
                format="UNIX_TIMESTAMP" if int(h.format) == 1 else "SECONDS",
            )
        )
    max_interval = opt_duration(ctx, msg, "max_interval", path, positive=True)
    return RateLimitedRetryBackOff(
        reset_headers=tuple(headers),
        max_interval=300.0 if max_interval is None else max_interval,
    )


def _matchers(ctx: Ctx, path: str, msgs: Any) -> tuple[Any, ...]:
    out = []
    for i, h in enumerate(msgs):
        hm = header_matcher(ctx, f"{path}[{i}]", h)
        if hm is not None:
            out.append(hm)
    return tuple(out)


def _hedge_policy(ctx: Ctx, path: str, msg: Any) -> HedgePolicy | None:
    unhandled(
        ctx,
        msg,
        path,
        ("initial_requests", "additional_request_chance", "hedge_on_per_try_timeout"),
    )
    initial = int(wrapped(msg, "initial_requests", 1))
    if initial < 1:
        ctx.error(join(path, "initial_requests"), "must be >= 1")
        return None
    chance = 0
    if msg.HasField("additional_request_chance"):
        chance = fractional_per_million(
            ctx, join(path, "additional_request_chance"), msg.additional_request_chance
        )
    return HedgePolicy(
        initial_requests=initial,
        additional_request_chance_per_million=chance,
        hedge_on_per_try_timeout=bool(msg.hedge_on_per_try_timeout),
    )


def _hash_policy(ctx: Ctx, path: str, msg: Any) -> HashPolicy | None:
    which = msg.WhichOneof("policy_specifier")
    terminal = bool(msg.terminal)
    if which == "header":
        hpath = join(path, "header")
        unhandled(ctx, msg.header, hpath, ("header_name", "regex_rewrite"))
        if not msg.header.header_name:
            ctx.error(join(hpath, "header_name"), "must not be empty")
            return None
        rewrite = None
        if msg.header.HasField("regex_rewrite"):
            rewrite = regex_rewrite(ctx, join(hpath, "regex_rewrite"), msg.header.regex_rewrite)
            if rewrite is None:
                return None
        return HashPolicy(
            kind="header",
            name=msg.header.header_name.lower(),
            terminal=terminal,
            regex_rewrite=rewrite,
        )
    if which == "cookie":
        cpath = join(path, "cookie")
        cookie = msg.cookie
        unhandled(ctx, cookie, cpath, ("name", "ttl", "path"))
        if not cookie.name:
            ctx.error(join(cpath, "name"), "must not be empty")
            return None
        return HashPolicy(
            kind="cookie",
            name=cookie.name,
            terminal=terminal,
            cookie_ttl=opt_duration(ctx, cookie, "ttl", cpath),
            cookie_path=cookie.path,
        )
    if which == "connection_properties":
        return HashPolicy(
            kind="connection_properties",
            terminal=terminal,
            source_ip=bool(msg.connection_properties.source_ip),
        )
    if which == "query_parameter":
        if not msg.query_parameter.name:
            ctx.error(join(path, "query_parameter.name"), "must not be empty")
            return None
        return HashPolicy(kind="query_parameter", name=msg.query_parameter.name, terminal=terminal)
    if which == "filter_state":
        if not msg.filter_state.key:
            ctx.error(join(path, "filter_state.key"), "must not be empty")
            return None
        return HashPolicy(kind="filter_state", name=msg.filter_state.key, terminal=terminal)
    ctx.error(path, "no hash policy specifier")
    return None


def _mirror_policy(ctx: Ctx, path: str, msg: Any) -> MirrorPolicy | None:
    unhandled(ctx, msg, path, ("cluster", "cluster_header", "runtime_fraction"))
    if msg.cluster_header:
        ctx.error(join(path, "cluster_header"), "is not supported")
        return None
    if not msg.cluster:
        ctx.error(join(path, "cluster"), "must not be empty")
        return None
    fraction = 1_000_000
    if msg.HasField("runtime_fraction"):
        fpath = join(path, "runtime_fraction")
        if msg.runtime_fraction.runtime_key:
            ctx.ignore(join(fpath, "runtime_key"))
        fraction = fractional_per_million(
            ctx, join(fpath, "default_value"), msg.runtime_fraction.default_value
        )
    return MirrorPolicy(cluster=msg.cluster, runtime_fraction_per_million=fraction)


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


def _header_name_ok(name: str, *, removing: bool) -> bool:
    if not name or name.startswith(":") or any(c.isspace() for c in name):
        return False
    return not (removing and name == "host")


def _header_options(ctx: Ctx, path: str, msgs: Any) -> tuple[HeaderValueOption, ...]:
    out = []
    for i, opt in enumerate(msgs):
        opath = f"{path}[{i}]"
        unhandled(ctx, opt, opath, ("header", "append", "append_action", "keep_empty_value"))
        header = opt.header
        key = header.key.lower()
        if not _header_name_ok(key, removing=False) or key == "host":
            ctx.error(join(opath, "header.key"), f"cannot add header {header.key!r}")
            continue
        if header.value:
            value = header.value
        else:
            try:
                value = bytes(header.raw_value).decode()
            except UnicodeDecodeError:
                ctx.error(join(opath, "header.raw_value"), "is not valid UTF-8")
                continue
        action = _APPEND_ACTIONS.get(int(opt.append_action))
        if action is None:
            ctx.error(join(opath, "append_action"), f"unknown action {opt.append_action}")
            continue
        if opt.HasField("append"):
            if int(opt.append_action) != 0:
                ctx.error(opath, "append and append_action cannot both be set")
                continue
            action = "append_if_exists_or_add" if opt.append.value else "overwrite_if_exists_or_add"
        out.append(
            HeaderValueOption(
                key=key,
                value=value,
                append_action=action,  # type: ignore[arg-type]
                keep_empty_value=bool(opt.keep_empty_value),
            )
        )
    return tuple(out)


def _header_names(ctx: Ctx, path: str, names: Any) -> tuple[str, ...]:
    out = []
    for i, name in enumerate(names):
        lowered = name.lower()
        if not _header_name_ok(lowered, removing=True):
            ctx.error(f"{path}[{i}]", f"cannot remove header {name!r}")
            continue
        out.append(lowered)
    return tuple(out)


def _mutations(
    ctx: Ctx, path: str, msg: Any
) -> tuple[
    tuple[HeaderValueOption, ...], tuple[str, ...], tuple[HeaderValueOption, ...], tuple[str, ...]
]:
    return (
        _header_options(ctx, join(path, "request_headers_to_add"), msg.request_headers_to_add),
        _header_names(ctx, join(path, "request_headers_to_remove"), msg.request_headers_to_remove),
        _header_options(ctx, join(path, "response_headers_to_add"), msg.response_headers_to_add),
        _header_names(
            ctx, join(path, "response_headers_to_remove"), msg.response_headers_to_remove
        ),
    )
