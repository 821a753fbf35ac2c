"""The embedded control plane: an ADS server serving Istio YAML translated to xDS.

* :class:`ControlPlane` — Istio YAML (file or text) in, xDS out, hot reloaded;
  also the ``proxyless control-plane`` command.
* :class:`AdsServer` — the State-of-the-World and Delta ADS server underneath,
  usable alone with static resources.
* :func:`render_example` — the bundled example meshes with their endpoints filled in.
* :class:`NodeIdentity` — a workload identity (namespace, service account) the
  control plane issues SPIFFE SVIDs for.
"""

from proxyless.controlplane.embedded import ControlPlane
from proxyless.controlplane.examples import example_names, render_example
from proxyless.controlplane.identity import NodeIdentity
from proxyless.controlplane.istio.load import MeshConfigError
from proxyless.controlplane.model import NodeInfo, ReceivedRequest, Snapshot
from proxyless.controlplane.server import AdsServer, SentResponse

__all__ = [
    "AdsServer",
    "ControlPlane",
    "MeshConfigError",
    "NodeIdentity",
    "NodeInfo",
    "ReceivedRequest",
    "SentResponse",
    "Snapshot",
    "example_names",
    "render_example",
]
