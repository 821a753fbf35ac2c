"""``exportTo``: which namespaces see a ServiceEntry, VirtualService or DestinationRule.

Follows Istio's ``exportTo`` reference (istio.io/latest/docs/reference/
config/networking/service-entry/#ServiceEntry-export_to, the same field on
VirtualService and DestinationRule) and istiod's visibility rules
(pilot/pkg/model/push_context.go):

* no ``exportTo`` (or ``*``): every namespace sees the document;
* ``.``: only the document's own namespace;
* namespace names: those namespaces only (the document's own namespace too
  only when listed or with ``.``);
* ``~``: no namespace (the document is hidden).

A view from no namespace (``None``) sees everything: it is what ``analyze``
and the checks that do not depend on the caller use.

DestinationRules in the mesh's root namespace (``istio-system``, Istio's
default MeshConfig ``rootNamespace``) that no rule of the client's namespace
or of the service's namespace overrides apply mesh-wide, as in istiod
(pilot/pkg/model/sidecar.go DestinationRule lookup); see
:func:`rule_precedence`.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "DEFAULT_ROOT_NAMESPACE",
    "check_export_to",
    "exported_to",
    "meet",
    "rule_precedence",
]

DEFAULT_ROOT_NAMESPACE = "istio-system"


def exported_to(export_to: Iterable[str], own_namespace: str, viewer: str | None) -> bool:
    """True if a document of ``own_namespace`` with ``export_to`` is visible from ``viewer``."""
    if viewer is None:
        return True
    entries = tuple(export_to)
    if not entries or "*" in entries:
        return True
    if "~" in entries:
        return False
    if viewer == own_namespace and ("." in entries or own_namespace in entries):
        return True
    return viewer in entries


def check_export_to(entries: Iterable[str]) -> str | None:
    """None if ``entries`` is a valid ``exportTo`` list, else what is wrong with it."""
    values = list(entries)
    for value in values:
        if value in ("*", ".", "~"):
            continue
        if not value or len(value) > 63 or not all(c.isalnum() or c == "-" for c in value):
            return f"{value!r} is neither '.', '*', '~' nor a namespace name"
        if value != value.lower():
            return f"namespace {value!r} must be lower case"
    if "~" in values and len(values) > 1:
        return "'~' (hidden) cannot be combined with other entries"
    if "*" in values and len(values) > 1:
        return "'*' (every namespace) cannot be combined with other entries"
    return None


def rule_precedence(
    rule_namespace: str, client: str | None, service_namespace: str, root_namespace: str
) -> int:
    """Rank of a DestinationRule for one client (lower wins; istiod's lookup order).

    0: the client's own namespace; 1: the service's namespace; 2: the root
    namespace; 3: any other namespace that exports it (kept so configs that
    worked before keep working; istiod would not apply such a rule).
    """
    if client is not None and rule_namespace == client:
        return 0
    if rule_namespace == service_namespace:
        return 1
    if rule_namespace == root_namespace:
        return 2
    return 3


def _audience(export_to: Iterable[str], own_namespace: str) -> frozenset[str] | None:
    """Namespaces that see a document; None means every namespace."""
    entries = tuple(export_to)
    if not entries or "*" in entries:
        return None
    if "~" in entries:
        return frozenset()
    return frozenset(own_namespace if e == "." else e for e in entries)


def meet(
    a_export: Iterable[str], a_namespace: str, b_export: Iterable[str], b_namespace: str
) -> bool:
    """True if some namespace sees both documents (so they can conflict)."""
    a = _audience(a_export, a_namespace)
    b = _audience(b_export, b_namespace)
    if a is None:
        return b is None or bool(b)
    if b is None:
        return bool(a)
    return bool(a & b)
