"""Parse ``envoy.config.route.v3.RouteAction``: where a route forwards, and how.

The cluster specifier (one cluster, weighted clusters whose non-zero weights
sum to a value in (0, 2^32-1], each entry naming its weight, or a request
header), rewrites, timeouts
(gRFC A31), and the policies a forwarding route carries: retry (gRFC A44 and
Envoy's ``RetryPolicy``, base interval 25 ms, max 10x base), hedging, hash
policies for ring hash and Maglev (gRFC A42) and request mirroring, all as
Envoy's ``route_components.proto`` defines them. As in C-core, a retry
policy's ``num_retries`` must be > 0 (Envoy reads 0 as "no retries"; leave
the policy out for that). Cluster specifier plugins
make the resource invalid, as in grpc-go.
"""

from __future__ import annotations

from typing import Any

from proxyless.resources.model.route import (
    ClusterWeight,
    HashPolicy,
    HedgePolicy,
    MirrorPolicy,
    RateLimitedRetryBackOff,
    ResetHeader,
    RetryPolicy,
    RouteAction,
    RouteMatch,
)
from proxyless.resources.parse.common import (
    MAX_UINT32,
    Ctx,
    fractional_per_million,
    header_matcher,
    join,
    opt_duration,
    regex_rewrite,
    unhandled,
    wrapped,
)
from proxyless.resources.parse.filters import per_filter_configs
from proxyless.resources.parse.header_mutation import header_mutations

__all__ = ["clean_retry_policy", "hedge_policy", "retry_policy", "route_action"]

_NOT_FOUND_CODES = {0: 503, 1: 404, 2: 500}


def route_action(ctx: Ctx, path: str, msg: Any, match: RouteMatch | None) -> RouteAction | None:
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
        retry_policy(ctx, join(path, "retry_policy"), msg.retry_policy)
        if msg.HasField("retry_policy")
        else None
    )
    hedge = (
        hedge_policy(ctx, join(path, "hedge_policy"), msg.hedge_policy)
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
        if not cw.HasField("weight"):
            ctx.error(join(epath, "weight"), "is required")
            continue
        weight = int(cw.weight.value)
        if weight == 0:
            continue
        total += weight
        request_add, request_remove, response_add, response_remove = header_mutations(
            ctx, epath, cw
        )
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


#: Parsed retry policies by their wire bytes: a route configuration repeats
#: the same few policies on thousands of routes (istiod puts its default on
#: every route). Only policies that parsed without an error or an ignored
#: field are kept (those messages name the route's path).
_RETRY_POLICIES: dict[bytes, RetryPolicy] = {}
_RETRY_POLICIES_LIMIT = 256


def clean_retry_policy(msg: Any) -> RetryPolicy | None:
    """The retry policy ``msg`` when it parses without an error or an ignored
    field, else None."""
    cached = _RETRY_POLICIES.get(msg.SerializeToString(deterministic=True))
    if cached is not None:
        return cached
    ctx = Ctx()
    policy = retry_policy(ctx, "", msg)
    return policy if not ctx.errors and not ctx.ignored else None


def retry_policy(ctx: Ctx, path: str, msg: Any) -> RetryPolicy | None:
    key = msg.SerializeToString(deterministic=True)
    cached = _RETRY_POLICIES.get(key)
    if cached is not None:
        return cached
    errors, ignored = len(ctx.errors), len(ctx.ignored)
    policy = _retry_policy(ctx, path, msg)
    if policy is not None and len(ctx.errors) == errors and len(ctx.ignored) == ignored:
        if len(_RETRY_POLICIES) >= _RETRY_POLICIES_LIMIT:
            _RETRY_POLICIES.clear()
        _RETRY_POLICIES[key] = policy
    return policy


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
    num_retries = int(wrapped(msg, "num_retries", 1))
    if num_retries == 0:
        ctx.error(join(path, "num_retries"), "must be > 0 (gRFC A44)")
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
        num_retries=num_retries,
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


def hedge_policy(ctx: Ctx, path: str, msg: Any) -> HedgePolicy | None:
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
