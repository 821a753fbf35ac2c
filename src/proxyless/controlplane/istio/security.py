"""Parse and validate security.istio.io documents.

PeerAuthentication and AuthorizationPolicy follow Istio's reference
(istio.io/latest/docs/reference/config/security/). Both are translated into
inbound Listeners (:mod:`.inbound`: mTLS mode by :mod:`.peer_authn`, RBAC by
:mod:`.authz`); an AuthorizationPolicy field that is not enforced as written
gets a warning saying what happens instead (:func:`.authz.unsupported_fields`).
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

from proxyless.controlplane.istio.authz import unsupported_fields
from proxyless.controlplane.istio.model import AuthorizationPolicy, AuthzRule, PeerAuthentication
from proxyless.controlplane.istio.reader import DocReader

__all__ = ["parse_authorization_policy", "parse_peer_authentication"]

MTLS_MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")

_SOURCE_FIELDS = (
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "serviceAccounts",
    "notServiceAccounts",
)
_OPERATION_FIELDS = (
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
)


def _selector(r: DocReader, spec: dict[str, Any]) -> dict[str, str] | None:
    if spec.get("selector") is None:
        return None
    box = r.mapping(spec["selector"], "spec.selector", known=("matchLabels",))
    return r.labels((box or {}).get("matchLabels"), "spec.selector.matchLabels")


def parse_peer_authentication(r: DocReader, spec: dict[str, Any]) -> PeerAuthentication | None:
    selector = _selector(r, spec)
    mtls = r.mapping(spec.get("mtls"), "spec.mtls", known=("mode",)) or {}
    mode = r.enum(mtls.get("mode", "UNSET"), "spec.mtls.mode", MTLS_MODES) or "UNSET"
    port_modes: list[tuple[int, str]] = []
    levels = r.mapping(spec.get("portLevelMtls"), "spec.portLevelMtls") or {}
    if levels and selector is None:
        r.error(
            "spec.portLevelMtls",
            "requires spec.selector (Istio ignores it on namespace-wide policies)",
        )
    for port, raw in levels.items():
        path = f"spec.portLevelMtls.{port}"
        number = (
            int(port)
            if isinstance(port, int) or (isinstance(port, str) and port.isdigit())
            else None
        )
        if number is None or not 1 <= number <= 65535:
            r.error(path, f"port must be a number from 1 to 65535, got {port!r}")
            continue
        box = r.mapping(raw, path, known=("mode",)) or {}
        pmode = r.enum(box.get("mode"), f"{path}.mode", MTLS_MODES, required=True)
        if pmode is not None:
            port_modes.append((number, pmode))
    return PeerAuthentication(r.source, selector, mode, tuple(port_modes))


def _string_list(r: DocReader, raw: Any, path: str) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(r.items(raw, path)):
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        text = r.string(item, f"{path}[{i}]", required=True)
        if text is not None:
            out.append(text)
    return tuple(out)


def _clause(
    r: DocReader, raw: Any, path: str, key: str, fields: tuple[str, ...]
) -> dict[str, tuple[str, ...]] | None:
    box = r.mapping(raw, path, known=(key,))
    if box is None:
        return None
    inner = r.mapping(box.get(key), f"{path}.{key}", known=fields, required=True)
    if inner is None:
        return None
    out = {
        name: _string_list(r, inner.get(name), f"{path}.{key}.{name}")
        for name in fields
        if name in inner
    }
    if not out:
        r.error(f"{path}.{key}", "must set at least one field")
    for name, values in out.items():
        if name.endswith(("IpBlocks", "ipBlocks")):
            for i, value in enumerate(values):
                try:
                    ip_network(value, strict=False)
                except ValueError:
                    r.error(f"{path}.{key}.{name}[{i}]", f"must be an IP or CIDR, got {value!r}")
        if name.endswith(("orts", "Ports")):
            for i, value in enumerate(values):
                if not value.isdigit() or not 1 <= int(value) <= 65535:
                    r.error(f"{path}.{key}.{name}[{i}]", f"must be a port number, got {value!r}")
    return out


def _check_condition(r: DocReader, path: str, key: str, values: tuple[str, ...]) -> None:
    for value in values:
        if key in ("source.ip", "remote.ip", "destination.ip"):
            try:
                ip_network(value, strict=False)
            except ValueError:
                r.error(f"{path}.values", f"{key} needs an IP or CIDR, got {value!r}")
        elif key == "destination.port" and (not value.isdigit() or not 1 <= int(value) <= 65535):
            r.error(f"{path}.values", f"destination.port needs a port number, got {value!r}")


def parse_authorization_policy(r: DocReader, spec: dict[str, Any]) -> AuthorizationPolicy | None:
    selector = _selector(r, spec)
    if spec.get("targetRef") is not None or spec.get("targetRefs") is not None:
        r.warn("spec.targetRef", "not supported, ignored")
    action = (
        r.enum(spec.get("action", "ALLOW"), "spec.action", ("ALLOW", "DENY", "AUDIT", "CUSTOM"))
        or "ALLOW"
    )
    provider = ""
    if action == "CUSTOM":
        pbox = (
            r.mapping(spec.get("provider"), "spec.provider", known=("name",), required=True) or {}
        )
        provider = r.string(pbox.get("name"), "spec.provider.name", required=True) or ""
    elif spec.get("provider") is not None:
        r.error("spec.provider", "is only allowed with action CUSTOM")
    rules = []
    for i, raw in enumerate(r.items(spec.get("rules"), "spec.rules")):
        path = f"spec.rules[{i}]"
        box = r.mapping(raw, path, known=("from", "to", "when"))
        if box is None:
            continue
        sources = []
        for j, item in enumerate(r.items(box.get("from"), f"{path}.from")):
            clause = _clause(r, item, f"{path}.from[{j}]", "source", _SOURCE_FIELDS)
            if clause is not None:
                sources.append(clause)
        operations = []
        for j, item in enumerate(r.items(box.get("to"), f"{path}.to")):
            clause = _clause(r, item, f"{path}.to[{j}]", "operation", _OPERATION_FIELDS)
            if clause is not None:
                operations.append(clause)
        conditions = []
        for j, item in enumerate(r.items(box.get("when"), f"{path}.when")):
            sub = f"{path}.when[{j}]"
            cbox = r.mapping(item, sub, known=("key", "values", "notValues"))
            if cbox is None:
                continue
            key = r.string(cbox.get("key"), f"{sub}.key", required=True)
            values = _string_list(r, cbox.get("values"), f"{sub}.values")
            not_values = _string_list(r, cbox.get("notValues"), f"{sub}.notValues")
            if not values and not not_values:
                r.error(sub, "needs values or notValues")
            if key is not None:
                _check_condition(r, sub, key, (*values, *not_values))
                conditions.append((key, values, not_values))
        rules.append(AuthzRule(tuple(sources), tuple(operations), tuple(conditions)))
    if action == "DENY" and spec.get("rules") is None:
        r.warn("spec.rules", "a DENY policy without rules denies nothing")
    policy = AuthorizationPolicy(r.source, selector, action, tuple(rules), provider)
    for path, message in unsupported_fields(policy):
        r.warn(path, message)
    return policy
