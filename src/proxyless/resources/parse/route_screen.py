"""Validation ahead, and building on first use, for the plain virtual hosts
of a RouteConfiguration.

A mesh's RouteConfiguration holds thousands of virtual hosts, and most of
them are plain: domains, and routes that match a path prefix or a path and
forward to one cluster, with timeouts, a retry policy and a max stream
duration. The general parser (:mod:`proxyless.resources.parse.route`)
turns each route into model objects and costs some 25 µs of Python per
route; gRPC C-core validates the same configuration in C, an order of
magnitude faster. Validation stays complete and eager — an invalid
configuration is still NACKed when it arrives, naming the field — but a
plain virtual host is only checked for what can be wrong in it, and the
building of its routes is left to the first time they are read
(:class:`~proxyless.resources.model.route.LazyRoutes`, from the virtual
host's bytes), through the general parser, which then cannot fail. A gRPC
channel reads one virtual host.

:mod:`proxyless.resources.parse.route_bulk` checks plain virtual hosts all
at once: the whole configuration when every one is plain (the common case:
5,000 virtual hosts in a tenth of the time it takes to build them whole;
``bench/rds_parse.py``, ``bench/rds_scale.py``), else the plain ones as a
subset, found by this module. Should that find a problem, this module checks
them one by one, as described here, and the general parser names it.

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
reduced message encodes to as many bytes as it was received in (nothing
dropped, nothing repeated). The values are
then checked as the general parser checks them: at least one domain, no
empty, duplicate or malformed domain, a path specifier and a non-empty
cluster on every route, durations in range, a retry policy that parses.
Anything else goes through the general parser, whose errors name the field
path as always.

**Reuse.** A control plane resends the whole configuration when one
service changes. The virtual hosts validated ahead of the last
configuration of the same name are kept by their bytes
(:func:`virtual_host_bytes`, one parse in C); a virtual host of the new one
with the same bytes is that one again, reused as it was (built routes
included), wherever it now is.

``tests/property/test_prop_route_screen.py`` checks, on
generated configurations (each deviation from plain in turn), that every
way gives equal results: errors, ignored fields and models.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from envoy.config.route.v3 import route_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from proxyless.resources.model.route import LazyRoutes, Route, VirtualHost, plain_virtual_host
from proxyless.resources.parse.common import WHITESPACE, duration_in_range
from proxyless.resources.parse.route_action import clean_retry_policy

__all__ = [
    "PLAIN_FIELDS",
    "built_once",
    "lowered_domains",
    "plain_virtual_hosts",
    "schema_name",
    "screen_virtual_host",
    "virtual_host_bytes",
    "virtual_host_container",
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
T = TypeVar("T")
_F = descriptor_pb2.FieldDescriptorProto
_LENGTH_DELIMITED = (_F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE, _F.TYPE_GROUP)


def schema_name(full_name: str) -> str:
    """The name, in a schema built here, of the message ``full_name``."""
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
    proto = descriptor_pb2.DescriptorProto(name=schema_name(desc.full_name))
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
                out.type_name = f".{_PACKAGE}.{schema_name(sub.full_name)}"
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


def built_once(build: Callable[[], T]) -> Callable[[], T]:
    """A function giving ``build()``, called on first use only, under a lock
    (a schema added to the descriptor pool twice is an error)."""
    built: list[T] = []
    lock = threading.Lock()

    def get() -> T:
        if not built:
            with lock:
                if not built:
                    built.append(build())
        return built[0]

    return get


_SPLIT = "RouteConfiguration_split"


def _build_reduced_configuration() -> tuple[type[Message], type[Message]]:
    """The reduced RouteConfiguration class (every top-level field kept,
    virtual hosts reduced to their plain fields) and the split one (only the
    virtual hosts, each as its bytes), in the default descriptor pool,
    package ``proxyless.plain_route``."""
    pool = descriptor_pool.Default()
    deps: set[str] = set()
    f = descriptor_pb2.FileDescriptorProto(
        name="proxyless/plain_route.proto", package=_PACKAGE, syntax="proto3"
    )
    root = route_pb2.RouteConfiguration.DESCRIPTOR
    f.message_type.append(_reduce(root, None, deps))
    # Each virtual host as its bytes (what is reused is found by them).
    split = f.message_type.add(name=_SPLIT)
    hosts = root.fields_by_name["virtual_hosts"]
    split.field.add(
        name=hosts.name, number=hosts.number, type=_F.TYPE_BYTES, label=_F.LABEL_REPEATED
    )
    for name, keep in PLAIN_FIELDS.items():
        f.message_type.append(_reduce(pool.FindMessageTypeByName(name), keep, deps))
    f.dependency.extend(sorted(deps))
    pool.Add(f)
    reduced_cls, split_cls = (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in (schema_name(root.full_name), _SPLIT)
    )
    return reduced_cls, split_cls


_reduced_configuration = built_once(_build_reduced_configuration)


def virtual_host_container() -> type[Message]:
    """A message whose only field is a RouteConfiguration's ``virtual_hosts``
    (field 2), each as its bytes: parsing a configuration with it splits the
    configuration into its virtual hosts; serializing one frames them."""
    return _reduced_configuration()[1]


def virtual_host_bytes(data: bytes) -> list[bytes] | None:
    """The bytes of each virtual host of the RouteConfiguration ``data``, in
    order (None if it does not parse)."""
    try:
        split: Any = virtual_host_container().FromString(data)
    except (DecodeError, ValueError, TypeError):
        return None
    return list(split.virtual_hosts)


def _parse_reduced(data: bytes) -> Any | None:
    try:
        reduced = _reduced_configuration()[0].FromString(data)
    except (DecodeError, ValueError, TypeError):
        return None
    reduced.DiscardUnknownFields()
    return reduced


def plain_virtual_hosts(data: bytes, sources: list[bytes]) -> list[bool]:
    """For each virtual host of the RouteConfiguration ``data`` (``sources``:
    their bytes, :func:`virtual_host_bytes`), whether it sets only plain
    fields (see the module docstring) and its bytes are canonical (its
    reduced message encodes to as many bytes)."""
    count = len(sources)
    reduced = _parse_reduced(data) if count else None
    if reduced is None or len(reduced.virtual_hosts) != count:
        return [False] * count
    return [
        red.ByteSize() == len(source)
        for red, source in zip(reduced.virtual_hosts, sources, strict=True)
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


def lowered_domains(raw: list[str]) -> list[str] | None:
    """The domains ``raw``, lower-cased, when none is one the general parser
    refuses (empty, or holding "/" or whitespace), else None."""
    if "" in raw:
        return None
    # All domains at once, joined by "/", which none may hold (nor whitespace).
    joined = "/".join(raw)
    if joined.count("/") != len(raw) - 1 or WHITESPACE.search(joined) is not None:
        return None
    return joined.lower().split("/")


def screen_virtual_host(
    msg: Any, build: Callable[[bytes], tuple[Route, ...]], source: bytes
) -> VirtualHost | None:
    """The virtual host ``msg`` (whose bytes are ``source``), whose shape is
    plain, with its routes left to ``build``; None when a value is one the
    general parser would report (or skip), so that the caller parses it the
    general way."""
    raw = list(msg.domains)
    domains = lowered_domains(raw) if raw else None
    if domains is None or len(set(domains)) != len(domains):
        return None
    clusters = []
    for route in msg.routes:
        cluster = _route_cluster(route)
        if cluster is None:
            return None
        clusters.append(cluster)
    return plain_virtual_host(
        msg.name,
        tuple(domains),
        LazyRoutes(build, tuple(clusters), source),
        bool(msg.include_request_attempt_count),
        bool(msg.include_attempt_count_in_response),
    )
