"""Parse and validate ``envoy.config.cluster.v3.Cluster`` (CDS).

Follows gRPC C-core's ``xds_cluster_parser.cc``: gRFC A27 (EDS over ADS;
an ``xdstp:`` cluster name needs an ``eds_cluster_config.service_name``),
A37 (aggregate clusters; LOGICAL_DNS clusters with exactly one locality
holding exactly one endpoint, whose socket address has a host, a
``port_value`` and no ``resolver_name``; STATIC added for Envoy parity), A32
(circuit breakers; Envoy ``circuit_breaker.proto`` for retry budgets), A50
and Envoy ``outlier_detection.proto`` (every field, Envoy defaults,
percentages <= 100), A29 (``UpstreamTlsContext`` transport socket) and A52
(load-balancing policy, see :mod:`proxyless.resources.parse.lb_policy`).
LRS must report to the ADS server itself (``lrs_server.self``). An
``upstream_config`` must be an ``HttpProtocolOptions`` (C-core reads its
``idle_timeout``; proxyless validates it and does not use it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from proxyless.resources.model.cluster import (
    CircuitBreakers,
    Cluster,
    OutlierDetection,
    RetryBudget,
    Thresholds,
)
from proxyless.resources.model.endpoint import ClusterLoadAssignment
from proxyless.resources.model.security import UpstreamTlsContext
from proxyless.resources.parse.common import (
    Ctx,
    check_config_source,
    join,
    opt_duration,
    percent,
    type_name,
    unhandled,
    unpack,
    wrapped,
)
from proxyless.resources.parse.endpoint import cluster_load_assignment
from proxyless.resources.parse.lb_policy import cluster_lb_policy
from proxyless.resources.parse.resource import decode_resource, parse_resource
from proxyless.resources.parse.secret import upstream_tls_context
from proxyless.xds_client.resource_type import DecodeResult

__all__ = ["decode_cluster", "parse_cluster"]

_AGGREGATE_TYPE = aggregate_pb2.ClusterConfig.DESCRIPTOR.full_name
_TLS_TYPE = tls_pb2.UpstreamTlsContext.DESCRIPTOR.full_name
_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_RAW_BUFFER_NAMES = ("envoy.transport_sockets.raw_buffer", "raw_buffer")
_RAW_BUFFER_TYPE = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"

_HANDLED = (
    "name",
    "type",
    "cluster_type",
    "eds_cluster_config",
    "connect_timeout",
    "lb_policy",
    "load_assignment",
    "max_requests_per_connection",
    "circuit_breakers",
    "http2_protocol_options",
    "common_http_protocol_options",
    "typed_extension_protocol_options",
    "outlier_detection",
    "ring_hash_lb_config",
    "maglev_lb_config",
    "least_request_lb_config",
    "round_robin_lb_config",
    "common_lb_config",
    "transport_socket",
    "load_balancing_policy",
    "lrs_server",
    "dns_refresh_rate",
    "dns_lookup_family",
    "upstream_config",
)

_OUTLIER_DURATIONS = (
    ("interval", 10.0),
    ("base_ejection_time", 30.0),
    ("max_ejection_time", 300.0),
    ("max_ejection_time_jitter", 0.0),
)
#: (field, default, is a percentage)
_OUTLIER_NUMBERS = (
    ("max_ejection_percent", 10, True),
    ("consecutive_5xx", 5, False),
    ("enforcing_consecutive_5xx", 100, True),
    ("consecutive_gateway_failure", 5, False),
    ("enforcing_consecutive_gateway_failure", 0, True),
    ("consecutive_local_origin_failure", 5, False),
    ("enforcing_consecutive_local_origin_failure", 100, True),
    ("enforcing_local_origin_success_rate", 100, True),
    ("success_rate_minimum_hosts", 5, False),
    ("success_rate_request_volume", 100, False),
    ("success_rate_stdev_factor", 1900, False),
    ("enforcing_success_rate", 100, True),
    ("failure_percentage_threshold", 85, True),
    ("enforcing_failure_percentage", 0, True),
    ("enforcing_failure_percentage_local_origin", 0, True),
    ("failure_percentage_minimum_hosts", 5, False),
    ("failure_percentage_request_volume", 50, False),
)
_OUTLIER_BOOLS = (
    ("split_external_local_origin_errors", False, False),
    ("successful_active_health_check_uneject_host", True, True),
    ("always_eject_one_host", False, True),
)


def decode_cluster(data: bytes) -> DecodeResult:
    """Decode serialized Cluster bytes; never raises."""
    return decode_resource(data, cluster_pb2.Cluster, _cluster)


def parse_cluster(msg: Any) -> Cluster:
    """Validate a Cluster message; raise ResourceValidationError."""
    return parse_resource(msg, _cluster)


def _cluster(ctx: Ctx, msg: Any) -> Cluster | None:
    unhandled(ctx, msg, "", _HANDLED)
    name: str = msg.name
    if not name:
        ctx.error("name", "must not be empty")
    kind, eds_name, aggregate, dns, assignment = _discovery(ctx, msg)
    lb_policy = cluster_lb_policy(ctx, msg)
    breakers = (
        _circuit_breakers(ctx, msg) if msg.HasField("circuit_breakers") else CircuitBreakers()
    )
    outlier = _outlier(ctx, msg.outlier_detection) if msg.HasField("outlier_detection") else None
    panic, locality_weighted = 50.0, False
    if msg.HasField("common_lb_config"):
        lpath = "common_lb_config"
        common = msg.common_lb_config
        unhandled(ctx, common, lpath, ("healthy_panic_threshold", "locality_weighted_lb_config"))
        if common.HasField("healthy_panic_threshold"):
            panic = percent(
                ctx, join(lpath, "healthy_panic_threshold"), common.healthy_panic_threshold
            )
        locality_weighted = common.HasField("locality_weighted_lb_config")
    connect_timeout = opt_duration(ctx, msg, "connect_timeout", "", positive=True)
    tls = _transport_socket(ctx, msg) if msg.HasField("transport_socket") else None
    http2, max_requests = _protocol_options(ctx, msg)
    if msg.HasField("upstream_config"):
        _upstream_config(ctx, msg.upstream_config)
    lrs = False
    if msg.HasField("lrs_server"):
        if msg.lrs_server.WhichOneof("config_source_specifier") != "self":
            ctx.error("lrs_server", "only self (the ADS server) is supported")
        lrs = True
    dns_refresh = None
    if kind == "STRICT_DNS":
        dns_refresh = opt_duration(ctx, msg, "dns_refresh_rate", "", positive=True)
    if ctx.errors or kind is None or lb_policy is None:
        return None
    return Cluster(
        name=name,
        type=kind,  # type: ignore[arg-type]
        lb_policy=lb_policy,
        eds_service_name=eds_name,
        aggregate_clusters=aggregate,
        dns_address=dns[0],
        dns_port=dns[1],
        load_assignment=assignment,
        dns_refresh_rate=dns_refresh,
        dns_lookup_family=cluster_pb2.Cluster.DnsLookupFamily.Name(msg.dns_lookup_family),
        circuit_breakers=breakers,
        outlier_detection=outlier,
        healthy_panic_threshold=panic,
        locality_weighted_lb=locality_weighted,
        connect_timeout=5.0 if connect_timeout is None else connect_timeout,
        upstream_tls=tls,
        http2=http2,
        max_requests_per_connection=max_requests,
        lrs_server=lrs,
        ignored_fields=tuple(ctx.ignored),
    )


def _discovery(
    ctx: Ctx, msg: Any
) -> tuple[str | None, str, tuple[str, ...], tuple[str, int], ClusterLoadAssignment | None]:
    """(type, eds_service_name, aggregate_clusters, (dns host, port), load_assignment)."""
    none: tuple[str, int] = ("", 0)
    which = msg.WhichOneof("cluster_discovery_type")
    if which == "cluster_type":
        cpath = "cluster_type"
        custom = msg.cluster_type
        config_type = type_name(custom.typed_config)
        if config_type != _AGGREGATE_TYPE:
            ctx.error(
                join(cpath, "typed_config"),
                f"unsupported custom cluster type {custom.name or config_type or '<empty>'}",
            )
            return None, "", (), none, None
        config = unpack(
            ctx, join(cpath, "typed_config"), custom.typed_config, aggregate_pb2.ClusterConfig
        )
        if config is None:
            return None, "", (), none, None
        clusters = tuple(config.clusters)
        if not clusters:
            ctx.error(
                join(cpath, "typed_config.clusters"),
                "an aggregate cluster needs at least one cluster",
            )
            return None, "", (), none, None
        if any(not c for c in clusters):
            ctx.error(join(cpath, "typed_config.clusters"), "cluster names must not be empty")
            return None, "", (), none, None
        if msg.HasField("load_assignment"):
            ctx.ignore("load_assignment")
        return "AGGREGATE", "", clusters, none, None
    kind = int(msg.type)  # STATIC is the proto default
    if kind == 3:  # EDS
        if msg.HasField("load_assignment"):
            ctx.ignore("load_assignment")
        epath = "eds_cluster_config"
        eds = msg.eds_cluster_config
        unhandled(ctx, eds, epath, ("eds_config", "service_name"))
        if not eds.HasField("eds_config"):
            ctx.error(join(epath, "eds_config"), "is required (ads or self)")
        else:
            check_config_source(ctx, join(epath, "eds_config"), eds.eds_config)
        if not eds.service_name and msg.name.startswith("xdstp:"):
            # gRFC A47: the EDS resource of an xdstp cluster is named explicitly.
            ctx.error(
                join(epath, "service_name"), "must be set when the Cluster has an xdstp: name"
            )
        return "EDS", eds.service_name or msg.name, (), none, None
    if msg.HasField("eds_cluster_config"):
        ctx.ignore("eds_cluster_config")
    if kind == 2:
        dns = _logical_dns(ctx, msg)
        if dns is None:
            return None, "", (), none, None
        return "LOGICAL_DNS", "", (), dns, None
    if kind in (0, 1):  # STATIC, STRICT_DNS
        label = cluster_pb2.Cluster.DiscoveryType.Name(kind)
        if not msg.HasField("load_assignment"):
            ctx.error("load_assignment", f"is required for a {label} cluster")
            return None, "", (), none, None
        inner = Ctx()
        assignment = cluster_load_assignment(
            inner, "load_assignment", msg.load_assignment, inline=True
        )
        ctx.errors.extend(inner.errors)
        ctx.ignored.extend(inner.ignored)
        if assignment is None:
            return None, "", (), none, None
        return label, "", (), none, replace(assignment, ignored_fields=())
    label = cluster_pb2.Cluster.DiscoveryType.Name(kind) if kind == 4 else str(kind)
    ctx.error("type", f"unsupported cluster type {label}")
    return None, "", (), none, None


def _logical_dns(ctx: Ctx, msg: Any) -> tuple[str, int] | None:
    """The ``(host, port)`` of a LOGICAL_DNS cluster, checked as C-core does:
    one locality (its weight and locality need not be set), one endpoint, a
    socket address with a host, a ``port_value`` and no ``resolver_name``."""
    path = "load_assignment"
    if not msg.HasField(path):
        ctx.error(path, "is required for a LOGICAL_DNS cluster")
        return None
    assignment = msg.load_assignment
    unhandled(ctx, assignment, path, ("cluster_name", "endpoints"))
    lpath = join(path, "endpoints")
    if len(assignment.endpoints) != 1:
        ctx.error(
            lpath,
            f"a LOGICAL_DNS cluster needs exactly one locality, found {len(assignment.endpoints)}",
        )
        return None
    locality = assignment.endpoints[0]
    lpath = f"{lpath}[0]"
    unhandled(ctx, locality, lpath, ("locality", "lb_endpoints", "load_balancing_weight"))
    epath = join(lpath, "lb_endpoints")
    if len(locality.lb_endpoints) != 1:
        ctx.error(
            epath,
            f"a LOGICAL_DNS cluster needs exactly one endpoint, found {len(locality.lb_endpoints)}",
        )
        return None
    lb = locality.lb_endpoints[0]
    epath = f"{epath}[0]"
    unhandled(ctx, lb, epath, ("endpoint", "health_status", "load_balancing_weight"))
    epath = join(epath, "endpoint")
    if not lb.HasField("endpoint"):
        ctx.error(epath, "is required")
        return None
    unhandled(ctx, lb.endpoint, epath, ("address", "hostname"))
    apath = join(epath, "address")
    if not lb.endpoint.HasField("address"):
        ctx.error(apath, "is required")
        return None
    spath = join(apath, "socket_address")
    if lb.endpoint.address.WhichOneof("address") != "socket_address":
        ctx.error(spath, "is required")
        return None
    sock = lb.endpoint.address.socket_address
    unhandled(ctx, sock, spath, ("address", "port_value", "resolver_name", "protocol"))
    before = len(ctx.errors)
    if sock.resolver_name:
        ctx.error(join(spath, "resolver_name"), "a LOGICAL_DNS cluster cannot name a resolver")
    if int(sock.protocol) != 0:
        ctx.error(join(spath, "protocol"), "only TCP is supported")
    if not sock.address:
        ctx.error(join(spath, "address"), "must not be empty")
    if sock.WhichOneof("port_specifier") != "port_value":
        ctx.error(join(spath, "port_value"), "is required (named ports are not supported)")
    elif int(sock.port_value) > 65535:
        ctx.error(join(spath, "port_value"), f"{sock.port_value} is not a valid port")
    if len(ctx.errors) != before:
        return None
    return str(sock.address), int(sock.port_value)


def _upstream_config(ctx: Ctx, config: Any) -> None:
    path = "upstream_config"
    unhandled(ctx, config, path, ("name", "typed_config"))
    tpath = join(path, "typed_config")
    if type_name(config.typed_config) != _HTTP_OPTIONS_KEY:
        ctx.error(
            tpath,
            "unsupported upstream config type "
            f"{type_name(config.typed_config) or '<empty>'} (HttpProtocolOptions only)",
        )
        return
    options = unpack(ctx, tpath, config.typed_config, http_protocol_options_pb2.HttpProtocolOptions)
    if options is None:
        return
    cpath = join(tpath, "common_http_protocol_options")
    if options.HasField("common_http_protocol_options"):
        opt_duration(ctx, options.common_http_protocol_options, "idle_timeout", cpath)
    ctx.ignore(f"{tpath} (validated, not used)")


def _thresholds(ctx: Ctx, path: str, msg: Any) -> Thresholds:
    unhandled(
        ctx,
        msg,
        path,
        (
            "priority",
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "max_retries",
            "retry_budget",
        ),
    )
    budget = None
    if msg.HasField("retry_budget"):
        bpath = join(path, "retry_budget")
        rb = msg.retry_budget
        unhandled(ctx, rb, bpath, ("budget_percent", "min_retry_concurrency"))
        budget = RetryBudget(
            budget_percent=percent(ctx, join(bpath, "budget_percent"), rb.budget_percent)
            if rb.HasField("budget_percent")
            else 20.0,
            min_retry_concurrency=int(wrapped(rb, "min_retry_concurrency", 3)),
        )
    return Thresholds(
        max_connections=int(wrapped(msg, "max_connections", 1024)),
        max_pending_requests=int(wrapped(msg, "max_pending_requests", 1024)),
        max_requests=int(wrapped(msg, "max_requests", 1024)),
        max_retries=int(wrapped(msg, "max_retries", 3)),
        max_retries_explicit=msg.HasField("max_retries"),
        retry_budget=budget,
    )


def _circuit_breakers(ctx: Ctx, msg: Any) -> CircuitBreakers:
    path = "circuit_breakers"
    unhandled(ctx, msg.circuit_breakers, path, ("thresholds",))
    found: dict[int, Thresholds] = {}
    for i, t in enumerate(msg.circuit_breakers.thresholds):
        tpath = f"{join(path, 'thresholds')}[{i}]"
        priority = int(t.priority)
        if priority not in (0, 1):
            ctx.error(join(tpath, "priority"), f"unknown routing priority {priority}")
            continue
        if priority in found:
            ctx.ignore(f"{tpath} (a later entry for the same priority)")
            continue
        found[priority] = _thresholds(ctx, tpath, t)
    return CircuitBreakers(default=found.get(0, Thresholds()), high=found.get(1, Thresholds()))


def _outlier(ctx: Ctx, msg: Any) -> OutlierDetection:
    path = "outlier_detection"
    handled = [f for f, _ in _OUTLIER_DURATIONS]
    handled += [f for f, _, _ in _OUTLIER_NUMBERS]
    handled += [f for f, _, _ in _OUTLIER_BOOLS]
    unhandled(ctx, msg, path, frozenset(handled))
    values: dict[str, Any] = {}
    for field, default_seconds in _OUTLIER_DURATIONS:
        value = opt_duration(
            ctx, msg, field, path, positive=field in ("interval", "base_ejection_time")
        )
        values[field] = default_seconds if value is None else value
    for field, default, is_percent in _OUTLIER_NUMBERS:
        value = int(wrapped(msg, field, default))
        if is_percent and value > 100:
            ctx.error(join(path, field), f"{value} is a percentage and must be <= 100")
        values[field] = value
    for field, default_bool, wrapper in _OUTLIER_BOOLS:
        values[field] = (
            bool(wrapped(msg, field, default_bool)) if wrapper else bool(getattr(msg, field))
        )
    return OutlierDetection(**values)


def _transport_socket(ctx: Ctx, msg: Any) -> UpstreamTlsContext | None:
    path = "transport_socket"
    socket = msg.transport_socket
    unhandled(ctx, socket, path, ("name", "typed_config"))
    config_type = type_name(socket.typed_config) if socket.HasField("typed_config") else ""
    if config_type == _TLS_TYPE:
        tpath = join(path, "typed_config")
        tls = unpack(ctx, tpath, socket.typed_config, tls_pb2.UpstreamTlsContext)
        return None if tls is None else upstream_tls_context(ctx, tpath, tls)
    if config_type == _RAW_BUFFER_TYPE or (not config_type and socket.name in _RAW_BUFFER_NAMES):
        return None
    ctx.error(
        path,
        f"unsupported transport socket {config_type or socket.name or '<empty>'} "
        "(UpstreamTlsContext or raw_buffer only)",
    )
    return None


def _protocol_options(ctx: Ctx, msg: Any) -> tuple[bool, int | None]:
    http2 = msg.HasField("http2_protocol_options")
    if http2 and msg.http2_protocol_options.ListFields():
        ctx.ignore("http2_protocol_options (settings; HTTP/2 is used)")
    max_requests = wrapped(msg, "max_requests_per_connection", None)
    if msg.HasField("common_http_protocol_options"):
        opath = "common_http_protocol_options"
        options = msg.common_http_protocol_options
        unhandled(ctx, options, opath, ("max_requests_per_connection",))
        max_requests = wrapped(options, "max_requests_per_connection", max_requests)
    for key in sorted(msg.typed_extension_protocol_options):
        kpath = f"typed_extension_protocol_options[{key!r}]"
        value = msg.typed_extension_protocol_options[key]
        if key != _HTTP_OPTIONS_KEY and type_name(value) != _HTTP_OPTIONS_KEY:
            ctx.ignore(kpath)
            continue
        options = unpack(ctx, kpath, value, http_protocol_options_pb2.HttpProtocolOptions)
        if options is None:
            continue
        unhandled(ctx, options, kpath, ("explicit_http_config", "common_http_protocol_options"))
        if options.HasField("explicit_http_config"):
            epath = join(kpath, "explicit_http_config")
            explicit = options.explicit_http_config
            which = explicit.WhichOneof("protocol_config")
            if which == "http2_protocol_options":
                http2 = True
                if explicit.http2_protocol_options.ListFields():
                    ctx.ignore(join(epath, "http2_protocol_options"))
            elif which == "http_protocol_options":
                http2 = False
                if explicit.http_protocol_options.ListFields():
                    ctx.ignore(join(epath, "http_protocol_options"))
            elif which is not None:
                ctx.error(join(epath, which), "only HTTP/1.1 and HTTP/2 are supported")
        if options.HasField("common_http_protocol_options"):
            cpath = join(kpath, "common_http_protocol_options")
            common = options.common_http_protocol_options
            unhandled(ctx, common, cpath, ("max_requests_per_connection",))
            max_requests = wrapped(common, "max_requests_per_connection", max_requests)
    return http2, None if max_requests is None else int(max_requests)
