"""Istio naming rules and DestinationRule policy merging."""

from __future__ import annotations

import pytest

from proxyless.controlplane.istio.load import load_text
from proxyless.controlplane.istio.model import (
    ConnectionPool,
    DestinationRule,
    OutlierDetection,
    Source,
    Subset,
    TrafficPolicy,
)
from proxyless.controlplane.istio.registry import (
    Registry,
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


def _entries(*hosts: str) -> str:
    return "".join(
        f"""
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: se{i}, namespace: default}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 10.0.0.{i + 1}}}]
"""
        for i, host in enumerate(hosts)
    )


def _rule(name: str, host: str, mode: str) -> str:
    return f"""
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: "{host}"
  trafficPolicy: {{tls: {{mode: {mode}}}}}
"""


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param(
            [("all", "*.default.svc.cluster.local", "ISTIO_MUTUAL")],
            {FQDN: "all", "ratings.default.svc.cluster.local": "all", "api.example.com": None},
            id="namespace-wildcard",
        ),
        pytest.param(
            [("mesh", "*", "ISTIO_MUTUAL")],
            {FQDN: "mesh", "ratings.default.svc.cluster.local": "mesh", "api.example.com": "mesh"},
            id="star",
        ),
        pytest.param(
            [("mesh", "*.local", "ISTIO_MUTUAL"), ("exact", "reviews", "DISABLE")],
            {FQDN: "exact", "ratings.default.svc.cluster.local": "mesh", "api.example.com": None},
            id="exact-beats-wildcard",
        ),
        pytest.param(
            [
                ("broad", "*.local", "DISABLE"),
                ("narrow", "*.default.svc.cluster.local", "ISTIO_MUTUAL"),
            ],
            {
                FQDN: "narrow",
                "ratings.default.svc.cluster.local": "narrow",
                "api.example.com": None,
            },
            id="longest-wildcard-wins",
        ),
    ],
)
def test_wildcard_destination_rule_hosts(
    rules: list[tuple[str, str, str]], expected: dict[str, str | None]
) -> None:
    text = _entries(*expected) + "".join(_rule(*r) for r in rules)
    result = load_text(text)
    assert result.ok, result.issues
    assert not [i for i in result.warnings if "applies to nothing" in str(i)]
    registry = Registry(result.mesh)
    found = {
        host: (rule.source.name if (rule := registry.destination_rules.get(host)) else None)
        for host in expected
    }
    assert found == expected
    mutual = {
        h
        for h, name in expected.items()
        if name and dict((r[0], r[2]) for r in rules)[name] == "ISTIO_MUTUAL"
    }
    for host in expected:
        policy = registry.policy(host, 80)
        tls_mode = policy.tls.mode if policy is not None and policy.tls is not None else None
        assert (tls_mode == "ISTIO_MUTUAL") == (host in mutual), host


def test_a_wildcard_destination_rule_matching_nothing_is_reported() -> None:
    result = load_text(_entries(FQDN) + _rule("other", "*.shop.svc.cluster.local", "ISTIO_MUTUAL"))
    assert result.ok
    assert any(
        "no service matches *.shop.svc.cluster.local" in str(issue) for issue in result.warnings
    ), result.issues
