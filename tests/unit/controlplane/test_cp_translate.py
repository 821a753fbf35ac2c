"""Istio YAML -> xDS, checked field by field and through proxyless' own resource parsers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import struct_pb2

from proxyless.controlplane.istio.load import load_mesh
from proxyless.controlplane.istio.translate import (
    ENVOY,
    PROXYLESS,
    NodeProfile,
    Translator,
    node_profile,
)
from proxyless.controlplane.model import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    NodeInfo,
)
from proxyless.resources.parse import (
    decode_cluster,
    decode_cluster_load_assignment,
    decode_listener,
    decode_route_configuration,
)

HOST = "reviews.default.svc.cluster.local"
CL = f"outbound|9080||{HOST}"
CL_V1 = f"outbound|9080|v1|{HOST}"
CL_V2 = f"outbound|9080|v2|{HOST}"

SE = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [{HOST}]
  ports: [{{number: 9080, name: grpc, protocol: GRPC}}, {{number: 8080, name: http, protocol: HTTP, targetPort: 18080}}]
  endpoints:
  - {{address: 10.0.0.1, ports: {{grpc: 5001}}, labels: {{version: v1}}, locality: us/east/a, weight: 3}}
  - {{address: 10.0.0.2, ports: {{grpc: 5001}}, labels: {{version: v1}}, locality: us/west/a}}
  - {{address: 10.0.0.3, ports: {{grpc: 5001}}, labels: {{version: v2}}, locality: eu/west/a}}
"""


def dr(
    policy: str = "",
    subsets: str = "[{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]",
) -> str:
    body = f"  trafficPolicy: {policy}\n" if policy else ""
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
{body}  subsets: {subsets}
"""


def vs(http: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
{http}
"""


SPLIT = (
    "  - route:\n"
    "    - {destination: {host: reviews, subset: v1}, weight: 90}\n"
    "    - {destination: {host: reviews, subset: v2}, weight: 10}\n"
)


def translate(*docs: str, profile: NodeProfile | None = None) -> dict[str, dict[str, Any]]:
    mesh = load_mesh("\n---\n".join(docs), "mesh.yaml")
    snapshot = Translator(mesh).snapshot(profile or NodeProfile())
    return {
        t: dict(snapshot.get(t)) for t in (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)
    }


def route(out: dict[str, dict[str, Any]], index: int = 0, port: int = 9080) -> Any:
    return out[ROUTE_TYPE][f"{HOST}:{port}"].virtual_hosts[0].routes[index]


def unpack(any_msg: Any, cls: Any) -> Any:
    msg = cls()
    assert any_msg.Unpack(msg)
    return msg


Check = Callable[[dict[str, dict[str, Any]]], None]


def _naming(out: dict[str, dict[str, Any]]) -> None:
    assert set(out[LISTENER_TYPE]) == {
        f"{HOST}:9080",
        "reviews.default.svc:9080",
        "reviews.default:9080",
        "reviews:9080",
        f"{HOST}:8080",
        "reviews.default.svc:8080",
        "reviews.default:8080",
        "reviews:8080",
    }
    hcm = unpack(
        out[LISTENER_TYPE]["reviews:9080"].api_listener.api_listener, hcm_pb2.HttpConnectionManager
    )
    assert hcm.rds.route_config_name == f"{HOST}:9080"
    assert hcm.rds.config_source.HasField("ads")
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]
    assert set(out[ROUTE_TYPE]) == {f"{HOST}:9080", f"{HOST}:8080"}
    assert set(out[CLUSTER_TYPE]) == {
        CL,
        CL_V1,
        CL_V2,
        f"outbound|8080||{HOST}",
        f"outbound|8080|v1|{HOST}",
        f"outbound|8080|v2|{HOST}",
    }
    assert set(out[ENDPOINT_TYPE]) == set(out[CLUSTER_TYPE])
    assert out[CLUSTER_TYPE][CL_V1].eds_cluster_config.service_name == CL_V1
    vhost = out[ROUTE_TYPE][f"{HOST}:9080"].virtual_hosts[0]
    assert list(vhost.domains) == [
        HOST,
        f"{HOST}:9080",
        "reviews.default.svc",
        "reviews.default.svc:9080",
        "reviews.default",
        "reviews.default:9080",
        "reviews",
        "reviews:9080",
    ]


def _default_route(out: dict[str, dict[str, Any]]) -> None:
    r = route(out)
    assert r.match.prefix == "/"
    assert r.route.cluster == CL
    assert r.route.timeout.seconds == 0 and r.route.HasField("timeout")


def _split_and_header(out: dict[str, dict[str, Any]]) -> None:
    mobile, split = route(out, 0), route(out, 1)
    assert mobile.match.headers[0].name == "user-agent"
    assert mobile.match.headers[0].string_match.safe_regex.regex == ".*Mobile.*"
    assert mobile.route.cluster == CL_V2
    clusters = [(c.name, c.weight.value) for c in split.route.weighted_clusters.clusters]
    assert clusters == [(CL_V1, 90), (CL_V2, 10)]


def _matches(out: dict[str, dict[str, Any]]) -> None:
    r0, r1, r2 = route(out, 0), route(out, 1), route(out, 2)
    assert r0.match.path == "/reviews.Reviews/Get"
    assert r1.match.prefix == "/reviews." and r1.match.case_sensitive.value is False
    assert r1.name == "byprefix.m2"
    headers = {h.name: h for h in r1.match.headers}
    assert headers[":method"].string_match.exact == "POST"
    assert headers["x-env"].string_match.prefix == "canary"
    assert headers["x-debug"].present_match and headers["x-debug"].invert_match
    assert r1.match.query_parameters[0].name == "q"
    assert r2.match.safe_regex.regex == "/.*"


def _retries(out: dict[str, dict[str, Any]]) -> None:
    explicit = route(out, 0).route.retry_policy
    assert explicit.retry_on == "unavailable,cancelled,retriable-status-codes"
    assert list(explicit.retriable_status_codes) == [503]
    assert explicit.num_retries.value == 3
    assert explicit.per_try_timeout.ToMilliseconds() == 250
    assert explicit.retry_host_predicate[0].name == "envoy.retry_host_predicates.previous_hosts"
    default = route(out, 1).route.retry_policy
    assert (
        default.retry_on
        == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    )
    assert list(default.retriable_status_codes) == [503]
    assert not route(out, 2).route.HasField("retry_policy")  # attempts: 0


def _timeout(out: dict[str, dict[str, Any]]) -> None:
    action = route(out).route
    assert action.timeout.ToMilliseconds() == 1500
    assert action.max_stream_duration.max_stream_duration.ToMilliseconds() == 1500
    assert action.max_stream_duration.grpc_timeout_header_max.ToMilliseconds() == 1500


def _fault(out: dict[str, dict[str, Any]]) -> None:
    hcm = unpack(
        out[LISTENER_TYPE][f"{HOST}:9080"].api_listener.api_listener, hcm_pb2.HttpConnectionManager
    )
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    config = unpack(
        route(out).typed_per_filter_config["envoy.filters.http.fault"], fault_pb2.HTTPFault
    )
    assert config.delay.fixed_delay.ToMilliseconds() == 100
    assert config.delay.percentage.numerator == 50_000
    assert config.abort.grpc_status == 14
    assert config.abort.percentage.numerator == 1_000_000


def _headers_mirror_rewrite(out: dict[str, dict[str, Any]]) -> None:
    r = route(out)
    added = {(h.header.key, h.header.value, h.append_action) for h in r.request_headers_to_add}
    assert added == {
        ("x-set", "1", base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD),
        ("x-add", "2", base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD),
    }
    assert list(r.request_headers_to_remove) == ["x-drop"]
    assert list(r.response_headers_to_remove) == ["server"]
    mirror = r.route.request_mirror_policies[0]
    assert mirror.cluster == CL_V2
    assert mirror.runtime_fraction.default_value.numerator == 125_000
    assert r.route.prefix_rewrite == "/v2/"
    assert r.route.host_rewrite_literal == "reviews.internal"


def _lb_and_pool(out: dict[str, dict[str, Any]]) -> None:
    base = out[CLUSTER_TYPE][CL]
    assert base.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert base.connect_timeout.ToMilliseconds() == 500
    (thresholds,) = base.circuit_breakers.thresholds
    assert thresholds.max_connections.value == 10
    assert thresholds.max_requests.value == 100
    assert thresholds.max_pending_requests.value == 2**32 - 1
    assert thresholds.max_retries.value == 3
    v2 = out[CLUSTER_TYPE][CL_V2]  # the subset overrides the load balancer only
    assert v2.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert v2.ring_hash_lb_config.minimum_ring_size.value == 2048
    assert v2.circuit_breakers.thresholds[0].max_requests.value == 100
    hash_route = route(out)
    assert hash_route.route.cluster == CL_V2
    assert hash_route.route.hash_policy[0].header.header_name == "x-user"
    http_cluster = out[CLUSTER_TYPE][f"outbound|8080||{HOST}"]  # port-level settings
    assert http_cluster.lb_policy == cluster_pb2.Cluster.RANDOM


def _outlier(out: dict[str, dict[str, Any]]) -> None:
    od = out[CLUSTER_TYPE][CL_V1].outlier_detection
    assert od.consecutive_5xx.value == 3
    assert od.enforcing_consecutive_5xx.value == 100
    assert od.enforcing_success_rate.value == 0 and od.HasField("enforcing_success_rate")
    assert od.interval.seconds == 1
    assert od.base_ejection_time.seconds == 10
    assert od.max_ejection_percent.value == 50
    assert out[CLUSTER_TYPE][CL_V1].common_lb_config.healthy_panic_threshold.value == 0.0


def _protocols(out: dict[str, dict[str, Any]]) -> None:
    grpc_cluster = out[CLUSTER_TYPE][CL]
    options = unpack(
        grpc_cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ],
        http_protocol_options_pb2.HttpProtocolOptions,
    )
    assert options.explicit_http_config.HasField("http2_protocol_options")
    assert not out[CLUSTER_TYPE][f"outbound|8080||{HOST}"].typed_extension_protocol_options


def _endpoints(out: dict[str, dict[str, Any]]) -> None:
    cla = out[ENDPOINT_TYPE][CL]
    groups = {(g.locality.region, g.locality.zone): g for g in cla.endpoints}
    assert set(groups) == {("us", "east"), ("us", "west"), ("eu", "west")}
    east = groups[("us", "east")]
    assert east.load_balancing_weight.value == 3
    assert east.lb_endpoints[0].load_balancing_weight.value == 3
    assert east.lb_endpoints[0].endpoint.address.socket_address.port_value == 5001
    assert {g.priority for g in cla.endpoints} == {0}
    v2 = out[ENDPOINT_TYPE][CL_V2]
    assert [
        e.endpoint.address.socket_address.address for g in v2.endpoints for e in g.lb_endpoints
    ] == ["10.0.0.3"]
    http = out[ENDPOINT_TYPE][f"outbound|8080||{HOST}"]
    assert {
        e.endpoint.address.socket_address.port_value for g in http.endpoints for e in g.lb_endpoints
    } == {18080}


def _locality_priorities(out: dict[str, dict[str, Any]]) -> None:
    cla = out[ENDPOINT_TYPE][CL]
    priorities = {(g.locality.region, g.locality.zone): g.priority for g in cla.endpoints}
    assert priorities == {("us", "east"): 0, ("us", "west"): 1, ("eu", "west"): 2}


def _source_labels(out: dict[str, dict[str, Any]]) -> None:
    routes = out[ROUTE_TYPE][f"{HOST}:9080"].virtual_hosts[0].routes
    assert [r.route.cluster for r in routes] == [CL_V1]  # the canary-only match was dropped


def _envoy_node(out: dict[str, dict[str, Any]]) -> None:
    assert set(out[LISTENER_TYPE]) == {f"{HOST}:9080"}
    listener = out[LISTENER_TYPE][f"{HOST}:9080"]
    assert listener.address.socket_address.address == "127.0.0.1"
    assert listener.address.socket_address.port_value == 15001
    hcm = unpack(listener.filter_chains[0].filters[0].typed_config, hcm_pb2.HttpConnectionManager)
    assert hcm.codec_type == hcm_pb2.HttpConnectionManager.AUTO
    assert hcm.rds.route_config_name == f"{HOST}:9080"
    assert "*" in out[ROUTE_TYPE][f"{HOST}:9080"].virtual_hosts[0].domains


CASES = [
    pytest.param((SE, dr()), None, _naming, id="istiod-naming"),
    pytest.param((SE,), None, _default_route, id="default-route"),
    pytest.param(
        (
            SE,
            dr(),
            vs(
                "  - match: [{headers: {user-agent: {regex: '.*Mobile.*'}}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n"
                + SPLIT
            ),
        ),
        None,
        _split_and_header,
        id="split-and-header-match",
    ),
    pytest.param(
        (
            SE,
            vs(
                "  - match: [{uri: {exact: /reviews.Reviews/Get}}]\n    route: [{destination: {host: reviews, port: {number: 9080}}}]\n"
                "  - name: byprefix\n    match:\n    - name: m2\n      uri: {prefix: /reviews.}\n      ignoreUriCase: true\n      method: {exact: POST}\n"
                "      headers: {x-env: {prefix: canary}}\n      withoutHeaders: {x-debug: {}}\n      queryParams: {q: {exact: '1'}}\n"
                "    route: [{destination: {host: reviews, port: {number: 9080}}}]\n"
                "  - match: [{uri: {regex: '/.*'}}]\n    route: [{destination: {host: reviews, port: {number: 9080}}}]\n"
            ),
        ),
        None,
        _matches,
        id="match-fields",
    ),
    pytest.param(
        (
            SE,
            vs(
                "  - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: reviews, port: {number: 9080}}}]\n"
                "    retries: {attempts: 3, perTryTimeout: 250ms, retryOn: 'unavailable,cancelled,503'}\n"
                "  - match: [{uri: {prefix: /b}}]\n    route: [{destination: {host: reviews, port: {number: 9080}}}]\n    retries: {attempts: 2}\n"
                "  - route: [{destination: {host: reviews, port: {number: 9080}}}]\n    retries: {attempts: 0}\n"
            ),
        ),
        None,
        _retries,
        id="retries",
    ),
    pytest.param(
        (
            SE,
            vs(
                "  - route: [{destination: {host: reviews, port: {number: 9080}}}]\n    timeout: 1.5s\n"
            ),
        ),
        None,
        _timeout,
        id="timeout",
    ),
    pytest.param(
        (
            SE,
            vs(
                "  - route: [{destination: {host: reviews, port: {number: 9080}}}]\n"
                "    fault: {delay: {fixedDelay: 100ms, percentage: {value: 5}}, abort: {grpcStatus: UNAVAILABLE}}\n"
            ),
        ),
        None,
        _fault,
        id="fault",
    ),
    pytest.param(
        (
            SE,
            dr(),
            vs(
                "  - route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]\n"
                "    headers:\n      request: {set: {X-Set: '1'}, add: {x-add: '2'}, remove: [X-Drop]}\n"
                "      response: {remove: [server]}\n"
                "    mirror: {host: reviews, subset: v2, port: {number: 9080}}\n    mirrorPercentage: {value: 12.5}\n"
                "    rewrite: {uri: /v2/, authority: reviews.internal}\n"
            ),
        ),
        None,
        _headers_mirror_rewrite,
        id="headers-mirror-rewrite",
    ),
    pytest.param(
        (
            SE,
            dr(
                "{loadBalancer: {simple: LEAST_CONN}, connectionPool: {tcp: {maxConnections: 10, connectTimeout: 500ms}, "
                "http: {http2MaxRequests: 100, maxRetries: 3}}, portLevelSettings: [{port: {number: 8080}, loadBalancer: {simple: RANDOM}}]}",
                "[{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}, trafficPolicy: "
                "{loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}}}}]",
            ),
            vs("  - route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}}]\n"),
        ),
        None,
        _lb_and_pool,
        id="load-balancer-and-connection-pool",
    ),
    pytest.param(
        (
            SE,
            dr(
                "{outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 10s, maxEjectionPercent: 50}}"
            ),
        ),
        None,
        _outlier,
        id="outlier-detection",
    ),
    pytest.param((SE,), None, _protocols, id="http2-for-grpc-ports"),
    pytest.param((SE, dr()), None, _endpoints, id="endpoints-localities-subsets"),
    pytest.param(
        (SE, dr("{outlierDetection: {consecutive5xxErrors: 3}}")),
        NodeProfile(locality=("us", "east", "a")),
        _locality_priorities,
        id="locality-failover-priorities",
    ),
    pytest.param(
        (
            SE,
            dr(),
            vs(
                "  - match: [{sourceLabels: {track: canary}}]\n    route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}}]\n"
                "  - route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]\n"
            ),
        ),
        NodeProfile(labels=(("track", "stable"),)),
        _source_labels,
        id="source-labels",
    ),
    pytest.param(
        (SE,),
        NodeProfile(kind=ENVOY, listener_ports=((f"{HOST}:9080", 15001), ("nothing:1", 15002))),
        _envoy_node,
        id="envoy-listeners",
    ),
]


@pytest.mark.parametrize(("docs", "profile", "check"), CASES)
def test_translation(docs: tuple[str, ...], profile: NodeProfile | None, check: Check) -> None:
    out = translate(*docs, profile=profile)
    check(out)


DECODERS = {
    LISTENER_TYPE: decode_listener,
    ROUTE_TYPE: decode_route_configuration,
    CLUSTER_TYPE: decode_cluster,
    ENDPOINT_TYPE: decode_cluster_load_assignment,
}


@pytest.mark.parametrize(("docs", "profile", "check"), CASES)
def test_translation_is_accepted_by_proxyless_parsers(
    docs: tuple[str, ...], profile: NodeProfile | None, check: Check
) -> None:
    out = translate(*docs, profile=profile)
    for type_url, resources in out.items():
        if type_url == LISTENER_TYPE and profile is not None and profile.kind == ENVOY:
            continue  # socket listeners are Envoy's, proxyless parses api_listeners
        for name, resource in resources.items():
            result = DECODERS[type_url](resource.SerializeToString())
            assert result.ok, f"{name}: {result.errors}"
            assert result.name == name


def _node(user_agent: str, **metadata: Any) -> NodeInfo:
    proto = base_pb2.Node(id="n", user_agent_name=user_agent)
    if metadata:
        struct = struct_pb2.Struct()
        struct.update(metadata)
        proto.metadata.CopyFrom(struct)
    proto.locality.region = "us"
    return NodeInfo.from_proto(proto)


@pytest.mark.parametrize(
    ("node", "kind", "ports"),
    [
        pytest.param(_node("envoy"), ENVOY, (), id="envoy"),
        pytest.param(
            _node("envoy", GENERATOR="grpc"), PROXYLESS, (), id="envoy-ua-but-grpc-generator"
        ),
        pytest.param(_node("gRPC Python"), PROXYLESS, (), id="grpc"),
        pytest.param(_node(""), PROXYLESS, (), id="unknown"),
        pytest.param(
            _node("envoy", PROXYLESS_LISTENER_PORTS={"reviews:9080": 15001, "bad": "x", "neg": -1}),
            ENVOY,
            (("reviews:9080", 15001),),
            id="listener-ports-skip-bad",
        ),
    ],
)
def test_node_profile(node: NodeInfo, kind: str, ports: tuple[tuple[str, int], ...]) -> None:
    profile = node_profile(node)
    assert profile.kind == kind
    assert profile.listener_ports == ports
    assert profile.locality == ("us", "", "")
    assert profile.namespace == "default"


def test_short_aliases_only_within_namespace() -> None:
    out = translate(SE, profile=NodeProfile(namespace="other"))
    assert "reviews:9080" not in out[LISTENER_TYPE]
    assert "reviews.default:9080" in out[LISTENER_TYPE]
    assert "reviews" not in out[ROUTE_TYPE][f"{HOST}:9080"].virtual_hosts[0].domains
