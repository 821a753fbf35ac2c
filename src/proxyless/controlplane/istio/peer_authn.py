"""The mTLS mode a workload port accepts, from PeerAuthentication.

Istio's precedence (istio.io/latest/docs/reference/config/security/
peer_authentication/ and .../concepts/security/#peer-authentication):

* a **workload** policy (``selector`` matching the workload's labels, in the
  workload's namespace) beats a **namespace** policy (no selector, in the
  workload's namespace), which beats the **mesh** policy (no selector, in the
  root namespace :data:`ROOT_NAMESPACE`);
* among several policies of one level the first in file order wins (Istio
  takes the oldest);
* ``UNSET`` inherits from the next level up; when nothing sets a mode the
  workload is ``PERMISSIVE``;
* ``portLevelMtls`` (only on policies with a selector) overrides the mode
  for that workload port (the port the workload listens on, not the service
  port); a port-level ``UNSET`` inherits the workload's resolved mode.

Pure functions over the validated :class:`~.model.MeshConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxyless.controlplane.istio.model import MeshConfig, PeerAuthentication
from proxyless.controlplane.istio.registry import selects
from proxyless.controlplane.istio.visibility import DEFAULT_ROOT_NAMESPACE

__all__ = [
    "DISABLE",
    "PERMISSIVE",
    "ROOT_NAMESPACE",
    "STRICT",
    "WorkloadMtls",
    "workload_mtls",
]

#: Istio's default mesh root namespace (MeshConfig ``rootNamespace``).
ROOT_NAMESPACE = DEFAULT_ROOT_NAMESPACE
STRICT = "STRICT"
PERMISSIVE = "PERMISSIVE"
DISABLE = "DISABLE"
_UNSET = "UNSET"


@dataclass(frozen=True, slots=True)
class WorkloadMtls:
    """A workload's resolved mode and its port-level overrides (never ``UNSET``)."""

    mode: str = PERMISSIVE
    ports: tuple[tuple[int, str], ...] = ()
    #: The documents that decided, most specific first (for messages).
    decided_by: tuple[str, ...] = ()

    def for_port(self, port: int) -> str:
        for number, mode in self.ports:
            if number == port:
                return mode
        return self.mode


def _first(policies: list[PeerAuthentication]) -> PeerAuthentication | None:
    return policies[0] if policies else None


def workload_mtls(mesh: MeshConfig, namespace: str, labels: Mapping[str, str]) -> WorkloadMtls:
    """The mode of a workload in ``namespace`` with ``labels`` (see the module docstring)."""
    in_ns = [pa for pa in mesh.peer_authentications if pa.source.namespace == namespace]
    workload = _first([pa for pa in in_ns if pa.selector and selects(pa.selector, labels)])
    ns_level = _first([pa for pa in in_ns if not pa.selector])
    mesh_level = _first(
        [
            pa
            for pa in mesh.peer_authentications
            if pa.source.namespace == ROOT_NAMESPACE and not pa.selector
        ]
    )
    mode = PERMISSIVE
    decided: list[str] = []
    for policy in (mesh_level, ns_level, workload):
        if policy is not None and policy.mode != _UNSET:
            mode = policy.mode
            decided.insert(0, policy.source.key)
    ports: list[tuple[int, str]] = []
    if workload is not None:
        for number, port_mode in workload.port_modes:
            ports.append((number, mode if port_mode == _UNSET else port_mode))
    return WorkloadMtls(mode, tuple(sorted(ports)), tuple(decided))
