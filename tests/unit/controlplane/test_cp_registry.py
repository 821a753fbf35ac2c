"""Istio naming rules and DestinationRule policy merging."""

from __future__ import annotations

import pytest

from proxyless.controlplane.istio.model import (
    ConnectionPool,
    DestinationRule,
    OutlierDetection,
    Source,
    Subset,
    TrafficPolicy,
)
from proxyless.controlplane.istio.registry import (
    cluster_name,
    domains,
    effective_policy,
    listener_aliases,
    resolve_host,
)

FQDN = "reviews.default.svc.cluster.local"


@pytest.mark.parametrize(
    ("host", "namespace", "known", "expected"),
    [
        pytest.param("reviews", "default", (), FQDN, id="short-name"),
        pytest.param(
            "reviews", "shop", (), "reviews.shop.svc.cluster.local", id="short-name-other-ns"
        ),
        pytest.param(
            "reviews.default", "shop", (), "reviews.default", id="dotted-taken-as-written"
        ),
        pytest.param(
            "reviews", "default", ("reviews",), "reviews", id="literal-service-entry-host"
        ),
        pytest.param("reviews", "default", ("reviews", FQDN), FQDN, id="fqdn-preferred"),
        pytest.param("*.example.com", "default", (), "*.example.com", id="wildcard"),
    ],
)
def test_resolve_host(host: str, namespace: str, known: tuple[str, ...], expected: str) -> None:
    assert resolve_host(host, namespace, known) == expected


@pytest.mark.parametrize(
    ("host", "namespace", "expected"),
    [
        pytest.param(
            FQDN,
            "default",
            [
                FQDN,
                f"{FQDN}:9080",
                "reviews.default.svc",
                "reviews.default.svc:9080",
                "reviews.default",
                "reviews.default:9080",
                "reviews",
                "reviews:9080",
            ],
            id="same-namespace",
        ),
        pytest.param(
            FQDN,
            "other",
            [
                FQDN,
                f"{FQDN}:9080",
                "reviews.default.svc",
                "reviews.default.svc:9080",
                "reviews.default",
                "reviews.default:9080",
            ],
            id="other-namespace",
        ),
        pytest.param(
            "api.example.com", "default", ["api.example.com", "api.example.com:9080"], id="external"
        ),
    ],
)
def test_domains(host: str, namespace: str, expected: list[str]) -> None:
    assert domains(host, 9080, namespace) == expected


def test_names() -> None:
    assert cluster_name(9080, "v1", FQDN) == f"outbound|9080|v1|{FQDN}"
    assert cluster_name(9080, "", FQDN) == f"outbound|9080||{FQDN}"
    assert listener_aliases(FQDN, 9080, "default") == [
        "reviews.default.svc:9080",
        "reviews.default:9080",
        "reviews:9080",
    ]


POOL = ConnectionPool(http2_max_requests=10)
OD = OutlierDetection(consecutive_5xx=3)
RULE = DestinationRule(
    source=Source("f", 1, "DestinationRule", "r"),
    host="reviews",
    traffic_policy=TrafficPolicy(
        simple_lb="LEAST_REQUEST",
        connection_pool=POOL,
        port_level=((8080, TrafficPolicy(simple_lb="RANDOM")),),
    ),
    subsets=(
        Subset("v1", {"version": "v1"}, TrafficPolicy(outlier_detection=OD)),
        Subset(
            "v2",
            {"version": "v2"},
            TrafficPolicy(
                simple_lb="ROUND_ROBIN",
                port_level=((8080, TrafficPolicy(connection_pool=ConnectionPool(max_retries=1))),),
            ),
        ),
    ),
)


@pytest.mark.parametrize(
    ("port", "subset", "lb", "pool", "outlier"),
    [
        pytest.param(9080, None, "LEAST_REQUEST", POOL, None, id="rule"),
        pytest.param(8080, None, "RANDOM", POOL, None, id="port-level-overrides-lb"),
        pytest.param(9080, 0, "LEAST_REQUEST", POOL, OD, id="subset-adds-outlier"),
        pytest.param(9080, 1, "ROUND_ROBIN", POOL, None, id="subset-overrides-lb"),
        pytest.param(
            8080, 1, "ROUND_ROBIN", ConnectionPool(max_retries=1), None, id="subset-port-level"
        ),
    ],
)
def test_effective_policy(
    port: int, subset: int | None, lb: str, pool: ConnectionPool, outlier: OutlierDetection | None
) -> None:
    policy = effective_policy(RULE, port, RULE.subsets[subset] if subset is not None else None)
    assert policy is not None
    assert policy.simple_lb == lb
    assert policy.connection_pool == pool
    assert policy.outlier_detection == outlier
    assert policy.port_level == ()
