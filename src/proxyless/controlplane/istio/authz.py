"""AuthorizationPolicy -> the RBAC HTTP filters of an inbound Listener.

Semantics: istio.io/latest/docs/reference/config/security/authorization-policy/
and .../concepts/security/#authorization; the xDS shape is Envoy's
``envoy.config.rbac.v3.RBAC`` as gRFC A41 consumes it (principals by
``authenticated.principal_name`` — the peer's URI SAN, i.e. its SPIFFE ID —,
``direct_remote_ip``/``remote_ip``, headers; permissions by ``header``,
``url_path``, ``destination_port``).

Which policies apply to a workload (namespace ``ns``, labels ``L``): those in
the root namespace without selector (mesh-wide), those in the root namespace
whose selector matches ``L`` (in every namespace), those in ``ns`` without
selector, and those in ``ns`` whose selector matches ``L``.

Evaluation, as Istio documents it: if any DENY policy matches the request is
denied; else if there is no ALLOW policy it is allowed; else it is allowed
only if an ALLOW policy matches. So the HTTP filters are one RBAC filter with
action DENY (all DENY rules, only when there are some) then one with action
ALLOW (all ALLOW rules — when ALLOW policies exist, even if none has a rule:
an ALLOW policy without rules allows nothing, as Istio documents; istiod's
gRPC generator leaves the filter out in that case, which allows everything),
then the router.

Each rule becomes one RBAC policy named ``ns[<ns>]-policy[<name>]-rule[<i>]``
(istiod's naming for sidecars; its gRPC generator writes ``<ns>-<name>-<i>``),
so a denial can name the policy and rule. Its principals are one ``and_ids`` per ``from`` entry, its
permissions one ``and_rules`` per ``to`` entry; each field is an ``or`` of its
values, each ``not*`` field the ``not`` of such an ``or``; ``when``
conditions are and-ed into every principal (``source.*``, ``remote.ip``,
``request.headers[...]``) or every permission (``destination.port``, ``destination.ip``), the
side istiod puts them on; a side
with nothing becomes ``any: true``. Values follow istiod's string rules: a
principal ``cluster.local/ns/x/sa/y`` matches ``spiffe://cluster.local/ns/x/
sa/y`` exactly, ``prefix*`` and ``*suffix`` match by prefix and suffix, ``*``
matches any authenticated peer; a namespace ``x`` matches principals by the
regex ``.*/ns/x/.*``; a service account ``sa`` or ``ns/sa`` (namespace
defaulting to the policy's) by the regex
``spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?``; methods are exact ``:method`` header matches (``POST``
for gRPC), paths exact/prefix/suffix of the path (``/pkg.Service/Method``),
hosts of ``:authority`` ignoring case; a header value ``*`` only requires
the header to be present.

Fields the data path cannot evaluate (``requestPrincipals`` and the other
JWT attributes, ``when`` keys other than the ones above) are reported by
:func:`unsupported_fields`; they fail closed as istiod does where a field
cannot apply: an ALLOW rule using one is dropped (it allows nothing), a DENY
rule ignores it (it denies more). AUDIT policies are not enforced (they only
log). CUSTOM policies have no external authorizer here: their rules deny.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from ipaddress import ip_network
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_http_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2

from proxyless.controlplane.istio.clusters import pack
from proxyless.controlplane.istio.model import AuthorizationPolicy, AuthzRule, MeshConfig
from proxyless.controlplane.istio.peer_authn import ROOT_NAMESPACE
from proxyless.controlplane.istio.registry import selects

__all__ = [
    "RBAC_ALLOW_FILTER",
    "RBAC_DENY_FILTER",
    "applicable_policies",
    "policy_name",
    "rbac_filters",
    "rbac_rules",
    "string_matcher",
    "unsupported_fields",
]

#: istiod's gRPC generator names them so (gRPC requires unique filter names, A39).
RBAC_DENY_FILTER = "envoy.filters.http.rbac.DENY"
RBAC_ALLOW_FILTER = "envoy.filters.http.rbac"
_SPIFFE = "spiffe://"
_HEADER_KEY = re.compile(r"^request\.headers\[(.+)\]$")

#: source fields -> (positive?, principal builder key)
_SOURCE_KINDS = {
    "principals": (True, "principal"),
    "notPrincipals": (False, "principal"),
    "namespaces": (True, "namespace"),
    "notNamespaces": (False, "namespace"),
    "ipBlocks": (True, "ip"),
    "notIpBlocks": (False, "ip"),
    "remoteIpBlocks": (True, "remote_ip"),
    "notRemoteIpBlocks": (False, "remote_ip"),
    "serviceAccounts": (True, "service_account"),
    "notServiceAccounts": (False, "service_account"),
}
_OPERATION_KINDS = {
    "methods": (True, "method"),
    "notMethods": (False, "method"),
    "paths": (True, "path"),
    "notPaths": (False, "path"),
    "ports": (True, "port"),
    "notPorts": (False, "port"),
    "hosts": (True, "host"),
    "notHosts": (False, "host"),
}
_PRINCIPAL_CONDITIONS = {
    "source.principal": "principal",
    "source.namespace": "namespace",
    "source.ip": "ip",
    "remote.ip": "remote_ip",
}
_PERMISSION_CONDITIONS = {"destination.port": "port", "destination.ip": "dest_ip"}


def string_matcher(value: str, prefix: str = "", *, ignore_case: bool = False) -> Any:
    """istiod's rule for a policy string: ``*`` any, ``*x`` suffix, ``x*`` prefix, else exact.

    ``prefix`` (``spiffe://`` for principals) is prepended to what is matched
    from the start.
    """
    m = string_pb2.StringMatcher(ignore_case=ignore_case)
    if value == "*":
        m = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    elif value.startswith("*"):
        if prefix:
            m = string_pb2.StringMatcher(
                safe_regex=regex_pb2.RegexMatcher(
                    regex=re.escape(prefix) + ".*" + re.escape(value[1:])
                )
            )
        else:
            m.suffix = value[1:]
    elif value.endswith("*"):
        m.prefix = prefix + value[:-1]
    else:
        m.exact = prefix + value
    return m


def _authenticated(matcher: Any) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(principal_name=matcher)
    )


def _cidr(value: str) -> address_pb2.CidrRange:
    net = ip_network(value, strict=False)  # validated when loading
    cidr = address_pb2.CidrRange(address_prefix=str(net.network_address))
    cidr.prefix_len.value = net.prefixlen
    return cidr


def _regex(regex: str) -> Any:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex))


def _principal(kind: str, value: str, namespace: str) -> rbac_pb2.Principal:
    if kind == "principal":
        return _authenticated(string_matcher(value, _SPIFFE))
    if kind == "namespace":
        regex = ".*/ns/" + value.replace("*", ".*") + "/.*"
        return _authenticated(_regex(regex))
    if kind == "service_account":
        ns, _, sa = value.rpartition("/")
        return _authenticated(_regex(f"spiffe://.+/ns/{ns or namespace}/(.+/|)sa/{sa}(/.+)?"))
    if kind.startswith("header:"):
        return rbac_pb2.Principal(header=_header(kind[len("header:") :], value))
    if kind == "ip":
        return rbac_pb2.Principal(direct_remote_ip=_cidr(value))
    if kind == "remote_ip":
        return rbac_pb2.Principal(remote_ip=_cidr(value))
    raise ValueError(f"unknown principal kind {kind!r}")


def _header(name: str, value: str, *, ignore_case: bool = False) -> route_pb2.HeaderMatcher:
    if value == "*":  # istiod: any value, the header must be present
        return route_pb2.HeaderMatcher(name=name, present_match=True)
    return route_pb2.HeaderMatcher(
        name=name, string_match=string_matcher(value, ignore_case=ignore_case)
    )


def _permission(kind: str, value: str) -> rbac_pb2.Permission:
    if kind == "method":
        return rbac_pb2.Permission(
            header=route_pb2.HeaderMatcher(
                name=":method", string_match=string_pb2.StringMatcher(exact=value)
            )
        )
    if kind == "path":
        return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=string_matcher(value)))
    if kind == "port":
        return rbac_pb2.Permission(destination_port=int(value))
    if kind == "dest_ip":
        return rbac_pb2.Permission(destination_ip=_cidr(value))
    if kind == "host":
        return rbac_pb2.Permission(header=_header(":authority", value, ignore_case=True))
    raise ValueError(f"unknown permission kind {kind!r}")


def _any_principal(
    kind: str, values: Iterable[str], positive: bool, namespace: str
) -> rbac_pb2.Principal:
    ids = rbac_pb2.Principal.Set(ids=[_principal(kind, v, namespace) for v in values])
    inner = rbac_pb2.Principal(or_ids=ids)
    return inner if positive else rbac_pb2.Principal(not_id=inner)


def _any_permission(kind: str, values: Iterable[str], positive: bool) -> rbac_pb2.Permission:
    rules = rbac_pb2.Permission.Set(rules=[_permission(kind, v) for v in values])
    inner = rbac_pb2.Permission(or_rules=rules)
    return inner if positive else rbac_pb2.Permission(not_rule=inner)


def _condition_kind(key: str) -> tuple[str, str] | None:
    """("principal" | "permission", builder kind) of a supported ``when`` key."""
    if key in _PRINCIPAL_CONDITIONS:
        return "principal", _PRINCIPAL_CONDITIONS[key]
    if key in _PERMISSION_CONDITIONS:
        return "permission", _PERMISSION_CONDITIONS[key]
    found = _HEADER_KEY.match(key)
    if found:
        return "principal", "header:" + found.group(1).lower()
    return None


def unsupported_fields(policy: AuthorizationPolicy) -> list[tuple[str, str]]:
    """(field path, message) of everything in ``policy`` that is not enforced as written."""
    out: list[tuple[str, str]] = []
    if policy.action == "AUDIT":
        out.append(("spec.action", "AUDIT is not supported: the policy is not enforced"))
    if policy.action == "CUSTOM":
        out.append(
            (
                "spec.action",
                "CUSTOM is not supported (no external authorizer): its rules deny the requests they match",
            )
        )
    for i, rule in enumerate(policy.rules):
        for j, source in enumerate(rule.sources):
            for name in source:
                if name not in _SOURCE_KINDS:
                    out.append(
                        (f"spec.rules[{i}].from[{j}].source.{name}", _unsupported_effect(policy))
                    )
        for j, (key, _, _) in enumerate(rule.conditions):
            if _condition_kind(key) is None:
                out.append(
                    (f"spec.rules[{i}].when[{j}].key", f"{key!r}: {_unsupported_effect(policy)}")
                )
    return out


def _unsupported_effect(policy: AuthorizationPolicy) -> str:
    if policy.action == "ALLOW":
        return "not supported: this ALLOW rule is dropped (it allows nothing)"
    return "not supported: ignored, so this rule matches more requests"


def applicable_policies(
    mesh: MeshConfig, namespace: str, labels: Mapping[str, str]
) -> list[AuthorizationPolicy]:
    """The policies that apply to a workload (see the module docstring), in file order."""
    out = []
    for policy in mesh.authorization_policies:
        ns = policy.source.namespace
        if ns not in (namespace, ROOT_NAMESPACE):
            continue
        if policy.selector and not selects(policy.selector, labels):
            continue
        out.append(policy)
    return out


def policy_name(policy: AuthorizationPolicy, index: int) -> str:
    return f"ns[{policy.source.namespace}]-policy[{policy.source.name}]-rule[{index}]"


def _rule_policy(rule: AuthzRule, namespace: str, *, allow: bool) -> rbac_pb2.Policy | None:
    principals: list[list[rbac_pb2.Principal]] = []
    for source in rule.sources:
        ids = []
        for name, values in source.items():
            if name not in _SOURCE_KINDS:
                if allow:
                    return None
                continue
            positive, kind = _SOURCE_KINDS[name]
            ids.append(_any_principal(kind, values, positive, namespace))
        principals.append(ids)
    permissions: list[list[rbac_pb2.Permission]] = []
    for operation in rule.operations:
        rules = []
        for name, values in operation.items():
            positive, kind = _OPERATION_KINDS[name]
            rules.append(_any_permission(kind, values, positive))
        permissions.append(rules)
    extra_ids: list[rbac_pb2.Principal] = []
    extra_rules: list[rbac_pb2.Permission] = []
    for key, values, not_values in rule.conditions:
        found = _condition_kind(key)
        if found is None:
            if allow:
                return None
            continue
        side, kind = found
        for vals, positive in ((values, True), (not_values, False)):
            if not vals:
                continue
            if side == "principal":
                extra_ids.append(_any_principal(kind, vals, positive, namespace))
            else:
                extra_rules.append(_any_permission(kind, vals, positive))
    if extra_ids:
        principals = [ids + extra_ids for ids in principals] or [list(extra_ids)]
    if extra_rules:
        permissions = [rules + extra_rules for rules in permissions] or [list(extra_rules)]
    policy = rbac_pb2.Policy()
    for ids in principals:
        if ids:
            policy.principals.add(and_ids=rbac_pb2.Principal.Set(ids=ids))
        else:
            policy.principals.add(any=True)
    for rules in permissions:
        if rules:
            policy.permissions.add(and_rules=rbac_pb2.Permission.Set(rules=rules))
        else:
            policy.permissions.add(any=True)
    if not policy.principals:
        policy.principals.add(any=True)
    if not policy.permissions:
        policy.permissions.add(any=True)
    return policy


def rbac_rules(action: str, policies: Iterable[AuthorizationPolicy]) -> rbac_pb2.RBAC:
    """One RBAC config of ``action`` ("ALLOW" or "DENY") from the rules of ``policies``."""
    allow = action == "ALLOW"
    rbac = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW if allow else rbac_pb2.RBAC.DENY)
    for policy in policies:
        for i, rule in enumerate(policy.rules):
            built = _rule_policy(rule, policy.source.namespace, allow=allow)
            if built is not None:
                rbac.policies[policy_name(policy, i)].CopyFrom(built)
    return rbac


def rbac_filters(policies: Iterable[AuthorizationPolicy]) -> list[hcm_pb2.HttpFilter]:
    """The RBAC HTTP filters (DENY then ALLOW) for the policies applying to a workload."""
    policies = list(policies)
    deny = [p for p in policies if p.action in ("DENY", "CUSTOM")]
    allow = [p for p in policies if p.action == "ALLOW"]
    filters = []
    deny_rules = rbac_rules("DENY", deny)
    if deny_rules.policies:
        filters.append(
            hcm_pb2.HttpFilter(
                name=RBAC_DENY_FILTER, typed_config=pack(rbac_http_pb2.RBAC(rules=deny_rules))
            )
        )
    if allow:
        filters.append(
            hcm_pb2.HttpFilter(
                name=RBAC_ALLOW_FILTER,
                typed_config=pack(rbac_http_pb2.RBAC(rules=rbac_rules("ALLOW", allow))),
            )
        )
    return filters
