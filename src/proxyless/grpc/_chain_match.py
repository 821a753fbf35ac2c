"""Choosing the filter chain of a new connection (gRFC A36, Envoy's filter-chain match).

Criteria are applied in Envoy's order, each narrowing the candidates to
the most specific ones that match, without backtracking: destination port
(gRFC A36: a chain that sets it never matches, since it depends on
``use_original_dst``, which a gRPC server does not have), destination IP (longest ``prefix_ranges`` match; chains without ranges
only when no range matches), transport protocol (``"tls"`` or
``"raw_buffer"`` as seen on the first bytes, over chains that leave it
empty), source type (``SAME_IP_OR_LOOPBACK``/``EXTERNAL`` over ``ANY``),
source IP (longest ``source_prefix_ranges`` match) and source port. When
no chain is left the ``default_filter_chain`` serves, and without one the
connection is closed. Pure: a function of the listener and the connection.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from proxyless.resources.model.rbac import CidrRange
from proxyless.resources.model.server_listener import FilterChain, ServerListener

__all__ = ["Connection", "match_filter_chain"]


@dataclass(frozen=True, slots=True)
class Connection:
    """The facts of one accepted connection a filter chain is matched on."""

    local_ip: str
    local_port: int
    peer_ip: str
    peer_port: int
    transport: str  # "tls" or "raw_buffer"


def match_filter_chain(listener: ServerListener, conn: Connection) -> FilterChain | None:
    """The chain that serves ``conn`` (see the module docstring)."""
    chains: Sequence[FilterChain] = listener.filter_chains
    for narrow in _STEPS:
        chains = narrow(chains, conn)
        if not chains:
            return listener.default_filter_chain
    return chains[0]


def _by_port(chains: Sequence[FilterChain], conn: Connection) -> Sequence[FilterChain]:
    return [c for c in chains if c.match.destination_port is None]


def _longest(ranges: tuple[CidrRange, ...], ip: str) -> int:
    return max((r.network.prefixlen for r in ranges if r.contains(ip)), default=-1)


def _by_prefix(
    get: Callable[[FilterChain], tuple[CidrRange, ...]], ip: str, chains: Sequence[FilterChain]
) -> Sequence[FilterChain]:
    best, out = -1, []
    for chain in chains:
        length = _longest(get(chain), ip)
        if length > best:
            best, out = length, [chain]
        elif length == best and length >= 0:
            out.append(chain)
    return out or [c for c in chains if not get(c)]


def _by_destination_ip(chains: Sequence[FilterChain], conn: Connection) -> Sequence[FilterChain]:
    return _by_prefix(lambda c: c.match.prefix_ranges, conn.local_ip, chains)


def _by_transport(chains: Sequence[FilterChain], conn: Connection) -> Sequence[FilterChain]:
    exact = [c for c in chains if c.match.transport_protocol == conn.transport]
    return exact or [c for c in chains if not c.match.transport_protocol]


def _is_local(conn: Connection) -> bool:
    if conn.peer_ip == conn.local_ip:
        return True
    try:
        return ipaddress.ip_address(conn.peer_ip).is_loopback
    except ValueError:
        return False


def _by_source_type(chains: Sequence[FilterChain], conn: Connection) -> Sequence[FilterChain]:
    kind = "SAME_IP_OR_LOOPBACK" if _is_local(conn) else "EXTERNAL"
    exact = [c for c in chains if c.match.source_type == kind]
    return exact or [c for c in chains if c.match.source_type == "ANY"]


def _by_source_ip(chains: Sequence[FilterChain], conn: Connection) -> Sequence[FilterChain]:
    return _by_prefix(lambda c: c.match.source_prefix_ranges, conn.peer_ip, chains)


def _by_source_port(chains: Sequence[FilterChain], conn: Connection) -> Sequence[FilterChain]:
    exact = [c for c in chains if conn.peer_port in c.match.source_ports]
    return exact or [c for c in chains if not c.match.source_ports]


_STEPS = (
    _by_port,
    _by_destination_ip,
    _by_transport,
    _by_source_type,
    _by_source_ip,
    _by_source_port,
)
