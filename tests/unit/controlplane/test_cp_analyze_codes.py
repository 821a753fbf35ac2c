"""``proxyless analyze`` with istioctl's message codes: a failing and a clean case per code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxyless.cli import main
from proxyless.controlplane.istio.analyze import analyze_files
from proxyless.controlplane.istio.model import Issue

NET = "networking.istio.io/v1"


def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": NET, "kind": kind, "metadata": {"name": name}, "spec": spec}


def se(
    name: str = "reviews",
    host: str = "reviews.default.svc.cluster.local",
    ports: list[dict[str, Any]] | None = None,
    addresses: list[str] | None = None,
) -> dict[str, Any]:
    endpoints = [
        {"address": "10.0.0.1", "labels": {"app": "reviews", "version": "v1"}},
        {"address": "10.0.0.2", "labels": {"app": "reviews", "version": "v2"}},
    ]
    ports = ports or [{"number": 9080, "name": "grpc", "protocol": "GRPC"}]
    spec = {"hosts": [host], "ports": ports, "endpoints": endpoints}
    if addresses is not None:
        spec["addresses"] = addresses
    return doc("ServiceEntry", name, spec)


def vs(name: str, hosts: list[str], http: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return doc("VirtualService", name, {"hosts": hosts, "http": http, **spec})


def route(host: str = "reviews", **destination: Any) -> dict[str, Any]:
    return {"route": [{"destination": {"host": host, **destination}}]}


def rule(name: str, **match: Any) -> dict[str, Any]:
    return {"name": name, "match": [match] if match else [], **route()}


def dr(spec: dict[str, Any], host: str = "reviews") -> dict[str, Any]:
    return doc("DestinationRule", "reviews", {"host": host, **spec})


SUBSETS = {
    "subsets": [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"}},
    ]
}
TWO_PORTS = [
    {"number": 9080, "name": "grpc", "protocol": "GRPC"},
    {"number": 9090, "name": "http", "protocol": "HTTP"},
]
PREFIX = {"uri": {"prefix": "/reviews"}}
DB_PORT = {"number": 3306, "name": "db", "protocol": "TCP"}

CASES = [
    # IST0101 ReferencedResourceNotFound (error): destination host, port, subset
    pytest.param(
        [se(), vs("r", ["reviews"], [route("ratings")])],
        ("error", "IST0101", "unknown host ratings"),
        id="IST0101-destination-host",
    ),
    pytest.param(
        [se(), vs("r", ["reviews"], [route("reviews", port={"number": 9999})])],
        ("error", "IST0101", "has no port 9999"),
        id="IST0101-destination-port",
    ),
    pytest.param(
        [se(), dr(SUBSETS), vs("r", ["reviews"], [route("reviews", subset="v3")])],
        ("error", "IST0101", "subset 'v3' is not defined by DestinationRule"),
        id="IST0101-subset",
    ),
    pytest.param(
        [se(), dr(SUBSETS), vs("r", ["reviews"], [route("reviews", subset="v2")])],
        ("clean", "IST0101", ""),
        id="IST0101-clean",
    ),
    # IST0109 ConflictingMeshGatewayVirtualServiceHosts
    pytest.param(
        [se(), vs("a", ["reviews"], [route()]), vs("b", ["reviews"], [route()])],
        ("error", "IST0109", "already routed by VirtualService default/a"),
        id="IST0109-same-host",
    ),
    pytest.param(
        [
            se(),
            vs("a", ["reviews"], [route()]),
            vs("b", ["*.default.svc.cluster.local"], [route()]),
        ],
        ("warning", "IST0109", "overlaps VirtualService default/a, which is served for reviews"),
        id="IST0109-wildcard-overlap",
    ),
    pytest.param(
        [
            se(),
            vs("a", ["reviews"], [route()]),
            vs("b", ["reviews"], [route()], gateways=["istio-system/ingress"]),
        ],
        ("clean", "IST0109", ""),
        id="IST0109-other-gateway-clean",
    ),
    # IST0112 VirtualServiceDestinationPortSelectorRequired (error)
    pytest.param(
        [
            se(),
            se("ratings", "ratings.default.svc.cluster.local", TWO_PORTS),
            vs("r", ["reviews"], [route("ratings")]),
        ],
        ("error", "IST0112", "ratings.default.svc.cluster.local has several ports"),
        id="IST0112-port-required",
    ),
    pytest.param(
        [
            se(),
            se("ratings", "ratings.default.svc.cluster.local", TWO_PORTS),
            vs("r", ["reviews"], [route("ratings", port={"number": 9090})]),
        ],
        ("clean", "IST0112", ""),
        id="IST0112-clean",
    ),
    # IST0128 / IST0129 NoServerCertificateVerification... (warnings)
    pytest.param(
        [se(), dr({"trafficPolicy": {"tls": {"mode": "SIMPLE"}}})],
        ("warning", "IST0128", "tls.mode SIMPLE without caCertificates"),
        id="IST0128-destination-level",
    ),
    pytest.param(
        [se(), dr({"trafficPolicy": {"tls": {"mode": "SIMPLE", "caCertificates": "/ca.pem"}}})],
        ("clean", "IST0128", ""),
        id="IST0128-clean",
    ),
    pytest.param(
        [
            se(),
            dr(
                {
                    "trafficPolicy": {
                        "portLevelSettings": [
                            {"port": {"number": 9080}, "tls": {"mode": "SIMPLE"}},
                        ]
                    }
                }
            ),
        ],
        ("warning", "IST0129", "server identity of reviews port 9080"),
        id="IST0129-port-level",
    ),
    pytest.param(
        [
            se(),
            dr(
                {
                    "trafficPolicy": {
                        "portLevelSettings": [
                            {"port": {"number": 9080}, "tls": {"mode": "ISTIO_MUTUAL"}},
                        ]
                    }
                }
            ),
        ],
        ("clean", "IST0129", ""),
        id="IST0129-clean",
    ),
    # IST0130 VirtualServiceUnreachableRule (warning)
    pytest.param(
        [se(), vs("r", ["reviews"], [rule("all"), rule("late", **PREFIX)])],
        ("warning", "IST0130", "rule 'late' is never used (rule 'all' has no match"),
        id="IST0130-after-catch-all",
    ),
    pytest.param(
        [se(), vs("r", ["reviews"], [rule("first", **PREFIX), rule("again", **PREFIX)])],
        ("warning", "IST0130", "rule 'again' is never used (earlier rules take all its matches)"),
        id="IST0130-duplicate-match",
    ),
    pytest.param(
        [se(), vs("r", ["reviews"], [rule("first", **PREFIX), rule("all")])],
        ("clean", "IST0130", ""),
        id="IST0130-clean",
    ),
    # IST0131 VirtualServiceIneffectiveMatch (info)
    pytest.param(
        [
            se(),
            vs(
                "r",
                ["reviews"],
                [
                    rule("first", **PREFIX),
                    {
                        "name": "second",
                        "match": [PREFIX, {"uri": {"prefix": "/ratings"}}],
                        **route(),
                    },
                ],
            ),
        ],
        ("info", "IST0131", "rule 'second' match #0 is never used: it duplicates match #0"),
        id="IST0131-duplicate",
    ),
    pytest.param(
        [
            se(),
            vs(
                "r",
                ["reviews"],
                [
                    rule("wide", uri={"prefix": "/"}),
                    rule("narrow", uri={"prefix": "/reviews"}, method={"exact": "GET"}),
                ],
            ),
        ],
        ("info", "IST0131", "it is covered by match #0 of rule 'wide'"),
        id="IST0131-covered-prefix",
    ),
    pytest.param(
        [
            se(),
            vs(
                "r",
                ["reviews"],
                [
                    rule("narrow", uri={"prefix": "/reviews"}, method={"exact": "GET"}),
                    rule("wide", uri={"prefix": "/"}),
                ],
            ),
        ],
        ("clean", "IST0131", ""),
        id="IST0131-clean",
    ),
    # IST0134 ServiceEntryAddressesRequired (warning): TCP or unset protocol, no addresses
    pytest.param(
        [se(ports=[{"number": 9080, "name": "grpc", "protocol": "GRPC"}, DB_PORT])],
        ("warning", "IST0134", "port 'db' (3306) serves TCP, which needs spec.addresses"),
        id="IST0134-tcp-without-addresses",
    ),
    pytest.param(
        [se(ports=[{"number": 3306, "name": "db"}])],
        ("warning", "IST0134", "port 'db' (3306) serves TCP"),
        id="IST0134-protocol-unset",
    ),
    pytest.param(
        [se(ports=[DB_PORT], addresses=["240.240.0.10"])],
        ("clean", "IST0134", ""),
        id="IST0134-clean-with-addresses",
    ),
    pytest.param([se()], ("clean", "IST0134", ""), id="IST0134-clean-grpc-port"),
    pytest.param(
        [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "db", "namespace": "default"},
                "spec": {"ports": [{"name": "tcp-db", "port": 3306}], "selector": {"app": "db"}},
            }
        ],
        ("clean", "IST0134", ""),
        id="IST0134-clean-kubernetes-service",
    ),
    # IST0173 DestinationRuleSubsetNotSelectPods (error)
    pytest.param(
        [se(), dr({"subsets": [{"name": "v4", "labels": {"version": "v4"}}]})],
        ("error", "IST0173", "subset 'v4' selects no endpoint"),
        id="IST0173-empty-subset",
    ),
    pytest.param([se(), dr(SUBSETS)], ("clean", "IST0173", ""), id="IST0173-clean"),
    # IST0174 UnknownDestinationRuleHost (warning)
    pytest.param(
        [se(), dr({}, host="reveiws")],
        ("warning", "IST0174", "unknown host reveiws"),
        id="IST0174-unknown-host",
    ),
    pytest.param(
        [se(), dr({}, host="*.example.com")],
        ("warning", "IST0174", "no service matches *.example.com"),
        id="IST0174-wildcard-matches-nothing",
    ),
    pytest.param([se(), dr({})], ("clean", "IST0174", ""), id="IST0174-clean"),
    # IST0177 ConflictingServiceEntryProtocol (warning)
    pytest.param(
        [
            se(),
            se(
                "reviews-http",
                ports=[{"number": 9080, "name": "http", "protocol": "HTTP"}],
            ),
        ],
        (
            "warning",
            "IST0177",
            "define host reviews.default.svc.cluster.local port 9080 with conflicting protocols "
            "(GRPC, HTTP); ServiceEntry default/reviews is served",
        ),
        id="IST0177-conflicting-protocols",
    ),
    pytest.param(
        [se(), se("ratings", "ratings.default.svc.cluster.local")],
        ("clean", "IST0177", ""),
        id="IST0177-clean",
    ),
]


def analyze(tmp_path: Path, docs: list[dict[str, Any]]) -> tuple[Path, list[Issue]]:
    path = tmp_path / "mesh.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in docs))
    return path, analyze_files([path])


@pytest.mark.parametrize(("docs", "expected"), CASES)
def test_code(tmp_path: Path, docs: list[dict[str, Any]], expected: tuple[str, str, str]) -> None:
    severity, code, text = expected
    _, issues = analyze(tmp_path, docs)
    with_code = [i for i in issues if i.code == code]
    if severity == "clean":
        assert with_code == [], [str(i) for i in with_code]
        return
    assert any(
        i.severity == severity and text in i.message and i.message.startswith(f"[{code}] ")
        for i in with_code
    ), [str(i) for i in issues]


def test_service_entry_addresses_must_be_ips_or_cidrs(tmp_path: Path) -> None:
    _, issues = analyze(tmp_path, [se(addresses=["240.240.0.0/16", "db.example"])])
    assert [(i.severity, i.path) for i in issues if i.is_error] == [
        ("error", "spec.addresses[1]")
    ], [str(i) for i in issues]


def test_codes_in_text_and_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = analyze(tmp_path, [se(), dr({"subsets": [{"name": "v4", "labels": {"x": "y"}}]})])
    assert main(["analyze", str(path)]) == 1
    out = capsys.readouterr().out
    assert "Error: " in out and "[IST0173] DestinationRuleSubsetNotSelectPods: " in out
    assert main(["analyze", "--json", str(path)]) == 1
    found = json.loads(capsys.readouterr().out)
    assert [(f["severity"], f["code"]) for f in found] == [("error", "IST0173")]


def test_info_and_warnings_alone_exit_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    http = [rule("a", **PREFIX), {"name": "b", "match": [PREFIX, {"uri": {"prefix": "/x"}}]}]
    http[1].update(route())
    path, _ = analyze(tmp_path, [se(), vs("r", ["reviews"], http), dr({}, host="ghost")])
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Info: " in out and "[IST0131] VirtualServiceIneffectiveMatch" in out
    assert "0 errors, 1 warning, 1 info" in out
    assert main(["analyze", "--json", str(path)]) == 0
    codes = {f["code"] for f in json.loads(capsys.readouterr().out)}
    assert codes == {"IST0131", "IST0174"}
    assert main(["analyze", "--errors-only", str(path)]) == 0
    assert "no problems found" in capsys.readouterr().out
