"""What the resources the conformance table newly accepts parse into."""

from __future__ import annotations

from typing import Any

from tests.unit.resources.conformance.test_conformance import CASES, decode

from proxyless.resources.model import (
    ClientSideWeightedRoundRobin,
    Cluster,
    ClusterLoadAssignment,
    RoundRobin,
    RouteConfiguration,
)

_BY_ID = {c.id: c for c in CASES}


def _value(case_id: str) -> Any:
    accepted, value, errors = decode(_BY_ID[case_id])
    assert accepted, errors
    return value


def test_client_side_wrr_is_a_round_robin_with_its_settings() -> None:
    cluster = _value("cds-load-balancing-policy-client-side-wrr-settings")
    assert isinstance(cluster, Cluster)
    policy = cluster.lb_policy
    assert isinstance(policy, ClientSideWeightedRoundRobin)
    assert isinstance(policy, RoundRobin)  # round robin until two weights are known
    assert policy == ClientSideWeightedRoundRobin(
        blackout_period=5.0,
        weight_expiration_period=60.0,
        weight_update_period=1.0,
        error_utilization_penalty=1.5,
    )
    assert _value("cds-load-balancing-policy-client-side-wrr").lb_policy == (
        ClientSideWeightedRoundRobin()
    )


def test_logical_dns_in_grpc_shape() -> None:
    cluster = _value("cds-logical-dns-valid")
    assert (cluster.type, cluster.dns_address, cluster.dns_port) == (
        "LOGICAL_DNS",
        "dns.example",
        8080,
    )


def test_upstream_config_is_validated_not_used() -> None:
    cluster = _value("cds-upstream-config-http-protocol-options")
    assert "upstream_config.typed_config (validated, not used)" in cluster.ignored_fields


def test_port_zero_endpoint() -> None:
    cla = _value("eds-endpoint-port-zero")
    assert isinstance(cla, ClusterLoadAssignment)
    assert cla.priorities[0][0].endpoints[0].port == 0


def test_unknown_health_status_skips_the_endpoint() -> None:
    cla = _value("eds-endpoint-unknown-health-status")
    assert cla.priorities[0][0].endpoints == ()
    assert cla.ignored_fields == (
        "endpoints[0].lb_endpoints[0] (unknown health status 99: skipped)",
    )


def test_additional_addresses_are_validated_not_used() -> None:
    cla = _value("eds-additional-address")
    (endpoint,) = cla.priorities[0][0].endpoints
    assert (endpoint.address, endpoint.port) == ("127.0.0.1", 80)
    assert cla.ignored_fields == (
        "endpoints[0].lb_endpoints[0].endpoint.additional_addresses "
        "(validated; proxyless connects to the first address only)",
    )


def test_route_without_cluster_specifier_is_skipped() -> None:
    config = _value("rds-no-cluster-specifier")
    assert isinstance(config, RouteConfiguration)
    assert config.virtual_hosts[0].routes == ()
    assert config.ignored_fields == (
        "virtual_hosts[0].routes[0] (no cluster specifier: route skipped)",
    )
