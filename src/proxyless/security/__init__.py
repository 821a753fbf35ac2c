"""Mesh security: workload identities, trust bundles, peer verification.

- :mod:`.material`: :class:`Identity` and :class:`TrustBundle`, parsed and
  checked once (cryptography), swapped whole on rotation.
- :mod:`.peer`: a peer certificate's SANs and the SAN-matcher check (gRFC A29).
- :mod:`.contexts`: ``ssl.SSLContext`` objects built from the material.
- :mod:`.credentials`: a TLS cluster's ``ClusterCredentials`` (fail closed).
- :mod:`.providers`: bootstrap ``certificate_providers`` (``file_watcher``).
- :mod:`.sds`: SDS secrets, on the ADS stream or from a separate SDS server.

See docs/security.md for the design and its threat model.
"""

from proxyless.security.contexts import client_context, server_context
from proxyless.security.material import (
    Identity,
    TrustBundle,
    load_identity,
    load_trust,
    spiffe_id_of,
    trust_domain,
)
from proxyless.security.peer import (
    PeerCertificate,
    check_sans,
    describe_matchers,
    peer_certificate,
)

__all__ = [
    "Identity",
    "PeerCertificate",
    "TrustBundle",
    "check_sans",
    "client_context",
    "describe_matchers",
    "load_identity",
    "load_trust",
    "peer_certificate",
    "server_context",
    "spiffe_id_of",
    "trust_domain",
]
