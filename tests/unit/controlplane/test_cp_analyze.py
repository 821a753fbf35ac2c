"""``proxyless analyze``: errors, pitfall warnings, output format and exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxyless.cli import main
from proxyless.controlplane.istio.analyze import analyze_files

SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v1}}
  - {address: 10.0.0.3, labels: {version: v2}}
"""


def dr(policy: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy: {policy}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
"""


RETRYING_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
    retries: {attempts: 3}
"""


def pa(name: str, mode: str, namespace: str = "default") -> str:
    return (
        f"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec: {{mtls: {{mode: {mode}}}}}\n"
    )


def docs(*parts: str) -> str:
    return "\n---\n".join(parts)


CASES = [
    pytest.param(
        docs(SE, dr("{loadBalancer: {simple: ROUND_ROBIN}}"), RETRYING_VS),
        "Warning: mesh.yaml:doc3 VirtualService/reviews: spec.http[0].retries: retries without "
        "outlierDetection or connectionPool.http.maxRetries on outbound|9080|v1|reviews.default.svc.cluster.local",
        id="retries-without-outlier-detection",
    ),
    pytest.param(
        docs(SE, dr("{outlierDetection: {consecutive5xxErrors: 2, maxEjectionPercent: 100}}")),
        "Warning: mesh.yaml:doc2 DestinationRule/reviews: spec.trafficPolicy.outlierDetection.maxEjectionPercent: "
        "100 lets every endpoint be ejected",
        id="max-ejection-100",
    ),
    pytest.param(
        docs(SE, dr("{outlierDetection: {consecutive5xxErrors: 2}}")),
        "Warning: mesh.yaml:doc2 DestinationRule/reviews: spec.trafficPolicy.outlierDetection: "
        "maxEjectionPercent defaults to 10: with 3 endpoints only one endpoint is ejected at a time",
        id="default-ejection-few-hosts",
    ),
    pytest.param(
        docs(SE, dr("{loadBalancer: {consistentHash: {httpHeaderName: x, maglev: {}}}}")),
        "Warning: mesh.yaml:doc2 DestinationRule/reviews: spec.trafficPolicy.loadBalancer.consistentHash.maglev: "
        "MAGLEV is not supported by grpcio's native xDS client",
        id="maglev",
    ),
    pytest.param(
        docs(SE, pa("a", "STRICT"), pa("b", "PERMISSIVE"), pa("c", "PERMISSIVE", "other")),
        "Warning: mesh.yaml:doc3 PeerAuthentication/b: spec.mtls.mode: namespace default mixes STRICT and PERMISSIVE",
        id="mixed-mtls",
    ),
    pytest.param(
        docs(SE, RETRYING_VS),
        "Error: mesh.yaml:doc2 VirtualService/reviews: spec.http[0].route[0].destination.subset: "
        "[IST0101] ReferencedResourceNotFound: subset 'v1' is not defined: no DestinationRule "
        "for reviews.default.svc.cluster.local",
        id="error-missing-rule",
    ),
    pytest.param(
        docs(
            SE, "apiVersion: networking.istio.io/v1\nkind: Unknown\nmetadata: {name: u}\nspec: {}\n"
        ),
        "Error: mesh.yaml:doc2 Unknown/u: kind: unknown kind 'Unknown'",
        id="error-unknown-kind",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_analyze_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    status = main(["analyze", str(path)])
    out = capsys.readouterr().out.replace(str(path), "mesh.yaml")
    assert any(line.startswith(expected) for line in out.splitlines()), out
    assert status == (1 if expected.startswith("Error") else 0)


def test_clean_config_exit_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(
        docs(
            SE,
            dr("{outlierDetection: {consecutive5xxErrors: 2, maxEjectionPercent: 50}}"),
            RETRYING_VS,
        )
    )
    assert main(["analyze", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"no problems found in {path}"


def test_json_output_and_errors_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(docs(SE, RETRYING_VS, pa("a", "STRICT"), pa("b", "PERMISSIVE")))
    assert main(["analyze", "--json", "--errors-only", str(path)]) == 1
    findings = json.loads(capsys.readouterr().out)
    assert [f["severity"] for f in findings] == ["error"]
    assert findings[0]["document"] == 2
    assert findings[0]["field"] == "spec.http[0].route[0].destination.subset"


def test_several_files_are_one_mesh(tmp_path: Path) -> None:
    services = tmp_path / "services.yaml"
    services.write_text(
        docs(SE, dr("{outlierDetection: {consecutive5xxErrors: 2, maxEjectionPercent: 50}}"))
    )
    routes = tmp_path / "routes.yaml"
    routes.write_text(RETRYING_VS)
    assert analyze_files([services, routes]) == []


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    (issue,) = analyze_files([tmp_path / "nope.yaml"])
    assert issue.is_error
    assert str(issue).startswith(f"{tmp_path / 'nope.yaml'}: cannot read")


def test_bundled_and_repository_examples_are_clean() -> None:
    from proxyless.controlplane import render_example
    from proxyless.controlplane.istio.load import load_text

    rendered = render_example(
        "reviews",
        {"reviews-v1-a": "127.0.0.1:1", "reviews-v1-b": "127.0.0.1:2", "reviews-v2": "127.0.0.1:3"},
    )
    assert load_text(rendered, "reviews.yaml").issues == ()
    repo_example = Path(__file__).parents[3] / "examples" / "mesh.yaml"
    assert analyze_files([repo_example]) == []


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """``proxyless analyze --json FILE | head`` prints no traceback."""
    import subprocess
    import sys

    docs = [
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n"
        f"metadata: {{name: v{i}, namespace: default}}\n"
        f"spec: {{hosts: [m{i}.default.svc.cluster.local], http: [{{route: "
        f"[{{destination: {{host: m{i}.default.svc.cluster.local, subset: v1}}}}]}}]}}\n"
        for i in range(2000)
    ]
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("---\n".join(docs))
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxyless.cli", "analyze", "--json", str(mesh)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()  # the reader goes away
    err = proc.stderr.read().decode()
    code = proc.wait(60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == 141
