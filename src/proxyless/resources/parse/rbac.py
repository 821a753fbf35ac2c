"""Parse RBAC principals and permissions (gRFC A41, Envoy ``config.rbac.v3``).

Every field gRFC A41 supports becomes a node of
:mod:`proxyless.resources.model.rbac`; ``metadata`` and a non-empty
``requested_server_name`` become :class:`NeverMatch` (A41: they never match
on a gRPC server); any other rule (``matcher``, ``uri_template``,
``filter_state``, ``custom``, ``sourced_metadata``,
``destination_port_range``) makes the resource invalid rather than being
dropped, since dropping a rule would widen or narrow a security policy.
A header rule must say how to match (a HeaderMatcher without a specifier is
invalid here, as in C-core's ``xds_http_rbac_filter.cc``). A rule on a
``grpc-*`` or ``:scheme`` header is kept: the server's RBAC engine never
matches it (A41); C-core NACKs it instead (see ``docs/resources.md``).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from proxyless.resources.model.rbac import (
    AndIds,
    AndRules,
    AnyMatch,
    Authenticated,
    CidrRange,
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
from proxyless.resources.parse.common import Ctx, header_matcher, join, string_matcher

__all__ = ["cidr_range", "policy"]


def cidr_range(ctx: Ctx, path: str, msg: Any) -> CidrRange | None:
    """An ``envoy.config.core.v3.CidrRange``."""
    length = msg.prefix_len.value if msg.HasField("prefix_len") else None
    try:
        ip = ipaddress.ip_address(msg.address_prefix)
    except ValueError:
        ctx.error(join(path, "address_prefix"), f"{msg.address_prefix!r} is not an IP address")
        return None
    if length is None:
        length = ip.max_prefixlen
    if length > ip.max_prefixlen:
        ctx.error(join(path, "prefix_len"), f"{length} is longer than the address")
        return None
    return CidrRange(ipaddress.ip_network(f"{ip}/{length}", strict=False))


def policy(ctx: Ctx, path: str, name: str, msg: Any) -> Policy | None:
    """One ``config.rbac.v3.Policy``; None (and errors in ``ctx``) if invalid."""
    errors = len(ctx.errors)
    for cel in ("condition", "checked_condition"):
        if msg.HasField(cel):
            ctx.error(join(path, cel), "CEL conditions are not supported (gRFC A41)")
    permissions = [
        _permission(ctx, f"{join(path, 'permissions')}[{i}]", p)
        for i, p in enumerate(msg.permissions)
    ]
    principals = [
        _principal(ctx, f"{join(path, 'principals')}[{i}]", p) for i, p in enumerate(msg.principals)
    ]
    if len(ctx.errors) != errors:
        return None
    return Policy(
        name=name,
        permissions=tuple(p for p in permissions if p is not None),
        principals=tuple(p for p in principals if p is not None),
    )


def _permission(ctx: Ctx, path: str, msg: Any) -> Permission | None:
    which = msg.WhichOneof("rule")
    wpath = join(path, which or "rule")
    if which == "any":
        return AnyMatch()
    if which in ("and_rules", "or_rules"):
        rules = [
            _permission(ctx, f"{join(wpath, 'rules')}[{i}]", r)
            for i, r in enumerate(getattr(msg, which).rules)
        ]
        if any(r is None for r in rules):
            return None
        kept = tuple(r for r in rules if r is not None)
        return AndRules(kept) if which == "and_rules" else OrRules(kept)
    if which == "not_rule":
        inner = _permission(ctx, wpath, msg.not_rule)
        return None if inner is None else NotRule(inner)
    if which == "header":
        return _header(ctx, wpath, msg.header)
    if which == "url_path":
        return _url_path(ctx, wpath, msg.url_path)
    if which == "destination_ip":
        cidr = cidr_range(ctx, wpath, msg.destination_ip)
        return None if cidr is None else DestinationIp(cidr)
    if which == "destination_port":
        return DestinationPort(int(msg.destination_port))
    if which == "metadata":
        return NeverMatch("metadata")
    if which == "requested_server_name":
        sm = string_matcher(ctx, wpath, msg.requested_server_name)
        if sm is None:
            return None
        if sm.kind == "exact" and sm.value == "":
            return AnyMatch()
        return NeverMatch("requested_server_name")
    ctx.error(wpath, "is not supported (gRFC A41)" if which else "no rule is set")
    return None


def _principal(ctx: Ctx, path: str, msg: Any) -> Principal | None:
    which = msg.WhichOneof("identifier")
    wpath = join(path, which or "identifier")
    if which == "any":
        return AnyMatch()
    if which in ("and_ids", "or_ids"):
        ids = [
            _principal(ctx, f"{join(wpath, 'ids')}[{i}]", p)
            for i, p in enumerate(getattr(msg, which).ids)
        ]
        if any(p is None for p in ids):
            return None
        kept = tuple(p for p in ids if p is not None)
        return AndIds(kept) if which == "and_ids" else OrIds(kept)
    if which == "not_id":
        inner = _principal(ctx, wpath, msg.not_id)
        return None if inner is None else NotId(inner)
    if which == "authenticated":
        auth = msg.authenticated
        if not auth.HasField("principal_name"):
            return Authenticated(None)
        sm = string_matcher(ctx, join(wpath, "principal_name"), auth.principal_name)
        return None if sm is None else Authenticated(sm)
    if which in ("source_ip", "direct_remote_ip", "remote_ip"):
        cidr = cidr_range(ctx, wpath, getattr(msg, which))
        return None if cidr is None else SourceIp(cidr)
    if which == "header":
        return _header(ctx, wpath, msg.header)
    if which == "url_path":
        return _url_path(ctx, wpath, msg.url_path)
    if which == "metadata":
        return NeverMatch("metadata")
    ctx.error(wpath, "is not supported (gRFC A41)" if which else "no identifier is set")
    return None


def _header(ctx: Ctx, path: str, msg: Any) -> HeaderMatch | None:
    if msg.WhichOneof("header_match_specifier") is None:
        ctx.error(path, "no match specifier (exact_match, string_match, present_match ...)")
        return None
    hm = header_matcher(ctx, path, msg)
    return None if hm is None else HeaderMatch(hm)


def _url_path(ctx: Ctx, path: str, msg: Any) -> UrlPath | None:
    if msg.WhichOneof("rule") != "path":
        ctx.error(path, "only a path StringMatcher is supported")
        return None
    sm = string_matcher(ctx, join(path, "path"), msg.path)
    return None if sm is None else UrlPath(sm)
