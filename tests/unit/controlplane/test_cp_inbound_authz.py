"""AuthorizationPolicy -> RBAC: one case per field kind, written from Istio's documented semantics.

Expected values are the RBAC config as a dict (``MessageToDict``) for one
rule, named as istiod names it: ``ns[<ns>]-policy[<name>]-rule[<i>]``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_http_pb2
from google.protobuf import json_format

from proxyless.controlplane.istio.authz import (
    RBAC_ALLOW_FILTER,
    RBAC_DENY_FILTER,
    applicable_policies,
    rbac_filters,
    rbac_rules,
)
from proxyless.controlplane.istio.load import load_text
from proxyless.controlplane.istio.model import AuthorizationPolicy, MeshConfig

NAME = "ns[default]-policy[p]-rule[0]"


def policy_yaml(spec: dict[str, Any], *, name: str = "p", namespace: str = "default") -> str:
    return json.dumps(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def load(*docs: str) -> MeshConfig:
    result = load_text("\n---\n".join(docs))
    assert result.errors == [], result.errors
    return result.mesh


def one(spec: dict[str, Any]) -> AuthorizationPolicy:
    return load(policy_yaml(spec)).authorization_policies[0]


def as_dict(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(message)
    return out


def auth(matcher: dict[str, Any]) -> dict[str, Any]:
    return {"authenticated": {"principalName": matcher}}


def ors(*ids: dict[str, Any]) -> dict[str, Any]:
    return {"orIds": {"ids": list(ids)}}


def ands(*ids: dict[str, Any]) -> dict[str, Any]:
    return {"andIds": {"ids": list(ids)}}


def orr(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"orRules": {"rules": list(rules)}}


def andr(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"andRules": {"rules": list(rules)}}


ANY = {"any": True}


def from_(**source: list[str]) -> dict[str, Any]:
    return {"rules": [{"from": [{"source": source}]}]}


def to(**operation: list[str]) -> dict[str, Any]:
    return {"rules": [{"to": [{"operation": operation}]}]}


def when(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"rules": [{"when": list(conditions)}]}


def header(name: str, match: dict[str, Any]) -> dict[str, Any]:
    return {"header": {"name": name, "stringMatch": match}}


CASES = [
    pytest.param(
        from_(principals=["cluster.local/ns/default/sa/ratings"]),
        [ands(ors(auth({"exact": "spiffe://cluster.local/ns/default/sa/ratings"})))],
        [ANY],
        id="principal-exact-gets-spiffe-prefix",
    ),
    pytest.param(
        from_(principals=["cluster.local/ns/default/*"]),
        [ands(ors(auth({"prefix": "spiffe://cluster.local/ns/default/"})))],
        [ANY],
        id="principal-prefix",
    ),
    pytest.param(
        from_(principals=["*/sa/ratings"]),
        [ands(ors(auth({"safeRegex": {"regex": "spiffe://.*/sa/ratings"}})))],
        [ANY],
        id="principal-suffix-keeps-spiffe-scheme",
    ),
    pytest.param(
        from_(principals=["*"]),
        [ands(ors(auth({"safeRegex": {"regex": ".+"}})))],
        [ANY],
        id="principal-star-any-authenticated",
    ),
    pytest.param(
        from_(principals=["a/ns/x/sa/y", "a/ns/x/sa/z"]),
        [
            ands(
                ors(
                    auth({"exact": "spiffe://a/ns/x/sa/y"}),
                    auth({"exact": "spiffe://a/ns/x/sa/z"}),
                )
            )
        ],
        [ANY],
        id="principals-or",
    ),
    pytest.param(
        from_(namespaces=["frontend"]),
        [ands(ors(auth({"safeRegex": {"regex": ".*/ns/frontend/.*"}})))],
        [ANY],
        id="namespace-regex",
    ),
    pytest.param(
        from_(namespaces=["team-*"]),
        [ands(ors(auth({"safeRegex": {"regex": ".*/ns/team-.*/.*"}})))],
        [ANY],
        id="namespace-glob",
    ),
    pytest.param(
        from_(notPrincipals=["cluster.local/ns/x/sa/y"]),
        [ands({"notId": ors(auth({"exact": "spiffe://cluster.local/ns/x/sa/y"}))})],
        [ANY],
        id="not-principals",
    ),
    pytest.param(
        from_(namespaces=["prod"], notNamespaces=["prod-canary"]),
        [
            ands(
                ors(auth({"safeRegex": {"regex": ".*/ns/prod/.*"}})),
                {"notId": ors(auth({"safeRegex": {"regex": ".*/ns/prod-canary/.*"}}))},
            )
        ],
        [ANY],
        id="namespaces-and-not-namespaces",
    ),
    pytest.param(
        from_(serviceAccounts=["frontend", "shop/cart"]),
        [
            ands(
                ors(
                    auth(
                        {"safeRegex": {"regex": "spiffe://.+/ns/default/(.+/|)sa/frontend(/.+)?"}}
                    ),
                    auth({"safeRegex": {"regex": "spiffe://.+/ns/shop/(.+/|)sa/cart(/.+)?"}}),
                )
            )
        ],
        [ANY],
        id="service-accounts-default-to-policy-namespace",
    ),
    pytest.param(
        from_(ipBlocks=["10.1.0.0/16", "192.168.1.7"]),
        [
            ands(
                ors(
                    {"directRemoteIp": {"addressPrefix": "10.1.0.0", "prefixLen": 16}},
                    {"directRemoteIp": {"addressPrefix": "192.168.1.7", "prefixLen": 32}},
                )
            )
        ],
        [ANY],
        id="ip-blocks",
    ),
    pytest.param(
        to(methods=["POST"]),
        [ANY],
        [andr(orr(header(":method", {"exact": "POST"})))],
        id="methods",
    ),
    pytest.param(
        to(paths=["/helloworld.Greeter/SayHello", "/grpc.health.v1.Health/*", "*/Check"]),
        [ANY],
        [
            andr(
                orr(
                    {"urlPath": {"path": {"exact": "/helloworld.Greeter/SayHello"}}},
                    {"urlPath": {"path": {"prefix": "/grpc.health.v1.Health/"}}},
                    {"urlPath": {"path": {"suffix": "/Check"}}},
                )
            )
        ],
        id="paths-exact-prefix-suffix",
    ),
    pytest.param(
        to(notPaths=["/admin/*"]),
        [ANY],
        [andr({"notRule": orr({"urlPath": {"path": {"prefix": "/admin/"}}})})],
        id="not-paths",
    ),
    pytest.param(
        to(ports=["9080"]),
        [ANY],
        [andr(orr({"destinationPort": 9080}))],
        id="ports",
    ),
    pytest.param(
        to(hosts=["reviews.example.com"]),
        [ANY],
        [andr(orr(header(":authority", {"exact": "reviews.example.com", "ignoreCase": True})))],
        id="hosts-ignore-case",
    ),
    pytest.param(
        to(methods=["POST"], notMethods=["GET"]),
        [ANY],
        [
            andr(
                orr(header(":method", {"exact": "POST"})),
                {"notRule": orr(header(":method", {"exact": "GET"}))},
            )
        ],
        id="methods-and-not-methods",
    ),
    pytest.param(
        when({"key": "request.headers[X-Tenant]", "values": ["acme", "beta*"]}),
        [ands(ors(header("x-tenant", {"exact": "acme"}), header("x-tenant", {"prefix": "beta"})))],
        [ANY],
        id="when-header-on-principal-side",
    ),
    pytest.param(
        when({"key": "request.headers[x-debug]", "notValues": ["*"]}),
        [ands({"notId": ors({"header": {"name": "x-debug", "presentMatch": True}})})],
        [ANY],
        id="when-header-not-values",
    ),
    pytest.param(
        when({"key": "source.principal", "values": ["cluster.local/ns/a/sa/b"]}),
        [ands(ors(auth({"exact": "spiffe://cluster.local/ns/a/sa/b"})))],
        [ANY],
        id="when-source-principal",
    ),
    pytest.param(
        when({"key": "source.namespace", "values": ["a"]}),
        [ands(ors(auth({"safeRegex": {"regex": ".*/ns/a/.*"}})))],
        [ANY],
        id="when-source-namespace",
    ),
    pytest.param(
        when({"key": "destination.port", "values": ["8080"]}),
        [ANY],
        [andr(orr({"destinationPort": 8080}))],
        id="when-destination-port",
    ),
    pytest.param(
        when({"key": "destination.ip", "values": ["10.0.0.0/24"]}),
        [ANY],
        [andr(orr({"destinationIp": {"addressPrefix": "10.0.0.0", "prefixLen": 24}}))],
        id="when-destination-ip",
    ),
    pytest.param(
        {
            "rules": [
                {
                    "from": [
                        {"source": {"principals": ["td/ns/a/sa/x"]}},
                        {"source": {"namespaces": ["b"]}},
                    ],
                    "to": [{"operation": {"methods": ["POST"]}}],
                    "when": [
                        {"key": "source.namespace", "values": ["a", "b"]},
                        {"key": "request.headers[x-id]", "values": ["1"]},
                    ],
                }
            ]
        },
        [
            ands(
                ors(auth({"exact": "spiffe://td/ns/a/sa/x"})),
                ors(
                    auth({"safeRegex": {"regex": ".*/ns/a/.*"}}),
                    auth({"safeRegex": {"regex": ".*/ns/b/.*"}}),
                ),
                ors(header("x-id", {"exact": "1"})),
            ),
            ands(
                ors(auth({"safeRegex": {"regex": ".*/ns/b/.*"}})),
                ors(
                    auth({"safeRegex": {"regex": ".*/ns/a/.*"}}),
                    auth({"safeRegex": {"regex": ".*/ns/b/.*"}}),
                ),
                ors(header("x-id", {"exact": "1"})),
            ),
        ],
        [andr(orr(header(":method", {"exact": "POST"})))],
        id="from-entries-or-conditions-and-into-each",
    ),
    pytest.param({"rules": [{}]}, [ANY], [ANY], id="empty-rule-matches-everything"),
]


@pytest.mark.parametrize(("spec", "principals", "permissions"), CASES)
def test_rule_translation(
    spec: dict[str, Any], principals: list[dict[str, Any]], permissions: list[dict[str, Any]]
) -> None:
    for action in ("ALLOW", "DENY"):
        rules = as_dict(rbac_rules(action, [one({**spec, "action": action})]))
        assert rules.get("action", "ALLOW") == action
        assert rules["policies"] == {NAME: {"principals": principals, "permissions": permissions}}


@pytest.mark.parametrize(
    ("spec", "allow_policies", "deny_policy"),
    [
        pytest.param(
            from_(requestPrincipals=["issuer/subject"], principals=["td/ns/a/sa/b"]),
            {},
            {
                "principals": [ands(ors(auth({"exact": "spiffe://td/ns/a/sa/b"})))],
                "permissions": [ANY],
            },
            id="requestPrincipals",
        ),
        pytest.param(
            {
                "rules": [
                    {
                        "to": [{"operation": {"paths": ["/x"]}}],
                        "when": [{"key": "request.auth.claims[iss]", "values": ["x"]}],
                    }
                ]
            },
            {},
            {
                "principals": [ANY],
                "permissions": [andr(orr({"urlPath": {"path": {"exact": "/x"}}}))],
            },
            id="when-jwt-claim",
        ),
    ],
)
def test_unsupported_field_fails_closed(
    spec: dict[str, Any], allow_policies: dict[str, Any], deny_policy: dict[str, Any]
) -> None:
    """ALLOW: the rule is dropped (allows nothing); DENY: the field is ignored (denies more)."""
    allow = as_dict(rbac_rules("ALLOW", [one({**spec, "action": "ALLOW"})]))
    assert allow.get("policies", {}) == allow_policies
    deny = as_dict(rbac_rules("DENY", [one({**spec, "action": "DENY"})]))
    assert deny["policies"] == {NAME: deny_policy}


def test_unsupported_fields_are_reported_when_loading() -> None:
    spec = {
        "rules": [
            {
                "from": [{"source": {"requestPrincipals": ["*"]}}],
                "when": [{"key": "request.auth.claims[iss]", "values": ["x"]}],
            }
        ]
    }
    result = load_text(policy_yaml(spec))
    paths = {(w.path, "dropped" in w.message) for w in result.warnings}
    assert ("spec.rules[0].from[0].source.requestPrincipals", True) in paths
    assert ("spec.rules[0].when[0].key", True) in paths
    audit = load_text(policy_yaml({"action": "AUDIT", "rules": [{}]}))
    assert any("AUDIT is not supported" in w.message for w in audit.warnings)


def filters_of(mesh: MeshConfig, namespace: str = "default", **labels: str) -> dict[str, Any]:
    out = {}
    for f in rbac_filters(applicable_policies(mesh, namespace, labels)):
        config = rbac_http_pb2.RBAC()
        assert f.typed_config.Unpack(config)
        out[f.name] = as_dict(config.rules)
    return out


def test_no_policy_no_filter() -> None:
    assert filters_of(MeshConfig()) == {}


def test_allow_policy_without_rules_allows_nothing() -> None:
    mesh = load(policy_yaml({}))
    assert filters_of(mesh) == {RBAC_ALLOW_FILTER: {}}  # action ALLOW, no policy: deny all


def test_deny_policy_without_rules_denies_nothing() -> None:
    mesh = load(policy_yaml({"action": "DENY"}))
    assert filters_of(mesh) == {}


def test_deny_filter_comes_before_allow() -> None:
    mesh = load(
        policy_yaml(to(paths=["/a"]), name="allow-a"),
        policy_yaml({**to(paths=["/b"]), "action": "DENY"}, name="deny-b"),
    )
    names = [f.name for f in rbac_filters(applicable_policies(mesh, "default", {}))]
    assert names == [RBAC_DENY_FILTER, RBAC_ALLOW_FILTER]
    found = filters_of(mesh)
    assert found[RBAC_DENY_FILTER]["action"] == "DENY"
    assert list(found[RBAC_DENY_FILTER]["policies"]) == ["ns[default]-policy[deny-b]-rule[0]"]
    assert list(found[RBAC_ALLOW_FILTER]["policies"]) == ["ns[default]-policy[allow-a]-rule[0]"]


def test_audit_is_not_enforced_and_custom_denies() -> None:
    mesh = load(
        policy_yaml({**to(paths=["/a"]), "action": "AUDIT"}, name="audit"),
        policy_yaml(
            {**to(paths=["/b"]), "action": "CUSTOM", "provider": {"name": "ext"}}, name="custom"
        ),
    )
    found = filters_of(mesh)
    assert list(found) == [RBAC_DENY_FILTER]
    assert list(found[RBAC_DENY_FILTER]["policies"]) == ["ns[default]-policy[custom]-rule[0]"]


@pytest.mark.parametrize(
    ("namespace", "selector", "workload_ns", "labels", "applies"),
    [
        pytest.param("default", None, "default", {}, True, id="namespace-wide"),
        pytest.param("other", None, "default", {}, False, id="other-namespace"),
        pytest.param("istio-system", None, "default", {}, True, id="root-namespace-mesh-wide"),
        pytest.param("default", {"app": "a"}, "default", {"app": "a"}, True, id="selector-match"),
        pytest.param("default", {"app": "a"}, "default", {"app": "b"}, False, id="selector-miss"),
        pytest.param(
            "istio-system", {"app": "a"}, "default", {"app": "a"}, True, id="root-selector-any-ns"
        ),
        pytest.param(
            "other", {"app": "a"}, "default", {"app": "a"}, False, id="selector-other-namespace"
        ),
    ],
)
def test_which_policies_apply(
    namespace: str,
    selector: dict[str, str] | None,
    workload_ns: str,
    labels: dict[str, str],
    applies: bool,
) -> None:
    spec: dict[str, Any] = {"rules": [{}]}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    mesh = load(policy_yaml(spec, namespace=namespace))
    assert bool(applicable_policies(mesh, workload_ns, labels)) is applies
