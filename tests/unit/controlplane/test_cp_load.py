"""Loading and validating Istio YAML: every bad input names file, document and field."""

from __future__ import annotations

import pytest

from proxyless.controlplane import ControlPlane
from proxyless.controlplane.istio.load import MeshConfigError, load_mesh, load_text
from proxyless.controlplane.istio.reader import parse_duration

SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  endpoints:
  - {address: 10.0.0.1, ports: {grpc: 5001}, labels: {version: v1}}
  - {address: 10.0.0.2, ports: {grpc: 5001}, labels: {version: v2}}
"""
DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def vs(http: str, hosts: str = "[reviews]") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: {hosts}
  http:
{http}
"""


def docs(*parts: str) -> str:
    return "\n---\n".join(parts)


ROUTE_V1 = "  - route: [{destination: {host: reviews, subset: v1}}]"

BAD = [
    pytest.param("a: [1, 2", "doc1", "", "invalid YAML at line", id="yaml-syntax"),
    pytest.param("a: 1\na: 2\n", "doc1", "", "duplicate key 'a'", id="yaml-duplicate-key"),
    pytest.param("- 1\n- 2\n", "doc1", "", "a document must be a mapping", id="not-a-mapping"),
    pytest.param(
        "apiVersion: networking.istio.io/v1\nkind: Servce\nmetadata: {name: x}\nspec: {}\n",
        "doc1 Servce/x",
        "kind",
        "unknown kind 'Servce'",
        id="unknown-kind",
    ),
    pytest.param(
        SE.replace("networking.istio.io/v1", "networking.istio.io/v2"),
        "doc1 ServiceEntry/reviews",
        "apiVersion",
        "needs one of networking.istio.io/v1",
        id="bad-api-version",
    ),
    pytest.param(
        SE.replace("name: reviews,", "name: Reviews_1,"),
        "doc1 ServiceEntry/Reviews_1",
        "metadata.name",
        "lower-case DNS name",
        id="bad-name",
    ),
    pytest.param(
        SE.replace("address: 10.0.0.1", "address: reviews.local"),
        "doc1 ServiceEntry/reviews",
        "spec.endpoints[0].address",
        "must be an IP address",
        id="endpoint-not-ip",
    ),
    pytest.param(
        SE.replace("number: 9080", "number: 70000"),
        "doc1 ServiceEntry/reviews",
        "spec.ports[0].number",
        "at most 65535",
        id="port-range",
    ),
    pytest.param(
        SE.replace("protocol: GRPC", "protocol: QUIC"),
        "doc1 ServiceEntry/reviews",
        "spec.ports[0].protocol",
        "must be one of",
        id="port-protocol",
    ),
    pytest.param(
        SE.replace(
            "ports: {grpc: 5001}, labels: {version: v1}",
            "ports: {http: 5001}, labels: {version: v1}",
        ),
        "doc1 ServiceEntry/reviews",
        "spec.endpoints[0].ports.http",
        "no port named 'http'",
        id="endpoint-port-name",
    ),
    pytest.param(
        SE.replace("version: v1}", "version: 1}"),
        "doc1 ServiceEntry/reviews",
        "spec.endpoints[0].labels.version",
        "label values must be strings",
        id="label-not-string",
    ),
    pytest.param(
        SE.replace("10.0.0.2", "10.0.0.1").replace("version: v2", "version: v1"),
        "doc1 ServiceEntry/reviews",
        "spec.endpoints[1]",
        "appears twice",
        id="duplicate-endpoint",
    ),
    pytest.param(
        docs(SE, SE),
        "doc2 ServiceEntry/reviews",
        "metadata.name",
        "duplicate ServiceEntry default/reviews",
        id="duplicate-name",
    ),
    pytest.param(
        docs(SE, SE.replace("name: reviews,", "name: other,")),
        "doc2 ServiceEntry/other",
        "spec.endpoints[0]",
        "endpoint 10.0.0.1:5001 appears twice for port 9080 "
        "(also ServiceEntry default/reviews spec.endpoints[0])",
        id="duplicate-host-merged-endpoint",
    ),
    pytest.param(
        docs(SE, DR, vs("  - route: [{destination: {host: reviews, subset: v3}}]")),
        "doc3 VirtualService/reviews",
        "spec.http[0].route[0].destination.subset",
        "subset 'v3' is not defined by DestinationRule default/reviews (subsets: v1, v2)",
        id="missing-subset",
    ),
    pytest.param(
        docs(SE, vs(ROUTE_V1)),
        "doc2 VirtualService/reviews",
        "spec.http[0].route[0].destination.subset",
        "no DestinationRule for reviews.default.svc.cluster.local",
        id="subset-without-rule",
    ),
    pytest.param(
        docs(SE, DR, vs("  - route: [{destination: {host: ratings}}]")),
        "doc3 VirtualService/reviews",
        "spec.http[0].route[0].destination.host",
        "unknown host ratings (= ratings.default.svc.cluster.local)",
        id="unknown-destination-host",
    ),
    pytest.param(
        docs(SE, DR, vs(ROUTE_V1, hosts="[details]")),
        "doc3 VirtualService/reviews",
        "spec.hosts[0]",
        "unknown host details",
        id="unknown-vs-host",
    ),
    pytest.param(
        docs(SE, DR, vs("  - route: [{destination: {host: reviews, port: {number: 9090}}}]")),
        "doc3 VirtualService/reviews",
        "spec.http[0].route[0].destination.port.number",
        "has no port 9090",
        id="unknown-port",
    ),
    pytest.param(
        docs(
            SE,
            DR,
            vs(
                "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 80}\n    - {destination: {host: reviews, subset: v2}, weight: 10}"
            ),
        ),
        "doc3 VirtualService/reviews",
        "spec.http[0].route",
        "weights sum to 90",
        id="weights-not-100",
    ),
    pytest.param(
        docs(
            SE,
            DR,
            vs("  - match: [{uri: {regex: '(?=x)'}}]\n    route: [{destination: {host: reviews}}]"),
        ),
        "doc3 VirtualService/reviews",
        "spec.http[0].match[0].uri.regex",
        "look-around",
        id="regex-lookaround",
    ),
    pytest.param(
        docs(
            SE,
            DR,
            vs(
                "  - match: [{headers: {x: {regex: 'a(b'}}}]\n    route: [{destination: {host: reviews}}]"
            ),
        ),
        "doc3 VirtualService/reviews",
        "spec.http[0].match[0].headers.x.regex",
        "invalid regex",
        id="regex-syntax",
    ),
    pytest.param(
        docs(
            SE,
            DR,
            vs(
                "  - match: [{uri: {exact: /a, prefix: /b}}]\n    route: [{destination: {host: reviews}}]"
            ),
        ),
        "doc3 VirtualService/reviews",
        "spec.http[0].match[0].uri",
        "exactly one of exact, prefix or regex",
        id="string-match-two-kinds",
    ),
    pytest.param(
        docs(
            SE,
            DR,
            vs(
                "  - route: [{destination: {host: reviews}}]\n    retries: {attempts: 2, retryOn: 'unavailable,sometimes'}"
            ),
        ),
        "doc3 VirtualService/reviews",
        "spec.http[0].retries.retryOn",
        "unknown retry condition 'sometimes'",
        id="retry-on",
    ),
    pytest.param(
        docs(
            SE,
            DR,
            vs("  - route: [{destination: {host: reviews}}]\n    retries: {perTryTimeout: 1s}"),
        ),
        "doc3 VirtualService/reviews",
        "spec.http[0].retries.attempts",
        "is required",
        id="retry-attempts-required",
    ),
    pytest.param(
        docs(SE, DR, vs("  - route: [{destination: {host: reviews}}]\n    timeout: soon")),
        "doc3 VirtualService/reviews",
        "spec.http[0].timeout",
        "must be a duration",
        id="bad-duration",
    ),
    pytest.param(
        docs(
            SE,
            DR,
            vs(
                "  - route: [{destination: {host: reviews}}]\n    fault: {abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}}"
            ),
        ),
        "doc3 VirtualService/reviews",
        "spec.http[0].fault.abort",
        "exactly one of httpStatus or grpcStatus",
        id="fault-two-statuses",
    ),
    pytest.param(
        docs(
            SE,
            DR,
            vs(
                "  - route: [{destination: {host: reviews}}]\n    fault: {abort: {grpcStatus: SOMETIMES}}"
            ),
        ),
        "doc3 VirtualService/reviews",
        "spec.http[0].fault.abort.grpcStatus",
        "must be one of",
        id="fault-grpc-status",
    ),
    pytest.param(
        docs(
            SE,
            DR,
            vs(
                "  - route: [{destination: {host: reviews}}]\n    fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}"
            ),
        ),
        "doc3 VirtualService/reviews",
        "spec.http[0].fault.delay.percentage.value",
        "between 0 and 100",
        id="fault-percentage",
    ),
    pytest.param(
        docs(SE, DR, vs("  - route: []")),
        "doc3 VirtualService/reviews",
        "spec.http[0].route",
        "at least one destination",
        id="empty-route",
    ),
    pytest.param(
        docs(SE, DR, vs(ROUTE_V1), vs(ROUTE_V1).replace("name: reviews", "name: reviews-2")),
        "doc4 VirtualService/reviews-2",
        "spec.hosts[0]",
        "already routed by VirtualService default/reviews",
        id="two-vs-same-host",
    ),
    pytest.param(
        docs(SE, DR.replace("{name: v2,", "{name: v1,")),
        "doc2 DestinationRule/reviews",
        "spec.subsets[1].name",
        "duplicate subset name 'v1'",
        id="duplicate-subset",
    ),
    pytest.param(
        docs(SE, DR, DR.replace("name: reviews}", "name: reviews-2}")),
        "doc3 DestinationRule/reviews-2",
        "spec.host",
        "already has DestinationRule default/reviews",
        id="two-dr-same-host",
    ),
    pytest.param(
        docs(
            SE,
            DR.replace(
                "  host: reviews",
                "  host: reviews\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}",
            ),
        ),
        "doc2 DestinationRule/reviews",
        "spec.trafficPolicy.loadBalancer.simple",
        "must be one of",
        id="lb-simple",
    ),
    pytest.param(
        docs(
            SE,
            DR.replace(
                "  host: reviews",
                "  host: reviews\n  trafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}",
            ),
        ),
        "doc2 DestinationRule/reviews",
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "at most 100",
        id="ejection-percent",
    ),
    pytest.param(
        docs(
            SE,
            DR.replace(
                "  host: reviews", "  host: reviews\n  trafficPolicy: {tls: {mode: SOMETIMES}}"
            ),
        ),
        "doc2 DestinationRule/reviews",
        "spec.trafficPolicy.tls.mode",
        "must be one of",
        id="tls-mode",
    ),
    pytest.param(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: {mtls: {mode: MAYBE}}\n",
        "doc1 PeerAuthentication/p",
        "spec.mtls.mode",
        "must be one of DISABLE, PERMISSIVE, STRICT, UNSET",
        id="peer-auth-mode",
    ),
    pytest.param(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: MAYBE}\n",
        "doc1 AuthorizationPolicy/a",
        "spec.action",
        "must be one of",
        id="authz-action",
    ),
    pytest.param(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\n"
        "spec: {rules: [{to: [{operation: {ports: ['http']}}]}]}\n",
        "doc1 AuthorizationPolicy/a",
        "spec.rules[0].to[0].operation.ports[0]",
        "must be a port number",
        id="authz-port",
    ),
]


@pytest.mark.parametrize(("text", "where", "path", "message"), BAD)
def test_bad_input_is_an_error_naming_file_doc_and_field(
    text: str, where: str, path: str, message: str
) -> None:
    result = load_text(text, "mesh.yaml")
    assert not result.ok
    rendered = [str(i) for i in result.errors]
    expected_prefix = f"mesh.yaml:{where}: {path + ': ' if path else ''}"
    assert any(r.startswith(expected_prefix) and message in r for r in rendered), rendered
    with pytest.raises(MeshConfigError) as info:
        load_mesh(text, "mesh.yaml")
    assert message in str(info.value)


WARN = [
    pytest.param(
        docs(
            SE,
            DR.replace(
                "  host: reviews",
                "  host: reviews\n  trafficPolicy: {outlierDetection: {sometimes: 1}}",
            ),
        ),
        "spec.trafficPolicy.outlierDetection.sometimes",
        "unknown field, ignored",
        id="unknown-field",
    ),
    pytest.param(
        docs(SE, DR, vs("  - route: [{destination: {host: reviews}}]\n    corsPolicy: {}")),
        "spec.http[0].corsPolicy",
        "not supported, ignored",
        id="unsupported-field",
    ),
    pytest.param(
        docs(
            SE, "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n"
        ),
        "kind",
        "Gateway only shapes gateways or other proxies; skipped",
        id="ignored-kind",
    ),
    pytest.param(
        docs(SE, DR.replace("host: reviews", "host: ratings")),
        "spec.host",
        "unknown host ratings",
        id="rule-unknown-host",
    ),
    pytest.param(
        docs(
            SE,
            DR.replace(
                "  host: reviews",
                "  host: reviews\n  trafficPolicy: {tls: {mode: SIMPLE, caCrl: /etc/crl.pem}}",
            ),
        ),
        "spec.trafficPolicy.tls.caCrl",
        "not supported, ignored",
        id="tls-crl",
    ),
]


@pytest.mark.parametrize(("text", "path", "message"), WARN)
def test_warnings_do_not_refuse_the_config(text: str, path: str, message: str) -> None:
    result = load_text(text, "mesh.yaml")
    assert result.ok, [str(i) for i in result.errors]
    assert any(i.path == path and message in i.message for i in result.warnings), [
        str(i) for i in result.warnings
    ]


def test_valid_mesh_is_parsed_into_models() -> None:
    http = (
        "  - name: mobile\n"
        "    match: [{headers: {User-Agent: {regex: '.*Mobile.*'}}, uri: {prefix: /Reviews/}, ignoreUriCase: true}]\n"
        "    route: [{destination: {host: reviews, subset: v2}}]\n"
        "    timeout: 1.5s\n"
        "    retries: {attempts: 3, perTryTimeout: 250ms, retryOn: 'unavailable,503'}\n"
        "    fault: {delay: {fixedDelay: 100ms, percentage: {value: 5}}}\n"
        "  - route:\n"
        "    - {destination: {host: reviews, subset: v1}, weight: 90}\n"
        "    - {destination: {host: reviews, subset: v2}, weight: 10}\n"
        "    mirror: {host: reviews, subset: v2}\n"
        "    mirrorPercentage: {value: 12.5}\n"
    )
    mesh = load_mesh(docs(SE, DR, vs(http)), "mesh.yaml")
    (service,) = mesh.service_entries
    assert service.hosts == ("reviews.default.svc.cluster.local",)
    assert [e.address for e in service.endpoints] == ["10.0.0.1", "10.0.0.2"]
    (virtual_service,) = mesh.virtual_services
    mobile, split = virtual_service.http
    assert mobile.name == "mobile"
    assert mobile.matches[0].headers == (("user-agent", mobile.matches[0].headers[0][1]),)
    assert mobile.matches[0].ignore_uri_case
    assert mobile.timeout == 1.5
    assert mobile.retries is not None
    assert mobile.retries.retry_on == ("unavailable", "503")
    assert mobile.retries.per_try_timeout == 0.25
    assert (
        mobile.fault is not None and mobile.fault.delay == 0.1 and mobile.fault.delay_percent == 5.0
    )
    assert [d.weight for d in split.route] == [90, 10]
    assert split.mirrors[0].percent == 12.5
    assert mesh.destination_rules[0].subsets[1].labels == {"version": "v2"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("1s", 1.0, id="seconds"),
        pytest.param("250ms", 0.25, id="millis"),
        pytest.param("1m30s", 90.0, id="compound"),
        pytest.param("2h", 7200.0, id="hours"),
        pytest.param("0.5s", 0.5, id="fraction"),
        pytest.param("10", None, id="no-unit"),
        pytest.param("1x", None, id="bad-unit"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_workload_entries_selected_by_service_entry() -> None:
    text = docs(
        """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: ratings}}
""",
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: r1}\n"
        "spec: {address: 10.1.0.1, labels: {app: ratings, version: v1}, locality: eu/west-1/a}\n",
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: lonely}\n"
        "spec: {address: 10.1.0.2, labels: {app: other}}\n",
    )
    result = load_text(text, "mesh.yaml")
    assert result.ok
    assert [str(w) for w in result.warnings] == [
        "mesh.yaml:doc3 WorkloadEntry/lonely: spec.labels: no ServiceEntry workloadSelector selects this WorkloadEntry"
    ]


def test_control_plane_refuses_an_invalid_initial_config() -> None:
    # Raised while loading, before the ADS server is started.
    with pytest.raises(MeshConfigError, match="unknown kind"):
        ControlPlane("apiVersion: security.istio.io/v1\nkind: Pods\nmetadata: {name: p}\n")


def test_a_bare_route_item_is_an_error_not_a_route_without_cluster() -> None:
    """``route:`` followed by a bare ``-`` is an empty destination: refused
    with its path, never translated into a route every client NACKs."""
    from proxyless.controlplane.istio.load import load_text

    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: r, namespace: default}
spec:
  hosts: [r.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [r.default.svc.cluster.local]
  http:
  - route:
    -
"""
    result = load_text(text, "mesh.yaml")
    errors = [str(i) for i in result.issues if i.severity == "error"]
    assert any("spec.http[0].route[0]" in e and "is required" in e for e in errors), errors
