"""DestinationRule ``tls.mode: ISTIO_MUTUAL`` -> a Cluster's TLS ``transport_socket``.

Follows istiod (pilot/pkg/networking/core cluster_tls.go for Envoy,
pilot/pkg/networking/grpcgen cds.go for gRPC) and Envoy's
``envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext``:

* **SAN matchers**: the DestinationRule's ``subjectAltNames`` if given, else
  the destination's service accounts as istiod computes them — the SPIFFE
  IDs ``spiffe://<trust domain>/ns/<ns>/sa/<sa>`` of the service's endpoints
  that declare a ``serviceAccount`` plus the ServiceEntry's
  ``subjectAltNames``, sorted and unique; one ``exact`` matcher each in
  ``match_subject_alt_names``. The same list for every port and subset of
  the service. No service account at all means no matcher (any identity of
  the trust domain), as in istiod; ``proxyless analyze`` warns about it.
* **Envoy nodes**: SNI ``outbound_.<port>_.<subset>_.<host>`` (unless
  ``tls.sni``), ALPN ``istio-peer-exchange``, ``istio`` (plus ``h2`` on
  HTTP/2 clusters), TLS 1.2 to 1.3, the workload certificate from SDS secret
  ``default`` and the trust bundle from SDS secret ``ROOTCA``, both over ADS
  (``sds_config: {ads: {}}``) from this control plane instead of
  istio-agent's ``sds-grpc`` cluster.
* **proxyless nodes** (our own client): the same SDS secrets, without Istio's
  SNI (unless ``tls.sni``: it names the cluster for an Envoy server's filter
  chains, while a gRPC server holds one certificate and logs every name it
  does not know), ALPN values and TLS parameters, which are Envoy-to-Envoy
  conventions (the client negotiates ``h2`` itself).
* **gRPC nodes** (istiod's gRPC generator shape, for grpcio and other
  gRFC A29 clients that take certificates from a bootstrap
  ``file_watcher``): certificate-provider instance ``default`` with
  certificates ``default`` and ``ROOTCA``, in both generations of fields —
  ``tls_certificate_provider_instance`` and
  ``default_validation_context.ca_certificate_provider_instance``, and the
  deprecated ``tls_certificate_certificate_provider_instance`` and
  ``combined_validation_context.validation_context_certificate_provider_instance``
  — no SNI, no ALPN.

``SIMPLE`` and ``MUTUAL`` (TLS origination with PEM files, as istiod does
for sidecars but with the files as ``filename`` data sources instead of
istio-agent's ``file-cert:`` / ``file-root:`` SDS names): the client
certificate and key (MUTUAL), ``trusted_ca`` from ``caCertificates`` or,
when it is not given, the system roots: ``system_root_certs`` for proxyless
and gRPC nodes, and for Envoy nodes (Envoy refuses SAN matchers without a
trusted CA) the system CA bundle file found on the control plane's machine
(``SSL_CERT_FILE``, Python's default verify file, the usual distribution
paths), as istio-agent resolves ``caCertificates: system``; SNI ``tls.sni``
or the service host, ALPN ``h2`` on HTTP/2 ports and TLS 1.2 to 1.3 for
Envoy nodes; SAN matchers ``tls.subjectAltNames``, else the service's
accounts, else — when the SNI is the service host — the host itself, which
is what istiod's ``auto_san_validation`` checks. The same context goes to
every kind of node (a gRFC A29 client NACKs file data sources: the cluster
fails closed rather than going out plaintext).

``DISABLE`` (and no ``tls``) leaves the cluster plaintext.
"""

from __future__ import annotations

import os
import ssl

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2

from proxyless.controlplane.ca import spiffe_id
from proxyless.controlplane.istio.model import ClientTls, Issue
from proxyless.controlplane.istio.registry import Registry, Service

__all__ = [
    "ALPN_ISTIO",
    "ALPN_ISTIO_H2",
    "PROVIDER_INSTANCE",
    "STYLE_ENVOY",
    "STYLE_PROVIDER",
    "STYLE_SDS",
    "TLS_TRANSPORT_SOCKET",
    "file_tls_context",
    "istio_mutual_pitfalls",
    "istio_sni",
    "service_accounts",
    "system_ca_bundle",
    "upstream_tls_context",
    "upstream_transport_socket",
]

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
#: The certificate-provider instance istiod's gRPC generator names.
PROVIDER_INSTANCE = "default"
STYLE_ENVOY = "envoy"
STYLE_SDS = "sds"
STYLE_PROVIDER = "certificate_provider"
ALPN_ISTIO = ("istio-peer-exchange", "istio")
ALPN_ISTIO_H2 = ("istio-peer-exchange", "istio", "h2")
_WORKLOAD = "default"
_ROOT = "ROOTCA"


def istio_sni(port: int, subset: str, host: str) -> str:
    """istiod's default ISTIO_MUTUAL SNI (``model.BuildDNSSrvSubsetKey``)."""
    return f"outbound_.{port}_.{subset}_.{host}"


def service_accounts(service: Service, trust_domain: str) -> tuple[str, ...]:
    """The destination's SPIFFE IDs, as istiod computes a service's accounts."""
    found = {
        spiffe_id(trust_domain, service.namespace, ep.service_account)
        for ep in service.endpoints
        if ep.service_account
    }
    found.update(service.entry.subject_alt_names)
    return tuple(sorted(found))


def _ads_secret(name: str) -> secret_pb2.SdsSecretConfig:
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    source.ads.SetInParent()
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def _exact(sans: tuple[str, ...]) -> list[string_pb2.StringMatcher]:
    return [string_pb2.StringMatcher(exact=s) for s in sans]


def _provider_context(sans: tuple[str, ...]) -> common_pb2.CertificateValidationContext:
    default = common_pb2.CertificateValidationContext(match_subject_alt_names=_exact(sans))
    default.ca_certificate_provider_instance.CopyFrom(
        common_pb2.CertificateProviderPluginInstance(
            instance_name=PROVIDER_INSTANCE, certificate_name=_ROOT
        )
    )
    return default


def upstream_tls_context(
    style: str, *, sans: tuple[str, ...], sni: str, http2: bool
) -> tls_pb2.UpstreamTlsContext:
    """The ISTIO_MUTUAL ``UpstreamTlsContext`` for a node of ``style``."""
    common = tls_pb2.CommonTlsContext()
    combined = common.combined_validation_context
    if style == STYLE_PROVIDER:
        common.tls_certificate_provider_instance.CopyFrom(
            common_pb2.CertificateProviderPluginInstance(
                instance_name=PROVIDER_INSTANCE, certificate_name=_WORKLOAD
            )
        )
        common.tls_certificate_certificate_provider_instance.CopyFrom(
            tls_pb2.CommonTlsContext.CertificateProviderInstance(
                instance_name=PROVIDER_INSTANCE, certificate_name=_WORKLOAD
            )
        )
        combined.validation_context_certificate_provider_instance.CopyFrom(
            tls_pb2.CommonTlsContext.CertificateProviderInstance(
                instance_name=PROVIDER_INSTANCE, certificate_name=_ROOT
            )
        )
        combined.default_validation_context.CopyFrom(_provider_context(sans))
        return tls_pb2.UpstreamTlsContext(common_tls_context=common)
    if style == STYLE_ENVOY:
        common.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TLSv1_2
        common.tls_params.tls_maximum_protocol_version = common_pb2.TlsParameters.TLSv1_3
        common.alpn_protocols.extend(ALPN_ISTIO_H2 if http2 else ALPN_ISTIO)
    common.tls_certificate_sds_secret_configs.append(_ads_secret(_WORKLOAD))
    combined.default_validation_context.match_subject_alt_names.extend(_exact(sans))
    combined.validation_context_sds_secret_config.CopyFrom(_ads_secret(_ROOT))
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=sni)


_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)


def system_ca_bundle() -> str | None:
    """The system's CA bundle file, if one is found (see the module docstring)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get("SSL_CERT_FILE"), paths.cafile, *_SYSTEM_BUNDLES):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def file_tls_context(
    style: str, tls: ClientTls, *, sans: tuple[str, ...], sni: str, http2: bool
) -> tls_pb2.UpstreamTlsContext:
    """The SIMPLE / MUTUAL ``UpstreamTlsContext`` (file data sources)."""
    common = tls_pb2.CommonTlsContext()
    if style == STYLE_ENVOY:
        common.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TLSv1_2
        common.tls_params.tls_maximum_protocol_version = common_pb2.TlsParameters.TLSv1_3
        if http2:
            common.alpn_protocols.append("h2")
    if tls.mode == "MUTUAL":
        cert = common.tls_certificates.add()
        cert.certificate_chain.filename = tls.client_certificate
        cert.private_key.filename = tls.private_key
    validation = common.validation_context
    bundle = tls.ca_certificates or (system_ca_bundle() if style == STYLE_ENVOY else None)
    if bundle:
        validation.trusted_ca.filename = bundle
    else:
        validation.system_root_certs.SetInParent()
    validation.match_subject_alt_names.extend(_exact(sans))
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=sni)


def upstream_transport_socket(
    style: str,
    tls: ClientTls,
    service: Service,
    port: int,
    subset: str,
    *,
    trust_domain: str,
    http2: bool,
) -> base_pb2.TransportSocket | None:
    """The cluster's ``transport_socket`` for ``tls`` (None: plaintext)."""
    context: tls_pb2.UpstreamTlsContext
    if tls.mode == "ISTIO_MUTUAL":
        sans = tls.subject_alt_names or service_accounts(service, trust_domain)
        # Istio's SNI names the cluster for Envoy servers' filter chains; a
        # gRPC server has one certificate and would log each unknown name.
        sni = tls.sni or (istio_sni(port, subset, service.host) if style == STYLE_ENVOY else "")
        context = upstream_tls_context(style, sans=sans, sni=sni, http2=http2)
    elif tls.mode in ("SIMPLE", "MUTUAL"):
        sni = tls.sni or service.host
        sans = tls.subject_alt_names or service_accounts(service, trust_domain)
        if not sans and not tls.sni:
            sans = (service.host,)
        context = file_tls_context(style, tls, sans=sans, sni=sni, http2=http2)
    else:
        return None
    packed = any_pb2.Any()
    packed.Pack(context, deterministic=True)
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=packed)


def istio_mutual_pitfalls(registry: Registry) -> list[Issue]:
    """A warning per DestinationRule whose ISTIO_MUTUAL clusters would carry no
    SAN matcher (no endpoint declares a ``serviceAccount``, no
    ``subjectAltNames``): any identity of the trust domain would be accepted."""
    issues = []
    for host, rule in registry.destination_rules.items():
        service = registry.services.get(host)
        if service is None or service_accounts(service, "-"):
            continue
        policies = [
            registry.policy(host, port.number, subset)
            for port in service.ports
            for subset in ("", *(s.name for s in rule.subsets))
        ]
        if any(
            p is not None
            and p.tls is not None
            and p.tls.mode == "ISTIO_MUTUAL"
            and not p.tls.subject_alt_names
            for p in policies
        ):
            issues.append(
                Issue.at(
                    "warning",
                    rule.source,
                    "spec",
                    f"ISTIO_MUTUAL to {host}: no endpoint declares a serviceAccount and the "
                    "ServiceEntry has no subjectAltNames, so the clusters pin no identity and "
                    "any workload of the trust domain is accepted as this service",
                )
            )
    return issues
