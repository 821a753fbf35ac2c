"""``proxyless analyze`` on the security kinds: a failing and a clean case per message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxyless.cli import main
from proxyless.controlplane.istio.analyze import analyze_mesh
from proxyless.controlplane.istio.load import load_text


def se(**extra: Any) -> dict[str, Any]:
    endpoints = [
        {"address": "10.0.0.1", "labels": {"app": "reviews", "version": "v1"}, **extra},
        {"address": "10.0.0.2", "labels": {"app": "reviews", "version": "v2"}, **extra},
    ]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "hosts": ["reviews.default.svc.cluster.local"],
            "ports": [{"number": 9080, "name": "grpc", "protocol": "GRPC", "targetPort": 50051}],
            "endpoints": endpoints,
        },
    }


def dr(mode: str, *, subset_mode: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": "reviews", "trafficPolicy": {"tls": {"mode": mode}}}
    if subset_mode is not None:
        spec["trafficPolicy"] = {}
        spec["subsets"] = [
            {"name": "v1", "labels": {"version": "v1"}},
            {
                "name": "v2",
                "labels": {"version": "v2"},
                "trafficPolicy": {"tls": {"mode": subset_mode}},
            },
        ]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": spec,
    }


def pa(mode: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "pa", "namespace": "default"},
        "spec": {"mtls": {"mode": mode}, **spec},
    }


def ap(spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "ap", "namespace": namespace},
        "spec": spec,
    }


def other_ns_doc(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "x", "namespace": namespace},
        "spec": {},
    }


def findings(*docs: dict[str, Any]) -> list[str]:
    result = load_text("\n---\n".join(json.dumps(d) for d in docs))
    assert result.errors == [], result.errors
    issues = analyze_mesh(result.mesh, translate=False)
    return [f"{i.severity} {i.kind}/{i.name} {i.path}: {i.message}" for i in issues]


def from_(**source: list[str]) -> dict[str, Any]:
    return {"rules": [{"from": [{"source": source}]}]}


CASES = [
    # IST0113: DestinationRule DISABLE -> STRICT workload
    pytest.param(
        [se(), dr("DISABLE"), pa("STRICT")],
        "error DestinationRule/reviews spec.trafficPolicy.tls.mode: [IST0113] MTLSPolicyConflict: "
        "sends plaintext (tls.mode DISABLE) to reviews.default.svc.cluster.local:9080, but workload "
        "10.0.0.1 port 50051 requires mTLS (STRICT) by PeerAuthentication/default/pa",
        id="dr-disable-to-strict",
    ),
    pytest.param(
        [se(), dr("DISABLE"), pa("PERMISSIVE")], None, id="dr-disable-to-permissive-clean"
    ),
    pytest.param([se(), dr("DISABLE"), pa("DISABLE")], None, id="dr-disable-to-disable-clean"),
    # IST0113: ISTIO_MUTUAL -> DISABLE workload
    pytest.param(
        [se(), dr("ISTIO_MUTUAL"), pa("DISABLE")],
        "error DestinationRule/reviews spec.trafficPolicy.tls.mode: [IST0113] MTLSPolicyConflict: "
        "sends mTLS (tls.mode ISTIO_MUTUAL) to reviews.default.svc.cluster.local:9080, but workload "
        "10.0.0.1 port 50051 accepts only plaintext (DISABLE)",
        id="dr-istio-mutual-to-disable",
    ),
    pytest.param(
        # the service account pins the identity (no "pins no identity" warning)
        [se(serviceAccount="reviews"), dr("ISTIO_MUTUAL"), pa("STRICT")],
        None,
        id="dr-istio-mutual-to-strict-clean",
    ),
    pytest.param(
        [
            se(),
            dr("ISTIO_MUTUAL"),
            pa(
                "STRICT",
                selector={"matchLabels": {"app": "reviews"}},
                portLevelMtls={"50051": {"mode": "DISABLE"}},
            ),
        ],
        "error DestinationRule/reviews spec.trafficPolicy.tls.mode: [IST0113] MTLSPolicyConflict: "
        "sends mTLS (tls.mode ISTIO_MUTUAL) to reviews.default.svc.cluster.local:9080, but workload "
        "10.0.0.1 port 50051 accepts only plaintext",
        id="port-level-disable",
    ),
    pytest.param(
        [
            se(serviceAccount="reviews"),
            dr("ISTIO_MUTUAL"),
            pa(
                "STRICT",
                selector={"matchLabels": {"app": "reviews"}},
                portLevelMtls={"8080": {"mode": "DISABLE"}},
            ),
        ],
        None,
        id="port-level-other-port-clean",
    ),
    pytest.param(
        [se(), dr("ISTIO_MUTUAL", subset_mode="DISABLE"), pa("STRICT")],
        "error DestinationRule/reviews spec.trafficPolicy.tls.mode: [IST0113] MTLSPolicyConflict: "
        "sends plaintext (tls.mode DISABLE) to reviews.default.svc.cluster.local:9080 subset v2, "
        "but workload 10.0.0.2",
        id="subset-disable-to-strict",
    ),
    # IST0101: namespace not found
    pytest.param(
        [se(), ap(from_(namespaces=["ghost"]))],
        "warning AuthorizationPolicy/ap spec.rules[0].from[0].source.namespaces[0]: [IST0101] "
        "ReferencedResourceNotFound: referenced namespace not found: 'ghost'",
        id="namespace-not-found",
    ),
    pytest.param(
        [se(), other_ns_doc("team-a"), ap(from_(namespaces=["default", "team-*"]))],
        None,
        id="namespace-found-clean",
    ),
    pytest.param(
        [se(), ap({"rules": [{"when": [{"key": "source.namespace", "notValues": ["ghost"]}]}]})],
        "warning AuthorizationPolicy/ap spec.rules[0].when[0]: [IST0101] ReferencedResourceNotFound",
        id="condition-namespace-not-found",
    ),
    # IST0127: selector matches no workload
    pytest.param(
        [se(), ap({"selector": {"matchLabels": {"app": "ratings"}}, "rules": [{}]})],
        "warning AuthorizationPolicy/ap spec.selector: [IST0127] NoMatchingWorkloadsFound: no "
        "matching workloads for this resource with the following labels: app=ratings",
        id="selector-no-workload",
    ),
    pytest.param(
        [se(), ap({"selector": {"matchLabels": {"app": "reviews"}}, "rules": [{}]})],
        None,
        id="selector-matches-clean",
    ),
    pytest.param(
        [
            se(),
            ap({"selector": {"matchLabels": {"app": "reviews"}}, "rules": [{}]}, "istio-system"),
        ],
        None,
        id="root-namespace-selector-any-namespace-clean",
    ),
    # principals that can never match (no istioctl code)
    pytest.param(
        [se(), ap(from_(principals=["cluster.local/ns/ghost/sa/frontend"]))],
        "warning AuthorizationPolicy/ap spec.rules[0].from[0].source.principals[0]: principal "
        "'cluster.local/ns/ghost/sa/frontend' can never match: namespace 'ghost' has no document",
        id="principal-namespace-unknown",
    ),
    pytest.param(
        [
            se(serviceAccount="reviews"),
            ap(from_(principals=["cluster.local/ns/default/sa/frontnd"])),
        ],
        "warning AuthorizationPolicy/ap spec.rules[0].from[0].source.principals[0]: principal "
        "'cluster.local/ns/default/sa/frontnd' can never match: no workload of namespace 'default' "
        "runs as 'frontnd' (known: reviews)",
        id="principal-service-account-unknown",
    ),
    pytest.param(
        [
            se(serviceAccount="reviews"),
            ap(from_(principals=["cluster.local/ns/default/sa/reviews", "*/sa/x"])),
        ],
        None,
        id="principal-known-clean",
    ),
    pytest.param(
        [se(), ap(from_(principals=["cluster.local/ns/default/sa/anything"]))],
        None,
        id="principal-no-accounts-declared-clean",
    ),
]


@pytest.mark.parametrize(("docs", "expected"), CASES)
def test_security_findings(docs: list[dict[str, Any]], expected: str | None) -> None:
    found = findings(*docs)
    if expected is None:
        assert found == []
    else:
        assert any(line.startswith(expected) for line in found), found


def test_cli_prints_the_code_and_fails_on_conflict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in (se(), dr("DISABLE"), pa("STRICT"))))
    assert main(["analyze", str(path)]) == 1
    out = capsys.readouterr().out
    assert "[IST0113] MTLSPolicyConflict" in out
    path.write_text("\n---\n".join(json.dumps(d) for d in (se(), dr("ISTIO_MUTUAL"), pa("STRICT"))))
    assert main(["analyze", str(path)]) == 0
