"""Parse and validate TLS resources: SDS ``Secret`` and ``UpstreamTlsContext``.

Implements ``envoy.extensions.transport_sockets.tls.v3`` as far as a client
uses it (gRFC A29 for certificate-provider instances and SAN matchers,
Envoy's SDS docs for secrets by name). Settings that would make verification
weaker or stricter in ways proxyless cannot honour (SPKI/hash pinning, CRLs,
custom validators, SCTs) make the resource invalid rather than being
silently dropped; data sources must be inline or a file name.

Certificate provider instances have two generations of fields: the current
``tls_certificate_provider_instance`` and
``default_validation_context.ca_certificate_provider_instance``
(``CertificateProviderPluginInstance``) and the deprecated
``tls_certificate_certificate_provider_instance`` and
``combined_validation_context.validation_context_certificate_provider_instance``.
istiod's gRPC generator sets both generations on every ISTIO_MUTUAL cluster
(instance ``default``, certificates ``default`` and ``ROOTCA``) so that old
gRPC clients find theirs. When both are set they must name the same instance
and certificate, and the current field is used (gRPC C-core reads the current
field first); when they disagree the resource is NACKed at the deprecated
field. The deprecated ``match_subject_alt_names`` (where istiod puts the
destination's SPIFFE IDs as exact matchers) are kept as ``"ANY"`` SAN
matchers: checked against DNS, URI, email and IP SANs (gRFC A29), so the
SPIFFE ID in a peer's URI SAN is matched as a typed URI matcher would.

An ``SdsSecretConfig`` without ``sds_config``, or with ``ads``/``self``, is
fetched on the ADS stream. An ``api_config_source`` of type GRPC naming one
gRPC service (``google_grpc`` target URI without credentials or with local
credentials, or an ``envoy_grpc`` cluster) is a separate SDS server
(``StreamSecrets``, as istio-agent and SPIRE agent serve it on a unix
socket); REST, delta, file-based sources, TLS or call credentials to the SDS
server and ``initial_metadata`` are NACKed at their field.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from proxyless.resources.model.security import (
    CertificateProviderInstance,
    CertificateValidationContext,
    DataSource,
    SanMatcher,
    SdsSecretConfig,
    SdsServer,
    Secret,
    TlsCertificate,
    TlsIdentity,
    UpstreamTlsContext,
)
from proxyless.resources.parse.common import (
    Ctx,
    check_config_source,
    join,
    string_matcher,
    unhandled,
)
from proxyless.resources.parse.resource import decode_resource, parse_resource
from proxyless.xds_client.resource_type import DecodeResult

__all__ = [
    "decode_secret",
    "parse_secret",
    "upstream_tls_context",
]

_SAN_TYPES = {1: "EMAIL", 2: "DNS", 3: "URI", 4: "IP_ADDRESS", 5: "OTHER_NAME"}
_IDENTITY = "tls_certificate_provider_instance"
_IDENTITY_DEPRECATED = "tls_certificate_certificate_provider_instance"
_UNSUPPORTED_VALIDATION = (
    "verify_certificate_spki",
    "verify_certificate_hash",
    "require_signed_certificate_timestamp",
    "crl",
    "custom_validator_config",
)


def decode_secret(data: bytes) -> DecodeResult:
    """Decode serialized Secret bytes; never raises."""
    return decode_resource(data, secret_pb2.Secret, _secret)


def parse_secret(msg: Any) -> Secret:
    """Validate a Secret message; raise ResourceValidationError."""
    return parse_resource(msg, _secret)


def _secret(ctx: Ctx, msg: Any) -> Secret | None:
    unhandled(ctx, msg, "", ("name", "tls_certificate", "validation_context"))
    if not msg.name:
        ctx.error("name", "must not be empty")
    which = msg.WhichOneof("type")
    certificate = validation = None
    if which == "tls_certificate":
        certificate = _tls_certificate(ctx, "tls_certificate", msg.tls_certificate)
    elif which == "validation_context":
        validation = _validation_context(ctx, "validation_context", msg.validation_context)
    elif which is None:
        ctx.error("", "secret has neither tls_certificate nor validation_context")
    else:
        ctx.error(which, "unsupported secret type (tls_certificate or validation_context only)")
    if ctx.errors:
        return None
    return Secret(
        name=msg.name,
        tls_certificate=certificate,
        validation_context=validation,
        ignored_fields=tuple(ctx.ignored),
    )


def _data_source(ctx: Ctx, path: str, msg: Any) -> DataSource | None:
    unhandled(ctx, msg, path, ("filename", "inline_bytes", "inline_string", "environment_variable"))
    which = msg.WhichOneof("specifier")
    if which == "filename":
        if not msg.filename:
            ctx.error(join(path, "filename"), "must not be empty")
            return None
        return DataSource(filename=msg.filename)
    if which == "inline_bytes":
        return DataSource(inline=bytes(msg.inline_bytes))
    if which == "inline_string":
        return DataSource(inline=msg.inline_string.encode())
    if which is None:
        ctx.error(path, "no data (filename, inline_bytes or inline_string)")
    else:
        ctx.error(join(path, which), "unsupported data source")
    return None


def _tls_certificate(ctx: Ctx, path: str, msg: Any) -> TlsCertificate | None:
    unhandled(
        ctx, msg, path, ("certificate_chain", "private_key", "pkcs12", "private_key_provider")
    )
    for unsupported in ("pkcs12", "private_key_provider"):
        if msg.HasField(unsupported):
            ctx.error(join(path, unsupported), "is not supported")
    chain = key = None
    if not msg.HasField("certificate_chain"):
        ctx.error(join(path, "certificate_chain"), "is required")
    else:
        chain = _data_source(ctx, join(path, "certificate_chain"), msg.certificate_chain)
    if not msg.HasField("private_key"):
        ctx.error(join(path, "private_key"), "is required")
    else:
        key = _data_source(ctx, join(path, "private_key"), msg.private_key)
    if chain is None or key is None:
        return None
    return TlsCertificate(certificate_chain=chain, private_key=key)


def _provider(ctx: Ctx, path: str, msg: Any) -> CertificateProviderInstance | None:
    unhandled(ctx, msg, path, ("instance_name", "certificate_name"))
    if not msg.instance_name:
        ctx.error(join(path, "instance_name"), "must not be empty")
        return None
    return CertificateProviderInstance(
        instance_name=msg.instance_name, certificate_name=msg.certificate_name
    )


def _agree(
    ctx: Ctx,
    path: str,
    deprecated: CertificateProviderInstance | None,
    current_field: str,
    current: CertificateProviderInstance | None,
) -> None:
    """Record a problem at ``path`` when a deprecated provider field names
    another instance or certificate than its current counterpart."""
    if deprecated is None or current is None or deprecated == current:
        return
    ctx.error(
        path,
        f"names {_describe(deprecated)} but {current_field} names {_describe(current)}; "
        "when both generations are set they must agree",
    )


def _describe(provider: CertificateProviderInstance) -> str:
    return f"instance {provider.instance_name!r} certificate {provider.certificate_name!r}"


def _sds(ctx: Ctx, path: str, msg: Any) -> SdsSecretConfig | None:
    unhandled(ctx, msg, path, ("name", "sds_config"))
    if not msg.name:
        ctx.error(join(path, "name"), "must not be empty")
        return None
    server = None
    if msg.HasField("sds_config"):
        spath = join(path, "sds_config")
        if msg.sds_config.WhichOneof("config_source_specifier") == "api_config_source":
            server = _sds_server(ctx, spath, msg.sds_config)
            if server is None:
                return None
        else:
            check_config_source(ctx, spath, msg.sds_config)
    return SdsSecretConfig(name=msg.name, server=server)


_GRPC_API_TYPE = 2  # ApiConfigSource.GRPC
_V3 = 2  # ApiVersion.V3


def _sds_server(ctx: Ctx, path: str, source: Any) -> SdsServer | None:
    """A separate SDS server: ``api_config_source`` of type GRPC with one
    ``grpc_services`` entry, ``google_grpc`` (target URI; no credentials, or
    local credentials) or ``envoy_grpc`` (a cluster name)."""
    errors = len(ctx.errors)
    unhandled(
        ctx, source, path, ("api_config_source", "initial_fetch_timeout", "resource_api_version")
    )
    apath = join(path, "api_config_source")
    api = source.api_config_source
    unhandled(
        ctx,
        api,
        apath,
        ("api_type", "transport_api_version", "grpc_services", "set_node_on_first_message_only"),
    )
    if api.api_type != _GRPC_API_TYPE:
        kind = type(api).ApiType.Name(api.api_type)
        ctx.error(join(apath, "api_type"), f"must be GRPC (State of the World SDS), got {kind}")
    if api.transport_api_version not in (0, _V3):
        ctx.error(join(apath, "transport_api_version"), "must be V3")
    if api.cluster_names:
        ctx.error(join(apath, "cluster_names"), "is for REST sources; use grpc_services")
    if len(api.grpc_services) != 1:
        ctx.error(join(apath, "grpc_services"), "must name exactly one gRPC service")
        return None
    gpath = f"{join(apath, 'grpc_services')}[0]"
    service = api.grpc_services[0]
    unhandled(ctx, service, gpath, ("envoy_grpc", "google_grpc", "timeout"))
    if service.initial_metadata:
        ctx.error(join(gpath, "initial_metadata"), "is not supported")
    which = service.WhichOneof("target_specifier")
    server = None
    if which == "envoy_grpc":
        epath = join(gpath, "envoy_grpc")
        unhandled(ctx, service.envoy_grpc, epath, ("cluster_name",))
        if not service.envoy_grpc.cluster_name:
            ctx.error(join(epath, "cluster_name"), "must not be empty")
        server = SdsServer(cluster=service.envoy_grpc.cluster_name)
    elif which == "google_grpc":
        server = _google_grpc(ctx, join(gpath, "google_grpc"), service.google_grpc)
    else:
        ctx.error(gpath, "needs envoy_grpc or google_grpc")
    if len(ctx.errors) != errors:
        return None
    return server


def _google_grpc(ctx: Ctx, path: str, msg: Any) -> SdsServer:
    unhandled(ctx, msg, path, ("target_uri", "channel_credentials", "stat_prefix"))
    for unsupported in (
        "call_credentials",
        "call_credentials_plugin",
        "channel_credentials_plugin",
    ):
        if getattr(msg, unsupported):
            ctx.error(join(path, unsupported), "is not supported")
    if not msg.target_uri:
        ctx.error(join(path, "target_uri"), "must not be empty")
    if msg.HasField("channel_credentials"):
        which = msg.channel_credentials.WhichOneof("credential_specifier")
        if which not in ("local_credentials", None):
            ctx.error(
                join(path, f"channel_credentials.{which}"),
                "is not supported (an SDS server is reached without TLS, on a local socket)",
            )
    return SdsServer(target=msg.target_uri)


def _validation_context(ctx: Ctx, path: str, msg: Any) -> CertificateValidationContext | None:
    errors = len(ctx.errors)
    unhandled(
        ctx,
        msg,
        path,
        (
            "trusted_ca",
            "ca_certificate_provider_instance",
            "system_root_certs",
            "match_typed_subject_alt_names",
            "match_subject_alt_names",
            *_UNSUPPORTED_VALIDATION,
        ),
    )
    for name in _UNSUPPORTED_VALIDATION:
        field = getattr(msg, name)
        is_set = bool(field) if not hasattr(field, "ListFields") else msg.HasField(name)
        if is_set:
            ctx.error(join(path, name), "is not supported")
    trusted = None
    if msg.HasField("trusted_ca"):
        trusted = _data_source(ctx, join(path, "trusted_ca"), msg.trusted_ca)
    provider = None
    if msg.HasField("ca_certificate_provider_instance"):
        provider = _provider(
            ctx,
            join(path, "ca_certificate_provider_instance"),
            msg.ca_certificate_provider_instance,
        )
    if msg.HasField("trusted_ca") and msg.HasField("ca_certificate_provider_instance"):
        ctx.error(path, "trusted_ca and ca_certificate_provider_instance cannot both be set")
    sans: list[SanMatcher] = []
    for i, typed in enumerate(msg.match_typed_subject_alt_names):
        spath = f"{join(path, 'match_typed_subject_alt_names')}[{i}]"
        san_type = _SAN_TYPES.get(int(typed.san_type))
        if san_type is None:
            ctx.error(join(spath, "san_type"), "must be EMAIL, DNS, URI, IP_ADDRESS or OTHER_NAME")
            continue
        if san_type == "OTHER_NAME" and not typed.oid:
            ctx.error(join(spath, "oid"), "is required for OTHER_NAME")
            continue
        matcher = string_matcher(ctx, join(spath, "matcher"), typed.matcher)
        if matcher is not None:
            sans.append(
                SanMatcher(
                    san_type=san_type,  # type: ignore[arg-type]
                    matcher=matcher,
                    oid=typed.oid,
                )
            )
    for i, legacy in enumerate(msg.match_subject_alt_names):
        matcher = string_matcher(ctx, f"{join(path, 'match_subject_alt_names')}[{i}]", legacy)
        if matcher is not None:
            sans.append(SanMatcher(san_type="ANY", matcher=matcher))
    if len(ctx.errors) != errors:
        return None
    return CertificateValidationContext(
        trusted_ca=trusted,
        ca_certificate_provider=provider,
        system_root_certs=msg.HasField("system_root_certs"),
        match_subject_alt_names=tuple(sans),
    )


def upstream_tls_context(ctx: Ctx, path: str, msg: Any) -> UpstreamTlsContext | None:
    """Parse an ``UpstreamTlsContext`` (from a Cluster's transport socket) at ``path``."""
    errors = len(ctx.errors)
    unhandled(ctx, msg, path, ("common_tls_context", "sni"))
    cpath = join(path, "common_tls_context")
    common = msg.common_tls_context
    unhandled(
        ctx,
        common,
        cpath,
        (
            "tls_certificates",
            "tls_certificate_sds_secret_configs",
            "tls_certificate_provider_instance",
            "tls_certificate_certificate_provider_instance",
            "validation_context",
            "validation_context_sds_secret_config",
            "combined_validation_context",
            "validation_context_certificate_provider_instance",
            "alpn_protocols",
            "tls_certificate_certificate_provider",
            "custom_tls_certificate_selector",
        ),
    )
    for unsupported in ("tls_certificate_certificate_provider", "custom_tls_certificate_selector"):
        if common.HasField(unsupported):
            ctx.error(join(cpath, unsupported), "is not supported")
    identities: list[TlsIdentity | None] = []
    for i, cert in enumerate(common.tls_certificates):
        identities.append(_tls_certificate(ctx, f"{join(cpath, 'tls_certificates')}[{i}]", cert))
    for i, sds in enumerate(common.tls_certificate_sds_secret_configs):
        identities.append(
            _sds(ctx, f"{join(cpath, 'tls_certificate_sds_secret_configs')}[{i}]", sds)
        )
    # istiod sets both generations of the identity provider: one identity.
    current = deprecated = None
    if common.HasField(_IDENTITY):
        current = _provider(ctx, join(cpath, _IDENTITY), getattr(common, _IDENTITY))
    if common.HasField(_IDENTITY_DEPRECATED):
        dpath = join(cpath, _IDENTITY_DEPRECATED)
        deprecated = _provider(ctx, dpath, getattr(common, _IDENTITY_DEPRECATED))
        _agree(ctx, dpath, deprecated, _IDENTITY, current)
    if common.HasField(_IDENTITY) or common.HasField(_IDENTITY_DEPRECATED):
        identities.append(current or deprecated)
    if len(identities) > 1:
        ctx.error(cpath, "more than one client certificate is configured; only one is supported")
    identity = identities[0] if identities else None
    validation: CertificateValidationContext | None = None
    validation_sds: str | None = None
    validation_server: SdsServer | None = None
    which = common.WhichOneof("validation_context_type")
    vpath = join(cpath, which or "validation_context")
    if which == "validation_context":
        validation = _validation_context(ctx, vpath, common.validation_context)
    elif which == "validation_context_sds_secret_config":
        sds = _sds(ctx, vpath, common.validation_context_sds_secret_config)
        if sds is not None:
            validation_sds, validation_server = sds.name, sds.server
    elif which == "validation_context_certificate_provider_instance":
        provider = _provider(ctx, vpath, common.validation_context_certificate_provider_instance)
        validation = CertificateValidationContext(ca_certificate_provider=provider)
    elif which == "combined_validation_context":
        combined = common.combined_validation_context
        unhandled(
            ctx,
            combined,
            vpath,
            (
                "default_validation_context",
                "validation_context_sds_secret_config",
                "validation_context_certificate_provider_instance",
            ),
        )
        if combined.HasField("default_validation_context"):
            validation = _validation_context(
                ctx, join(vpath, "default_validation_context"), combined.default_validation_context
            )
        if combined.HasField("validation_context_sds_secret_config"):
            sds = _sds(
                ctx,
                join(vpath, "validation_context_sds_secret_config"),
                combined.validation_context_sds_secret_config,
            )
            if sds is not None:
                validation_sds, validation_server = sds.name, sds.server
        elif combined.HasField("validation_context_certificate_provider_instance"):
            dpath = join(vpath, "validation_context_certificate_provider_instance")
            provider = _provider(
                ctx, dpath, combined.validation_context_certificate_provider_instance
            )
            base = validation or CertificateValidationContext()
            if base.ca_certificate_provider is None:
                validation = replace(base, ca_certificate_provider=provider)
            else:
                _agree(
                    ctx,
                    dpath,
                    provider,
                    "default_validation_context.ca_certificate_provider_instance",
                    base.ca_certificate_provider,
                )
    elif which is not None:
        ctx.error(vpath, "unsupported validation context type")
    if len(ctx.errors) != errors:
        return None
    trusted = validation_sds is not None or (
        validation is not None
        and (
            validation.trusted_ca is not None
            or validation.ca_certificate_provider is not None
            or validation.system_root_certs
        )
    )
    if not trusted:
        ctx.error(
            cpath,
            "no way to verify the server: set a trusted CA, a CA certificate provider "
            "instance, system root certs or an SDS validation context",
        )
        return None
    return UpstreamTlsContext(
        sni=msg.sni,
        identity=identity,
        validation=validation,
        validation_sds_secret=validation_sds,
        alpn_protocols=tuple(common.alpn_protocols),
        validation_sds_server=validation_server,
    )
