"""Parse and validate ``envoy.config.endpoint.v3.ClusterLoadAssignment`` (EDS).

Validation follows gRPC C-core's ``xds_endpoint_parser.cc`` (gRFC A27):
localities with an unset or zero ``load_balancing_weight`` are skipped; a
weighted locality must name its ``locality``; priorities must be contiguous
from 0; a locality may appear only once per priority; an endpoint address,
including its ``additional_addresses`` (gRFC A61, validated but not used),
may appear only once in the whole assignment; locality weights per priority
sum to at most 2^32-1; an endpoint with a health status C-core does not know
is skipped; a drop overload needs a category and a ``drop_percentage``.
Ports are in [0, 65535] (C-core and Envoy accept port 0; connecting to it
fails like any unreachable endpoint). Envoy's ``endpoint_components.proto``
adds: endpoint weight >= 1, priority <= 128, overprovisioning factor > 0.
IP literals are stored in canonical form so duplicates are found whatever
their spelling; host names are kept (see ``docs/resources.md``).

Speed (a 10,000-endpoint assignment is decoded on the Mesh thread): the
common ``LbEndpoint`` is read by :func:`_plain_lb_endpoint`, which checks
that nothing else is set by comparing serialized sizes instead of listing
fields, and anything else goes through the full parser; in a big assignment
an ``LbEndpoint`` whose bytes are the same as in the cluster's last one is
taken as it was. Both give the model and the errors the full parser gives.
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2

from proxyless.resources.model.endpoint import (
    ClusterLoadAssignment,
    DropOverload,
    Endpoint,
    Locality,
    LocalityEndpoints,
    make_endpoint,
)
from proxyless.resources.parse.common import (
    MAX_UINT32,
    Ctx,
    LastByName,
    fractional_per_million,
    join,
    opt_duration,
    unhandled,
    wrapped,
)
from proxyless.resources.parse.resource import decode_resource, parse_resource
from proxyless.xds_client.resource_type import DecodeResult

__all__ = [
    "cluster_load_assignment",
    "decode_cluster_load_assignment",
    "parse_cluster_load_assignment",
    "socket_address",
]

_HEALTH = {
    0: "UNKNOWN",
    1: "HEALTHY",
    2: "UNHEALTHY",
    3: "DRAINING",
    4: "TIMEOUT",
    5: "DEGRADED",
}


def decode_cluster_load_assignment(data: bytes) -> DecodeResult:
    """Decode serialized ClusterLoadAssignment bytes; never raises."""
    return decode_resource(
        data, endpoint_pb2.ClusterLoadAssignment, _top_level, name_field="cluster_name"
    )


def parse_cluster_load_assignment(msg: Any) -> ClusterLoadAssignment:
    """Validate a ClusterLoadAssignment message; raise ResourceValidationError."""
    return parse_resource(msg, _top_level, name_field="cluster_name")


def _top_level(ctx: Ctx, msg: Any) -> ClusterLoadAssignment | None:
    return cluster_load_assignment(ctx, "", msg)


#: Assignments with at least this many endpoints remember them by their
#: serialized ``LbEndpoint``, per cluster (see :func:`cluster_load_assignment`).
_MEMO_MIN = 256
#: A big decode lets request threads have the interpreter every this many
#: endpoints of a locality (about 2 ms of decoding).
_YIELD_EVERY = 512
#: An endpoint read by :func:`_plain_lb_endpoint`, and whether it has ``metadata``.
_Plain = tuple[Endpoint, bool]


class _Memo:
    """The endpoints of one assignment by their serialized ``LbEndpoint``,
    and which of those had ``metadata``. (Endpoints, not ``_Plain`` tuples:
    one object fewer per endpoint for the garbage collector to keep track of.)"""

    __slots__ = ("endpoints", "with_metadata")

    def __init__(self) -> None:
        self.endpoints: dict[bytes, Endpoint] = {}
        self.with_metadata: set[bytes] = set()


#: The endpoints of the last big assignment of each cluster, at most 1,024.
_last_endpoints: LastByName[_Memo] = LastByName(1024)
_SOCKET_FIELDS = frozenset(("protocol", "address", "port_value", "named_port", "ipv4_compat"))
_LB_ENDPOINT_FIELDS = frozenset(
    ("endpoint", "endpoint_name", "health_status", "load_balancing_weight")
)
_ENDPOINT_FIELDS = frozenset(("address", "hostname", "additional_addresses"))
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: dotted-quad IPv4 already in canonical form (the common case: no need to parse)
_CANONICAL_V4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_is_canonical_v4 = _CANONICAL_V4.fullmatch


def _canonical_host(host: str) -> str:
    """IP literals in canonical form (so duplicates are caught however they
    are written); host names unchanged."""
    if _CANONICAL_V4.fullmatch(host):
        return host
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def socket_address(ctx: Ctx, path: str, address: Any) -> tuple[str, int] | None:
    """``envoy.config.core.v3.Address`` -> ``(host, port)`` for a TCP socket address."""
    which = address.WhichOneof("address")
    if which != "socket_address":
        ctx.error(path, f"only socket_address is supported, got {which or 'nothing'}")
        return None
    spath = join(path, "socket_address")
    sock = address.socket_address
    unhandled(ctx, sock, spath, _SOCKET_FIELDS)
    if int(sock.protocol) != 0:
        ctx.error(join(spath, "protocol"), "only TCP is supported")
        return None
    host: str = sock.address
    if not host:
        ctx.error(join(spath, "address"), "must not be empty")
        return None
    host = _canonical_host(host)
    if sock.WhichOneof("port_specifier") != "port_value":
        ctx.error(join(spath, "port_value"), "is required (named ports are not supported)")
        return None
    port = int(sock.port_value)
    if port > 65535:
        ctx.error(join(spath, "port_value"), f"{port} is not a valid port")
        return None
    return host, port


def cluster_load_assignment(
    ctx: Ctx, path: str, msg: Any, *, inline: bool = False
) -> ClusterLoadAssignment | None:
    """Parse a ClusterLoadAssignment at ``path`` (``inline``: inside a Cluster).

    A big decode runs on the Mesh thread and hands the interpreter (GIL) to
    request threads every 512 endpoints (about 2 ms of decoding): measured
    side by side on a 10,000-endpoint update while calls flow, the calls made
    meanwhile take a median 2.1 to 2.4 ms instead of 9 to 11 ms (2.5 times
    as many get through), for an update as fast within the noise (73 to 82 ms
    against 73 to 78 ms; ``docs/benchmarks.md``). The interpreter's switch interval
    alone (5 ms) lets a waiting thread in far less often.
    """
    unhandled(ctx, msg, path, ("cluster_name", "endpoints", "policy"))
    if not msg.cluster_name and not inline:
        ctx.error(join(path, "cluster_name"), "must not be empty")
    # A control plane resends the whole assignment when one endpoint changes
    # (istiod does): in a big one, endpoints whose serialized LbEndpoint is
    # the same as in this cluster's last assignment are taken as they were.
    memo: _Memo | None = None
    last: dict[bytes, Endpoint] = {}
    last_metadata: set[bytes] = set()
    if not inline and msg.cluster_name:
        if sum(len(lle.lb_endpoints) for lle in msg.endpoints) >= _MEMO_MIN:
            memo = _Memo()
            previous = _last_endpoints.get(msg.cluster_name)
            if previous is not None:
                last, last_metadata = previous.endpoints, previous.with_metadata
    by_priority: dict[int, list[LocalityEndpoints]] = {}
    weight_sums: dict[int, int] = {}
    seen_localities: dict[tuple[int, Locality], int] = {}
    seen_addresses: dict[tuple[str, int], tuple[str, int]] = {}
    for i, lle in enumerate(msg.endpoints):
        lpath = f"{join(path, 'endpoints')}[{i}]"
        unhandled(
            ctx,
            lle,
            lpath,
            (
                "locality",
                "lb_endpoints",
                "load_balancing_weight",
                "priority",
                "leds_cluster_locality_config",
            ),
        )
        if lle.HasField("leds_cluster_locality_config"):
            ctx.error(join(lpath, "leds_cluster_locality_config"), "LEDS is not supported")
            continue
        weight = int(wrapped(lle, "load_balancing_weight", 0))
        if weight == 0:
            ctx.ignore(f"{lpath} (locality weight unset or 0: skipped)")
            continue
        priority = int(lle.priority)
        if priority > 128:
            ctx.error(join(lpath, "priority"), f"{priority} exceeds 128")
            continue
        if lle.HasField("locality"):
            unhandled(ctx, lle.locality, join(lpath, "locality"), ("region", "zone", "sub_zone"))
        elif not inline:
            ctx.error(join(lpath, "locality"), "is required for a locality with a weight")
            continue
        locality = Locality(
            region=lle.locality.region, zone=lle.locality.zone, sub_zone=lle.locality.sub_zone
        )
        if (priority, locality) in seen_localities:
            ctx.error(
                join(lpath, "locality"),
                f"duplicate locality {_locality_text(locality)} in priority {priority} "
                f"(also endpoints[{seen_localities[priority, locality]}])",
            )
            continue
        seen_localities[priority, locality] = i
        weight_sums[priority] = weight_sums.get(priority, 0) + weight
        endpoints = []
        lb_path = join(lpath, "lb_endpoints")
        metadata_noted = False
        for j, lb in enumerate(lle.lb_endpoints):
            if j and not j % _YIELD_EVERY:
                time.sleep(0)  # let request threads have the interpreter (GIL)
            raw = lb.SerializeToString()
            known = last.get(raw) if last else None
            plain = (known, raw in last_metadata) if known is not None else None
            if plain is None:
                plain = _plain_lb_endpoint(lb, len(raw))
            if plain is None:
                extra: list[tuple[str, int]] = []
                endpoint = _lb_endpoint(ctx, f"{lb_path}[{j}]", lb, extra)
                if endpoint is None:
                    continue
                if extra:
                    if _seen(ctx, seen_addresses, (endpoint.key, *extra), lb_path, j):
                        endpoints.append(endpoint)
                    continue
            else:
                endpoint, metadata = plain
                if memo is not None:
                    memo.endpoints[raw] = endpoint
                    if metadata:
                        memo.with_metadata.add(raw)
                if metadata and not metadata_noted:
                    # listed once per locality, not once per endpoint
                    ctx.ignore(f"{lb_path}[{j}].metadata")
                    metadata_noted = True
            key = (endpoint.address, endpoint.port)
            if key in seen_addresses:
                _seen(ctx, seen_addresses, (key,), lb_path, j)
            else:
                seen_addresses[key] = (lb_path, j)
                endpoints.append(endpoint)
        by_priority.setdefault(priority, []).append(
            LocalityEndpoints(
                locality=locality, weight=weight, priority=priority, endpoints=tuple(endpoints)
            )
        )
    for priority, total in sorted(weight_sums.items()):
        if total > MAX_UINT32:
            ctx.error(
                join(path, "endpoints"),
                f"sum of locality weights in priority {priority} is {total}, exceeds {MAX_UINT32}",
            )
    if by_priority and sorted(by_priority) != list(range(len(by_priority))):
        ctx.error(
            join(path, "endpoints"),
            f"priorities {sorted(by_priority)} are not contiguous from 0",
        )
    overprovisioning, drops, stale_after = 140, [], None
    if msg.HasField("policy"):
        ppath = join(path, "policy")
        policy = msg.policy
        unhandled(
            ctx,
            policy,
            ppath,
            ("drop_overloads", "overprovisioning_factor", "endpoint_stale_after"),
        )
        overprovisioning = int(wrapped(policy, "overprovisioning_factor", 140))
        if overprovisioning == 0:
            ctx.error(join(ppath, "overprovisioning_factor"), "must be > 0")
        for i, drop in enumerate(policy.drop_overloads):
            dpath = f"{join(ppath, 'drop_overloads')}[{i}]"
            if not drop.category:
                ctx.error(join(dpath, "category"), "must not be empty")
                continue
            if not drop.HasField("drop_percentage"):
                ctx.error(join(dpath, "drop_percentage"), "is required")
                continue
            drops.append(
                DropOverload(
                    category=drop.category,
                    per_million=fractional_per_million(
                        ctx, join(dpath, "drop_percentage"), drop.drop_percentage
                    ),
                )
            )
        stale_after = opt_duration(ctx, policy, "endpoint_stale_after", ppath, positive=True)
    if ctx.errors:
        return None
    if memo is not None:
        _last_endpoints.put(msg.cluster_name, memo)
    return ClusterLoadAssignment(
        cluster_name=msg.cluster_name,
        priorities=tuple(tuple(by_priority[p]) for p in sorted(by_priority)),
        overprovisioning_factor=overprovisioning,
        drop_overloads=tuple(drops),
        endpoint_stale_after=stale_after,
        ignored_fields=tuple(ctx.ignored),
    )


def _seen(
    ctx: Ctx,
    seen: dict[tuple[str, int], tuple[str, int]],
    keys: tuple[tuple[str, int], ...],
    lb_path: str,
    index: int,
) -> bool:
    """Record the addresses ``keys`` of ``lb_endpoints[index]`` under
    ``lb_path``; False (after an error naming both) when one was seen before."""
    fresh = True
    for key in keys:
        first = seen.get(key)
        if first is not None:
            ctx.error(
                f"{lb_path}[{index}]",
                f"duplicate endpoint address {_address_text(key)} (also {first[0]}[{first[1]}])",
            )
            fresh = False
            continue
        seen[key] = (lb_path, index)
    return fresh


def _varint_size(value: int) -> int:
    """Bytes of ``value`` (0 <= value < 2^32) as a protobuf varint."""
    if value < 0x80:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x200000:
        return 3
    return 4 if value < 0x10000000 else 5


def _plain_lb_endpoint(msg: Any, size: int) -> _Plain | None:
    """The common ``LbEndpoint`` (a TCP socket address with a non-zero
    port, an optional weight, health status, host name and metadata, nothing
    else set), read without building field paths, and whether ``metadata``
    is set (the caller notes it ignored; istiod sets it on every endpoint);
    None for anything else, which :func:`_lb_endpoint` then parses with full
    error reporting.

    ``size`` is the message's serialized size. Instead of listing the set
    fields of four nested messages, the size the fields read here take on
    the wire is added up and compared with it: every other set field, known
    or unknown, takes at least one byte more, so equal sizes mean nothing
    else is set. (Every field read here has a number below 16: a one-byte
    tag.) A non-empty address implies ``endpoint``, ``address`` and
    ``socket_address`` are set, a non-zero port that ``port_value`` is.
    """
    endpoint = msg.endpoint
    sock = endpoint.address.socket_address
    host: str = sock.address
    port: int = sock.port_value
    if not host or not 0 < port <= 65535:
        return None  # an endpoint_name, a pipe, no address, port 0...: the full parser
    health = _HEALTH.get(msg.health_status)
    if health is None:
        return None
    hostname: str = endpoint.hostname
    weight: int = msg.load_balancing_weight.value if msg.HasField("load_balancing_weight") else 0
    # Each nested message adds its tag and length to its body's size (a
    # length below 128 takes one byte: the common case, tested first).
    text = len(host) if host.isascii() else len(host.encode())
    wire = (
        text
        + (3 if text < 0x80 else 2 + _varint_size(text))
        + (1 if port < 0x80 else 2 if port < 0x4000 else 3)
    )  # SocketAddress: address, port_value
    wire += 2 if wire < 0x80 else 1 + _varint_size(wire)  # Address: socket_address
    wire += 2 if wire < 0x80 else 1 + _varint_size(wire)  # Endpoint: address
    if hostname:
        text = len(hostname) if hostname.isascii() else len(hostname.encode())
        wire += 1 + _varint_size(text) + text  # Endpoint: hostname
    wire += 2 if wire < 0x80 else 1 + _varint_size(wire)  # LbEndpoint: endpoint
    if health != "UNKNOWN":
        wire += 2  # LbEndpoint: health_status (1..5)
    if weight:
        wire += 3 + _varint_size(weight)  # LbEndpoint: load_balancing_weight {value}
    metadata = wire != size
    if metadata:
        if wire > size or not msg.HasField("metadata"):
            return None
        meta = msg.metadata.ByteSize()
        if wire + 1 + _varint_size(meta) + meta != size:
            return None
    address = host if _is_canonical_v4(host) else _canonical_host(host)
    return make_endpoint(address, port, health, weight or 1, hostname), metadata


def _lb_endpoint(ctx: Ctx, path: str, msg: Any, extra: list[tuple[str, int]]) -> Endpoint | None:
    """The full ``LbEndpoint`` parser; appends the (validated, unused)
    ``additional_addresses`` to ``extra`` for the duplicate check."""
    unhandled(ctx, msg, path, _LB_ENDPOINT_FIELDS)
    which = msg.WhichOneof("host_identifier")
    if which != "endpoint":
        ctx.error(path, f"an endpoint is required, got {which or 'nothing'}")
        return None
    epath = join(path, "endpoint")
    endpoint = msg.endpoint
    unhandled(ctx, endpoint, epath, _ENDPOINT_FIELDS)
    if not endpoint.HasField("address"):
        ctx.error(join(epath, "address"), "is required")
        return None
    address = socket_address(ctx, join(epath, "address"), endpoint.address)
    apath = join(epath, "additional_addresses")
    for k, additional in enumerate(endpoint.additional_addresses):
        kpath = f"{apath}[{k}]"
        unhandled(ctx, additional, kpath, ("address",))
        if not additional.HasField("address"):
            ctx.error(join(kpath, "address"), "is required")
            continue
        parsed = socket_address(ctx, join(kpath, "address"), additional.address)
        if parsed is not None:
            extra.append(parsed)
    if endpoint.additional_addresses:
        ctx.ignore(f"{apath} (validated; proxyless connects to the first address only)")
    weight = int(wrapped(msg, "load_balancing_weight", 1))
    if weight < 1:
        ctx.error(join(path, "load_balancing_weight"), "must be >= 1")
        return None
    health = _HEALTH.get(int(msg.health_status))
    if health is None:
        # C-core skips an endpoint whose health status it does not know.
        ctx.ignore(f"{path} (unknown health status {msg.health_status}: skipped)")
        return None
    if address is None:
        return None
    return Endpoint(
        address=address[0],
        port=address[1],
        health=health,  # type: ignore[arg-type]
        weight=weight,
        hostname=endpoint.hostname,
    )


def _locality_text(locality: Locality) -> str:
    return f"{{region={locality.region!r}, zone={locality.zone!r}, sub_zone={locality.sub_zone!r}}}"


def _address_text(key: tuple[str, int]) -> str:
    host, port = key
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
