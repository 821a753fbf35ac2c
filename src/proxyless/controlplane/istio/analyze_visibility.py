"""``proxyless analyze``: references ``exportTo`` hides, with istioctl's code.

istioctl reports a VirtualService destination whose host no service visible
in the VirtualService's namespace defines as ``[IST0101]
ReferencedResourceNotFound`` (an error; istio.io/latest/docs/reference/
config/analysis/ist0101/). The loader already refuses hosts no document
defines (:mod:`.refs`); this adds the hosts that exist but are not exported
to the VirtualService's namespace (``exportTo`` on the ServiceEntry or the
Kubernetes Service's ``networking.istio.io/exportTo`` annotation,
:mod:`.visibility`), and a DestinationRule subset a destination names when
the only rule defining it is not exported there. istiod serves such a
config and calls to the destination fail, so the control plane serves it
too; only ``analyze`` calls it an error.
"""

from __future__ import annotations

from proxyless.controlplane.istio.model import Destination, Issue, MeshConfig, VirtualService
from proxyless.controlplane.istio.registry import Registry

__all__ = ["visibility_issues"]

NOT_FOUND = "[IST0101] ReferencedResourceNotFound:"


def _check(
    vs: VirtualService, dest: Destination, view: Registry, everything: Registry
) -> list[Issue]:
    ns = vs.source.namespace
    host = view.resolve(dest.host, ns)
    service = view.services.get(host)
    if service is None:
        hidden = everything.services.get(everything.resolve(dest.host, ns))
        if hidden is None:
            return []  # unknown everywhere: the loader's finding
        owner = hidden.entry.source
        return [
            Issue.at(
                "error",
                vs.source,
                f"{dest.path}.host",
                f"{NOT_FOUND} {hidden.host} is defined by {owner.kind} "
                f"{owner.namespace}/{owner.name} but not exported to namespace {ns}",
            )
        ]
    if dest.subset and view.subset(host, dest.subset) is None:
        if everything.subset(host, dest.subset) is not None:
            rule = everything.destination_rules[host].source
            return [
                Issue.at(
                    "error",
                    vs.source,
                    f"{dest.path}.subset",
                    f"{NOT_FOUND} subset {dest.subset!r} of {host} is defined by "
                    f"DestinationRule {rule.namespace}/{rule.name}, which is not exported "
                    f"to namespace {ns}",
                )
            ]
    return []


def visibility_issues(mesh: MeshConfig, registry: Registry) -> list[Issue]:
    """Every reference of a mesh VirtualService that ``exportTo`` hides from it."""
    uses_export = any(x.export_to for x in mesh.service_entries) or any(
        x.export_to for x in mesh.destination_rules
    )
    if not uses_export:
        return []
    views: dict[str, Registry] = {}
    issues: list[Issue] = []
    for vs in mesh.virtual_services:
        ns = vs.source.namespace
        view = views.get(ns)
        if view is None:
            view = views[ns] = Registry(mesh, ns, root_namespace=registry.root_namespace)
        for route in vs.http:
            for rd in route.route:
                issues += _check(vs, rd.destination, view, registry)
            for mirror in route.mirrors:
                issues += _check(vs, mirror.destination, view, registry)
    return issues
