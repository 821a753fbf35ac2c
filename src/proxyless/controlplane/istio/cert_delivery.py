"""How a node receives its workload certificate and trust bundle: the one rule.

* **Envoy** nodes and **proxyless** nodes (``node.user_agent_name`` is
  ``"envoy"`` or ``"proxyless"``) get SDS over the same ADS stream: a TLS
  context names the secrets ``default`` (certificate chain and key) and
  ``ROOTCA`` (trust bundle), the names istio-agent serves.
* Every other node — grpcio's own xDS client, typically bootstrapped by
  istio-agent with ``GENERATOR: grpc`` — cannot take SDS (gRFC A29). It gets
  what istiod's gRPC generator sends: ``CertificateProviderPluginInstance``
  references to instance ``default`` (certificate name ``default``, and
  ``ROOTCA`` for validation), which the client resolves through its
  bootstrap ``certificate_providers`` (``file_watcher``).

Every TLS context the control plane writes (inbound and outbound) asks this
module which form to use.
"""

from __future__ import annotations

__all__ = [
    "CERTIFICATE_NAME",
    "PROVIDER",
    "PROVIDER_INSTANCE",
    "ROOT_CA_NAME",
    "SDS",
    "certificate_delivery",
]

SDS = "sds"
PROVIDER = "provider"
#: Secret / certificate names istio-agent uses.
CERTIFICATE_NAME = "default"
ROOT_CA_NAME = "ROOTCA"
#: The bootstrap ``certificate_providers`` instance istio-agent writes.
PROVIDER_INSTANCE = "default"

_SDS_AGENTS = frozenset({"envoy", "proxyless"})


def certificate_delivery(user_agent_name: str) -> str:
    """:data:`SDS` or :data:`PROVIDER` for a node with this ``user_agent_name``."""
    return SDS if user_agent_name in _SDS_AGENTS else PROVIDER
