"""Load multi-document Istio YAML into a validated :class:`MeshConfig`.

Accepted kinds and API versions (Istio's CRDs):

* ``networking.istio.io/v1`` (also ``v1beta1``, ``v1alpha3``): ServiceEntry,
  WorkloadEntry, VirtualService, DestinationRule;
* ``security.istio.io/v1`` (also ``v1beta1``): PeerAuthentication,
  AuthorizationPolicy.

Kubernetes Service (v1), EndpointSlice (discovery.k8s.io/v1), Endpoints (v1)
and Pod (v1) objects describe services too (:mod:`.kubernetes`); a
``kind: List`` (``kubectl get -o yaml``) is read item by item.

Kinds that only shape gateways or other proxies (Gateway, Sidecar,
EnvoyFilter, Telemetry, WasmPlugin, ProxyConfig, RequestAuthentication,
WorkloadGroup, the Gateway API's kinds) are skipped with one info line, as is
a VirtualService bound only to gateways (``gateways`` without ``mesh``) and
any kind outside Istio's API groups (a cluster dump's Deployments,
ConfigMaps ...). An unknown kind in an Istio API group is an error (most
likely a typo). Every finding names the file, the
1-based document index, ``kind/name`` and the field path. Loading never
raises on bad input: it returns every issue found, and a config with an error
is never applied (:func:`load_mesh` raises :class:`MeshConfigError`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from proxyless.controlplane.istio.destination_rule import parse_destination_rule
from proxyless.controlplane.istio.kubernetes import (
    KUBERNETES_KINDS,
    KubeObject,
    kubernetes_service_entries,
)
from proxyless.controlplane.istio.model import (
    AuthorizationPolicy,
    DestinationRule,
    Issue,
    MeshConfig,
    PeerAuthentication,
    ServiceEntry,
    Source,
    VirtualService,
    WorkloadEntry,
)
from proxyless.controlplane.istio.reader import DocReader
from proxyless.controlplane.istio.refs import check_references
from proxyless.controlplane.istio.security import (
    parse_authorization_policy,
    parse_peer_authentication,
)
from proxyless.controlplane.istio.service_entry import parse_service_entry, parse_workload_entry
from proxyless.controlplane.istio.virtual_service import parse_virtual_service
from proxyless.errors import ProxylessError

__all__ = ["LoadResult", "MeshConfigError", "load_files", "load_mesh", "load_text"]

_NETWORKING = (
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
)
_SECURITY = ("security.istio.io/v1", "security.istio.io/v1beta1")

_Parser = Callable[[DocReader, dict[str, Any]], object | None]

_KINDS: dict[str, tuple[tuple[str, ...], _Parser]] = {
    "ServiceEntry": (_NETWORKING, parse_service_entry),
    "WorkloadEntry": (_NETWORKING, parse_workload_entry),
    "VirtualService": (_NETWORKING, parse_virtual_service),
    "DestinationRule": (_NETWORKING, parse_destination_rule),
    "PeerAuthentication": (_SECURITY, parse_peer_authentication),
    "AuthorizationPolicy": (_SECURITY, parse_authorization_policy),
}
_IGNORED_KINDS = frozenset(
    {
        "Gateway",
        "Sidecar",
        "EnvoyFilter",
        "WorkloadGroup",
        "ProxyConfig",
        "Telemetry",
        "WasmPlugin",
        "RequestAuthentication",
    }
)
_SKIPPED = "only shapes gateways or other proxies; skipped"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class MeshConfigError(ProxylessError):
    """A mesh config has errors; ``issues`` lists every finding (errors first)."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues = sorted(issues, key=lambda i: (not i.is_error, i.file, i.doc))
        errors = [i for i in self.issues if i.is_error]
        lines = "\n".join(f"  {i}" for i in errors)
        super().__init__(
            f"invalid mesh config ({len(errors)} error{'s' * (len(errors) != 1)}):\n{lines}"
        )

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.is_error]


@dataclass(frozen=True, slots=True)
class LoadResult:
    mesh: MeshConfig
    issues: tuple[Issue, ...]

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.is_error]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if not i.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last)."""


def _construct_mapping(
    loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return dict(loader.construct_mapping(node, deep=deep))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _documents(text: str, file: str, issues: list[Issue]) -> list[tuple[int, Any]]:
    docs: list[tuple[int, Any]] = []
    index = 0
    try:
        for index, doc in enumerate(yaml.load_all(text, Loader=_StrictLoader), start=1):
            if isinstance(doc, dict) and doc.get("kind") == "List" and "items" in doc:
                items = doc["items"]
                docs += [(index, item) for item in items or () if item is not None]
            elif doc is not None:
                docs.append((index, doc))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        issues.append(
            Issue("error", file, index + 1, "", "", "", f"invalid YAML{where}: {problem}")
        )
    return docs


def _skip(doc: dict[str, Any], kind: str, api: Any) -> str | None:
    """Why a document is skipped (one info line), or None to read it."""
    if kind in _IGNORED_KINDS:
        return f"{kind} {_SKIPPED}"
    if kind == "VirtualService":
        spec = doc.get("spec")
        gateways = spec.get("gateways") if isinstance(spec, dict) else None
        if isinstance(gateways, list) and gateways and "mesh" not in gateways:
            return "bound only to gateways (no 'mesh'): an ingress route, skipped for the mesh"
    if kind in _KINDS or kind in KUBERNETES_KINDS:
        return None
    group = api.split("/")[0] if isinstance(api, str) and "/" in api else ""
    if not group.endswith("istio.io"):
        return f"{kind} ({api}) is not a kind the mesh reads; skipped"
    return None


def _parse_document(
    file: str, index: int, doc: Any, out: dict[str, list[Any]], kube: list[KubeObject]
) -> list[Issue]:
    if not isinstance(doc, dict):
        return [
            Issue(
                "error",
                file,
                index,
                "",
                "",
                "",
                "a document must be a mapping with apiVersion, kind, metadata and spec",
            )
        ]
    kind = doc.get("kind")
    raw_meta = doc.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    raw_name = meta.get("name")
    name = raw_name if isinstance(raw_name, str) else ""
    namespace = meta.get("namespace", "default")
    source = Source(
        file,
        index,
        kind if isinstance(kind, str) else "",
        name,
        namespace if isinstance(namespace, str) else "default",
    )
    r = DocReader(source)
    if not isinstance(kind, str) or not kind:
        r.error("kind", "is required")
        return r.issues
    skipped = _skip(doc, kind, doc.get("apiVersion"))
    if skipped is not None:
        path = "spec.gateways" if kind == "VirtualService" else "kind"
        r.issues.append(Issue.at("info", source, path, skipped))
        return r.issues
    if kind in KUBERNETES_KINDS:
        return r.issues + _kube_object(doc, kind, source, kube)
    r.mapping(doc, "", known=("apiVersion", "kind", "metadata", "spec", "status"))
    if kind not in _KINDS:
        supported = ", ".join(sorted(_KINDS))
        r.error("kind", f"unknown kind {kind!r}; supported kinds: {supported}")
        return r.issues
    versions, parser = _KINDS[kind]
    api = r.string(doc.get("apiVersion"), "apiVersion", required=True)
    if api is not None and api not in versions:
        r.error("apiVersion", f"{kind} needs one of {', '.join(versions)}; got {api!r}")
    r.mapping(doc.get("metadata"), "metadata", required=True)
    if "metadata" in doc and isinstance(doc["metadata"], dict):
        checked = r.string(meta.get("name"), "metadata.name", required=True)
        if checked and (len(checked) > 253 or not _DNS_SUBDOMAIN.match(checked)):
            r.error(
                "metadata.name",
                f"must be a lower-case DNS name (a-z, 0-9, '-', '.'), got {checked!r}",
            )
        raw_ns = r.string(meta.get("namespace"), "metadata.namespace")
        if raw_ns is not None and (len(raw_ns) > 63 or not _DNS_LABEL.match(raw_ns)):
            r.error("metadata.namespace", f"must be a lower-case DNS label, got {raw_ns!r}")
    optional_spec = kind in ("PeerAuthentication", "AuthorizationPolicy")
    spec = r.mapping(doc.get("spec", {} if optional_spec else None), "spec", required=True)
    if spec is None:
        return r.issues
    sub = DocReader(source)
    parsed = parser(sub, spec)
    if parsed is not None:  # kept even with errors so cross-document checks still run
        out[kind].append(parsed)
    return r.issues + sub.issues


def _kube_object(
    doc: dict[str, Any], kind: str, source: Source, kube: list[KubeObject]
) -> list[Issue]:
    sub = DocReader(source)
    api = sub.string(doc.get("apiVersion"), "apiVersion", required=True)
    versions = KUBERNETES_KINDS[kind]
    if api is not None and api not in versions:
        sub.error("apiVersion", f"{kind} needs one of {', '.join(versions)}; got {api!r}")
    meta = sub.mapping(doc.get("metadata"), "metadata", required=True) or {}
    name = sub.string(meta.get("name"), "metadata.name", required=True)
    labels = sub.labels(meta.get("labels"), "metadata.labels")
    annotations = sub.labels(meta.get("annotations"), "metadata.annotations")
    if name and sub.ok:
        kube.append(KubeObject(source, doc, labels, annotations))
    return sub.issues


def _load(sources: Iterable[tuple[str, str]]) -> LoadResult:
    issues: list[Issue] = []
    out: dict[str, list[Any]] = {kind: [] for kind in _KINDS}
    kube: list[KubeObject] = []
    for file, text in sources:
        for index, doc in _documents(text, file, issues):
            issues.extend(_parse_document(file, index, doc, out, kube))
    kube_entries, kube_issues = kubernetes_service_entries(kube)
    issues += kube_issues
    se: list[ServiceEntry] = [*kube_entries, *out["ServiceEntry"]]
    we: list[WorkloadEntry] = out["WorkloadEntry"]
    vs: list[VirtualService] = out["VirtualService"]
    dr: list[DestinationRule] = out["DestinationRule"]
    pa: list[PeerAuthentication] = out["PeerAuthentication"]
    ap: list[AuthorizationPolicy] = out["AuthorizationPolicy"]
    mesh = MeshConfig(
        service_entries=tuple(se),
        workload_entries=tuple(we),
        virtual_services=tuple(vs),
        destination_rules=tuple(dr),
        peer_authentications=tuple(pa),
        authorization_policies=tuple(ap),
    )
    issues.extend(check_references(mesh))
    mesh = MeshConfig(
        service_entries=mesh.service_entries,
        workload_entries=mesh.workload_entries,
        virtual_services=mesh.virtual_services,
        destination_rules=mesh.destination_rules,
        peer_authentications=mesh.peer_authentications,
        authorization_policies=mesh.authorization_policies,
        warnings=tuple(i for i in issues if not i.is_error),
    )
    return LoadResult(mesh, tuple(issues))


def load_text(text: str, file: str = "<config>") -> LoadResult:
    """Parse and check YAML ``text``; ``file`` names it in messages."""
    return _load([(file, text)])


def load_files(paths: Iterable[str | Path]) -> LoadResult:
    """Parse and check several files as one mesh (unreadable files are errors)."""
    sources: list[tuple[str, str]] = []
    issues: list[Issue] = []
    for path in paths:
        try:
            sources.append((str(path), Path(path).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(Issue("error", str(path), 0, "", "", "", f"cannot read: {exc}"))
    result = _load(sources)
    return LoadResult(result.mesh, tuple(issues) + result.issues)


def load_mesh(text: str, file: str = "<config>") -> MeshConfig:
    """The validated mesh of ``text``; raises :class:`MeshConfigError` on any error."""
    result = load_text(text, file)
    if not result.ok:
        raise MeshConfigError(result.issues)
    return result.mesh
