"""Every virtual host of a RouteConfiguration validated at once, when all are
plain.

:mod:`~proxyless.resources.parse.route_screen` checks a plain virtual host's
values in Python, route by route: reading five to eight protobuf fields per
route was most of what a 5,000-virtual-host configuration cost. This module
has the protobuf runtime (C) gather those values for the whole configuration
in one parse, so that Python checks them in a few passes over lists:

- The resource's bytes are parsed once more, with a **bulk schema** built at
  runtime from the real descriptors (package ``proxyless.bulk_route``). It
  declares the plain fields only (the list in ``route_screen``), each with its
  field number and wire type, but **every message field singular** and
  **every scalar field repeated**. Protobuf's encoding rules do the gathering:
  the occurrences of a singular message field merge into one message, and
  each occurrence of a repeated field is appended. All virtual hosts merge
  into one, all their routes into one, all route actions into one, whose
  ``cluster`` lists every route's cluster in wire order; the ``seconds`` of
  every timeout end up in one list, and so on. Retry policies are declared as
  bytes, so that equal ones are checked once.
- A field that is not plain becomes an **unknown field** of one of the few
  merged messages, and is seen there.
- Counting is exact because the configuration is **canonical**: its full parse
  re-encodes to as many bytes as were received, so no singular field occurs
  twice anywhere (it would have been merged or replaced, and the re-encoding
  would be shorter). With that, ``len(clusters) == number of routes`` says
  that every route has exactly one cluster, and likewise for path specifiers.
- The values are checked as :func:`~proxyless.resources.parse.route_screen.screen_virtual_host`
  checks them, over the whole configuration at once: durations by their least
  and greatest ``seconds`` and ``nanos``, each distinct retry policy once, the
  domains joined into one string, and domains unique across virtual hosts
  (which makes them unique within each, too).
- Only strings gathered here (clusters, domains) go into the models. A
  repeated scalar also accepts the packed encoding, which a singular field
  of the full schema does not: such an occurrence is an unknown field to the
  full parse, and here a value checked in vain (stricter, never looser). The
  two attempt-count flags are read from the full parse.
- Each virtual host is then one Python step: a virtual host of the last
  configuration with the same bytes is reused; otherwise its name and how
  many domains and routes it has (which slice of the gathered lists is its
  own), its routes left to be built on first use, as ``route_screen`` does.

When some virtual hosts are not plain, the plain ones (those whose reduced
message re-encodes to their own bytes: plain and canonical, decided by
``route_screen``) are framed into a configuration of their own
(:func:`canonical_configuration`) and checked the same way; the others go
the general way. Anything that is not plain or not clean (non-canonical
bytes, an unknown field, a count that does not add up, a value out of range,
a domain repeated) returns None, and the caller validates virtual host by
virtual host, whose errors name the field. The result is the same either way:
``tests/property/test_prop_route_screen.py`` compares the three ways, and
feeds this one hand-made wire bytes that move a field from one route to
another (counts that still add up).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from envoy.config.route.v3 import route_components_pb2, route_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from proxyless.resources.model.route import LazyRoutes, Route, VirtualHost, plain_virtual_host
from proxyless.resources.parse.common import MAX_DURATION_SECONDS
from proxyless.resources.parse.route_action import clean_retry_policy
from proxyless.resources.parse.route_screen import (
    PLAIN_FIELDS,
    built_once,
    lowered_domains,
    plain_virtual_hosts,
    schema_name,
    screen_virtual_host,
    virtual_host_container,
)

__all__ = ["canonical_configuration", "screen_configuration", "screen_mixed"]

_PACKAGE = "proxyless.bulk_route"
_F = descriptor_pb2.FieldDescriptorProto

#: The messages inside the plain ones whose values are checked field by
#: field (every other message type of a plain field is kept as bytes).
_VALUE_FIELDS: dict[str, tuple[str, ...]] = {
    "google.protobuf.Duration": ("seconds", "nanos"),
    "google.protobuf.BoolValue": ("value",),
}


def _bulk(desc: Any, keep: tuple[str, ...]) -> descriptor_pb2.DescriptorProto:
    """The bulk form of ``desc`` (see the module docstring)."""
    proto = descriptor_pb2.DescriptorProto(name=schema_name(desc.full_name))
    for name in keep:
        field = desc.fields_by_name[name]
        out = proto.field.add(name=field.name, number=field.number)
        sub = field.message_type
        if sub is not None and (sub.full_name in PLAIN_FIELDS or sub.full_name in _VALUE_FIELDS):
            out.type = _F.TYPE_MESSAGE
            out.label = _F.LABEL_OPTIONAL
            out.type_name = f".{_PACKAGE}.{schema_name(sub.full_name)}"
        else:
            # A scalar, or a message kept whole as its bytes (a retry policy).
            out.type = _F.TYPE_BYTES if sub is not None else field.type
            out.label = _F.LABEL_REPEATED
    return proto


def _build_bulk_configuration() -> type[Message]:
    """The bulk RouteConfiguration class, in the default descriptor pool."""
    pool = descriptor_pool.Default()
    f = descriptor_pb2.FileDescriptorProto(
        name="proxyless/bulk_route.proto", package=_PACKAGE, syntax="proto3"
    )
    root = route_pb2.RouteConfiguration.DESCRIPTOR
    f.message_type.append(_bulk(root, ("virtual_hosts",)))
    for name, keep in (*PLAIN_FIELDS.items(), *_VALUE_FIELDS.items()):
        f.message_type.append(_bulk(pool.FindMessageTypeByName(name), keep))
    pool.Add(f)
    full = f"{_PACKAGE}.{schema_name(root.full_name)}"
    cls: type[Message] = message_factory.GetMessageClass(pool.FindMessageTypeByName(full))
    return cls


_bulk_configuration = built_once(_build_bulk_configuration)


def _only_plain(msg: Any) -> bool:
    """Whether no merged message under ``msg`` (itself included) holds an
    unknown field (a field that is not plain)."""
    found = [msg]
    for message in found:
        if len(UnknownFieldSet(message)):
            return False
        for field in message.DESCRIPTOR.fields:
            # Every message field of the bulk schema is singular.
            if field.message_type is not None and message.HasField(field.name):
                found.append(getattr(message, field.name))
    return True


def _in_range(values: Sequence[int], top: int) -> bool:
    return not values or (min(values) >= 0 and max(values) <= top)


def _durations_clean(action: Any) -> bool:
    msd = action.max_stream_duration
    for d in (
        action.timeout,
        action.idle_timeout,
        msd.max_stream_duration,
        msd.grpc_timeout_header_max,
    ):
        if not (_in_range(d.seconds, MAX_DURATION_SECONDS) and _in_range(d.nanos, 999_999_999)):
            return False
    return True


def _retry_policies_clean(policies: Sequence[bytes]) -> bool:
    for raw in set(policies):
        policy = route_components_pb2.RetryPolicy()
        try:
            policy.ParseFromString(raw)
        except (DecodeError, ValueError, TypeError):
            return False
        policy.DiscardUnknownFields()
        if policy.ByteSize() != len(raw) or clean_retry_policy(policy) is None:
            return False
    return True


def canonical_configuration(sources: Sequence[bytes]) -> bytes:
    """The canonical bytes of a RouteConfiguration holding only the virtual
    hosts whose (canonical) bytes are ``sources``, in order."""
    split: Any = virtual_host_container()()
    split.virtual_hosts.extend(sources)
    data: bytes = split.SerializeToString()
    return data


def screen_configuration(
    data: bytes,
    hosts: Sequence[Any],
    sources: Sequence[bytes],
    build: Callable[[bytes], tuple[Route, ...]],
    previous: Mapping[bytes, VirtualHost],
    kept: dict[bytes, VirtualHost],
) -> list[VirtualHost] | None:
    """The virtual hosts ``hosts`` (their messages; ``sources``: their bytes),
    their routes left to ``build(bytes)``, when every one is plain and clean
    and their domains are unique (see the module docstring); else None.
    ``data`` is the **canonical** bytes of a RouteConfiguration whose virtual
    hosts are these (its parse re-encodes to as many bytes: the caller
    checks). ``previous`` offers virtual hosts to reuse by their bytes; those
    returned are added to ``kept`` by theirs."""
    if not hosts:
        return None
    try:
        bulk: Any = _bulk_configuration().FromString(data)
    except (DecodeError, ValueError, TypeError):
        return None
    if not _only_plain(bulk.virtual_hosts):
        return None
    vh = bulk.virtual_hosts
    match = vh.routes.match
    action = vh.routes.route
    clusters = list(action.cluster)
    domains = lowered_domains(list(vh.domains))
    if (
        domains is None
        or len(set(domains)) != len(domains)
        or "" in clusters
        or not _durations_clean(action)
        or not _retry_policies_clean(action.retry_policy)
    ):
        return None
    attempt_flags = bool(vh.include_request_attempt_count or vh.include_attempt_count_in_response)

    out: list[VirtualHost] = []
    found: dict[bytes, VirtualHost] = {}
    d = c = 0
    for i, source in enumerate(sources):
        host = previous.get(source)
        if host is not None:
            d += len(host.domains)
            c += len(host.routes)
        else:
            full = hosts[i]
            n_domains = len(full.domains)
            n_routes = len(full.routes)
            if not n_domains:
                return None
            host = plain_virtual_host(
                full.name,
                tuple(domains[d : d + n_domains]),
                LazyRoutes(build, tuple(clusters[c : c + n_routes]), source),
                attempt_flags and full.include_request_attempt_count,
                attempt_flags and full.include_attempt_count_in_response,
            )
            d += n_domains
            c += n_routes
        out.append(host)
        found[source] = host
    # Every route has at most one cluster and one path specifier (canonical
    # bytes); as many as there are routes: each has exactly one.
    if c != len(clusters) or c != len(match.prefix) + len(match.path) or d != len(domains):
        return None
    kept.update(found)
    return out


def screen_mixed(
    data: bytes,
    hosts: Any,
    sources: list[bytes],
    build: Callable[[bytes], tuple[Route, ...]],
    previous: Mapping[bytes, VirtualHost],
    kept: dict[bytes, VirtualHost],
) -> Callable[[int, Any], VirtualHost | None]:
    """For a configuration not all plain (``data``; ``hosts``, ``sources``:
    its virtual hosts' messages and bytes): which virtual hosts are plain is
    decided first (``route_screen``); those are validated all at once (as a
    subset, :func:`canonical_configuration`), or if that finds a problem, one
    by one. Gives ``screened(index, message)``: the virtual host validated
    ahead or reused, or None for the general way."""
    plain = plain_virtual_hosts(data, sources)
    at = [i for i, p in enumerate(plain) if p]
    ahead: dict[int, VirtualHost] = {}
    if at:
        picked = [sources[i] for i in at]
        subset = canonical_configuration(picked)
        found = screen_configuration(subset, [hosts[i] for i in at], picked, build, previous, kept)
        if found is not None:
            ahead = dict(zip(at, found, strict=True))

    def screened(i: int, vh: Any) -> VirtualHost | None:
        if not plain[i]:
            return None
        got = ahead.get(i)
        if got is not None:
            return got
        source = sources[i]
        got = previous.get(source) or screen_virtual_host(vh, build, source)
        if got is not None:
            kept[source] = got
        return got

    return screened
