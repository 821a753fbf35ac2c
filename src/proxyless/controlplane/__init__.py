"""The embedded control plane: an ADS server and the Istio YAML -> xDS translation."""

from proxyless.controlplane.model import NodeInfo, ReceivedRequest, Snapshot
from proxyless.controlplane.server import AdsServer, SentResponse

__all__ = ["AdsServer", "NodeInfo", "ReceivedRequest", "SentResponse", "Snapshot"]
