"""VirtualService -> RouteConfiguration, the way istiod translates HTTP routes.

One RouteConfiguration per service port, named ``host:port``, with one
virtual host whose domains are the host, ``host:port`` and istiod's short
forms (Envoy nodes also get ``*``: their listener serves only this service).
Each ``http`` entry becomes one route per ``match`` (a match on another
``port``, or whose ``sourceLabels``/``sourceNamespace`` do not fit the node,
is dropped; an entry left without matches is skipped). Without a
VirtualService the service gets one ``/`` route to its default cluster.

Field mapping (Istio VirtualService reference; Envoy route_components.proto):

* ``uri`` exact/prefix/regex -> ``path``/``prefix``/``safe_regex``,
  ``ignoreUriCase`` -> ``case_sensitive: false``; ``headers``,
  ``withoutHeaders`` (inverted), ``method``/``authority``/``scheme``
  (``:method``/``:authority``/``:scheme``) -> header matchers; ``{}`` means
  present; ``queryParams`` -> query parameter matchers;
* destinations -> ``cluster`` or ``weighted_clusters`` (zero weights
  dropped); a destination without port uses the service's only port, or the
  port of the route configuration;
* ``timeout`` -> ``timeout`` and ``max_stream_duration`` (gRFC A31), with
  ``0s`` (no timeout) when unset as istiod does;
* ``retries`` -> ``retry_policy``: ``attempts`` -> ``num_retries``,
  ``perTryTimeout`` -> ``per_try_timeout``, ``retryOn`` -> ``retry_on``
  (numeric codes -> ``retriable_status_codes``); unset ``retryOn`` uses
  Istio's default ``connect-failure,refused-stream,unavailable,cancelled,
  retriable-status-codes`` with 503; previous hosts are avoided;
* ``fault`` -> per-route ``envoy.filters.http.fault`` config (gRFC A33);
* ``headers`` set/add/remove -> header mutations; ``mirror(s)`` ->
  ``request_mirror_policies``; ``rewrite`` -> ``prefix_rewrite`` /
  ``host_rewrite_literal``; a destination's ``consistentHash`` -> ``hash_policy``.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from proxyless.controlplane.istio.clusters import duration, pack
from proxyless.controlplane.istio.model import (
    Destination,
    Fault,
    HeaderOps,
    HttpRoute,
    MatchRequest,
    Retry,
    StringMatch,
    VirtualService,
)
from proxyless.controlplane.istio.registry import Registry, Service, cluster_name, domains
from proxyless.status_codes import GRPC_STATUS_NAMES

__all__ = ["FAULT_FILTER", "build_route_configuration", "resolve_destination"]

FAULT_FILTER = "envoy.filters.http.fault"
DEFAULT_RETRY_ON = (
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
)


def _string_matcher(m: StringMatch, *, ignore_case: bool = False) -> string_pb2.StringMatcher:
    out = string_pb2.StringMatcher(ignore_case=ignore_case)
    if m.kind == "exact":
        out.exact = m.value
    elif m.kind == "prefix":
        out.prefix = m.value
    else:
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=m.value))
        out.ignore_case = False
    return out


def _header_matcher(
    name: str, m: StringMatch, *, invert: bool = False
) -> route_components_pb2.HeaderMatcher:
    matcher = route_components_pb2.HeaderMatcher(name=name, invert_match=invert)
    if m.kind == "prefix" and m.value == "":
        matcher.present_match = True
    else:
        matcher.string_match.CopyFrom(_string_matcher(m))
    return matcher


def _applies(m: MatchRequest, port: int, namespace: str, labels: Mapping[str, str]) -> bool:
    if m.port is not None and m.port != port:
        return False
    if m.source_namespace and m.source_namespace != namespace:
        return False
    return all(labels.get(k) == v for k, v in m.source_labels.items())


def _fill_match(out: route_components_pb2.RouteMatch, m: MatchRequest | None) -> None:
    if m is None or m.uri is None:
        out.prefix = "/"
    elif m.uri.kind == "exact":
        out.path = m.uri.value
    elif m.uri.kind == "prefix":
        out.prefix = m.uri.value
    else:
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=m.uri.value))
    if m is None:
        return
    if m.ignore_uri_case and m.uri is not None and m.uri.kind != "regex":
        out.case_sensitive.value = False
    for pseudo, value in (
        (":method", m.method),
        (":authority", m.authority),
        (":scheme", m.scheme),
    ):
        if value is not None:
            out.headers.append(_header_matcher(pseudo, value))
    for name, value in m.headers:
        out.headers.append(_header_matcher(name, value))
    for name, value in m.without_headers:
        out.headers.append(_header_matcher(name, value, invert=True))
    for name, value in m.query_params:
        qp = out.query_parameters.add(name=name)
        if value.kind == "prefix" and value.value == "":
            qp.present_match = True
        else:
            qp.string_match.CopyFrom(_string_matcher(value))


def _header_options(ops: HeaderOps) -> list[base_pb2.HeaderValueOption]:
    out = []
    for key, value in ops.set:
        out.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=key, value=value),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
    for key, value in ops.add:
        out.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=key, value=value),
                append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD,
            )
        )
    return out


def _fraction(percent: float) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(
        numerator=round(percent * 10_000),
        denominator=percent_pb2.FractionalPercent.MILLION,
    )


def _fault_config(fault: Fault) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    if fault.delay is not None:
        out.delay.CopyFrom(
            common_fault_pb2.FaultDelay(
                fixed_delay=duration(fault.delay), percentage=_fraction(fault.delay_percent)
            )
        )
    if fault.abort_http_status is not None:
        out.abort.http_status = fault.abort_http_status
        out.abort.percentage.CopyFrom(_fraction(fault.abort_percent))
    elif fault.abort_grpc_status is not None:
        out.abort.grpc_status = GRPC_STATUS_NAMES.index(fault.abort_grpc_status)
        out.abort.percentage.CopyFrom(_fraction(fault.abort_percent))
    return out


def _retry_policy(retry: Retry) -> route_components_pb2.RetryPolicy:
    conditions = list(DEFAULT_RETRY_ON if retry.retry_on is None else retry.retry_on)
    codes = [int(c) for c in conditions if c.isdigit()]
    named = [c for c in conditions if not c.isdigit()]
    if retry.retry_on is None:
        codes = [503]
    if codes and "retriable-status-codes" not in named:
        named.append("retriable-status-codes")
    policy = route_components_pb2.RetryPolicy(retry_on=",".join(named))
    policy.num_retries.value = retry.attempts
    policy.retriable_status_codes.extend(codes)
    if retry.per_try_timeout is not None:
        policy.per_try_timeout.CopyFrom(duration(retry.per_try_timeout))
    predicate = policy.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts")
    predicate.typed_config.CopyFrom(pack(previous_hosts_pb2.PreviousHostsPredicate()))
    policy.host_selection_retry_max_attempts = 5
    return policy


def resolve_destination(
    registry: Registry, dest: Destination, namespace: str, route_port: int
) -> tuple[str, int] | None:
    """(host, port) a destination sends to, None if it cannot be resolved."""
    host = registry.resolve(dest.host, namespace)
    service = registry.services.get(host)
    if service is None:
        return None
    if dest.port is not None:
        return host, dest.port
    if len(service.ports) == 1:
        return host, service.ports[0].number
    if service.port(route_port) is not None:
        return host, route_port
    return None


def _hash_policies(
    registry: Registry, host: str, port: int, subset: str
) -> list[route_components_pb2.RouteAction.HashPolicy]:
    policy = registry.policy(host, port, subset)
    chash = policy.consistent_hash if policy else None
    if chash is None:
        return []
    hp = route_components_pb2.RouteAction.HashPolicy()
    if chash.header is not None:
        hp.header.header_name = chash.header
    elif chash.cookie is not None:
        hp.cookie.name = chash.cookie
        hp.cookie.path = chash.cookie_path
        if chash.cookie_ttl is not None:
            hp.cookie.ttl.CopyFrom(duration(chash.cookie_ttl))
    elif chash.source_ip:
        hp.connection_properties.source_ip = True
    elif chash.query_parameter is not None:
        hp.query_parameter.name = chash.query_parameter
    return [hp]


def _route_action(
    registry: Registry,
    vs: VirtualService,
    http: HttpRoute,
    route_port: int,
    out: route_components_pb2.Route,
) -> None:
    ns = vs.source.namespace
    action = out.route
    targets = []
    for rd in http.route:
        if rd.weight == 0 and len(http.route) > 1:
            continue
        resolved = resolve_destination(registry, rd.destination, ns, route_port)
        if resolved is None:
            # A host no visible service defines (yet): the client finds no
            # such cluster and fails the call, as with istiod's config.
            resolved = (
                registry.resolve(rd.destination.host, ns),
                rd.destination.port or route_port,
            )
        host, port = resolved
        targets.append((cluster_name(port, rd.destination.subset, host), rd, host, port))
    if len(targets) == 1:
        name, rd, _, _ = targets[0]
        action.cluster = name
        if rd.headers is not None:
            out.request_headers_to_add.extend(_header_options(rd.headers.request))
            out.request_headers_to_remove.extend(rd.headers.request.remove)
            out.response_headers_to_add.extend(_header_options(rd.headers.response))
            out.response_headers_to_remove.extend(rd.headers.response.remove)
    else:
        for name, rd, _, _ in targets:
            cw = action.weighted_clusters.clusters.add(name=name)
            cw.weight.value = rd.weight or 0
            if rd.headers is not None:
                cw.request_headers_to_add.extend(_header_options(rd.headers.request))
                cw.request_headers_to_remove.extend(rd.headers.request.remove)
                cw.response_headers_to_add.extend(_header_options(rd.headers.response))
                cw.response_headers_to_remove.extend(rd.headers.response.remove)
    for _, rd, host, port in targets:
        policies = _hash_policies(registry, host, port, rd.destination.subset)
        if policies:
            action.hash_policy.extend(policies)
            break
    action.timeout.CopyFrom(duration(http.timeout or 0.0))
    if http.timeout:
        action.max_stream_duration.max_stream_duration.CopyFrom(duration(http.timeout))
        action.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(http.timeout))
    if http.retries is not None and http.retries.attempts > 0:
        action.retry_policy.CopyFrom(_retry_policy(http.retries))
    for mirror in http.mirrors:
        resolved = resolve_destination(registry, mirror.destination, ns, route_port)
        if resolved is None:
            continue
        policy = action.request_mirror_policies.add(
            cluster=cluster_name(resolved[1], mirror.destination.subset, resolved[0])
        )
        policy.runtime_fraction.default_value.CopyFrom(_fraction(mirror.percent))
    if http.rewrite is not None:
        if http.rewrite.uri is not None:
            action.prefix_rewrite = http.rewrite.uri
        if http.rewrite.authority is not None:
            action.host_rewrite_literal = http.rewrite.authority
    if http.headers is not None:
        out.request_headers_to_add.extend(_header_options(http.headers.request))
        out.request_headers_to_remove.extend(http.headers.request.remove)
        out.response_headers_to_add.extend(_header_options(http.headers.response))
        out.response_headers_to_remove.extend(http.headers.response.remove)
    if http.fault is not None:
        out.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(_fault_config(http.fault)))


def _routes(
    registry: Registry,
    vs: VirtualService,
    port: int,
    namespace: str,
    labels: Mapping[str, str],
) -> list[route_components_pb2.Route]:
    routes = []
    for index, http in enumerate(vs.http):
        matches: list[MatchRequest | None]
        if http.matches:
            matches = [m for m in http.matches if _applies(m, port, namespace, labels)]
            if not matches:
                continue
        else:
            matches = [None]
        base = http.name or f"{vs.source.name}.{index}"
        for m in matches:
            route = route_components_pb2.Route(
                name=f"{base}.{m.name}" if m is not None and m.name else base
            )
            _fill_match(route.match, m)
            _route_action(registry, vs, http, port, route)
            routes.append(route)
    return routes


def build_route_configuration(
    registry: Registry,
    service: Service,
    port: int,
    *,
    node_namespace: str,
    node_labels: Mapping[str, str],
    catch_all: bool,
) -> route_pb2.RouteConfiguration:
    name = f"{service.host}:{port}"
    config = route_pb2.RouteConfiguration(name=name)
    vhost = config.virtual_hosts.add(name=name)
    vhost.domains.extend(domains(service.host, port, node_namespace))
    if catch_all:
        vhost.domains.append("*")
    vs = registry.virtual_services.get(service.host)
    if vs is not None:
        vhost.routes.extend(_routes(registry, vs, port, node_namespace, node_labels))
    else:
        route = vhost.routes.add(name="default")
        route.match.prefix = "/"
        route.route.cluster = cluster_name(port, "", service.host)
        route.route.timeout.CopyFrom(duration(0.0))
    return config
