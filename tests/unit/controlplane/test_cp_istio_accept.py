"""What istiod accepts: skipped kinds, DNS and wildcard ServiceEntries, merging,
delegates, exportTo and short hosts of other namespaces."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from proxyless.controlplane.istio.analyze import analyze_mesh
from proxyless.controlplane.istio.delegate import merge_matches
from proxyless.controlplane.istio.load import load_mesh, load_text
from proxyless.controlplane.istio.model import MatchRequest, StringMatch
from proxyless.controlplane.istio.translate import NodeProfile, Translator
from proxyless.controlplane.istio.visibility import check_export_to, exported_to, meet
from proxyless.controlplane.model import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from proxyless.resources.parse import decode_cluster

SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
"""


def docs(*parts: str) -> str:
    return "\n---\n".join(parts)


def snapshot(text: str, profile: NodeProfile | None = None) -> dict[str, dict[str, Any]]:
    mesh = load_mesh(text, "mesh.yaml")
    snap = Translator(mesh).snapshot(profile or NodeProfile())
    return {t: dict(snap.get(t)) for t in (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)}


# --- skipped kinds ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "kind"),
    [
        pytest.param("networking.istio.io/v1", "Gateway", id="gateway"),
        pytest.param("networking.istio.io/v1alpha3", "EnvoyFilter", id="envoy-filter"),
        pytest.param("networking.istio.io/v1", "Sidecar", id="sidecar"),
        pytest.param("networking.istio.io/v1beta1", "ProxyConfig", id="proxy-config"),
        pytest.param("telemetry.istio.io/v1", "Telemetry", id="telemetry"),
        pytest.param("extensions.istio.io/v1alpha1", "WasmPlugin", id="wasm-plugin"),
        pytest.param("security.istio.io/v1", "RequestAuthentication", id="request-authn"),
        pytest.param("gateway.networking.k8s.io/v1", "HTTPRoute", id="gateway-api"),
        pytest.param("apps/v1", "Deployment", id="deployment"),
        pytest.param("v1", "ConfigMap", id="config-map"),
    ],
)
def test_kinds_for_other_proxies_are_skipped_with_one_info_line(api: str, kind: str) -> None:
    text = docs(SE, f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{a: 1}}\n")
    result = load_text(text, "mesh.yaml")
    assert result.ok, result.errors
    found = [i for i in result.issues if i.kind == kind]
    assert [(i.severity, i.path) for i in found] == [("info", "kind")]
    assert "skipped" in found[0].message


GATEWAY_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ingress, namespace: default}
spec:
  hosts: ["*", bookinfo.example.com]
  gateways: [istio-system/ingressgateway]
  http: [{route: [{destination: {host: productpage, port: {number: 9080}}}]}]
"""
BOTH_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: both, namespace: default}
spec:
  hosts: [reviews]
  gateways: [mesh, ingressgateway]
  http: [{route: [{destination: {host: reviews}}], timeout: 3s}]
"""


def test_gateway_only_virtual_service_is_skipped_and_mesh_part_served() -> None:
    result = load_text(docs(SE, GATEWAY_VS, BOTH_VS), "mesh.yaml")
    assert result.ok, result.errors
    ingress = [i for i in result.issues if i.name == "ingress"]
    assert [(i.severity, i.kind) for i in ingress] == [("info", "VirtualService")]
    out = snapshot(docs(SE, GATEWAY_VS, BOTH_VS))
    route = out[ROUTE_TYPE]["reviews.default.svc.cluster.local:9080"].virtual_hosts[0].routes[0]
    assert route.route.timeout.seconds == 3


# --- DNS ServiceEntries -----------------------------------------------------------------

DNS_SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: grpc, protocol: GRPC}]
  resolution: DNS
  endpoints:
  - {address: a.backend.example, ports: {grpc: 8443}}
  - {address: 10.0.0.7}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rr, namespace: default}
spec:
  hosts: [rr.example.com, rr2.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS_ROUND_ROBIN
"""


def _endpoints(cluster: Any) -> list[tuple[str, int]]:
    return [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for group in cluster.load_assignment.endpoints
        for e in group.lb_endpoints
    ]


def test_dns_service_entries_become_dns_clusters() -> None:
    out = snapshot(DNS_SE)
    strict = out[CLUSTER_TYPE]["outbound|443||api.example.com"]
    assert strict.type == cluster_pb2.Cluster.STRICT_DNS
    assert strict.dns_lookup_family == cluster_pb2.Cluster.V4_ONLY
    assert _endpoints(strict) == [("a.backend.example", 8443), ("10.0.0.7", 443)]
    logical = out[CLUSTER_TYPE]["outbound|80||rr2.example.com"]
    assert logical.type == cluster_pb2.Cluster.LOGICAL_DNS
    assert _endpoints(logical) == [("rr2.example.com", 80)]
    assert not [n for n in out[ENDPOINT_TYPE] if "example.com" in n]  # no EDS for them
    for name in ("outbound|443||api.example.com", "outbound|80||rr.example.com"):
        decoded = decode_cluster(out[CLUSTER_TYPE][name].SerializeToString())
        assert not decoded.errors, decoded.errors


def test_grpc_nodes_without_strict_dns_get_logical_dns_for_one_endpoint() -> None:
    one = DNS_SE.replace("  - {address: 10.0.0.7}\n", "")
    out = snapshot(one, NodeProfile(strict_dns=False))
    assert out[CLUSTER_TYPE]["outbound|443||api.example.com"].type == (
        cluster_pb2.Cluster.LOGICAL_DNS
    )


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        pytest.param(
            "resolution: STATIC\n  endpoints: [{address: backend.example}]",
            "spec.endpoints[0].address",
            "host names need resolution DNS",
            id="name-needs-dns",
        ),
        pytest.param(
            "resolution: DNS_ROUND_ROBIN\n  endpoints: [{address: a.example}, {address: b.example}]",
            "spec.endpoints",
            "at most one endpoint",
            id="round-robin-one-endpoint",
        ),
        pytest.param(
            "resolution: DNS\n  endpoints: [{address: 'bad_name!'}]",
            "spec.endpoints[0].address",
            "must be an IP address or a DNS host name",
            id="bad-name",
        ),
    ],
)
def test_dns_service_entry_errors(spec: str, path: str, message: str) -> None:
    text = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: e}\n"
        f"spec:\n  hosts: [e.example.com]\n  ports: [{{number: 80, name: http}}]\n  {spec}\n"
    )
    result = load_text(text, "mesh.yaml")
    assert any(i.path == path and message in i.message for i in result.errors), result.issues


def test_wildcard_dns_service_entry_needs_endpoints() -> None:
    text = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: w}\n"
        "spec:\n  hosts: ['*.example.com']\n  ports: [{number: 80, name: http}]\n"
        "  resolution: DNS\n"
    )
    result = load_text(text, "mesh.yaml")
    assert [i.path for i in result.errors] == ["spec.hosts"]


# --- merging and wildcards --------------------------------------------------------------


def test_service_entries_for_one_host_merge_ports_and_endpoints() -> None:
    other = (
        SE.replace("name: reviews,", "name: reviews-http,")
        .replace("{number: 9080, name: grpc, protocol: GRPC}", "{number: 8080, name: http}")
        .replace("10.0.0.1", "10.0.0.3")
        .replace("10.0.0.2", "10.0.0.4")
    )
    out = snapshot(docs(SE, other))
    assert {"outbound|9080||reviews.default.svc.cluster.local"} < set(out[CLUSTER_TYPE])
    assert "outbound|8080||reviews.default.svc.cluster.local" in out[CLUSTER_TYPE]
    cla = out[ENDPOINT_TYPE]["outbound|8080||reviews.default.svc.cluster.local"]
    addresses = {e.endpoint.address.socket_address.address for e in cla.endpoints[0].lb_endpoints}
    assert addresses == {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}


SCOPED = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: {ns}}}
spec:
  hosts: [db.example.com]
  exportTo: ["."]
  ports: [{{number: 80, name: http}}]
  endpoints: [{{address: {ip}}}]
"""


def test_service_entries_with_separate_export_to_do_not_meet() -> None:
    text = docs(SCOPED.format(ns="a", ip="10.0.1.1"), SCOPED.format(ns="b", ip="10.0.2.1"))
    assert load_text(text, "mesh.yaml").ok
    for ns, ip in (("a", "10.0.1.1"), ("b", "10.0.2.1")):
        out = snapshot(text, NodeProfile(namespace=ns))
        cla = out[ENDPOINT_TYPE]["outbound|80||db.example.com"]
        assert [
            e.endpoint.address.socket_address.address for e in cla.endpoints[0].lb_endpoints
        ] == [ip]
    assert "db.example.com:80" not in snapshot(text, NodeProfile(namespace="c"))[LISTENER_TYPE]


WILDCARD = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild}
spec:
  hosts: ["*.example.com"]
  ports: [{number: 443, name: grpc, protocol: GRPC}]
  endpoints: [{address: 10.0.0.9}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example.com]
  http: [{route: [{destination: {host: api.example.com}}], timeout: 2s}]
"""


def test_wildcard_service_entry_serves_the_hosts_routed_to_it() -> None:
    assert load_text(WILDCARD, "mesh.yaml").ok
    out = snapshot(WILDCARD)
    assert "outbound|443||*.example.com" in out[CLUSTER_TYPE]
    assert "api.example.com:443" in out[LISTENER_TYPE]
    route = out[ROUTE_TYPE]["api.example.com:443"].virtual_hosts[0].routes[0]
    assert route.route.cluster == "outbound|443||api.example.com"
    cla = out[ENDPOINT_TYPE]["outbound|443||api.example.com"]
    assert cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == "10.0.0.9"


# --- delegates --------------------------------------------------------------------------


def _m(**fields: Any) -> MatchRequest:
    return MatchRequest(**fields)


def _prefix(value: str) -> StringMatch:
    return StringMatch("prefix", value)


@pytest.mark.parametrize(
    ("root", "leaf", "expected"),
    [
        pytest.param((), (_m(uri=_prefix("/a")),), (_m(uri=_prefix("/a")),), id="no-root-match"),
        pytest.param((_m(uri=_prefix("/a")),), (), (_m(uri=_prefix("/a")),), id="no-leaf-match"),
        pytest.param(
            (_m(uri=_prefix("/a")),),
            (_m(uri=_prefix("/a/b")),),
            (_m(uri=_prefix("/a/b")),),
            id="narrower-prefix",
        ),
        pytest.param((_m(uri=_prefix("/a")),), (_m(uri=_prefix("/b")),), None, id="other-prefix"),
        pytest.param(
            (_m(uri=StringMatch("exact", "/a")),),
            (_m(uri=_prefix("/a")),),
            None,
            id="prefix-under-exact",
        ),
        pytest.param(
            (_m(headers=(("end-user", StringMatch("exact", "jason")),)),),
            (_m(uri=_prefix("/x")),),
            (_m(uri=_prefix("/x"), headers=(("end-user", StringMatch("exact", "jason")),)),),
            id="headers-inherited",
        ),
        pytest.param((_m(port=80),), (_m(port=81),), None, id="other-port"),
    ],
)
def test_merge_matches(
    root: tuple[MatchRequest, ...],
    leaf: tuple[MatchRequest, ...],
    expected: tuple[MatchRequest, ...] | None,
) -> None:
    assert merge_matches(root, leaf) == expected


DELEGATING = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}}]
    timeout: 4s
    delegate: {name: api, namespace: team}
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: team}
spec:
  http:
  - match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
  - match: [{uri: {prefix: /other}}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def test_delegate_routes_merge_under_the_root_route() -> None:
    out = snapshot(docs(SE, DELEGATING))
    routes = out[ROUTE_TYPE]["reviews.default.svc.cluster.local:9080"].virtual_hosts[0].routes
    got = [(r.match.prefix, r.route.cluster.split("|")[2], r.route.timeout.seconds) for r in routes]
    # /other conflicts with the root's /api and is dropped, as istiod drops it.
    assert got == [("/api/v2", "v2", 4), ("/api", "v1", 4), ("/", "v1", 0)]


def test_delegate_not_exported_to_the_root_is_dropped_with_a_warning() -> None:
    hidden = DELEGATING.replace(
        "spec:\n  http:\n  - match: [{uri: {prefix: /api/v2}}]",
        ("spec:\n  exportTo: ['.']\n  http:\n  - match: [{uri: {prefix: /api/v2}}]"),
    )
    result = load_text(docs(SE, hidden), "mesh.yaml")
    assert result.ok, result.errors
    assert any("delegate VirtualService team/api" in w.message for w in result.warnings)
    routes = snapshot(docs(SE, hidden))[ROUTE_TYPE]["reviews.default.svc.cluster.local:9080"]
    assert [r.match.prefix for r in routes.virtual_hosts[0].routes] == ["/"]


# --- exportTo ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("export_to", "own", "viewer", "seen"),
    [
        pytest.param((), "a", "b", True, id="default-everyone"),
        pytest.param(("*",), "a", "b", True, id="star"),
        pytest.param((".",), "a", "a", True, id="dot-own"),
        pytest.param((".",), "a", "b", False, id="dot-other"),
        pytest.param(("b",), "a", "b", True, id="named"),
        pytest.param(("b",), "a", "a", False, id="named-not-own"),
        pytest.param(("~",), "a", "a", False, id="hidden"),
        pytest.param((".",), "a", None, True, id="no-viewer-sees-all"),
    ],
)
def test_exported_to(export_to: tuple[str, ...], own: str, viewer: str | None, seen: bool) -> None:
    assert exported_to(export_to, own, viewer) is seen


def test_meet_and_check_export_to() -> None:
    assert meet((".",), "a", (".",), "b") is False
    assert meet((".",), "a", ("a",), "b") is True
    assert meet((), "a", ("~",), "b") is False
    assert check_export_to(["*", "a"]) is not None
    assert check_export_to(["Bad_ns"]) is not None
    assert check_export_to([".", "team-a"]) is None


HIDDEN_TARGET = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.data.svc.cluster.local]
  exportTo: ["."]
  ports: [{number: 80, name: http}]
  endpoints: [{address: 10.0.3.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: web}
spec:
  hosts: [db.data.svc.cluster.local]
  http: [{route: [{destination: {host: db.data.svc.cluster.local}}]}]
"""


def test_analyze_reports_a_reference_export_to_hides() -> None:
    result = load_text(HIDDEN_TARGET, "mesh.yaml")
    assert result.ok, result.errors
    found = [i for i in analyze_mesh(result.mesh, translate=False) if i.code == "IST0101"]
    assert [(i.severity, i.name, i.path) for i in found] == [
        ("error", "web", "spec.http[0].route[0].destination.host")
    ]
    assert "not exported to namespace web" in found[0].message
    visible = HIDDEN_TARGET.replace('exportTo: ["."]', 'exportTo: [".", web]')
    clean = load_text(visible, "mesh.yaml")
    assert not [i for i in analyze_mesh(clean.mesh, translate=False) if i.code == "IST0101"]


def test_virtual_service_export_to_limits_who_gets_its_routes() -> None:
    scoped = BOTH_VS.replace("gateways: [mesh, ingressgateway]", 'exportTo: ["."]')
    text = docs(SE, scoped)
    own = snapshot(text, NodeProfile(namespace="default"))
    other = snapshot(text, NodeProfile(namespace="other"))
    name = "reviews.default.svc.cluster.local:9080"
    assert own[ROUTE_TYPE][name].virtual_hosts[0].routes[0].route.timeout.seconds == 3
    assert other[ROUTE_TYPE][name].virtual_hosts[0].routes[0].name == "default"


def test_short_host_of_another_namespace_is_accepted_with_a_warning() -> None:
    vs = (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n"
        "spec:\n  hosts: [reviews]\n"
        "  http: [{route: [{destination: {host: ratings.prod.svc.cluster.local}}]}]\n"
    )
    result = load_text(docs(SE, vs), "mesh.yaml")
    assert result.ok, result.errors
    assert any("in another namespace" in w.message for w in result.warnings)
    route = snapshot(docs(SE, vs))[ROUTE_TYPE]["reviews.default.svc.cluster.local:9080"]
    assert route.virtual_hosts[0].routes[0].route.cluster == (
        "outbound|9080||ratings.prod.svc.cluster.local"
    )


@pytest.mark.parametrize(
    ("host", "severity"),
    [
        pytest.param("ratings.prod", "warning", id="name-ns"),
        pytest.param("ratings.prod.svc", "warning", id="name-ns-svc"),
        pytest.param("ratings.prod.svc.cluster.local", "warning", id="fqdn"),
        pytest.param("ratings", "error", id="own-namespace-short"),
        pytest.param("ratings.default.svc.cluster.local", "error", id="own-namespace-fqdn"),
        pytest.param("api.payments.example.com", "error", id="external-name"),
    ],
)
def test_unknown_destination_host_severity(host: str, severity: str) -> None:
    vs = (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n"
        f"spec:\n  hosts: [reviews]\n  http: [{{route: [{{destination: {{host: {host}}}}}]}}]\n"
    )
    result = load_text(docs(SE, vs), "mesh.yaml")
    found = [i for i in result.issues if i.path.endswith("destination.host")]
    assert [i.severity for i in found] == [severity], found


def test_matches_for_gateways_only_are_left_out_for_the_mesh() -> None:
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
  gateways: [mesh, ingress]
  http:
  - match: [{uri: {prefix: /ingress}, gateways: [ingress]}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /both}, gateways: [ingress, mesh]}, {uri: {prefix: /gw}, gateways: [ingress]}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
"""
    result = load_text(docs(SE, vs), "mesh.yaml")
    assert result.ok and not result.errors
    assert {i.severity for i in result.issues} == {"info"}
    routes = snapshot(docs(SE, vs))[ROUTE_TYPE]["reviews.default.svc.cluster.local:9080"]
    assert [r.match.prefix for r in routes.virtual_hosts[0].routes] == ["/both", "/"]


def test_wildcard_entry_covers_a_destination_rule_host() -> None:
    rule = (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api}\n"
        "spec:\n  host: api.example.com\n"
        "  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n"
    )
    out = snapshot(docs(WILDCARD, rule))
    assert out[CLUSTER_TYPE]["outbound|443||api.example.com"].lb_policy == (
        cluster_pb2.Cluster.LEAST_REQUEST
    )


def _rule(namespace: str, lb: str, export: str = "") -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        f"metadata: {{name: reviews-{namespace}, namespace: {namespace}}}\n"
        f"spec:\n  host: reviews.default.svc.cluster.local\n{export}"
        f"  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}\n"
    )


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        pytest.param("team", cluster_pb2.Cluster.RANDOM, id="client-namespace-first"),
        pytest.param("default", cluster_pb2.Cluster.LEAST_REQUEST, id="service-namespace-next"),
        pytest.param("other", cluster_pb2.Cluster.LEAST_REQUEST, id="service-namespace-for-all"),
    ],
)
def test_destination_rule_precedence(client: str, expected: int) -> None:
    text = docs(
        SE,
        _rule("istio-system", "ROUND_ROBIN"),
        _rule("default", "LEAST_REQUEST"),
        _rule("team", "RANDOM", "  exportTo: ['.']\n"),
    )
    assert load_text(text, "mesh.yaml").ok
    out = snapshot(text, NodeProfile(namespace=client))
    assert out[CLUSTER_TYPE]["outbound|9080||reviews.default.svc.cluster.local"].lb_policy == (
        expected
    )


def test_root_namespace_rule_is_mesh_wide() -> None:
    text = docs(
        SE, _rule("istio-system", "LEAST_REQUEST"), _rule("team", "RANDOM", "  exportTo: ['.']\n")
    )
    out = snapshot(text, NodeProfile(namespace="default"))
    assert out[CLUSTER_TYPE]["outbound|9080||reviews.default.svc.cluster.local"].lb_policy == (
        cluster_pb2.Cluster.LEAST_REQUEST
    )


def test_redirect_rule_is_left_out_not_the_file() -> None:
    vs = (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n"
        "spec:\n  hosts: [reviews]\n  http:\n"
        "  - match: [{uri: {exact: /old}}]\n    redirect: {uri: /new}\n"
        "  - route: [{destination: {host: reviews}}]\n"
    )
    result = load_text(docs(SE, vs), "mesh.yaml")
    assert result.ok, result.errors
    assert any("redirect rule is left out" in w.message for w in result.warnings)
    routes = snapshot(docs(SE, vs))[ROUTE_TYPE]["reviews.default.svc.cluster.local:9080"]
    assert [r.match.prefix for r in routes.virtual_hosts[0].routes] == ["/"]


def test_wildcard_rule_covers_the_wildcard_entry_and_its_hosts() -> None:
    rule = (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: wild}\n"
        "spec:\n  host: '*.example.com'\n"
        "  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n"
    )
    clusters = snapshot(docs(WILDCARD, rule))[CLUSTER_TYPE]
    for name in ("outbound|443||*.example.com", "outbound|443||api.example.com"):
        assert clusters[name].lb_policy == cluster_pb2.Cluster.RANDOM, name


def test_analyze_warns_that_grpcio_refuses_strict_dns() -> None:
    mesh = load_mesh(DNS_SE, "mesh.yaml")
    found = [i for i in analyze_mesh(mesh) if "STRICT_DNS" in i.message]
    assert [(i.severity, i.name, i.path) for i in found] == [("warning", "ext", "spec.resolution")]
