"""RBAC policies of the HTTP RBAC filter (gRFC A41, Envoy ``config.rbac.v3``).

A :class:`Policy` grants (ALLOW) or matches for refusal (DENY) when any of
its permissions matches the request *and* any of its principals matches the
caller. Principals and permissions are trees of the small frozen types
below; evaluation lives with the server (``proxyless.grpc._rbac``), which
matches them against one call's description.

What gRFC A41 says about the fields modelled here: ``authenticated``
matches the peer certificate's URI SANs, then DNS SANs, then its subject
(an absent ``principal_name`` matches any authenticated peer); a header
whose name starts with ``grpc-`` never matches (and ``:method`` is always
``POST``); ``source_ip`` and ``direct_remote_ip`` are the connection's
peer address and ``remote_ip`` is the same (``xff_num_trusted_hops`` must
be 0); ``metadata`` never matches and ``requested_server_name`` matches
only an empty-string matcher. CEL conditions are rejected at parse time.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal, TypeAlias

from proxyless.resources.model.matchers import HeaderMatcher, StringMatcher

__all__ = [
    "AndIds",
    "AndRules",
    "AnyMatch",
    "Authenticated",
    "CidrRange",
    "DestinationIp",
    "DestinationPort",
    "HeaderMatch",
    "NeverMatch",
    "NotId",
    "NotRule",
    "OrIds",
    "OrRules",
    "Permission",
    "Policy",
    "Principal",
    "RbacAction",
    "SourceIp",
    "UrlPath",
]

RbacAction = Literal["ALLOW", "DENY"]


@dataclass(frozen=True, slots=True)
class CidrRange:
    """``envoy.config.core.v3.CidrRange`` as an ``ipaddress`` network."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    def contains(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.version != self.network.version:
            return False
        return ip in self.network


@dataclass(frozen=True, slots=True)
class AnyMatch:
    """``any: true``: always matches."""


@dataclass(frozen=True, slots=True)
class NeverMatch:
    """A rule gRFC A41 says never matches (``metadata``, a non-empty
    ``requested_server_name``); ``why`` names it for messages."""

    why: str


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """``header``: a request header (A41: ``grpc-`` headers never match)."""

    matcher: HeaderMatcher


@dataclass(frozen=True, slots=True)
class UrlPath:
    """``url_path``: the ``:path`` (the gRPC method, ``/pkg.Service/Method``)."""

    matcher: StringMatcher


@dataclass(frozen=True, slots=True)
class Authenticated:
    """``authenticated``: a TLS peer with a certificate; ``principal_name``
    None matches any such peer."""

    principal_name: StringMatcher | None


@dataclass(frozen=True, slots=True)
class SourceIp:
    """``source_ip``, ``direct_remote_ip`` or ``remote_ip`` (all the
    connection's peer address on a server without trusted XFF hops)."""

    cidr: CidrRange


@dataclass(frozen=True, slots=True)
class DestinationIp:
    """``destination_ip``: the local address the connection was accepted on."""

    cidr: CidrRange


@dataclass(frozen=True, slots=True)
class DestinationPort:
    """``destination_port``: the local port the connection was accepted on."""

    port: int


@dataclass(frozen=True, slots=True)
class AndIds:
    ids: tuple[Principal, ...]


@dataclass(frozen=True, slots=True)
class OrIds:
    ids: tuple[Principal, ...]


@dataclass(frozen=True, slots=True)
class NotId:
    id: Principal


@dataclass(frozen=True, slots=True)
class AndRules:
    rules: tuple[Permission, ...]


@dataclass(frozen=True, slots=True)
class OrRules:
    rules: tuple[Permission, ...]


@dataclass(frozen=True, slots=True)
class NotRule:
    rule: Permission


Principal: TypeAlias = (
    AnyMatch
    | NeverMatch
    | HeaderMatch
    | UrlPath
    | Authenticated
    | SourceIp
    | AndIds
    | OrIds
    | NotId
)
Permission: TypeAlias = (
    AnyMatch
    | NeverMatch
    | HeaderMatch
    | UrlPath
    | DestinationIp
    | DestinationPort
    | AndRules
    | OrRules
    | NotRule
)


@dataclass(frozen=True, slots=True)
class Policy:
    """One named policy: matches when a permission and a principal match."""

    name: str
    permissions: tuple[Permission, ...]
    principals: tuple[Principal, ...]
