"""The RBAC engine of xDS-enabled servers (gRFC A41): a pure function of one call.

:func:`authorize` runs the RBAC HTTP filters of a connection's filter chain
in order. A filter whose ``action`` is ALLOW lets the call through to the
next filter when one of its policies matches and denies it otherwise ("no
policy matched", the default deny, naming the policies that did not match); a DENY filter denies the call when one
of its policies matches. A filter without rules (or a LOG one) enforces
nothing. A policy matches when any of its permissions and any of its
principals match.

Request facts (:class:`RbacRequest`): the gRPC method path, the request
headers (lower-case names, repeated values joined with ``","``; A41:
``:method`` is ``POST``, headers named ``grpc-*`` never match, ``-bin``
headers are not matched on), the connection's peer and local addresses, and
the peer certificate (None for a plaintext caller). ``authenticated``
principals match ``principal_name`` against the certificate's URI SANs, then
DNS SANs, then its subject (RFC 2253); a caller without certificate matches
only a ``principal_name`` that matches the empty string (A41).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from proxyless.resources.model.filters import RbacFilterConfig
from proxyless.resources.model.rbac import (
    AndIds,
    AndRules,
    AnyMatch,
    Authenticated,
    DestinationIp,
    DestinationPort,
    HeaderMatch,
    NeverMatch,
    NotId,
    NotRule,
    OrIds,
    OrRules,
    Permission,
    Policy,
    Principal,
    SourceIp,
    UrlPath,
)
from proxyless.security.peer import PeerCertificate

__all__ = ["RbacRequest", "authorize"]


def _no_headers() -> Mapping[str, str]:
    return {}


@dataclass(frozen=True, slots=True)
class RbacRequest:
    """What RBAC sees of one call."""

    path: str
    headers: Mapping[str, str] = field(default_factory=_no_headers)
    peer_ip: str = ""
    peer_port: int = 0
    local_ip: str = ""
    local_port: int = 0
    peer: PeerCertificate | None = None
    authority: str = ""

    def header(self, name: str) -> str | None:
        if name.startswith("grpc-") or name.endswith("-bin"):
            return None
        if name == ":method":
            return "POST"
        if name == ":path":
            return self.path
        if name in (":authority", "host"):
            return self.authority or self.headers.get(":authority")
        return self.headers.get(name)


def authorize(filters: Sequence[tuple[str, RbacFilterConfig]], request: RbacRequest) -> str | None:
    """None if the call may proceed, else why it is denied (naming the
    filter and the policy). ``filters`` are ``(filter name, config)`` in
    HTTP filter order."""
    for name, config in filters:
        action = config.action
        if action == "ALLOW":
            if _first_match(config.policies, request) is None:
                tried = ", ".join(repr(p.name) for p in config.policies) or "none configured"
                return f"RBAC filter {name!r}: no ALLOW policy matched (policies: {tried})"
        elif action == "DENY":
            policy = _first_match(config.policies, request)
            if policy is not None:
                return f"RBAC filter {name!r}: denied by policy {policy!r}"
    return None


def _first_match(policies: tuple[Policy, ...], request: RbacRequest) -> str | None:
    for policy in policies:
        if any(_permission(p, request) for p in policy.permissions) and any(
            _principal(p, request) for p in policy.principals
        ):
            return policy.name
    return None


def _permission(rule: Permission, request: RbacRequest) -> bool:
    if isinstance(rule, AnyMatch):
        return True
    if isinstance(rule, UrlPath):
        return rule.matcher.matches(request.path)
    if isinstance(rule, HeaderMatch):
        return rule.matcher.matches(request.header(rule.matcher.name))
    if isinstance(rule, DestinationPort):
        return rule.port == request.local_port
    if isinstance(rule, DestinationIp):
        return rule.cidr.contains(request.local_ip)
    if isinstance(rule, AndRules):
        return all(_permission(r, request) for r in rule.rules)
    if isinstance(rule, OrRules):
        return any(_permission(r, request) for r in rule.rules)
    if isinstance(rule, NotRule):
        return not _permission(rule.rule, request)
    assert isinstance(rule, NeverMatch)
    return False


def _principal(rule: Principal, request: RbacRequest) -> bool:
    if isinstance(rule, AnyMatch):
        return True
    if isinstance(rule, Authenticated):
        return _authenticated(rule, request.peer)
    if isinstance(rule, SourceIp):
        return rule.cidr.contains(request.peer_ip)
    if isinstance(rule, HeaderMatch):
        return rule.matcher.matches(request.header(rule.matcher.name))
    if isinstance(rule, UrlPath):
        return rule.matcher.matches(request.path)
    if isinstance(rule, AndIds):
        return all(_principal(p, request) for p in rule.ids)
    if isinstance(rule, OrIds):
        return any(_principal(p, request) for p in rule.ids)
    if isinstance(rule, NotId):
        return not _principal(rule.id, request)
    assert isinstance(rule, NeverMatch)
    return False


def _authenticated(rule: Authenticated, peer: PeerCertificate | None) -> bool:
    matcher = rule.principal_name
    if peer is None:
        return matcher is not None and matcher.matches("")
    if matcher is None:
        return True
    if any(matcher.matches(uri) for uri in peer.uri):
        return True
    if any(matcher.matches(dns) for dns in peer.dns):
        return True
    return matcher.matches(peer.subject)
