"""Validation ahead, and building on first use, for the plain virtual hosts
of a RouteConfiguration.

A mesh's RouteConfiguration holds thousands of virtual hosts, and most of
them are plain: domains, and routes that match a path prefix or a path and
forward to one cluster, with timeouts, a retry policy and a max stream
duration. The general parser (:mod:`proxyless.resources.parse.route`)
turns each route into model objects and costs some 25 µs of Python per
route; gRPC C-core validates the same configuration in C, an order of
magnitude faster. This module keeps validation complete and eager — an
invalid configuration is still NACKed when it arrives, naming the field —
while doing per route only what can be wrong in a plain one (a few µs), and
leaves building the routes of a plain virtual host to the first time they
are read (:class:`~proxyless.resources.model.route.LazyRoutes`), through
the general parser, which then cannot fail. A gRPC channel reads one
virtual host; a 5,000-virtual-host configuration is validated in a fifth
of the time it took to build it whole (``bench/rds_parse.py``,
``bench/rds_scale.py``).

**What is plain**, by field (the fields the general parser handles without
recording anything in ``ignored_fields``):

- ``VirtualHost``: ``name``, ``domains``, ``routes``,
  ``include_request_attempt_count``, ``include_attempt_count_in_response``;
- ``Route``: ``name``, ``match``, ``route``;
- ``RouteMatch``: ``prefix`` or ``path``, ``case_sensitive``;
- ``RouteAction``: ``cluster``, ``timeout``, ``idle_timeout``,
  ``retry_policy`` (any policy the general parser takes without a problem
  or an ignored field), ``max_stream_duration`` (its
  ``max_stream_duration`` and ``grpc_timeout_header_max``).

Whether a virtual host sets nothing else is decided in C: the resource's
bytes are parsed a second time with a reduced schema that declares only the
plain fields (the others, and any field unknown to the full schema, become
unknown fields and are discarded); a virtual host is plain in shape when its
reduced message encodes to the same size as its full one. The values are
then checked as the general parser checks them: at least one domain, no
empty, duplicate or malformed domain, a path specifier and a non-empty
cluster on every route, durations in range, a retry policy that parses.
Anything else goes through the general parser, whose errors name the field
path as always.

**Reuse.** A control plane resends the whole configuration when one
service changes. :class:`PreviousHosts` offers the plain virtual hosts of
the last configuration of the same name: one whose message equals the new
one is reused as it was (built routes included) and rebound to the new
message, so the older parse is freed.

``tests/property/test_prop_route_screen.py`` checks, on
generated configurations (each deviation from plain in turn), that both ways
give equal results: errors, ignored fields and models.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from envoy.config.route.v3 import route_components_pb2, route_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from proxyless.resources.model.route import LazyRoutes, Route, VirtualHost
from proxyless.resources.parse.common import WHITESPACE, duration_in_range
from proxyless.resources.parse.route_action import clean_retry_policy

__all__ = [
    "PreviousHosts",
    "full_virtual_host",
    "plain_configuration",
    "plain_virtual_hosts",
    "screen_virtual_host",
]

#: The plain fields of each message; message fields of other types are kept
#: whole, their values checked by the screen.
PLAIN_FIELDS: dict[str, tuple[str, ...]] = {
    "envoy.config.route.v3.VirtualHost": (
        "name",
        "domains",
        "routes",
        "include_request_attempt_count",
        "include_attempt_count_in_response",
    ),
    "envoy.config.route.v3.Route": ("name", "match", "route"),
    "envoy.config.route.v3.RouteMatch": ("prefix", "path", "case_sensitive"),
    "envoy.config.route.v3.RouteAction": (
        "cluster",
        "timeout",
        "idle_timeout",
        "retry_policy",
        "max_stream_duration",
    ),
    "envoy.config.route.v3.RouteAction.MaxStreamDuration": (
        "max_stream_duration",
        "grpc_timeout_header_max",
    ),
}

_PACKAGE = "proxyless.plain_route"
_F = descriptor_pb2.FieldDescriptorProto
_LENGTH_DELIMITED = (_F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE, _F.TYPE_GROUP)


def _reduced_name(full_name: str) -> str:
    return full_name.replace(".", "_")


def _repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5; older ones have ``label``
    return bool(flag) if flag is not None else field.label == _F.LABEL_REPEATED


def _reduce(
    desc: Any, keep: tuple[str, ...] | None, deps: set[str]
) -> descriptor_pb2.DescriptorProto:
    """``desc`` (a message descriptor) keeping only ``keep`` (None: every
    field); message fields of plain types point at their reduced type, the
    others keep their own type (whole), whose files are added to ``deps``."""
    proto = descriptor_pb2.DescriptorProto(name=_reduced_name(desc.full_name))
    oneofs: dict[str, int] = {}
    for field in desc.fields:
        if keep is not None and field.name not in keep:
            continue
        out = proto.field.add(name=field.name, number=field.number, type=field.type)
        out.label = _F.LABEL_REPEATED if _repeated(field) else _F.LABEL_OPTIONAL
        if out.label == _F.LABEL_REPEATED and field.type not in _LENGTH_DELIMITED:
            out.options.packed = bool(getattr(field, "is_packed", True))
        if field.type == _F.TYPE_MESSAGE:
            sub = field.message_type
            if sub.full_name in PLAIN_FIELDS:
                out.type_name = f".{_PACKAGE}.{_reduced_name(sub.full_name)}"
            else:
                out.type_name = f".{sub.full_name}"
                deps.add(sub.file.name)
        elif field.type == _F.TYPE_ENUM:
            out.type_name = f".{field.enum_type.full_name}"
            deps.add(field.enum_type.file.name)
        oneof = field.containing_oneof
        if oneof is not None:
            if oneof.name not in oneofs:
                oneofs[oneof.name] = len(proto.oneof_decl)
                proto.oneof_decl.add(name=oneof.name)
            out.oneof_index = oneofs[oneof.name]
    return proto


_REDUCED: list[type[Message]] = []
_REDUCED_LOCK = threading.Lock()


def _reduced_configuration() -> type[Message]:
    """The reduced RouteConfiguration class (built once, in the default
    descriptor pool, package ``proxyless.plain_route``): every top-level field
    kept, virtual hosts reduced to their plain fields."""
    if _REDUCED:
        return _REDUCED[0]
    with _REDUCED_LOCK:
        if not _REDUCED:
            _REDUCED.append(_build_reduced_configuration())
    return _REDUCED[0]


def _build_reduced_configuration() -> type[Message]:
    pool = descriptor_pool.Default()
    deps: set[str] = set()
    f = descriptor_pb2.FileDescriptorProto(
        name="proxyless/plain_route.proto", package=_PACKAGE, syntax="proto3"
    )
    f.message_type.append(_reduce(route_pb2.RouteConfiguration.DESCRIPTOR, None, deps))
    for name, keep in PLAIN_FIELDS.items():
        f.message_type.append(_reduce(pool.FindMessageTypeByName(name), keep, deps))
    f.dependency.extend(sorted(deps))
    pool.Add(f)
    full = f"{_PACKAGE}.{_reduced_name(route_pb2.RouteConfiguration.DESCRIPTOR.full_name)}"
    cls: type[Message] = message_factory.GetMessageClass(pool.FindMessageTypeByName(full))
    return cls


def _parse_reduced(data: bytes) -> Any | None:
    try:
        reduced = _reduced_configuration().FromString(data)
    except (DecodeError, ValueError, TypeError):
        return None
    reduced.DiscardUnknownFields()
    return reduced


def plain_configuration(data: bytes) -> Any | None:
    """``data`` parsed with the reduced schema when every virtual host in it
    is plain in shape, else None. Its top-level fields are a
    RouteConfiguration's own; :func:`full_virtual_host` gives back a virtual
    host's full message."""
    reduced = _parse_reduced(data)
    # Re-encoding never grows a message (proto3 on both sides: a field set to
    # its default is dropped by both), and dropping a field shrinks it: equal
    # to the bytes received, nothing was dropped anywhere.
    if reduced is None or reduced.ByteSize() != len(data):
        return None
    return reduced


def full_virtual_host(reduced: Any) -> Any:
    """The ``envoy.config.route.v3.VirtualHost`` of a reduced one from
    :func:`plain_configuration` (nothing was dropped from it)."""
    return route_components_pb2.VirtualHost.FromString(reduced.SerializeToString())


def plain_virtual_hosts(data: bytes, msg: Any) -> list[bool]:
    """For each virtual host of ``msg`` (parsed from ``data``), whether it
    sets only plain fields (see the module docstring)."""
    count = len(msg.virtual_hosts)
    reduced = _parse_reduced(data) if count else None
    if reduced is None or len(reduced.virtual_hosts) != count:
        return [False] * count
    return [
        full.ByteSize() == red.ByteSize()
        for full, red in zip(msg.virtual_hosts, reduced.virtual_hosts, strict=True)
    ]


def _route_cluster(msg: Any) -> str | None:
    """The cluster of a plain route, or None when the general parser would
    record something for it.

    The shape is plain already, so the only action a route can have is
    ``route`` and its only cluster specifier ``cluster``: a route without
    them reads as an empty cluster, and one without a match as no path
    specifier; both are refused here, and reported by the general parser.
    """
    if msg.match.WhichOneof("path_specifier") is None:  # plain: prefix or path
        return None
    action = msg.route
    cluster: str = action.cluster
    if not cluster:
        return None
    has = action.HasField
    if has("timeout") and not duration_in_range(action.timeout):
        return None
    if has("idle_timeout") and not duration_in_range(action.idle_timeout):
        return None
    if has("max_stream_duration"):
        msd = action.max_stream_duration
        if msd.HasField("max_stream_duration") and not duration_in_range(msd.max_stream_duration):
            return None
        if msd.HasField("grpc_timeout_header_max") and not duration_in_range(
            msd.grpc_timeout_header_max
        ):
            return None
    if has("retry_policy") and clean_retry_policy(action.retry_policy) is None:
        return None
    return cluster


def screen_virtual_host(msg: Any, build: Callable[[], tuple[Route, ...]]) -> VirtualHost | None:
    """The virtual host ``msg``, whose shape is plain, with its routes left to
    ``build``; None when a value is one the general parser would report (or
    skip), so that the caller parses it the general way."""
    raw = list(msg.domains)
    if not raw or "" in raw:
        return None
    # All domains at once, joined by "/", which none may hold (nor whitespace).
    joined = "/".join(raw)
    if joined.count("/") != len(raw) - 1 or WHITESPACE.search(joined) is not None:
        return None
    domains = joined.lower().split("/")
    if len(set(domains)) != len(domains):
        return None
    clusters = []
    for route in msg.routes:
        cluster = _route_cluster(route)
        if cluster is None:
            return None
        clusters.append(cluster)
    return VirtualHost(
        name=msg.name,
        domains=tuple(domains),
        routes=LazyRoutes(build, tuple(clusters), msg),
        include_request_attempt_count=bool(msg.include_request_attempt_count),
        include_attempt_count_in_response=bool(msg.include_attempt_count_in_response),
    )


class PreviousHosts:
    """The plain virtual hosts of the last configuration accepted under one
    name, offered for reuse: a control plane resends the whole
    RouteConfiguration when one virtual host changes (istiod does), and a
    virtual host equal to one of the last configuration's (compared in C,
    message to message) is that one again. It is looked up at the same
    index, or by name when the name there differs (one inserted or
    removed before it)."""

    __slots__ = ("_by_name", "_hits", "_hosts", "_misses")

    #: After this many misses without a hit, the new configuration is taken as
    #: all new (a comparison costs about a tenth of validating a virtual host).
    GIVE_UP_AFTER = 64

    def __init__(self, hosts: tuple[VirtualHost, ...]) -> None:
        self._hosts = hosts
        self._by_name: dict[str, VirtualHost] | None = None
        self._hits = self._misses = 0

    def find(self, index: int, msg: Any) -> VirtualHost | None:
        """The last configuration's virtual host equal to ``msg`` (the message
        at ``index`` of the new one), or None."""
        if not self._hits and self._misses >= self.GIVE_UP_AFTER:
            return None
        found = self._find(index, msg)
        if found is None:
            self._misses += 1
        else:
            self._hits += 1
        return found

    def _find(self, index: int, msg: Any) -> VirtualHost | None:
        hosts = self._hosts
        name = msg.name
        if index < len(hosts) and hosts[index].name == name:
            return _equal(hosts[index], msg)  # the same place: no need to look further
        by_name = self._by_name
        if by_name is None:
            by_name = self._by_name = {}
            for vh in hosts:
                if isinstance(vh.routes, LazyRoutes):
                    by_name.setdefault(vh.name, vh)
        old = by_name.get(name)
        return _equal(old, msg) if old is not None else None


def _equal(vh: VirtualHost, msg: Any) -> VirtualHost | None:
    routes = vh.routes
    if isinstance(routes, LazyRoutes):
        source = routes.source
        if type(source) is type(msg) and source == msg:
            return vh
    return None
