"""Parse and validate an inbound Listener for an xDS-enabled server (gRFC A36).

What gRFC A36 requires, and what is NACKed here:

- ``address`` is a ``socket_address`` with a ``port_value``;
  ``listener_filters`` and ``use_original_dst`` must not be set.
- Each filter chain has exactly one network filter, an
  ``HttpConnectionManager`` whose routes are inline (istiod sends them so;
  RDS for server listeners is not supported here) and whose HTTP filters
  follow gRFC A39 (router last). gRFC A41: ``xff_num_trusted_hops`` must be
  0 and ``original_ip_detection_extensions`` empty.
- A ``transport_socket`` must be ``envoy.transport_sockets.tls`` with a
  ``DownstreamTlsContext`` that has a server certificate;
  ``require_client_certificate`` needs a validation context; ``require_sni``
  and OCSP stapling are refused. The common part of the context is parsed by
  :func:`proxyless.resources.parse.secret.upstream_tls_context`.
- ``filter_chain_match``: a chain with ``server_names`` or
  ``application_protocols``, or a ``transport_protocol`` other than
  ``""``, ``"raw_buffer"`` and ``"tls"``, can never match and is dropped
  (reported as ignored). Two chains with the same criteria are an error.
"""

from __future__ import annotations

from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from proxyless.resources.model.security import CertificateValidationContext
from proxyless.resources.model.server_listener import (
    DownstreamTlsContext,
    FilterChain,
    FilterChainMatch,
    ServerHcm,
    ServerListener,
)
from proxyless.resources.parse.common import Ctx, join, type_name, unhandled, unpack
from proxyless.resources.parse.filters import http_filters
from proxyless.resources.parse.rbac import cidr_range
from proxyless.resources.parse.route import route_configuration
from proxyless.resources.parse.secret import upstream_tls_context

__all__ = ["server_listener"]

_SOURCE_TYPES = {0: "ANY", 1: "SAME_IP_OR_LOOPBACK", 2: "EXTERNAL"}
_TLS_SOCKET = "envoy.transport_sockets.tls"
_DOWNSTREAM_TLS = tls_pb2.DownstreamTlsContext.DESCRIPTOR.full_name
_TRANSPORTS = ("", "raw_buffer", "tls")


def server_listener(ctx: Ctx, msg: Any) -> ServerListener | None:
    """Parse ``msg`` (a Listener without ``api_listener``) for a server."""
    unhandled(
        ctx,
        msg,
        "",
        (
            "name",
            "address",
            "filter_chains",
            "default_filter_chain",
            "listener_filters",
            "use_original_dst",
            # istiod may add these for dual-stack pods; the server binds its own address.
            "additional_addresses",
            "traffic_direction",
        ),
    )
    if not msg.name:
        ctx.error("name", "must not be empty")
    if msg.listener_filters:
        ctx.error("listener_filters", "must be empty on a server listener (gRFC A36)")
    if msg.HasField("use_original_dst") and msg.use_original_dst.value:
        ctx.error("use_original_dst", "must not be set on a server listener (gRFC A36)")
    host, port = "", 0
    if msg.address.WhichOneof("address") != "socket_address":
        ctx.error("address", "a server listener needs a socket_address")
    else:
        sa = msg.address.socket_address
        host = sa.address
        if sa.WhichOneof("port_specifier") != "port_value":
            ctx.error("address.socket_address.port_value", "is required")
        port = int(sa.port_value)
    chains: list[FilterChain] = []
    seen: dict[FilterChainMatch, int] = {}
    for i, fc in enumerate(msg.filter_chains):
        path = f"filter_chains[{i}]"
        chain = _filter_chain(ctx, path, fc)
        if chain is None:
            continue
        if chain.match in seen:
            ctx.error(
                join(path, "filter_chain_match"),
                f"the same criteria as filter_chains[{seen[chain.match]}] (gRFC A36)",
            )
            continue
        seen[chain.match] = i
        chains.append(chain)
    default = None
    if msg.HasField("default_filter_chain"):
        default = _filter_chain(ctx, "default_filter_chain", msg.default_filter_chain)
    if ctx.errors:
        return None
    return ServerListener(
        name=msg.name,
        host=host,
        port=port,
        filter_chains=tuple(chains),
        default_filter_chain=default,
        ignored_fields=tuple(ctx.ignored),
    )


def _filter_chain(ctx: Ctx, path: str, msg: Any) -> FilterChain | None:
    unhandled(
        ctx, msg, path, ("filter_chain_match", "filters", "transport_socket", "name", "metadata")
    )
    errors = len(ctx.errors)
    match = _match(ctx, join(path, "filter_chain_match"), msg.filter_chain_match)
    tls = None
    if msg.HasField("transport_socket"):
        tls = _transport_socket(ctx, join(path, "transport_socket"), msg.transport_socket)
    hcm = None
    if len(msg.filters) != 1:
        ctx.error(
            join(path, "filters"), "exactly one filter, an HttpConnectionManager, is required"
        )
    else:
        hcm = _hcm(ctx, join(path, "filters[0]"), msg.filters[0])
    if len(ctx.errors) != errors or hcm is None or match is None:
        return None
    return FilterChain(name=msg.name, match=match, tls=tls, hcm=hcm)


def _match(ctx: Ctx, path: str, msg: Any) -> FilterChainMatch | None:
    unhandled(
        ctx,
        msg,
        path,
        (
            "destination_port",
            "prefix_ranges",
            "source_type",
            "source_prefix_ranges",
            "source_ports",
            "transport_protocol",
            "server_names",
            "application_protocols",
        ),
    )
    if msg.server_names or msg.application_protocols or msg.transport_protocol not in _TRANSPORTS:
        ctx.ignore(f"{path} (criteria a gRPC server never matches; the chain is dropped)")
        return None
    errors = len(ctx.errors)
    prefixes = [
        cidr_range(ctx, f"{join(path, 'prefix_ranges')}[{i}]", r)
        for i, r in enumerate(msg.prefix_ranges)
    ]
    sources = [
        cidr_range(ctx, f"{join(path, 'source_prefix_ranges')}[{i}]", r)
        for i, r in enumerate(msg.source_prefix_ranges)
    ]
    if len(ctx.errors) != errors:
        return None
    return FilterChainMatch(
        destination_port=msg.destination_port.value if msg.HasField("destination_port") else None,
        prefix_ranges=tuple(p for p in prefixes if p is not None),
        transport_protocol=msg.transport_protocol,
        source_type=_SOURCE_TYPES.get(int(msg.source_type), "ANY"),  # type: ignore[arg-type]
        source_prefix_ranges=tuple(s for s in sources if s is not None),
        source_ports=tuple(int(p) for p in msg.source_ports),
    )


def _transport_socket(ctx: Ctx, path: str, msg: Any) -> DownstreamTlsContext | None:
    if type_name(msg.typed_config) != _DOWNSTREAM_TLS:
        ctx.error(
            join(path, "typed_config"),
            f"{_TLS_SOCKET} with a DownstreamTlsContext is the only transport socket supported",
        )
        return None
    tpath = join(path, "typed_config")
    ctx_msg = unpack(ctx, tpath, msg.typed_config, tls_pb2.DownstreamTlsContext)
    if ctx_msg is None:
        return None
    return downstream_tls_context(ctx, tpath, ctx_msg)


def downstream_tls_context(ctx: Ctx, path: str, msg: Any) -> DownstreamTlsContext | None:
    """Parse a ``DownstreamTlsContext`` at ``path``."""
    unhandled(
        ctx,
        msg,
        path,
        ("common_tls_context", "require_client_certificate", "require_sni", "ocsp_staple_policy"),
    )
    if msg.HasField("require_sni") and msg.require_sni.value:
        ctx.error(join(path, "require_sni"), "is not supported (gRFC A36)")
    if msg.ocsp_staple_policy != tls_pb2.DownstreamTlsContext.LENIENT_STAPLING:
        ctx.error(join(path, "ocsp_staple_policy"), "only LENIENT_STAPLING is supported")
    require = bool(
        msg.HasField("require_client_certificate") and msg.require_client_certificate.value
    )
    common = msg.common_tls_context
    has_validation = common.WhichOneof("validation_context_type") is not None
    # The common part is what an UpstreamTlsContext holds: parse it as one.
    shadow = tls_pb2.UpstreamTlsContext(common_tls_context=common)
    if not has_validation:
        # Nothing to verify clients with; the upstream parser insists on trust.
        shadow.common_tls_context.validation_context.system_root_certs.SetInParent()
    inner = Ctx()
    parsed = upstream_tls_context(inner, "", shadow)
    prefix = join(path, "common_tls_context")
    for error in inner.errors:
        ctx.errors.append(error.replace("common_tls_context", prefix, 1))
    for ignored in inner.ignored:
        ctx.ignore(ignored.replace("common_tls_context", prefix, 1))
    if parsed is None:
        return None
    if parsed.identity is None:
        ctx.error(prefix, "a server needs its own certificate (no identity is configured)")
        return None
    if require and not has_validation:
        ctx.error(
            join(path, "require_client_certificate"),
            "requires a validation context to verify client certificates with",
        )
        return None
    validation: CertificateValidationContext | None = parsed.validation if has_validation else None
    if validation is not None and validation.match_subject_alt_names:
        ctx.error(
            join(prefix, "validation_context"),
            "SAN matchers are not supported on a server (authorize callers with RBAC)",
        )
        return None
    return DownstreamTlsContext(
        identity=parsed.identity,
        validation=validation,
        validation_sds_secret=parsed.validation_sds_secret,
        require_client_certificate=require,
    )


def _hcm(ctx: Ctx, path: str, msg: Any) -> ServerHcm | None:
    unhandled(ctx, msg, path, ("name", "typed_config"))
    tpath = join(path, "typed_config")
    hcm = unpack(ctx, tpath, msg.typed_config, hcm_pb2.HttpConnectionManager)
    if hcm is None:
        return None
    unhandled(
        ctx,
        hcm,
        tpath,
        (
            "route_config",
            "http_filters",
            "xff_num_trusted_hops",
            "original_ip_detection_extensions",
            "stat_prefix",
            "codec_type",
        ),
    )
    errors = len(ctx.errors)
    if hcm.xff_num_trusted_hops:
        ctx.error(join(tpath, "xff_num_trusted_hops"), "must be 0 (gRFC A41)")
    if hcm.original_ip_detection_extensions:
        ctx.error(join(tpath, "original_ip_detection_extensions"), "must be empty (gRFC A41)")
    which = hcm.WhichOneof("route_specifier")
    route_config = None
    if which == "route_config":
        inner = Ctx()
        route_config = route_configuration(inner, join(tpath, "route_config"), hcm.route_config)
        ctx.errors.extend(inner.errors)
        ctx.ignored.extend(inner.ignored)
    else:
        ctx.error(
            tpath, "a server listener needs an inline route_config (RDS is not supported here)"
        )
    filters = http_filters(ctx, join(tpath, "http_filters"), hcm.http_filters)
    if len(ctx.errors) != errors or route_config is None:
        return None
    return ServerHcm(route_config=route_config, http_filters=filters)
