"""LDS rules for a server Listener (gRFC A36): C-core
``xds_listener_parser.cc`` (``LdsResourceParseServer``, ``FilterChainParse``,
``DownstreamTlsContextParse``, ``BuildFilterChainMap``)."""

from __future__ import annotations

from typing import Any

from tests.unit.resources.conformance.table import DELETE, Case, Replace, merged, typed

HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "envoy.extensions.filters.http.router.v3.Router"
DOWNSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

_IDENTITY = {"tls_certificate_provider_instance": {"instance_name": "default"}}
_CA = {"validation_context": {"ca_certificate_provider_instance": {"instance_name": "default"}}}


def _hcm(**fields: Any) -> dict[str, Any]:
    base = {
        "route_config": {
            "name": "inbound",
            "virtual_hosts": [
                {
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": ""}, "non_forwarding_action": {}}],
                }
            ],
        },
        "http_filters": [{"name": "router", "typed_config": typed(ROUTER)}],
    }
    return {"name": "hcm", "typed_config": typed(HCM, **merged(base, fields))}


def _chain(**patch: Any) -> dict[str, Any]:
    return merged({"filters": [_hcm()]}, patch)


def _listener(*chains: dict[str, Any], **patch: Any) -> dict[str, Any]:
    base = {
        "name": "grpc/server?xds.resource.listening_address=0.0.0.0:8080",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8080}},
        "filter_chains": list(chains) or [_chain()],
    }
    return merged(base, patch)


def _tls(**context: Any) -> dict[str, Any]:
    return _listener(
        _chain(
            transport_socket={
                "name": "envoy.transport_sockets.tls",
                "typed_config": typed(DOWNSTREAM_TLS, **context),
            }
        )
    )


def _case(id: str, resource: dict[str, Any], grpc: str, path: str = "", differs: str = "") -> Case:
    return Case(f"lds-server-{id}", "Listener", resource, grpc, path, differs)  # type: ignore[arg-type]


_FC0 = "filter_chains[0]"
_TLS0 = f"{_FC0}.transport_socket.typed_config"

CASES = [
    _case("valid", _listener(), "accept"),
    _case(
        "default-filter-chain-only",
        _listener(filter_chains=[], default_filter_chain=_chain()),
        "accept",
    ),
    _case(
        "address-pipe",
        _listener(address=Replace({"pipe": {"path": "/s"}})),
        "nack",
        "address",
    ),
    _case(
        "address-without-port",
        _listener(address={"socket_address": {"port_value": DELETE, "named_port": "grpc"}}),
        "nack",
        "address.socket_address.port_value",
    ),
    _case("use-original-dst", _listener(use_original_dst=True), "nack", "use_original_dst"),
    _case(
        "two-filters",
        _listener(_chain(filters=[_hcm(), _hcm()])),
        "nack",
        f"{_FC0}.filters",
    ),
    _case("no-filters", _listener(_chain(filters=[])), "nack", f"{_FC0}.filters"),
    _case(
        "filter-not-hcm",
        _listener(_chain(filters=[{"name": "x", "typed_config": typed(ROUTER)}])),
        "nack",
        f"{_FC0}.filters[0].typed_config",
    ),
    _case(
        "hcm-rds",
        _listener(
            _chain(
                filters=[
                    {
                        "name": "hcm",
                        "typed_config": typed(
                            HCM,
                            rds={"config_source": {"ads": {}}, "route_config_name": "inbound"},
                            http_filters=[{"name": "router", "typed_config": typed(ROUTER)}],
                        ),
                    }
                ]
            )
        ),
        "accept",
        f"{_FC0}.filters[0].typed_config",
        differs=(
            "not implemented yet: a server Listener's routes must be inline "
            "(istiod inlines them); gRPC also follows RDS there"
        ),
    ),
    _case(
        "hcm-xff-num-trusted-hops",
        _listener(_chain(filters=[_hcm(xff_num_trusted_hops=2)])),
        "nack",
        f"{_FC0}.filters[0].typed_config.xff_num_trusted_hops",
    ),
    _case(
        "hcm-without-router",
        _listener(_chain(filters=[_hcm(http_filters=[])])),
        "nack",
        f"{_FC0}.filters[0].typed_config.http_filters",
    ),
    # filter_chain_match
    _case(
        "duplicate-matching-rules",
        _listener(_chain(), _chain()),
        "nack",
        "filter_chains[1].filter_chain_match",
    ),
    _case(
        "prefix-range-invalid",
        _listener(_chain(filter_chain_match={"prefix_ranges": [{"address_prefix": "not-an-ip"}]})),
        "nack",
        f"{_FC0}.filter_chain_match.prefix_ranges[0]",
    ),
    _case(
        "source-prefix-range-invalid",
        _listener(
            _chain(filter_chain_match={"source_prefix_ranges": [{"address_prefix": "10.0.0"}]})
        ),
        "nack",
        f"{_FC0}.filter_chain_match.source_prefix_ranges[0]",
    ),
    _case(
        "server-names-chain-dropped",
        _listener(_chain(), _chain(filter_chain_match={"server_names": ["a.example"]})),
        "accept",
    ),
    _case(
        "application-protocols-chain-dropped",
        _listener(_chain(), _chain(filter_chain_match={"application_protocols": ["h2"]})),
        "accept",
    ),
    _case(
        "destination-port",
        _listener(_chain(), _chain(filter_chain_match={"destination_port": 9090})),
        "accept",
    ),
    _case(
        "source-ports",
        _listener(_chain(filter_chain_match={"source_ports": [1000, 2000]})),
        "accept",
    ),
    # DownstreamTlsContext
    _case("tls", _tls(common_tls_context=_IDENTITY), "accept"),
    _case(
        "tls-mutual",
        _tls(common_tls_context={**_IDENTITY, **_CA}, require_client_certificate=True),
        "accept",
    ),
    _case(
        "tls-unsupported-type",
        _listener(
            _chain(
                transport_socket={
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": typed(
                        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
                    ),
                }
            )
        ),
        "nack",
        f"{_FC0}.transport_socket.typed_config",
    ),
    _case(
        "tls-without-identity", _tls(common_tls_context=_CA), "nack", f"{_TLS0}.common_tls_context"
    ),
    _case(
        "tls-client-certificate-without-ca",
        _tls(common_tls_context=_IDENTITY, require_client_certificate=True),
        "nack",
        f"{_TLS0}.require_client_certificate",
    ),
    _case(
        "tls-require-sni",
        _tls(common_tls_context=_IDENTITY, require_sni=True),
        "nack",
        f"{_TLS0}.require_sni",
    ),
    _case(
        "tls-strict-stapling",
        _tls(common_tls_context=_IDENTITY, ocsp_staple_policy="STRICT_STAPLING"),
        "nack",
        f"{_TLS0}.ocsp_staple_policy",
    ),
    _case(
        "tls-san-matchers",
        _tls(
            common_tls_context={
                **_IDENTITY,
                "validation_context": {
                    **_CA["validation_context"],
                    "match_subject_alt_names": [{"exact": "spiffe://td/ns/a/sa/b"}],
                },
            }
        ),
        "nack",
        f"{_TLS0}.common_tls_context.validation_context",
    ),
]
