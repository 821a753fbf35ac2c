"""Inbound (server) Listeners (gRFC A36): istiod's shape parses, what A36
and A41 forbid is NACKed naming the field, and filter chains are chosen per
connection as Envoy and A36 say (pure: listener + connection)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, wrappers_pb2
from tests.e2e.grpc_server.conftest import (
    CLIENT_ID,
    downstream_tls,
    inbound_chain,
    inbound_listener,
    permissive,
    principal_policy,
    strict,
)

from proxyless.controlplane.ca import DevCA
from proxyless.errors import ResourceValidationError
from proxyless.grpc._chain_match import Connection, match_filter_chain
from proxyless.resources.model.filters import RbacFilterConfig
from proxyless.resources.model.rbac import Authenticated
from proxyless.resources.model.security import TlsCertificate
from proxyless.resources.model.server_listener import ServerListener
from proxyless.resources.parse.listener import decode_listener, parse_listener

NAME = "xds.istio.io/grpc/lds/inbound/0.0.0.0:8080"
CA = DevCA()
CERT = CA.issue("spiffe://cluster.local/ns/default/sa/reviews")


def _parse(chains: list[Any], **kw: Any) -> ServerListener:
    parsed = parse_listener(inbound_listener(NAME, "0.0.0.0", 8080, chains))
    assert isinstance(parsed, ServerListener)
    return parsed


def test_istiod_strict_shape() -> None:
    listener = _parse(strict(CA, CERT, allow={"default-a-0": principal_policy(CLIENT_ID)}))
    assert (listener.name, listener.host, listener.port) == (NAME, "0.0.0.0", 8080)
    (chain,) = listener.filter_chains
    assert chain.name == "inbound-mtls"
    assert chain.tls is not None and chain.tls.require_client_certificate
    assert isinstance(chain.tls.identity, TlsCertificate)
    assert chain.tls.validation is not None and chain.tls.validation.trusted_ca is not None
    rbac, _router = chain.hcm.http_filters
    assert isinstance(rbac.config, RbacFilterConfig) and rbac.config.action == "ALLOW"
    (policy,) = rbac.config.policies
    assert isinstance(policy.principals[0], Authenticated)
    assert chain.hcm.route_config.virtual_hosts[0].domains == ("*",)


def test_istiod_plaintext_shape_and_permissive() -> None:
    listener = _parse(permissive(CA, CERT))
    tls, plain = listener.filter_chains
    assert tls.match.transport_protocol == "tls" and tls.tls is not None
    assert plain.match.transport_protocol == "raw_buffer" and plain.tls is None


def _hcm_chain(**hcm_kw: Any) -> lc.FilterChain:
    chain = inbound_chain("plaintext", None)
    hcm = hcm_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(hcm)
    for key, value in hcm_kw.items():
        setattr(hcm, key, value)
    packed = any_pb2.Any()
    packed.Pack(hcm)
    chain.filters[0].typed_config.CopyFrom(packed)
    return chain


def _no_validation() -> Any:
    tls = downstream_tls(CA, CERT)
    tls.common_tls_context.ClearField("validation_context")
    return tls


def _with_san_matcher() -> Any:
    tls = downstream_tls(CA, CERT)
    tls.common_tls_context.validation_context.match_subject_alt_names.add(exact="x")
    return tls


def _rds_chain() -> lc.FilterChain:
    chain = _hcm_chain()
    hcm = hcm_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(hcm)
    hcm.ClearField("route_config")
    hcm.rds.route_config_name = "inbound"
    hcm.rds.config_source.ads.SetInParent()
    chain.filters[0].typed_config.Pack(hcm)
    return chain


def _two_filters() -> lc.FilterChain:
    chain = inbound_chain("plaintext", None)
    chain.filters.append(chain.filters[0])
    return chain


def _require_sni() -> Any:
    tls = downstream_tls(CA, CERT)
    tls.require_sni.value = True
    return tls


@pytest.mark.parametrize(
    ("chains", "error"),
    [
        pytest.param(
            [_hcm_chain(xff_num_trusted_hops=1)], "xff_num_trusted_hops: must be 0", id="xff"
        ),
        pytest.param(
            [inbound_chain("mtls", _no_validation())], "require_client_certificate", id="no-trust"
        ),
        pytest.param([inbound_chain("mtls", _with_san_matcher())], "SAN matchers", id="san"),
        pytest.param([inbound_chain("mtls", _require_sni())], "require_sni", id="sni"),
        pytest.param([_rds_chain()], "inline route_config", id="rds"),
        pytest.param([_two_filters()], "exactly one filter", id="two-filters"),
        pytest.param(
            [inbound_chain("a", None), inbound_chain("b", None)],
            "the same criteria",
            id="duplicate",
        ),
    ],
)
def test_invalid_server_listeners(chains: list[Any], error: str) -> None:
    with pytest.raises(ResourceValidationError) as info:
        parse_listener(inbound_listener(NAME, "0.0.0.0", 8080, chains))
    assert error in str(info.value)


def test_tls_without_client_certificates_needs_no_trust() -> None:
    tls = _no_validation()
    tls.require_client_certificate.CopyFrom(wrappers_pb2.BoolValue(value=False))
    (chain,) = _parse([inbound_chain("tls", tls)]).filter_chains
    assert chain.tls is not None and chain.tls.validation is None
    assert not chain.tls.require_client_certificate


def test_a_chain_no_grpc_server_can_match_is_dropped() -> None:
    odd = inbound_chain("odd", None)
    odd.filter_chain_match.server_names.append("example.com")
    listener = _parse([odd, inbound_chain("plaintext", None, transport_protocol="raw_buffer")])
    assert [c.name for c in listener.filter_chains] == ["inbound-plaintext"]
    assert any("server_names" not in f and "dropped" in f for f in listener.ignored_fields)


def test_decode_returns_the_name_of_an_invalid_server_listener() -> None:
    msg = inbound_listener(NAME, "0.0.0.0", 8080, [_hcm_chain(xff_num_trusted_hops=2)])
    result = decode_listener(msg.SerializeToString())
    assert result.name == NAME and result.errors


# -- filter-chain match -----------------------------------------------------------------------


def _chain(name: str, **match: Any) -> lc.FilterChain:
    chain = inbound_chain(name, None)
    for key, value in match.items():
        if key in ("prefix_ranges", "source_prefix_ranges"):
            for prefix, length in value:
                getattr(chain.filter_chain_match, key).add(
                    address_prefix=prefix, prefix_len=wrappers_pb2.UInt32Value(value=length)
                )
        elif key == "source_ports":
            chain.filter_chain_match.source_ports.extend(value)
        elif key == "destination_port":
            chain.filter_chain_match.destination_port.value = value
        else:
            setattr(chain.filter_chain_match, key, value)
    return chain


def _conn(transport: str = "raw_buffer", peer: str = "10.1.2.3", port: int = 5555) -> Connection:
    return Connection("10.0.0.9", 8080, peer, port, transport)


@pytest.mark.parametrize(
    ("chains", "conn", "expected"),
    [
        pytest.param([_chain("a")], _conn(), "inbound-a", id="only"),
        pytest.param(
            [
                _chain("tls", transport_protocol="tls"),
                _chain("raw", transport_protocol="raw_buffer"),
            ],
            _conn("tls"),
            "inbound-tls",
            id="transport-tls",
        ),
        pytest.param(
            [
                _chain("tls", transport_protocol="tls"),
                _chain("raw", transport_protocol="raw_buffer"),
            ],
            _conn(),
            "inbound-raw",
            id="transport-raw",
        ),
        pytest.param(
            [_chain("tls", transport_protocol="tls"), _chain("any")],
            _conn(),
            "inbound-any",
            id="transport-fallback",
        ),
        pytest.param(
            # gRFC A36: destination_port always fails the match.
            [_chain("p", destination_port=8080), _chain("any")],
            _conn(),
            "inbound-any",
            id="destination-port-never-matches",
        ),
        pytest.param(
            [
                _chain("wide", prefix_ranges=[("10.0.0.0", 8)]),
                _chain("narrow", prefix_ranges=[("10.0.0.0", 24)]),
            ],
            _conn(),
            "inbound-narrow",
            id="longest-destination-prefix",
        ),
        pytest.param(
            [_chain("local", source_type=1), _chain("external", source_type=2)],
            _conn(peer="127.0.0.1"),
            "inbound-local",
            id="same-ip-or-loopback",
        ),
        pytest.param(
            [_chain("local", source_type=1), _chain("external", source_type=2)],
            _conn(),
            "inbound-external",
            id="external",
        ),
        pytest.param(
            [_chain("src", source_prefix_ranges=[("10.1.0.0", 16)]), _chain("other")],
            _conn(),
            "inbound-src",
            id="source-prefix",
        ),
        pytest.param(
            [_chain("port", source_ports=[5555]), _chain("other")],
            _conn(),
            "inbound-port",
            id="source-port",
        ),
        pytest.param(
            [_chain("src", source_prefix_ranges=[("192.168.0.0", 16)])],
            _conn(),
            None,
            id="no-match-no-default",
        ),
        pytest.param(
            # No backtracking: the narrower prefix wins its step, then fails the source.
            [
                _chain(
                    "narrow",
                    prefix_ranges=[("10.0.0.0", 24)],
                    source_prefix_ranges=[("192.168.0.0", 16)],
                ),
                _chain("wide", prefix_ranges=[("10.0.0.0", 8)]),
            ],
            _conn(),
            None,
            id="no-backtracking",
        ),
    ],
)
def test_filter_chain_match(chains: list[Any], conn: Connection, expected: str | None) -> None:
    listener = _parse(chains)
    chain = match_filter_chain(listener, conn)
    assert (chain.name if chain else None) == expected


def test_default_filter_chain_serves_what_nothing_else_matches() -> None:
    msg = inbound_listener(
        NAME, "0.0.0.0", 8080, [_chain("src", source_prefix_ranges=[("192.168.0.0", 16)])]
    )
    msg.default_filter_chain.CopyFrom(inbound_chain("default", None))
    listener = parse_listener(msg)
    assert isinstance(listener, ServerListener)
    chain = match_filter_chain(listener, _conn())
    assert chain is not None and chain.name == "inbound-default"
