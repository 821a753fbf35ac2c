"""Server-side Listener model (LDS) for xDS-enabled gRPC servers (gRFC A36).

An inbound ``envoy.config.listener.v3.Listener`` has an ``address`` and
``filter_chains`` instead of an ``api_listener``. Each
:class:`FilterChain` carries the criteria a new connection is matched on
(:class:`FilterChainMatch`), the connection's security (a
:class:`DownstreamTlsContext` from the ``envoy.transport_sockets.tls``
transport socket, or None for plaintext) and its HttpConnectionManager
(routes and HTTP filters, gRFC A36/A39/A41).

Beyond gRFC A36, ``transport_protocol`` may be ``"tls"`` as well as
``"raw_buffer"``: the server tells a TLS ClientHello from plaintext on the
first bytes of a connection, as Envoy's TLS inspector does, and so serves
PERMISSIVE (mTLS and plaintext on one port).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proxyless.resources.model.listener import HttpFilter
from proxyless.resources.model.rbac import CidrRange
from proxyless.resources.model.route import RouteConfiguration
from proxyless.resources.model.security import CertificateValidationContext, TlsIdentity

__all__ = [
    "DownstreamTlsContext",
    "FilterChain",
    "FilterChainMatch",
    "ServerHcm",
    "ServerListener",
    "SourceType",
]

SourceType = Literal["ANY", "SAME_IP_OR_LOOPBACK", "EXTERNAL"]


@dataclass(frozen=True, slots=True)
class FilterChainMatch:
    """``FilterChainMatch`` fields a gRPC server uses (gRFC A36), plus
    ``transport_protocol`` ``"tls"`` (see the module docstring)."""

    destination_port: int | None = None
    prefix_ranges: tuple[CidrRange, ...] = ()
    transport_protocol: str = ""
    source_type: SourceType = "ANY"
    source_prefix_ranges: tuple[CidrRange, ...] = ()
    source_ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class DownstreamTlsContext:
    """``DownstreamTlsContext``: the server's certificate (``identity``), how
    client certificates are verified and whether one is required (mTLS).

    ``validation`` / ``validation_sds_secret`` are as in
    :class:`~proxyless.resources.model.security.UpstreamTlsContext`; at
    least one is set when ``require_client_certificate`` is.
    """

    identity: TlsIdentity
    validation: CertificateValidationContext | None = None
    validation_sds_secret: str | None = None
    require_client_certificate: bool = False

    @property
    def verifies_clients(self) -> bool:
        return self.validation is not None or self.validation_sds_secret is not None


@dataclass(frozen=True, slots=True)
class ServerHcm:
    """The filter chain's HttpConnectionManager: an inline route
    configuration and the HTTP filters (router last)."""

    route_config: RouteConfiguration
    http_filters: tuple[HttpFilter, ...]


@dataclass(frozen=True, slots=True)
class FilterChain:
    """One filter chain: match criteria, security, HCM."""

    name: str
    match: FilterChainMatch
    tls: DownstreamTlsContext | None
    hcm: ServerHcm


@dataclass(frozen=True, slots=True)
class ServerListener:
    """An inbound Listener for an xDS-enabled server (gRFC A36).

    ``host``/``port`` come from ``address.socket_address``;
    ``default_filter_chain`` serves connections no chain matches (None:
    such connections are closed).
    """

    name: str
    host: str
    port: int
    filter_chains: tuple[FilterChain, ...]
    default_filter_chain: FilterChain | None = None
    ignored_fields: tuple[str, ...] = ()
