"""TLS model: SDS secrets and upstream TLS contexts (gRFC A29, Envoy SDS).

Implements ``envoy.extensions.transport_sockets.tls.v3`` ``Secret``,
``UpstreamTlsContext``/``CommonTlsContext`` and
``CertificateValidationContext`` as far as a client uses them. Unlike gRPC
(gRFC A29, which NACKs SDS), proxyless accepts identities and validation
contexts by SDS secret name as well as by certificate-provider instance.

Data sources keep the inline bytes or the file name as written; the model
never reads files; :mod:`proxyless.security` loads the material. An SDS
secret comes from the ADS stream or from a separate SDS server
(:class:`SdsServer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from proxyless.resources.model.matchers import StringMatcher

__all__ = [
    "CertificateProviderInstance",
    "CertificateValidationContext",
    "DataSource",
    "SanMatcher",
    "SanType",
    "SdsSecretConfig",
    "SdsServer",
    "Secret",
    "TlsCertificate",
    "TlsIdentity",
    "UpstreamTlsContext",
]

SanType = Literal["ANY", "DNS", "URI", "EMAIL", "IP_ADDRESS", "OTHER_NAME"]


@dataclass(frozen=True, slots=True)
class DataSource:
    """``envoy.config.core.v3.DataSource``: exactly one of ``inline`` (from
    ``inline_bytes`` or UTF-8 ``inline_string``) and ``filename`` is set."""

    inline: bytes | None = None
    filename: str | None = None


@dataclass(frozen=True, slots=True)
class TlsCertificate:
    """``TlsCertificate``: a PEM certificate chain and its private key."""

    certificate_chain: DataSource
    private_key: DataSource


@dataclass(frozen=True, slots=True)
class CertificateProviderInstance:
    """``CertificateProviderPluginInstance``: a bootstrap ``certificate_providers``
    instance (e.g. ``file_watcher``) and an optional certificate name."""

    instance_name: str
    certificate_name: str = ""


@dataclass(frozen=True, slots=True)
class SdsServer:
    """A separate SDS server, from an ``SdsSecretConfig.sds_config`` whose
    ``api_config_source`` is GRPC: ``target`` is a ``google_grpc`` target URI
    (e.g. ``unix:/var/run/secrets/workload-spiffe-uds/socket``, where
    istio-agent and SPIRE agent serve ``StreamSecrets``); ``cluster`` an
    ``envoy_grpc`` cluster name, which the Mesh maps to a target. Exactly one
    is set."""

    target: str = ""
    cluster: str = ""

    def __str__(self) -> str:
        return self.target or f"cluster {self.cluster!r}"


@dataclass(frozen=True, slots=True)
class SdsSecretConfig:
    """``SdsSecretConfig``: a secret fetched by name over SDS, on the ADS
    stream (``server`` None: no ``sds_config``, or ``ads``/``self``) or from
    a separate SDS server."""

    name: str
    server: SdsServer | None = None


#: Where the client's own certificate comes from.
TlsIdentity: TypeAlias = TlsCertificate | SdsSecretConfig | CertificateProviderInstance


@dataclass(frozen=True, slots=True)
class SanMatcher:
    """A subject-alt-name matcher. ``san_type`` "ANY" comes from the legacy
    ``match_subject_alt_names`` (checked against DNS, URI, email and IP SANs,
    gRFC A29); typed ones from ``match_typed_subject_alt_names``. ``oid`` is
    set for OTHER_NAME only."""

    san_type: SanType
    matcher: StringMatcher
    oid: str = ""


@dataclass(frozen=True, slots=True)
class CertificateValidationContext:
    """``CertificateValidationContext``: how the peer is verified.

    Trust comes from ``trusted_ca``, ``ca_certificate_provider`` or the
    system roots (``system_root_certs``). An empty
    ``match_subject_alt_names`` accepts any SAN (gRFC A29).
    """

    trusted_ca: DataSource | None = None
    ca_certificate_provider: CertificateProviderInstance | None = None
    system_root_certs: bool = False
    match_subject_alt_names: tuple[SanMatcher, ...] = ()


@dataclass(frozen=True, slots=True)
class UpstreamTlsContext:
    """``UpstreamTlsContext`` from a Cluster's ``transport_socket``
    (``envoy.transport_sockets.tls``).

    ``validation`` is the static (or ``combined_validation_context``
    default) context; ``validation_sds_secret`` names a dynamic one which,
    when both are set, is merged over the static one as Envoy does. At
    least one of them is set. ``identity`` None: no client certificate.
    """

    sni: str = ""
    identity: TlsIdentity | None = None
    validation: CertificateValidationContext | None = None
    validation_sds_secret: str | None = None
    alpn_protocols: tuple[str, ...] = ()
    #: where ``validation_sds_secret`` is fetched from (None: the ADS stream)
    validation_sds_server: SdsServer | None = None

    @property
    def validation_sds(self) -> SdsSecretConfig | None:
        """The dynamic validation context as an :class:`SdsSecretConfig`."""
        if self.validation_sds_secret is None:
            return None
        return SdsSecretConfig(self.validation_sds_secret, self.validation_sds_server)


@dataclass(frozen=True, slots=True)
class Secret:
    """SDS ``envoy.extensions.transport_sockets.tls.v3.Secret``: exactly one of
    ``tls_certificate`` and ``validation_context`` is set."""

    name: str
    tls_certificate: TlsCertificate | None = None
    validation_context: CertificateValidationContext | None = None
    ignored_fields: tuple[str, ...] = ()
