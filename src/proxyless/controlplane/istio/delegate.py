"""Delegate VirtualServices: a root's ``http[].delegate`` replaced by the delegate's routes.

Follows Istio's VirtualService ``delegate`` reference
(istio.io/latest/docs/reference/config/networking/virtual-service/#Delegate)
and istiod's merge (pilot/pkg/model/virtualservice.go, the
``mergeVirtualServicesIfNeeded`` step):

* a delegate is a VirtualService without ``hosts``; a root route names it by
  ``name`` and ``namespace`` (default: the root's namespace). A delegate that
  does not exist, or is not exported to the root's namespace, drops that
  root route (istiod logs and skips it; :mod:`.refs` warns);
* each delegate route becomes one root route, in the delegate's order. Its
  matches are merged with the root route's: without root matches the
  delegate's are kept, without delegate matches the root's are used;
  otherwise every delegate match is combined with each root match it does
  not conflict with, and a delegate match that conflicts with all of them
  drops the delegate route. Conflicts: a delegate ``uri``/``scheme``/
  ``method``/``authority`` or header/query condition that is not within the
  root's (exact must equal exact, a prefix must extend the root's prefix,
  regex only against nothing), a different ``ignoreUriCase``, ``port`` or
  ``sourceNamespace``, or a ``sourceLabels`` value the root contradicts;
* delegate fields win; ``rewrite``, ``timeout``, ``retries``, ``fault``,
  ``mirrors`` and ``headers`` the delegate leaves unset come from the root;
  route and match names are joined as ``root-delegate``;
* the delegate's destination hosts are short names of the delegate's
  namespace (resolved before merging, as istiod resolves every
  VirtualService's short names in its own namespace).

Only one level: a delegate's own ``delegate`` routes are refused by the
parser, as Istio's validation refuses them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Protocol

from proxyless.controlplane.istio.model import (
    Destination,
    HttpRoute,
    MatchRequest,
    StringMatch,
    VirtualService,
)
from proxyless.controlplane.istio.visibility import exported_to


class Registry(Protocol):
    """What delegation asks of the registry
    (:class:`proxyless.controlplane.istio.registry.Registry`)."""

    def resolve(self, host: str, namespace: str) -> str: ...


__all__ = ["find_delegate", "merge_matches", "merge_route", "resolve_delegates"]


def _string_conflict(root: StringMatch | None, leaf: StringMatch | None) -> bool:
    if root is None or leaf is None:
        return False
    if root.kind == "regex" or leaf.kind == "regex":
        return True
    if root.kind == "exact":
        return leaf.kind != "exact" or leaf.value != root.value
    return not leaf.value.startswith(root.value)


def _named_conflict(
    root: Sequence[tuple[str, StringMatch]], leaf: Sequence[tuple[str, StringMatch]]
) -> bool:
    by_name = dict(root)
    return any(_string_conflict(by_name.get(name), m) for name, m in leaf)


def _conflict(root: MatchRequest, leaf: MatchRequest) -> bool:
    pairs = (
        (root.uri, leaf.uri),
        (root.scheme, leaf.scheme),
        (root.method, leaf.method),
        (root.authority, leaf.authority),
    )
    if any(_string_conflict(a, b) for a, b in pairs):
        return True
    if (
        _named_conflict(root.headers, leaf.headers)
        or _named_conflict(root.without_headers, leaf.without_headers)
        or _named_conflict(root.query_params, leaf.query_params)
    ):
        return True
    if root.ignore_uri_case != leaf.ignore_uri_case:
        return True
    if root.port is not None and leaf.port is not None and root.port != leaf.port:
        return True
    if root.source_namespace and leaf.source_namespace != root.source_namespace:
        return True
    return any(
        key in root.source_labels and root.source_labels[key] != value
        for key, value in leaf.source_labels.items()
    )


def _merge_named(
    root: Sequence[tuple[str, StringMatch]], leaf: Sequence[tuple[str, StringMatch]]
) -> tuple[tuple[str, StringMatch], ...]:
    merged = dict(root)
    merged.update(dict(leaf))
    return tuple(sorted(merged.items()))


def _joined(root: str, leaf: str) -> str:
    if not leaf:
        return root
    return f"{root}-{leaf}" if root else leaf


def _merge_match(root: MatchRequest, leaf: MatchRequest) -> MatchRequest:
    return replace(
        leaf,
        name=_joined(root.name, leaf.name),
        uri=leaf.uri or root.uri,
        scheme=leaf.scheme or root.scheme,
        method=leaf.method or root.method,
        authority=leaf.authority or root.authority,
        headers=_merge_named(root.headers, leaf.headers),
        without_headers=_merge_named(root.without_headers, leaf.without_headers),
        query_params=_merge_named(root.query_params, leaf.query_params),
        port=leaf.port if leaf.port is not None else root.port,
        source_labels={**root.source_labels, **leaf.source_labels},
        source_namespace=leaf.source_namespace or root.source_namespace,
    )


def merge_matches(
    root: Sequence[MatchRequest], leaf: Sequence[MatchRequest]
) -> tuple[MatchRequest, ...] | None:
    """The merged matches, or None when a delegate match conflicts with every root match."""
    if not root:
        return tuple(leaf)
    if not leaf:
        return tuple(root)
    out: list[MatchRequest] = []
    for sub in leaf:
        fits = [_merge_match(r, sub) for r in root if not _conflict(r, sub)]
        if not fits:
            return None
        out += fits
    return tuple(out) or None


def merge_route(root: HttpRoute, leaf: HttpRoute) -> HttpRoute | None:
    """One delegate route under its root route; None if their matches conflict."""
    matches = merge_matches(root.matches, leaf.matches)
    if matches is None:
        return None
    return replace(
        leaf,
        name=_joined(root.name, leaf.name),
        matches=matches,
        rewrite=leaf.rewrite or root.rewrite,
        timeout=leaf.timeout if leaf.timeout is not None else root.timeout,
        retries=leaf.retries or root.retries,
        fault=leaf.fault or root.fault,
        mirrors=leaf.mirrors or root.mirrors,
        headers=leaf.headers or root.headers,
        delegate=None,
    )


def find_delegate(
    root: VirtualService, route: HttpRoute, all_vs: Iterable[VirtualService]
) -> VirtualService | None:
    """The delegate ``route`` names, if it exists and is exported to the root's namespace."""
    if route.delegate is None:
        return None
    name, namespace = route.delegate
    namespace = namespace or root.source.namespace
    for vs in all_vs:
        if vs.hosts or vs.source.name != name or vs.source.namespace != namespace:
            continue
        if exported_to(vs.export_to, namespace, root.source.namespace):
            return vs
        return None
    return None


def _qualified(registry: Registry, dest: Destination, namespace: str) -> Destination:
    return replace(dest, host=registry.resolve(dest.host, namespace))


def _qualify(registry: Registry, route: HttpRoute, namespace: str) -> HttpRoute:
    return replace(
        route,
        route=tuple(
            replace(rd, destination=_qualified(registry, rd.destination, namespace))
            for rd in route.route
        ),
        mirrors=tuple(
            replace(m, destination=_qualified(registry, m.destination, namespace))
            for m in route.mirrors
        ),
    )


def resolve_delegates(
    registry: Registry,
    roots: Iterable[VirtualService],
    all_vs: Sequence[VirtualService],
) -> list[VirtualService]:
    """``roots`` with every delegate route replaced by the merged delegate routes."""
    out = []
    for vs in roots:
        if not any(route.delegate is not None for route in vs.http):
            out.append(vs)
            continue
        routes: list[HttpRoute] = []
        for route in vs.http:
            if route.delegate is None:
                routes.append(route)
                continue
            delegate = find_delegate(vs, route, all_vs)
            if delegate is None:
                continue
            for leaf in delegate.http:
                merged = merge_route(route, _qualify(registry, leaf, delegate.source.namespace))
                if merged is not None:
                    routes.append(merged)
        out.append(replace(vs, http=tuple(routes)))
    return out
