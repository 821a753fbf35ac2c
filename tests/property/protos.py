"""Hypothesis strategies for Envoy protos: any message, and valid resources.

:func:`any_message` fills a message from its descriptor: a few fields at each
level, values drawn from the whole range of the field's type with the edges
(0, -1, 65536, 2^32-1, empty strings, NaN) favoured, unknown enum numbers
included, and ``google.protobuf.Any`` fields holding one of the configs the
parsers unpack (or a wrong type, or garbage). It reaches the branches a
hand-written strategy would not think of.

The ``valid_*`` strategies build resources the parsers must accept: names,
domains, ports, addresses, weights, matchers, retry and hash policies,
timeouts, all drawn within their rules (distinct domains and addresses,
contiguous priorities, weights summing to at most 2^32-1).
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.pick_first.v3 import pick_first_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import strategies as st

__all__ = [
    "TOP_LEVEL",
    "any_message",
    "valid_cluster",
    "valid_cluster_load_assignment",
    "valid_listener",
    "valid_route_configuration",
    "valid_secret",
]

#: The resource message of each decoder, by the decoder's short name.
TOP_LEVEL: dict[str, type[Message]] = {
    "LDS": listener_pb2.Listener,
    "RDS": route_pb2.RouteConfiguration,
    "CDS": cluster_pb2.Cluster,
    "EDS": endpoint_pb2.ClusterLoadAssignment,
    "SDS": secret_pb2.Secret,
}

#: What an ``Any`` may hold: every config type some parser unpacks.
_ANY_TYPES: tuple[type[Message], ...] = (
    hcm_pb2.HttpConnectionManager,
    router_pb2.Router,
    fault_pb2.HTTPFault,
    rbac_pb2.RBAC,
    rbac_pb2.RBACPerRoute,
    rc.FilterConfig,
    tls_pb2.UpstreamTlsContext,
    aggregate_pb2.ClusterConfig,
    http_protocol_options_pb2.HttpProtocolOptions,
    round_robin_pb2.RoundRobin,
    pick_first_pb2.PickFirst,
    least_request_pb2.LeastRequest,
    ring_hash_pb2.RingHash,
    maglev_pb2.Maglev,
    wrr_locality_pb2.WrrLocality,
    route_pb2.RouteConfiguration,
)

_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_EDGE_INTS = (0, 1, 2, 3, 5, 7, 100, 101, 128, 129, 443, 1024, 65535, 65536, 2**31 - 1, 2**32 - 1)
_EDGE_STRINGS = (
    "",
    "*",
    "/",
    "a",
    "*.example.com",
    "svc.*",
    "10.0.0.1",
    "::1",
    "[::1]",
    "host",
    ":authority",
    "x-user",
    "5xx,gateway-error",
    ".*",
    "(",
    "a{1001}",
    "\\1",
    "\\",
    "envoy.filters.http.router",
    "xdstp://auth/envoy.config.listener.v3.Listener/x",
    "é",
)


def _in_range(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [v for v in _EDGE_INTS if lo <= v <= hi] + [lo, hi] + ([-1] if lo < 0 else [])
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


_TEXT = st.one_of(
    st.sampled_from(_EDGE_STRINGS),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.cpp_type
    if kind in _INT_RANGES:
        return _in_range(*_INT_RANGES[kind])
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.CPPTYPE_DOUBLE:
        return st.floats()
    if kind == FieldDescriptor.CPPTYPE_FLOAT:
        return st.floats(width=32)
    if kind == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=16)
        return _TEXT
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        if field.enum_type.is_closed:
            return st.sampled_from(numbers)
        return st.one_of(st.sampled_from(numbers), st.integers(-2, 200))
    raise AssertionError(f"unexpected field type {kind}")


def _fill_any(draw: st.DrawFn, target: Any, depth: int) -> None:
    choice = draw(st.integers(0, 9))
    if choice == 0:  # garbage of a known type
        cls = draw(st.sampled_from(_ANY_TYPES))
        target.type_url = "type.googleapis.com/" + cls.DESCRIPTOR.full_name
        target.value = draw(st.binary(max_size=24))
    elif choice == 1:  # some other type, or no type at all
        target.type_url = draw(_TEXT)
        target.value = draw(st.binary(max_size=8))
    else:
        cls = draw(st.sampled_from(_ANY_TYPES))
        target.Pack(draw(any_message(cls, depth + 1)))


def _fill(draw: st.DrawFn, msg: Message, depth: int) -> None:
    fields = list(msg.DESCRIPTOR.fields)
    if not fields or depth > 5:
        return
    if msg.DESCRIPTOR.full_name == "google.protobuf.Any":
        _fill_any(draw, msg, depth)
        return
    budget = 6 if depth == 0 else 3
    chosen = draw(st.lists(st.sampled_from(fields), max_size=budget, unique_by=lambda f: f.name))
    for field in chosen:
        _fill_field(draw, msg, field, depth)


def _fill_field(draw: st.DrawFn, msg: Message, field: FieldDescriptor, depth: int) -> None:
    name = field.name
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        key_field = message_type.fields_by_name["key"]
        value_field = message_type.fields_by_name["value"]
        target = getattr(msg, name)
        for _ in range(draw(st.integers(0, 2))):
            key = draw(_scalar(key_field))
            if value_field.message_type is not None:
                _fill(draw, target[key], depth + 1)
            else:
                target[key] = draw(_scalar(value_field))
        return
    if field.is_repeated:
        container = getattr(msg, name)
        for _ in range(draw(st.integers(0, 2))):
            if message_type is not None:
                _fill(draw, container.add(), depth + 1)
            else:
                container.append(draw(_scalar(field)))
        return
    if message_type is not None:
        child = getattr(msg, name)
        child.SetInParent()
        _fill(draw, child, depth + 1)
        return
    setattr(msg, name, draw(_scalar(field)))


def any_message(cls: type[Message], depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of ``cls`` with a few fields set at each level, whatever they mean."""

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        _fill(draw, msg, depth)
        return msg

    return build()


# -- valid resources ---------------------------------------------------------

_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_NAME = st.builds(lambda parts: "-".join(parts), st.lists(_LABEL, min_size=1, max_size=3))
_HOST = st.builds(lambda parts: ".".join(parts), st.lists(_LABEL, min_size=1, max_size=3))
_HEADER_NAME = st.builds(lambda s: "x-" + s, _LABEL)


def _duration(lo: float = 0.0, hi: float = 3600.0) -> st.SearchStrategy[duration_pb2.Duration]:
    def make(seconds: int, nanos: int) -> duration_pb2.Duration:
        return duration_pb2.Duration(seconds=seconds, nanos=nanos)

    return st.builds(make, st.integers(int(lo), int(hi)), st.integers(0, 999_999_999))


def _pack(msg: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def _ads() -> config_source_pb2.ConfigSource:
    source = config_source_pb2.ConfigSource()
    source.ads.SetInParent()
    return source


@st.composite
def _domain(draw: st.DrawFn) -> str:
    host = draw(_HOST)
    shape = draw(st.sampled_from(("exact", "suffix", "prefix", "port")))
    if shape == "suffix":
        return "*." + host
    if shape == "prefix":
        return host + ".*"
    if shape == "port":
        return f"{host}:{draw(st.integers(1, 65535))}"
    return host


_SAFE_REGEXES = ("/svc/.*", "[a-z]+", "(v1|v2)", "x-(\\d+)", ".*Mobile.*", "^/a$")


@st.composite
def _header_matcher(draw: st.DrawFn) -> rc.HeaderMatcher:
    m = rc.HeaderMatcher(
        name=draw(_HEADER_NAME),
        invert_match=draw(st.booleans()),
        treat_missing_header_as_empty=draw(st.booleans()),
    )
    kind = draw(st.sampled_from(("exact", "prefix", "regex", "range", "present", "string", "none")))
    value = draw(_LABEL)
    if kind == "exact":
        m.exact_match = value
    elif kind == "prefix":
        m.prefix_match = value
    elif kind == "regex":
        m.safe_regex_match.regex = draw(st.sampled_from(_SAFE_REGEXES))
    elif kind == "range":
        start = draw(st.integers(-1000, 1000))
        m.range_match.start, m.range_match.end = start, start + draw(st.integers(0, 1000))
    elif kind == "present":
        m.present_match = draw(st.booleans())
    elif kind == "string":
        m.string_match.CopyFrom(
            string_pb2.StringMatcher(suffix=value, ignore_case=draw(st.booleans()))
        )
    return m


@st.composite
def _route_match(draw: st.DrawFn) -> rc.RouteMatch:
    m = rc.RouteMatch()
    kind = draw(st.sampled_from(("prefix", "path", "safe_regex", "separated")))
    segment = "/" + draw(_LABEL)
    if kind == "prefix":
        m.prefix = draw(st.sampled_from(("", "/", segment)))
    elif kind == "path":
        m.path = segment + "/" + draw(_LABEL)
    elif kind == "safe_regex":
        m.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=draw(st.sampled_from(_SAFE_REGEXES))))
    else:
        m.path_separated_prefix = segment
    if draw(st.booleans()):
        m.case_sensitive.value = draw(st.booleans())
    m.headers.extend(draw(st.lists(_header_matcher(), max_size=2)))
    if draw(st.booleans()):
        m.runtime_fraction.default_value.numerator = draw(st.integers(0, 100))
    return m


@st.composite
def _retry_policy(draw: st.DrawFn) -> rc.RetryPolicy:
    on = draw(st.lists(st.sampled_from(("5xx", "reset", "unavailable", "cancelled")), max_size=3))
    p = rc.RetryPolicy(retry_on=",".join(on))
    if draw(st.booleans()):
        p.num_retries.value = draw(st.integers(1, 10))
    if draw(st.booleans()):
        p.per_try_timeout.CopyFrom(draw(_duration(0, 30)))
    if draw(st.booleans()):
        base = draw(st.integers(1, 1000))
        p.retry_back_off.base_interval.FromMilliseconds(base)
        if draw(st.booleans()):
            p.retry_back_off.max_interval.FromMilliseconds(base * draw(st.integers(1, 20)))
    p.retriable_status_codes.extend(draw(st.lists(st.integers(100, 599), max_size=2)))
    return p


@st.composite
def _hash_policy(draw: st.DrawFn) -> rc.RouteAction.HashPolicy:
    h = rc.RouteAction.HashPolicy(terminal=draw(st.booleans()))
    kind = draw(st.sampled_from(("header", "cookie", "query", "source")))
    if kind == "header":
        h.header.header_name = draw(_HEADER_NAME)
    elif kind == "cookie":
        h.cookie.name = draw(_LABEL)
        if draw(st.booleans()):
            h.cookie.ttl.CopyFrom(draw(_duration(0, 60)))
    elif kind == "query":
        h.query_parameter.name = draw(_LABEL)
    else:
        h.connection_properties.source_ip = True
    return h


@st.composite
def _route_action(draw: st.DrawFn) -> rc.RouteAction:
    a = rc.RouteAction()
    kind = draw(st.sampled_from(("cluster", "weighted", "header")))
    if kind == "cluster":
        a.cluster = draw(_NAME)
    elif kind == "header":
        a.cluster_header = draw(_HEADER_NAME)
    else:
        weights = draw(st.lists(st.integers(0, 2**20), min_size=1, max_size=4))
        if not any(weights):
            weights[0] = 1
        for i, w in enumerate(weights):
            entry = a.weighted_clusters.clusters.add(name=f"{draw(_NAME)}-{i}")
            entry.weight.value = w
    if draw(st.booleans()):
        a.timeout.CopyFrom(draw(_duration()))
    if draw(st.booleans()):
        a.retry_policy.CopyFrom(draw(_retry_policy()))
    a.hash_policy.extend(draw(st.lists(_hash_policy(), max_size=2)))
    if draw(st.booleans()):
        a.max_stream_duration.max_stream_duration.CopyFrom(draw(_duration(0, 60)))
    return a


@st.composite
def _route(draw: st.DrawFn) -> rc.Route:
    r = rc.Route(name=draw(_NAME), match=draw(_route_match()))
    match = r.match
    action = draw(_route_action())
    if match.WhichOneof("path_specifier") != "safe_regex" and draw(st.booleans()):
        action.prefix_rewrite = "/" + draw(_LABEL)
    r.route.CopyFrom(action)
    for _ in range(draw(st.integers(0, 1))):
        opt = r.request_headers_to_add.add()
        opt.header.key, opt.header.value = draw(_HEADER_NAME), draw(_LABEL)
    return r


@st.composite
def _virtual_hosts(draw: st.DrawFn) -> list[rc.VirtualHost]:
    # Domains are unique across the whole RouteConfiguration.
    domains = draw(st.lists(_domain(), min_size=1, max_size=6, unique=True))
    if draw(st.booleans()):
        domains.append("*")
    cuts = sorted(draw(st.sets(st.integers(1, max(len(domains) - 1, 1)), max_size=2)))
    groups = [domains[i:j] for i, j in zip([0, *cuts], [*cuts, len(domains)], strict=True)]
    out = []
    for i, group in enumerate(g for g in groups if g):
        vh = rc.VirtualHost(name=f"vh-{i}", domains=group)
        vh.routes.extend(draw(st.lists(_route(), min_size=1, max_size=3)))
        if draw(st.booleans()):
            vh.retry_policy.CopyFrom(draw(_retry_policy()))
        out.append(vh)
    return out


@st.composite
def valid_route_configuration(draw: st.DrawFn) -> route_pb2.RouteConfiguration:
    rc_msg = route_pb2.RouteConfiguration(name=draw(_NAME))
    rc_msg.virtual_hosts.extend(draw(_virtual_hosts()))
    return rc_msg


@st.composite
def valid_listener(draw: st.DrawFn) -> listener_pb2.Listener:
    manager = hcm_pb2.HttpConnectionManager()
    if draw(st.booleans()):
        fault = fault_pb2.HTTPFault()
        fault.abort.http_status = draw(st.integers(200, 599))
        fault.abort.percentage.numerator = draw(st.integers(0, 100))
        manager.http_filters.add(name="envoy.filters.http.fault", typed_config=_pack(fault))
    manager.http_filters.add(
        name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router())
    )
    if draw(st.booleans()):
        manager.rds.config_source.CopyFrom(_ads())
        manager.rds.route_config_name = draw(_NAME)
    else:
        manager.route_config.CopyFrom(draw(valid_route_configuration()))
    if draw(st.booleans()):
        manager.common_http_protocol_options.max_stream_duration.CopyFrom(draw(_duration(0, 60)))
    return listener_pb2.Listener(
        name=draw(_domain()),
        api_listener=api_listener_pb2.ApiListener(api_listener=_pack(manager)),
    )


@st.composite
def _addresses(draw: st.DrawFn, n: int) -> list[tuple[str, int]]:
    hosts = st.one_of(
        st.ip_addresses().map(str),
        _HOST,
    )
    return draw(
        st.lists(
            st.tuples(hosts, st.integers(1, 65535)),
            min_size=n,
            max_size=n,
            # canonical IP spelling must be unique too: st.ip_addresses gives canonical text
            unique=True,
        )
    )


def _lb_endpoint(address: str, port: int, weight: int | None, health: int) -> ec.LbEndpoint:
    ep = ec.LbEndpoint(health_status=health)
    ep.endpoint.address.CopyFrom(
        address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=address, port_value=port)
        )
    )
    if weight is not None:
        ep.load_balancing_weight.value = weight
    return ep


@st.composite
def _assignment_body(draw: st.DrawFn, name: str) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    priorities = draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(0, 3), min_size=priorities, max_size=priorities * 2))
    addresses = iter(draw(_addresses(sum(sizes))))
    for i, size in enumerate(sizes):
        priority = i if i < priorities else draw(st.integers(0, priorities - 1))
        lle = cla.endpoints.add(priority=priority)
        lle.locality.CopyFrom(base_pb2.Locality(region="r", zone=f"z{i}"))
        lle.load_balancing_weight.value = draw(st.integers(1, 1000))
        for _ in range(size):
            host, port = next(addresses)
            weight = draw(st.one_of(st.none(), st.integers(1, 100)))
            lle.lb_endpoints.append(_lb_endpoint(host, port, weight, draw(st.integers(0, 5))))
    if draw(st.booleans()):
        cla.policy.overprovisioning_factor.value = draw(st.integers(1, 500))
        drop = cla.policy.drop_overloads.add(category=draw(_LABEL))
        drop.drop_percentage.numerator = draw(st.integers(0, 100))
    return cla


@st.composite
def valid_cluster_load_assignment(draw: st.DrawFn) -> endpoint_pb2.ClusterLoadAssignment:
    return draw(_assignment_body(draw(_NAME)))


@st.composite
def valid_cluster(draw: st.DrawFn) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=draw(_NAME))
    kind = draw(st.sampled_from(("eds", "static", "aggregate")))
    if kind == "eds":
        c.type = cluster_pb2.Cluster.EDS
        c.eds_cluster_config.eds_config.CopyFrom(_ads())
        if draw(st.booleans()):
            c.eds_cluster_config.service_name = draw(_NAME)
    elif kind == "static":
        c.type = cluster_pb2.Cluster.STATIC
        c.load_assignment.CopyFrom(draw(_assignment_body("")))
    else:
        config = aggregate_pb2.ClusterConfig(clusters=draw(st.lists(_NAME, min_size=1, max_size=3)))
        c.cluster_type.name = "envoy.clusters.aggregate"
        c.cluster_type.typed_config.Pack(config)
    policy = draw(st.sampled_from(("rr", "lr", "ring", "random", "maglev")))
    if policy == "lr":
        c.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
        if draw(st.booleans()):
            c.least_request_lb_config.choice_count.value = draw(st.integers(2, 10))
    elif policy == "ring":
        c.lb_policy = cluster_pb2.Cluster.RING_HASH
        if draw(st.booleans()):
            low = draw(st.integers(1, 4096))
            c.ring_hash_lb_config.minimum_ring_size.value = low
            c.ring_hash_lb_config.maximum_ring_size.value = low + draw(st.integers(0, 4096))
    elif policy == "random":
        c.lb_policy = cluster_pb2.Cluster.RANDOM
    elif policy == "maglev":
        c.lb_policy = cluster_pb2.Cluster.MAGLEV
        if draw(st.booleans()):
            c.maglev_lb_config.table_size.value = draw(st.sampled_from((251, 65537, 5_000_011)))
    if draw(st.booleans()):
        t = c.circuit_breakers.thresholds.add()
        t.max_requests.value = draw(st.integers(0, 10_000))
        if draw(st.booleans()):
            t.retry_budget.budget_percent.value = draw(st.floats(0, 100))
    if draw(st.booleans()):
        od = c.outlier_detection
        od.consecutive_5xx.value = draw(st.integers(0, 100))
        od.max_ejection_percent.value = draw(st.integers(0, 100))
        od.interval.CopyFrom(draw(_duration(1, 60)))
    if draw(st.booleans()):
        c.connect_timeout.CopyFrom(draw(_duration(1, 60)))
    return c


@st.composite
def valid_secret(draw: st.DrawFn) -> secret_pb2.Secret:
    s = secret_pb2.Secret(name=draw(_NAME))
    if draw(st.booleans()):
        s.tls_certificate.certificate_chain.inline_bytes = draw(st.binary(min_size=1, max_size=32))
        s.tls_certificate.private_key.filename = "/etc/certs/" + draw(_LABEL)
    else:
        s.validation_context.trusted_ca.inline_string = draw(_LABEL)
    return s


def _submessages(msg: Message) -> list[Message]:
    """``msg`` and every message set inside it, depth first."""
    out = [msg]
    for field, value in msg.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        for child in value if field.is_repeated else (value,):
            out.extend(_submessages(child))
    return out


def perturbed(valid: st.SearchStrategy[Message]) -> st.SearchStrategy[Message]:
    """A valid resource with a few of its messages given arbitrary extra fields."""

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = draw(valid)
        inner = _submessages(msg)
        for target in draw(st.lists(st.sampled_from(inner), min_size=1, max_size=3)):
            if target.DESCRIPTOR.full_name == "google.protobuf.Any":
                _perturb_packed(draw, target)
            else:
                _fill(draw, target, 2)
        return msg

    return build()


_BY_NAME = {cls.DESCRIPTOR.full_name: cls for cls in _ANY_TYPES}


def _perturb_packed(draw: st.DrawFn, packed: Any) -> None:
    """Perturb the message inside an ``Any`` (an HttpConnectionManager, a filter...)."""
    cls = _BY_NAME.get(packed.type_url.rsplit("/", 1)[-1])
    if cls is None:
        return
    inner = cls()
    try:
        packed.Unpack(inner)
    except DecodeError:  # an earlier perturbation filled it with garbage
        return
    _fill(draw, draw(st.sampled_from(_submessages(inner))), 2)
    packed.Pack(inner)
