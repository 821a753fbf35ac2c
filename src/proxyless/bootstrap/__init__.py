"""The xDS bootstrap: where the xDS servers are and who this node is.

Model and loader for the bootstrap format of gRFC A27, with A29 certificate
providers, A47 federation (authorities, resource name templates) and A65
``tls`` channel credentials. No sockets, no gRPC: this package only reads and
validates configuration. See docs/bootstrap.md.
"""

from __future__ import annotations

from proxyless.bootstrap.loader import legacy_flag_warnings, load_bootstrap
from proxyless.bootstrap.model import (
    Authority,
    Bootstrap,
    CertificateProviderInstance,
    ChannelCreds,
    Locality,
    Node,
    XdsServer,
)

__all__ = [
    "Authority",
    "Bootstrap",
    "CertificateProviderInstance",
    "ChannelCreds",
    "Locality",
    "Node",
    "XdsServer",
    "legacy_flag_warnings",
    "load_bootstrap",
]
