"""CDS rules: C-core ``xds_cluster_parser.cc`` (with ``xds_lb_policy_registry.cc``
and the TLS part of ``xds_common_types_parser.cc``) and Envoy's ``cluster.proto``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.unit.resources.conformance.table import ADS, DELETE, Case, Replace, merged, typed

_AGGREGATE = "envoy.extensions.clusters.aggregate.v3.ClusterConfig"
_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_LBP = "envoy.extensions.load_balancing_policies"
_RR = f"{_LBP}.round_robin.v3.RoundRobin"
_WRR = f"{_LBP}.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin"

BASE: dict[str, Any] = {
    "name": "c",
    "type": "EDS",
    "eds_cluster_config": {"eds_config": ADS},
}


def _dns(**socket: Any) -> dict[str, Any]:
    """A LOGICAL_DNS cluster in C-core's accepted shape (one locality, no
    weight needed, one endpoint) with ``socket`` merged into its address."""
    address = merged({"address": "dns.example", "port_value": 8080}, socket)
    return {
        "name": "c",
        "type": "LOGICAL_DNS",
        "load_assignment": {
            "cluster_name": "c",
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": address}}}]}
            ],
        },
    }


def _lbp(*configs: dict[str, Any]) -> dict[str, Any]:
    return {
        "load_balancing_policy": {
            "policies": [
                {"typed_extension_config": {"name": "p", "typed_config": c}} for c in configs
            ]
        }
    }


def _nested_wrr_locality(depth: int) -> dict[str, Any]:
    """``depth`` WrrLocality policies, each the only child of the one above."""
    policy = typed(_RR)
    for _ in range(depth):
        policy = typed(
            f"{_LBP}.wrr_locality.v3.WrrLocality",
            endpoint_picking_policy={
                "policies": [{"typed_extension_config": {"name": "p", "typed_config": policy}}]
            },
        )
    return policy


def _tls(common: dict[str, Any]) -> dict[str, Any]:
    return {
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": typed(_TLS, common_tls_context=common),
        }
    }


_CA = {"validation_context": {"ca_certificate_provider_instance": {"instance_name": "default"}}}


def _case(
    id: str,
    patch: dict[str, Any],
    grpc: str,
    path: str = "",
    differs: str = "",
    tweak: Callable[[Any], None] | None = None,
) -> Case:
    return Case(f"cds-{id}", "Cluster", merged(BASE, patch), grpc, path, differs, tweak)  # type: ignore[arg-type]


def _nanos_too_big(msg: Any) -> None:
    msg.outlier_detection.base_ejection_time.nanos = 1_000_000_000


def _whole(id: str, resource: dict[str, Any], grpc: str, path: str = "", differs: str = "") -> Case:
    return Case(f"cds-{id}", "Cluster", resource, grpc, path, differs)  # type: ignore[arg-type]


_ENVOY_STATIC = (
    "STATIC clusters are Envoy's; proxyless serves them (the httpx transport "
    "and tests use them), gRPC knows only EDS, LOGICAL_DNS and aggregate"
)
_STRICT_DNS = (
    "STRICT_DNS clusters are Envoy's; proxyless resolves them (Istio's DNS "
    "ServiceEntries become STRICT_DNS clusters) and needs their load_assignment; "
    "gRPC NACKs the type"
)
_ENVOY_LEGACY_LB = (
    "Envoy's lb_policy enum values that proxyless has a balancer for are "
    "honoured; gRPC reads only ROUND_ROBIN and RING_HASH from the enum"
)

CASES = [
    # discovery type
    _case("eds-valid", {}, "accept"),
    _case(
        "eds-config-self", {"eds_cluster_config": {"eds_config": Replace({"self": {}})}}, "accept"
    ),
    _case(
        "eds-without-eds-cluster-config",
        {"eds_cluster_config": DELETE},
        "nack",
        "eds_cluster_config",
    ),
    _case(
        "eds-without-eds-config",
        {"eds_cluster_config": {"eds_config": DELETE}},
        "nack",
        "eds_cluster_config.eds_config",
    ),
    _case(
        "eds-config-not-ads",
        {"eds_cluster_config": {"eds_config": Replace({"path_config_source": {"path": "/x"}})}},
        "nack",
        "eds_cluster_config.eds_config",
    ),
    _case(
        "eds-xdstp-name-without-service-name",
        {"name": "xdstp://authority/envoy.config.cluster.v3.Cluster/c"},
        "nack",
        "eds_cluster_config.service_name",
    ),
    _case(
        "eds-xdstp-name-with-service-name",
        {
            "name": "xdstp://authority/envoy.config.cluster.v3.Cluster/c",
            "eds_cluster_config": {"service_name": "xdstp://authority/e/c"},
        },
        "accept",
    ),
    _whole("logical-dns-valid", _dns(), "accept"),
    _whole(
        "logical-dns-without-load-assignment",
        {"name": "c", "type": "LOGICAL_DNS"},
        "nack",
        "load_assignment",
    ),
    _whole(
        "logical-dns-two-localities",
        merged(
            _dns(),
            {
                "load_assignment": {
                    "endpoints": _dns()["load_assignment"]["endpoints"] * 2,
                }
            },
        ),
        "nack",
        "load_assignment.endpoints",
    ),
    _whole(
        "logical-dns-two-endpoints",
        merged(
            _dns(),
            {
                "load_assignment": {
                    "endpoints": [
                        {
                            "lb_endpoints": _dns()["load_assignment"]["endpoints"][0][
                                "lb_endpoints"
                            ]
                            * 2
                        }
                    ]
                }
            },
        ),
        "nack",
        "load_assignment.endpoints[0].lb_endpoints",
    ),
    _whole(
        "logical-dns-lb-endpoint-without-endpoint",
        merged(
            _dns(),
            {"load_assignment": {"endpoints": [{"lb_endpoints": [{"endpoint_name": "e"}]}]}},
        ),
        "nack",
        "load_assignment.endpoints[0].lb_endpoints[0].endpoint",
    ),
    _whole(
        "logical-dns-pipe-address",
        merged(
            _dns(),
            {
                "load_assignment": {
                    "endpoints": [
                        {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": "/s"}}}}]}
                    ]
                }
            },
        ),
        "nack",
        "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address",
    ),
    _whole(
        "logical-dns-resolver-name",
        _dns(resolver_name="custom"),
        "nack",
        "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.resolver_name",
    ),
    _whole(
        "logical-dns-empty-address",
        _dns(address=""),
        "nack",
        "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
    ),
    _whole(
        "logical-dns-named-port",
        _dns(port_value=DELETE, named_port="http"),
        "nack",
        "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value",
    ),
    _case(
        "aggregate-valid",
        {
            "type": DELETE,
            "eds_cluster_config": DELETE,
            "cluster_type": {"name": "agg", "typed_config": typed(_AGGREGATE, clusters=["a", "b"])},
        },
        "accept",
    ),
    _case(
        "aggregate-without-clusters",
        {
            "type": DELETE,
            "eds_cluster_config": DELETE,
            "cluster_type": {"name": "agg", "typed_config": typed(_AGGREGATE)},
        },
        "nack",
        "cluster_type.typed_config.clusters",
    ),
    _case(
        "custom-cluster-type-unknown",
        {
            "type": DELETE,
            "eds_cluster_config": DELETE,
            "cluster_type": {"name": "x", "typed_config": typed("google.protobuf.Empty")},
        },
        "nack",
        "cluster_type.typed_config",
    ),
    _case(
        "custom-cluster-type-without-typed-config",
        {"type": DELETE, "eds_cluster_config": DELETE, "cluster_type": {"name": "x"}},
        "nack",
        "cluster_type.typed_config",
    ),
    _whole(
        "static",
        {
            "name": "c",
            "type": "STATIC",
            "load_assignment": {
                "cluster_name": "c",
                "endpoints": [
                    {
                        "load_balancing_weight": 1,
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": 80,
                                        }
                                    }
                                }
                            }
                        ],
                    }
                ],
            },
        },
        "nack",
        differs=_ENVOY_STATIC,
    ),
    _case(
        "strict-dns-without-load-assignment",
        {"type": "STRICT_DNS", "eds_cluster_config": DELETE},
        "nack",
        "load_assignment",
    ),
    _whole(
        "strict-dns",
        {
            "name": "c",
            "type": "STRICT_DNS",
            "load_assignment": {
                "cluster_name": "c",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "localhost",
                                            "port_value": 80,
                                        }
                                    }
                                }
                            }
                        ],
                    }
                ],
            },
        },
        "nack",
        differs=_STRICT_DNS,
    ),
    _case("original-dst", {"type": "ORIGINAL_DST", "eds_cluster_config": DELETE}, "nack", "type"),
    # legacy lb_policy enum
    _case("lb-policy-round-robin", {"lb_policy": "ROUND_ROBIN"}, "accept"),
    _case("lb-policy-ring-hash", {"lb_policy": "RING_HASH"}, "accept"),
    _case(
        "lb-policy-ring-hash-sizes",
        {
            "lb_policy": "RING_HASH",
            "ring_hash_lb_config": {"minimum_ring_size": 10, "maximum_ring_size": 20},
        },
        "accept",
    ),
    _case(
        "ring-hash-maximum-too-big",
        {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"maximum_ring_size": 8388609}},
        "nack",
        "ring_hash_lb_config.maximum_ring_size",
    ),
    _case(
        "ring-hash-maximum-zero",
        {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"maximum_ring_size": 0}},
        "nack",
        "ring_hash_lb_config",
    ),
    _case(
        "ring-hash-minimum-zero",
        {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 0}},
        "nack",
        "ring_hash_lb_config.minimum_ring_size",
    ),
    _case(
        "ring-hash-minimum-too-big",
        {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 8388609}},
        "nack",
        "ring_hash_lb_config.minimum_ring_size",
    ),
    _case(
        "ring-hash-minimum-above-maximum",
        {
            "lb_policy": "RING_HASH",
            "ring_hash_lb_config": {"minimum_ring_size": 30, "maximum_ring_size": 20},
        },
        "nack",
        "ring_hash_lb_config",
    ),
    _case(
        "ring-hash-murmur",
        {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"hash_function": "MURMUR_HASH_2"}},
        "nack",
        "ring_hash_lb_config.hash_function",
    ),
    _case(
        "lb-policy-least-request", {"lb_policy": "LEAST_REQUEST"}, "nack", differs=_ENVOY_LEGACY_LB
    ),
    _case("lb-policy-random", {"lb_policy": "RANDOM"}, "nack", differs=_ENVOY_LEGACY_LB),
    _case("lb-policy-maglev", {"lb_policy": "MAGLEV"}, "nack", differs=_ENVOY_LEGACY_LB),
    _case("lb-policy-cluster-provided", {"lb_policy": "CLUSTER_PROVIDED"}, "nack", "lb_policy"),
    # load_balancing_policy (gRFC A52)
    _case("load-balancing-policy-round-robin", _lbp(typed(_RR)), "accept"),
    _case(
        "load-balancing-policy-wrr-locality",
        _lbp(
            typed(
                f"{_LBP}.wrr_locality.v3.WrrLocality",
                endpoint_picking_policy={
                    "policies": [
                        {"typed_extension_config": {"name": "rr", "typed_config": typed(_RR)}}
                    ]
                },
            )
        ),
        "accept",
    ),
    _case(
        "load-balancing-policy-ring-hash",
        _lbp(typed(f"{_LBP}.ring_hash.v3.RingHash", hash_function="XX_HASH")),
        "accept",
    ),
    _case(
        "load-balancing-policy-ring-hash-minimum-above-maximum",
        _lbp(
            typed(
                f"{_LBP}.ring_hash.v3.RingHash",
                minimum_ring_size=30,
                maximum_ring_size=20,
            )
        ),
        "nack",
        "load_balancing_policy.policies[0]",
    ),
    _case(
        "load-balancing-policy-least-request",
        _lbp(typed(f"{_LBP}.least_request.v3.LeastRequest", choice_count=3)),
        "accept",
    ),
    _case(
        "load-balancing-policy-least-request-one-choice",
        _lbp(typed(f"{_LBP}.least_request.v3.LeastRequest", choice_count=1)),
        "nack",
        "load_balancing_policy.policies[0]",
    ),
    _case(
        "load-balancing-policy-pick-first",
        _lbp(typed(f"{_LBP}.pick_first.v3.PickFirst", shuffle_address_list=True)),
        "accept",
    ),
    _case(
        "load-balancing-policy-ring-hash-murmur",
        _lbp(typed(f"{_LBP}.ring_hash.v3.RingHash", hash_function="MURMUR_HASH_2")),
        "nack",
        "load_balancing_policy.policies[0].typed_extension_config.typed_config.hash_function",
    ),
    _case(
        "load-balancing-policy-wrr-locality-without-child",
        _lbp(typed(f"{_LBP}.wrr_locality.v3.WrrLocality")),
        "nack",
        "load_balancing_policy.policies[0].typed_extension_config.typed_config.endpoint_picking_policy",
    ),
    _case(
        "load-balancing-policy-nested-too-deep",
        _lbp(_nested_wrr_locality(17)),
        "nack",
        "load_balancing_policy",
    ),
    _case(
        "load-balancing-policy-typed-struct-unknown",
        _lbp(typed("xds.type.v3.TypedStruct", type_url="type.googleapis.com/test.Unknown")),
        "nack",
        "load_balancing_policy",
    ),
    _case("load-balancing-policy-client-side-wrr", _lbp(typed(_WRR)), "accept"),
    _case(
        "load-balancing-policy-client-side-wrr-settings",
        _lbp(
            typed(
                _WRR,
                blackout_period="5s",
                weight_expiration_period="60s",
                weight_update_period="1s",
                error_utilization_penalty=1.5,
            )
        ),
        "accept",
    ),
    _case(
        "load-balancing-policy-client-side-wrr-negative-penalty",
        _lbp(typed(_WRR, error_utilization_penalty=-1.0)),
        "nack",
        "load_balancing_policy.policies[0].typed_extension_config.typed_config.error_utilization_penalty",
    ),
    _case(
        "load-balancing-policy-client-side-wrr-negative-duration",
        _lbp(typed(_WRR, blackout_period="-1s")),
        "nack",
        "load_balancing_policy.policies[0].typed_extension_config.typed_config.blackout_period",
    ),
    _case(
        "load-balancing-policy-unsupported-then-round-robin",
        _lbp(typed("google.protobuf.Empty"), typed(_RR)),
        "accept",
    ),
    _case(
        "load-balancing-policy-nothing-supported",
        _lbp(typed("google.protobuf.Empty")),
        "nack",
        "load_balancing_policy",
    ),
    # transport_socket
    _case("transport-socket-tls", _tls(_CA), "accept"),
    _case(
        "transport-socket-tls-without-ca",
        _tls({}),
        "nack",
        "transport_socket.typed_config.common_tls_context",
    ),
    _case(
        "transport-socket-tls-unknown-provider-instance",
        _tls(
            {
                "validation_context": {
                    "ca_certificate_provider_instance": {"instance_name": "missing"}
                }
            }
        ),
        "nack",
        differs=(
            "the parser does not see the bootstrap: connections to the cluster "
            "fail naming the missing certificate-provider instance "
            "(security.md); C-core checks the name while parsing"
        ),
    ),
    _case(
        "transport-socket-tls-sds-identity",
        _tls(
            {
                **_CA,
                "tls_certificate_sds_secret_configs": [
                    {"name": "default", "sds_config": {"ads": {}}}
                ],
            }
        ),
        "nack",
        differs=(
            "identities and trust from SDS (and inline or file certificates) "
            "are Envoy's and istio-agent's way; gRPC takes certificate "
            "provider instances only (see security.md)"
        ),
    ),
    _case(
        "transport-socket-tls-params",
        _tls({**_CA, "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"}}),
        "nack",
        differs=(
            "tls_params is reported as ignored (the TLS libraries' defaults apply: "
            "TLS 1.2 or later), so that clusters istiod writes for Envoy "
            "still load; gRPC rejects it"
        ),
    ),
    _case(
        "transport-socket-tls-verify-spki",
        _tls(
            {
                "validation_context": {
                    **_CA["validation_context"],
                    "verify_certificate_spki": ["NvqYIYSbgK2vCJpQhObf77vv+bQWtc5ek5RIOwPiC9A="],
                }
            }
        ),
        "nack",
        "transport_socket.typed_config.common_tls_context.validation_context.verify_certificate_spki",
    ),
    _case(
        "transport-socket-raw-buffer",
        {
            "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": typed("envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"),
            }
        },
        "nack",
        differs=(
            "raw_buffer is Envoy's explicit plaintext transport socket, the "
            "same as no transport socket; gRPC knows only UpstreamTlsContext"
        ),
    ),
    _case(
        "transport-socket-unsupported-type",
        {
            "transport_socket": {
                "name": "envoy.transport_sockets.tap",
                "typed_config": typed("google.protobuf.Empty"),
            }
        },
        "nack",
        "transport_socket",
    ),
    _case(
        "transport-socket-without-typed-config",
        {"transport_socket": {"name": "envoy.transport_sockets.tls"}},
        "nack",
        "transport_socket",
    ),
    # lrs_server
    _case("lrs-server-self", {"lrs_server": {"self": {}}}, "accept"),
    _case("lrs-server-ads", {"lrs_server": ADS}, "nack", "lrs_server"),
    # upstream_config
    _case(
        "upstream-config-http-protocol-options",
        {
            "upstream_config": {
                "name": "u",
                "typed_config": typed(
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    common_http_protocol_options={"idle_timeout": "60s"},
                ),
            }
        },
        "accept",
    ),
    _case(
        "upstream-config-unsupported-type",
        {"upstream_config": {"name": "u", "typed_config": typed("google.protobuf.Empty")}},
        "nack",
        "upstream_config.typed_config",
    ),
    _case(
        "upstream-config-negative-idle-timeout",
        {
            "upstream_config": {
                "name": "u",
                "typed_config": typed(
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    common_http_protocol_options={"idle_timeout": "-1s"},
                ),
            }
        },
        "nack",
        "upstream_config.typed_config.common_http_protocol_options.idle_timeout",
    ),
    # circuit breakers (only DEFAULT max_requests is read by gRPC)
    _case(
        "circuit-breakers",
        {"circuit_breakers": {"thresholds": [{"priority": "DEFAULT", "max_requests": 10}]}},
        "accept",
    ),
    # outlier detection (gRFC A50)
    _case("outlier-detection-empty", {"outlier_detection": {}}, "accept"),
    _case(
        "outlier-detection-negative-interval",
        {"outlier_detection": {"interval": "-1s"}},
        "nack",
        "outlier_detection.interval",
    ),
    _case(
        "outlier-detection-nanos-too-big",
        {"outlier_detection": {"base_ejection_time": "1s"}},
        "nack",
        "outlier_detection.base_ejection_time",
        tweak=_nanos_too_big,
    ),
    _case(
        "outlier-detection-negative-max-ejection-time",
        {"outlier_detection": {"max_ejection_time": "-5s"}},
        "nack",
        "outlier_detection.max_ejection_time",
    ),
    _case(
        "outlier-detection-max-ejection-percent",
        {"outlier_detection": {"max_ejection_percent": 101}},
        "nack",
        "outlier_detection.max_ejection_percent",
    ),
    _case(
        "outlier-detection-enforcing-success-rate",
        {"outlier_detection": {"enforcing_success_rate": 101}},
        "nack",
        "outlier_detection.enforcing_success_rate",
    ),
    _case(
        "outlier-detection-enforcing-failure-percentage",
        {"outlier_detection": {"enforcing_failure_percentage": 101}},
        "nack",
        "outlier_detection.enforcing_failure_percentage",
    ),
    _case(
        "outlier-detection-failure-percentage-threshold",
        {
            "outlier_detection": {
                "enforcing_failure_percentage": 50,
                "failure_percentage_threshold": 101,
            }
        },
        "accept",
        "outlier_detection.failure_percentage_threshold",
        differs=(
            "a threshold above 100 % is invalid (Envoy: lte 100; gRFC A50 "
            "means the same); C-core compares the enforcement percentage "
            "instead of the threshold and lets it through"
        ),
    ),
    # common_lb_config
    _case(
        "common-lb-config-override-host-status",
        {"common_lb_config": {"override_host_status": {"statuses": ["HEALTHY", "DRAINING"]}}},
        "accept",
    ),
    # Envoy PGV rules gRPC does not read
    _case(
        "connect-timeout-zero",
        {"connect_timeout": "0s"},
        "accept",
        "connect_timeout",
        differs="Envoy requires connect_timeout > 0 (cluster.proto); gRPC does not read it",
    ),
]
