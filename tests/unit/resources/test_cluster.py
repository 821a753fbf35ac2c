"""Cluster parsing: discovery types (A37), LB policies (A42/A48/A52), circuit breakers (A32),
outlier detection (A50, Envoy defaults), upstream TLS (A29), protocol options."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, extension_pb2, protocol_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.pick_first.v3 import pick_first_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, wrappers_pb2
from google.protobuf.message import Message

from proxyless.errors import ResourceValidationError
from proxyless.resources.model import (
    CertificateProviderInstance,
    CircuitBreakers,
    Cluster,
    LbPolicy,
    LeastRequest,
    Maglev,
    OutlierDetection,
    PickFirst,
    Random,
    RetryBudget,
    RingHash,
    RoundRobin,
    SdsSecretConfig,
    Thresholds,
    WrrLocality,
)
from proxyless.resources.parse.cluster import decode_cluster, parse_cluster

from . import builders as b

C = cluster_pb2.Cluster


def _decode(msg: cluster_pb2.Cluster) -> Cluster:
    result = decode_cluster(msg.SerializeToString())
    assert result.ok, result.errors
    assert isinstance(result.value, Cluster)
    return result.value


def _errors(msg: cluster_pb2.Cluster) -> tuple[str, ...]:
    result = decode_cluster(msg.SerializeToString())
    assert result.value is None
    assert result.name == msg.name
    return result.errors


def test_eds_cluster_defaults() -> None:
    cluster = _decode(b.eds_cluster())
    assert cluster == Cluster(name="cluster-a", type="EDS", eds_service_name="cluster-a")
    assert cluster.connect_timeout == 5.0
    assert cluster.healthy_panic_threshold == 50.0
    assert cluster.circuit_breakers == CircuitBreakers()
    assert cluster.circuit_breakers.default.max_requests == 1024
    assert cluster.outlier_detection is None


def test_eds_service_name() -> None:
    assert _decode(b.eds_cluster(service_name="svc-eds")).eds_service_name == "svc-eds"


def _aggregate(*names: str) -> cluster_pb2.Cluster:
    cluster = C(name="agg")
    cluster.cluster_type.name = "envoy.clusters.aggregate"
    cluster.cluster_type.typed_config.Pack(aggregate_pb2.ClusterConfig(clusters=list(names)))
    return cluster


def test_aggregate_cluster() -> None:
    cluster = _decode(_aggregate("a", "b"))
    assert cluster.type == "AGGREGATE"
    assert cluster.aggregate_clusters == ("a", "b")


def _with_assignment(kind: int, *endpoints: tuple[str, int]) -> cluster_pb2.Cluster:
    cluster = C(name="dns", type=kind)
    cluster.load_assignment.CopyFrom(
        b.assignment("", [b.locality(endpoints=[b.lb_endpoint(a, p) for a, p in endpoints])])
    )
    return cluster


def test_logical_dns_cluster() -> None:
    cluster = _decode(_with_assignment(C.LOGICAL_DNS, ("backend.example", 443)))
    assert cluster.type == "LOGICAL_DNS"
    assert (cluster.dns_address, cluster.dns_port) == ("backend.example", 443)
    assert cluster.load_assignment is None


def test_strict_dns_cluster() -> None:
    msg = _with_assignment(C.STRICT_DNS, ("backend.example", 443), ("10.0.0.1", 80))
    msg.dns_refresh_rate.FromSeconds(2)
    msg.dns_lookup_family = C.V4_ONLY
    cluster = _decode(msg)
    assert cluster.type == "STRICT_DNS"
    assert cluster.load_assignment is not None
    assert [e.address for e in cluster.load_assignment.priorities[0][0].endpoints] == [
        "backend.example",
        "10.0.0.1",
    ]
    assert (cluster.dns_refresh_rate, cluster.dns_lookup_family) == (2.0, "V4_ONLY")


def test_strict_dns_cluster_defaults() -> None:
    cluster = _decode(_with_assignment(C.STRICT_DNS, ("backend.example", 443)))
    assert (cluster.dns_refresh_rate, cluster.dns_lookup_family) == (None, "AUTO")


def test_static_cluster() -> None:
    cluster = _decode(_with_assignment(C.STATIC, ("127.0.0.1", 1), ("127.0.0.1", 2)))
    assert cluster.type == "STATIC"
    assert cluster.load_assignment is not None
    assert [e.port for e in cluster.load_assignment.priorities[0][0].endpoints] == [1, 2]


def _pack(msg: Message) -> Any:
    return b.pack(msg)


def _policies(*configs: Message) -> cluster_pb2.LoadBalancingPolicy:
    return cluster_pb2.LoadBalancingPolicy(
        policies=[
            cluster_pb2.LoadBalancingPolicy.Policy(
                typed_extension_config=extension_pb2.TypedExtensionConfig(
                    name=f"policy-{i}", typed_config=_pack(c)
                )
            )
            for i, c in enumerate(configs)
        ]
    )


_UNKNOWN_POLICY = wrappers_pb2.StringValue(value="a custom policy")


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        pytest.param({}, RoundRobin(), id="enum-default-round-robin"),
        pytest.param({"lb_policy": C.RANDOM}, Random(), id="enum-random"),
        pytest.param({"lb_policy": C.LEAST_REQUEST}, LeastRequest(), id="enum-least-request"),
        pytest.param(
            {
                "lb_policy": C.LEAST_REQUEST,
                "least_request_lb_config": C.LeastRequestLbConfig(
                    choice_count=wrappers_pb2.UInt32Value(value=3),
                    active_request_bias=base_pb2.RuntimeDouble(default_value=0.5),
                ),
            },
            LeastRequest(choice_count=3, active_request_bias=0.5),
            id="enum-least-request-config",
        ),
        pytest.param({"lb_policy": C.RING_HASH}, RingHash(), id="enum-ring-hash"),
        pytest.param(
            {
                "lb_policy": C.RING_HASH,
                "ring_hash_lb_config": C.RingHashLbConfig(
                    minimum_ring_size=wrappers_pb2.UInt64Value(value=10),
                    maximum_ring_size=wrappers_pb2.UInt64Value(value=100),
                ),
            },
            RingHash(10, 100),
            id="enum-ring-hash-sizes",
        ),
        pytest.param({"lb_policy": C.MAGLEV}, Maglev(), id="enum-maglev"),
        pytest.param(
            {
                "lb_policy": C.MAGLEV,
                "maglev_lb_config": C.MaglevLbConfig(
                    table_size=wrappers_pb2.UInt64Value(value=251)
                ),
            },
            Maglev(251),
            id="enum-maglev-size",
        ),
        pytest.param(
            {"load_balancing_policy": _policies(round_robin_pb2.RoundRobin())},
            RoundRobin(),
            id="typed-round-robin",
        ),
        pytest.param(
            {"load_balancing_policy": _policies(random_pb2.Random())}, Random(), id="typed-random"
        ),
        pytest.param(
            {
                "load_balancing_policy": _policies(
                    pick_first_pb2.PickFirst(shuffle_address_list=True)
                )
            },
            PickFirst(shuffle_address_list=True),
            id="typed-pick-first",
        ),
        pytest.param(
            {
                "load_balancing_policy": _policies(
                    least_request_pb2.LeastRequest(choice_count=wrappers_pb2.UInt32Value(value=4))
                )
            },
            LeastRequest(choice_count=4),
            id="typed-least-request",
        ),
        pytest.param(
            {
                "load_balancing_policy": _policies(
                    ring_hash_pb2.RingHash(
                        hash_function=ring_hash_pb2.RingHash.XX_HASH,
                        minimum_ring_size=wrappers_pb2.UInt64Value(value=64),
                    )
                )
            },
            RingHash(64, 8_388_608),
            id="typed-ring-hash",
        ),
        pytest.param(
            {
                "load_balancing_policy": _policies(
                    maglev_pb2.Maglev(table_size=wrappers_pb2.UInt64Value(value=65537))
                )
            },
            Maglev(),
            id="typed-maglev",
        ),
        pytest.param(
            {
                "load_balancing_policy": _policies(
                    wrr_locality_pb2.WrrLocality(
                        endpoint_picking_policy=_policies(
                            _UNKNOWN_POLICY, round_robin_pb2.RoundRobin()
                        )
                    )
                )
            },
            WrrLocality(RoundRobin()),
            id="typed-wrr-locality-nested-fallthrough",
        ),
        pytest.param(
            {"load_balancing_policy": _policies(_UNKNOWN_POLICY, random_pb2.Random())},
            Random(),
            id="typed-unknown-then-known",
        ),
        pytest.param(
            {
                "lb_policy": C.MAGLEV,
                "load_balancing_policy": _policies(round_robin_pb2.RoundRobin()),
            },
            RoundRobin(),
            id="typed-wins-over-enum",
        ),
    ],
)
def test_lb_policy(kw: dict[str, Any], expected: LbPolicy) -> None:
    assert _decode(b.eds_cluster(**kw)).lb_policy == expected


def test_skipped_policy_is_reported() -> None:
    cluster = _decode(
        b.eds_cluster(load_balancing_policy=_policies(_UNKNOWN_POLICY, random_pb2.Random()))
    )
    assert cluster.ignored_fields == (
        "load_balancing_policy.policies[0] (google.protobuf.StringValue: unsupported, skipped)",
    )


def _nested(depth: int) -> cluster_pb2.LoadBalancingPolicy:
    policy = _policies(round_robin_pb2.RoundRobin())
    for _ in range(depth):
        policy = _policies(wrr_locality_pb2.WrrLocality(endpoint_picking_policy=policy))
    return policy


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        pytest.param(
            {"load_balancing_policy": _policies(_UNKNOWN_POLICY)},
            "load_balancing_policy.policies: no supported load balancing policy "
            "(skipped: google.protobuf.StringValue)",
            id="none-usable",
        ),
        pytest.param(
            {"load_balancing_policy": cluster_pb2.LoadBalancingPolicy()},
            "load_balancing_policy.policies: no supported load balancing policy",
            id="empty-policy-list",
        ),
        pytest.param(
            {"load_balancing_policy": _nested(16)},
            "nested deeper than 16",
            id="too-deep",
        ),
        pytest.param(
            {"lb_policy": C.CLUSTER_PROVIDED},
            "lb_policy: unsupported lb_policy CLUSTER_PROVIDED",
            id="cluster-provided",
        ),
        pytest.param(
            {"lb_policy": C.LOAD_BALANCING_POLICY_CONFIG},
            "load_balancing_policy: is required when lb_policy is LOAD_BALANCING_POLICY_CONFIG",
            id="policy-config-without-policy",
        ),
        pytest.param(
            {
                "lb_policy": C.RING_HASH,
                "ring_hash_lb_config": C.RingHashLbConfig(
                    hash_function=C.RingHashLbConfig.MURMUR_HASH_2
                ),
            },
            "ring_hash_lb_config.hash_function: only XX_HASH is supported",
            id="enum-murmur",
        ),
        pytest.param(
            {
                "load_balancing_policy": _policies(
                    ring_hash_pb2.RingHash(hash_function=ring_hash_pb2.RingHash.MURMUR_HASH_2),
                    round_robin_pb2.RoundRobin(),
                )
            },
            "load_balancing_policy.policies[0].typed_extension_config.typed_config.hash_function: "
            "only XX_HASH is supported",
            id="typed-murmur-no-fallthrough",
        ),
        pytest.param(
            {
                "lb_policy": C.RING_HASH,
                "ring_hash_lb_config": C.RingHashLbConfig(
                    maximum_ring_size=wrappers_pb2.UInt64Value(value=8_388_609)
                ),
            },
            "ring_hash_lb_config.maximum_ring_size: 8388609 exceeds 8388608",
            id="ring-too-big",
        ),
        pytest.param(
            {
                "lb_policy": C.RING_HASH,
                "ring_hash_lb_config": C.RingHashLbConfig(
                    minimum_ring_size=wrappers_pb2.UInt64Value(value=200),
                    maximum_ring_size=wrappers_pb2.UInt64Value(value=100),
                ),
            },
            "ring_hash_lb_config: minimum_ring_size 200 exceeds maximum_ring_size 100",
            id="ring-min-above-max",
        ),
        pytest.param(
            {
                "lb_policy": C.LEAST_REQUEST,
                "least_request_lb_config": C.LeastRequestLbConfig(
                    choice_count=wrappers_pb2.UInt32Value(value=1)
                ),
            },
            "least_request_lb_config.choice_count: 1 must be >= 2",
            id="choice-count",
        ),
        pytest.param(
            {
                "lb_policy": C.MAGLEV,
                "maglev_lb_config": C.MaglevLbConfig(
                    table_size=wrappers_pb2.UInt64Value(value=100)
                ),
            },
            "maglev_lb_config.table_size: 100 is not a prime number",
            id="maglev-not-prime",
        ),
    ],
)
def test_lb_policy_errors(kw: dict[str, Any], error: str) -> None:
    errors = _errors(b.eds_cluster(**kw))
    assert any(error in e for e in errors), errors


def _thresholds(**kw: Any) -> circuit_breaker_pb2.CircuitBreakers.Thresholds:
    return circuit_breaker_pb2.CircuitBreakers.Thresholds(**kw)


def test_circuit_breakers() -> None:
    budget = circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget(
        budget_percent=percent_pb2.Percent(value=25.0)
    )
    breakers = circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            _thresholds(max_requests=wrappers_pb2.UInt32Value(value=10), retry_budget=budget),
            _thresholds(
                priority=base_pb2.HIGH,
                max_retries=wrappers_pb2.UInt32Value(value=1),
                max_connections=wrappers_pb2.UInt32Value(value=7),
                max_pending_requests=wrappers_pb2.UInt32Value(value=8),
            ),
            _thresholds(max_requests=wrappers_pb2.UInt32Value(value=99)),
        ]
    )
    cluster = _decode(b.eds_cluster(circuit_breakers=breakers))
    assert cluster.circuit_breakers.default == Thresholds(
        max_requests=10, retry_budget=RetryBudget(budget_percent=25.0, min_retry_concurrency=3)
    )
    assert cluster.circuit_breakers.high == Thresholds(
        max_connections=7, max_pending_requests=8, max_retries=1, max_retries_explicit=True
    )
    assert cluster.ignored_fields == (
        "circuit_breakers.thresholds[2] (a later entry for the same priority)",
    )


def test_retry_budget_defaults() -> None:
    breakers = circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            _thresholds(retry_budget=circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget())
        ]
    )
    cluster = _decode(b.eds_cluster(circuit_breakers=breakers))
    assert cluster.circuit_breakers.default.retry_budget == RetryBudget(20.0, 3)


def test_retry_budget_percent_range() -> None:
    breakers = circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            _thresholds(
                retry_budget=circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget(
                    budget_percent=percent_pb2.Percent(value=101.0)
                )
            )
        ]
    )
    assert _errors(b.eds_cluster(circuit_breakers=breakers)) == (
        "circuit_breakers.thresholds[0].retry_budget.budget_percent.value: "
        "percent 101.0 must be in [0, 100]",
    )


def test_outlier_detection_defaults() -> None:
    cluster = _decode(b.eds_cluster(outlier_detection=outlier_detection_pb2.OutlierDetection()))
    od = cluster.outlier_detection
    assert od == OutlierDetection()
    assert od is not None
    assert (od.interval, od.base_ejection_time, od.max_ejection_time) == (10.0, 30.0, 300.0)
    assert od.max_ejection_percent == 10
    assert (od.consecutive_5xx, od.enforcing_consecutive_5xx) == (5, 100)
    assert (od.consecutive_gateway_failure, od.enforcing_consecutive_gateway_failure) == (5, 0)
    assert od.split_external_local_origin_errors is False
    assert (od.consecutive_local_origin_failure, od.enforcing_consecutive_local_origin_failure) == (
        5,
        100,
    )
    assert od.enforcing_local_origin_success_rate == 100
    assert (od.success_rate_minimum_hosts, od.success_rate_request_volume) == (5, 100)
    assert (od.success_rate_stdev_factor, od.enforcing_success_rate) == (1900, 100)
    assert (od.failure_percentage_threshold, od.enforcing_failure_percentage) == (85, 0)
    assert od.enforcing_failure_percentage_local_origin == 0
    assert (od.failure_percentage_minimum_hosts, od.failure_percentage_request_volume) == (5, 50)
    assert od.max_ejection_time_jitter == 0.0
    assert od.successful_active_health_check_uneject_host is True
    assert od.always_eject_one_host is False


def test_outlier_detection_values() -> None:
    msg = outlier_detection_pb2.OutlierDetection(
        interval=duration_pb2.Duration(seconds=1),
        consecutive_5xx=wrappers_pb2.UInt32Value(value=3),
        enforcing_failure_percentage=wrappers_pb2.UInt32Value(value=100),
        split_external_local_origin_errors=True,
        successful_active_health_check_uneject_host=wrappers_pb2.BoolValue(value=False),
        always_eject_one_host=wrappers_pb2.BoolValue(value=True),
    )
    od = _decode(b.eds_cluster(outlier_detection=msg)).outlier_detection
    assert od == OutlierDetection(
        interval=1.0,
        consecutive_5xx=3,
        enforcing_failure_percentage=100,
        split_external_local_origin_errors=True,
        successful_active_health_check_uneject_host=False,
        always_eject_one_host=True,
    )


_PERCENT_FIELDS = [
    "max_ejection_percent",
    "enforcing_consecutive_5xx",
    "enforcing_consecutive_gateway_failure",
    "enforcing_consecutive_local_origin_failure",
    "enforcing_local_origin_success_rate",
    "enforcing_success_rate",
    "failure_percentage_threshold",
    "enforcing_failure_percentage",
    "enforcing_failure_percentage_local_origin",
]


@pytest.mark.parametrize("field", [pytest.param(f, id=f) for f in _PERCENT_FIELDS])
def test_outlier_percent_above_100(field: str) -> None:
    msg = outlier_detection_pb2.OutlierDetection(**{field: wrappers_pb2.UInt32Value(value=101)})
    assert _errors(b.eds_cluster(outlier_detection=msg)) == (
        f"outlier_detection.{field}: 101 is a percentage and must be <= 100",
    )


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        pytest.param(
            "interval",
            duration_pb2.Duration(seconds=-1),
            "duration must not be negative",
            id="negative-interval",
        ),
        pytest.param(
            "base_ejection_time",
            duration_pb2.Duration(nanos=-5),
            "duration must not be negative",
            id="negative-base",
        ),
        pytest.param(
            "max_ejection_time",
            duration_pb2.Duration(seconds=-3),
            "duration must not be negative",
            id="negative-max",
        ),
        pytest.param(
            "max_ejection_time_jitter",
            duration_pb2.Duration(seconds=-3),
            "duration must not be negative",
            id="negative-jitter",
        ),
        pytest.param("interval", duration_pb2.Duration(), "must be > 0", id="zero-interval"),
    ],
)
def test_outlier_duration_errors(field: str, value: duration_pb2.Duration, error: str) -> None:
    msg = outlier_detection_pb2.OutlierDetection(**{field: value})
    assert _errors(b.eds_cluster(outlier_detection=msg)) == (f"outlier_detection.{field}: {error}",)


def _transport(msg: Message, name: str = "envoy.transport_sockets.tls") -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=name, typed_config=_pack(msg))


def _provider_tls() -> tls_pb2.UpstreamTlsContext:
    common = tls_pb2.CommonTlsContext(
        tls_certificate_provider_instance=common_pb2.CertificateProviderPluginInstance(
            instance_name="spiffe", certificate_name="default"
        ),
    )
    common.combined_validation_context.default_validation_context.ca_certificate_provider_instance.instance_name = "spiffe"
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni="svc.local")


def test_upstream_tls_with_certificate_providers() -> None:
    tls = _decode(b.eds_cluster(transport_socket=_transport(_provider_tls()))).upstream_tls
    assert tls is not None
    assert tls.sni == "svc.local"
    assert tls.identity == CertificateProviderInstance("spiffe", "default")
    assert tls.validation is not None
    assert tls.validation.ca_certificate_provider == CertificateProviderInstance("spiffe")


def test_upstream_tls_with_sds() -> None:
    common = tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[secret_pb2.SdsSecretConfig(name="default")],
        validation_context_sds_secret_config=secret_pb2.SdsSecretConfig(
            name="ROOTCA", sds_config=b.ads()
        ),
    )
    tls = _decode(
        b.eds_cluster(
            transport_socket=_transport(tls_pb2.UpstreamTlsContext(common_tls_context=common))
        )
    ).upstream_tls
    assert tls is not None
    assert tls.identity == SdsSecretConfig("default")
    assert tls.validation_sds_secret == "ROOTCA"


@pytest.mark.parametrize(
    ("socket", "error"),
    [
        pytest.param(
            _transport(tls_pb2.UpstreamTlsContext()),
            "transport_socket.typed_config.common_tls_context: no way to verify the server",
            id="tls-without-validation",
        ),
        pytest.param(
            _transport(protocol_pb2.HttpProtocolOptions(), name="custom"),
            "transport_socket: unsupported transport socket envoy.config.core.v3.HttpProtocolOptions",
            id="unknown-socket",
        ),
        pytest.param(
            _transport(
                tls_pb2.UpstreamTlsContext(
                    common_tls_context=tls_pb2.CommonTlsContext(
                        validation_context_sds_secret_config=secret_pb2.SdsSecretConfig(
                            name="ca",
                            sds_config=config_source_pb2.ConfigSource(
                                api_config_source=config_source_pb2.ApiConfigSource()
                            ),
                        )
                    )
                )
            ),
            "validation_context_sds_secret_config.sds_config.api_config_source.api_type: "
            "must be GRPC",
            id="sds-api-source-without-grpc",
        ),
        pytest.param(
            _transport(
                tls_pb2.UpstreamTlsContext(
                    common_tls_context=tls_pb2.CommonTlsContext(
                        validation_context=common_pb2.CertificateValidationContext(
                            trusted_ca=base_pb2.DataSource(filename="/ca.pem"),
                            verify_certificate_spki=["abc"],
                        )
                    )
                )
            ),
            "validation_context.verify_certificate_spki: is not supported",
            id="spki-pinning",
        ),
    ],
)
def test_transport_socket_errors(socket: base_pb2.TransportSocket, error: str) -> None:
    errors = _errors(b.eds_cluster(transport_socket=socket))
    assert any(error in e for e in errors), errors


def test_raw_buffer_socket_is_plaintext() -> None:
    socket = base_pb2.TransportSocket(name="envoy.transport_sockets.raw_buffer")
    assert _decode(b.eds_cluster(transport_socket=socket)).upstream_tls is None


def _http_options(**kw: Any) -> dict[str, Any]:
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _pack(
            http_protocol_options_pb2.HttpProtocolOptions(**kw)
        )
    }


@pytest.mark.parametrize(
    ("kw", "http2", "max_requests"),
    [
        pytest.param({}, False, None, id="default-http1"),
        pytest.param(
            {"http2_protocol_options": protocol_pb2.Http2ProtocolOptions()},
            True,
            None,
            id="legacy-http2",
        ),
        pytest.param(
            {
                "typed_extension_protocol_options": _http_options(
                    explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                        http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
                    ),
                    common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
                        max_requests_per_connection=wrappers_pb2.UInt32Value(value=100)
                    ),
                )
            },
            True,
            100,
            id="typed-explicit-http2",
        ),
        pytest.param(
            {"max_requests_per_connection": wrappers_pb2.UInt32Value(value=5)},
            False,
            5,
            id="legacy-max-requests",
        ),
    ],
)
def test_protocol_options(kw: dict[str, Any], http2: bool, max_requests: int | None) -> None:
    cluster = _decode(b.eds_cluster(**kw))
    assert cluster.http2 is http2
    assert cluster.max_requests_per_connection == max_requests


def test_common_lb_config_and_misc() -> None:
    common = C.CommonLbConfig(
        healthy_panic_threshold=percent_pb2.Percent(value=30.0),
        locality_weighted_lb_config=C.CommonLbConfig.LocalityWeightedLbConfig(),
    )
    lrs = config_source_pb2.ConfigSource()
    lrs.self.SetInParent()
    cluster = _decode(
        b.eds_cluster(
            common_lb_config=common,
            connect_timeout=duration_pb2.Duration(nanos=250_000_000),
            lrs_server=lrs,
            alt_stat_name="x",
        )
    )
    assert cluster.healthy_panic_threshold == 30.0
    assert cluster.locality_weighted_lb is True
    assert cluster.connect_timeout == 0.25
    assert cluster.lrs_server is True
    assert cluster.ignored_fields == ("alt_stat_name",)


@pytest.mark.parametrize(
    ("msg", "error"),
    [
        pytest.param(
            C(name="s", type=C.STRICT_DNS),
            "load_assignment: is required for a STRICT_DNS cluster",
            id="strict-dns-without-endpoints",
        ),
        pytest.param(
            C(name="o", type=C.ORIGINAL_DST),
            "type: unsupported cluster type ORIGINAL_DST",
            id="original-dst",
        ),
        pytest.param(
            C(name="e", type=C.EDS),
            "eds_cluster_config.eds_config: is required (ads or self)",
            id="eds-no-config",
        ),
        pytest.param(
            C(name="st"),
            "load_assignment: is required for a STATIC cluster",
            id="static-no-endpoints",
        ),
        pytest.param(
            _aggregate(),
            "cluster_type.typed_config.clusters: an aggregate cluster needs at least one cluster",
            id="aggregate-empty",
        ),
        pytest.param(
            _with_assignment(C.LOGICAL_DNS, ("a", 1), ("b", 2)),
            "load_assignment.endpoints[0].lb_endpoints: "
            "a LOGICAL_DNS cluster needs exactly one endpoint, found 2",
            id="logical-dns-two-endpoints",
        ),
        pytest.param(
            b.eds_cluster(connect_timeout=duration_pb2.Duration()),
            "connect_timeout: must be > 0",
            id="zero-connect-timeout",
        ),
        pytest.param(
            b.eds_cluster(lrs_server=b.ads()),
            "lrs_server: only self (the ADS server) is supported",
            id="lrs-not-self",
        ),
        pytest.param(
            b.eds_cluster(
                common_lb_config=C.CommonLbConfig(
                    healthy_panic_threshold=percent_pb2.Percent(value=-1)
                )
            ),
            "common_lb_config.healthy_panic_threshold.value: percent -1.0 must be in [0, 100]",
            id="panic-threshold",
        ),
    ],
)
def test_cluster_errors(msg: cluster_pb2.Cluster, error: str) -> None:
    assert error in _errors(msg)


def test_custom_cluster_type_is_invalid() -> None:
    cluster = C(name="x")
    cluster.cluster_type.name = "envoy.clusters.redis"
    assert _errors(cluster) == (
        "cluster_type.typed_config: unsupported custom cluster type envoy.clusters.redis",
    )


def test_every_problem_is_reported() -> None:
    msg = b.eds_cluster(
        connect_timeout=duration_pb2.Duration(seconds=-1),
        lb_policy=C.CLUSTER_PROVIDED,
        outlier_detection=outlier_detection_pb2.OutlierDetection(
            max_ejection_percent=wrappers_pb2.UInt32Value(value=200)
        ),
    )
    assert len(_errors(msg)) == 3


def test_parse_cluster() -> None:
    assert parse_cluster(b.eds_cluster()).type == "EDS"
    with pytest.raises(ResourceValidationError, match="unsupported cluster type ORIGINAL_DST"):
        parse_cluster(C(name="s", type=C.ORIGINAL_DST))


def test_istio_style_mtls_context() -> None:
    """Identity and CA from certificate providers, SANs in the default context (gRFC A29)."""
    common = tls_pb2.CommonTlsContext(
        tls_certificate_provider_instance=common_pb2.CertificateProviderPluginInstance(
            instance_name="default"
        )
    )
    combined = common.combined_validation_context
    combined.default_validation_context.match_subject_alt_names.add(
        exact="spiffe://cluster.local/ns/default/sa/reviews"
    )
    combined.validation_context_certificate_provider_instance.instance_name = "default"
    combined.validation_context_certificate_provider_instance.certificate_name = "ROOTCA"
    tls = _decode(
        b.eds_cluster(
            transport_socket=_transport(tls_pb2.UpstreamTlsContext(common_tls_context=common))
        )
    ).upstream_tls
    assert tls is not None
    assert tls.identity == CertificateProviderInstance("default")
    assert tls.validation is not None
    assert tls.validation.ca_certificate_provider == CertificateProviderInstance(
        "default", "ROOTCA"
    )
    assert tls.validation.match_subject_alt_names[0].san_type == "ANY"


def test_empty_http2_options_are_not_reported() -> None:
    cluster = _decode(b.eds_cluster(http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
    assert cluster.http2 is True
    assert cluster.ignored_fields == ()
