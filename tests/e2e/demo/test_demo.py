"""`proxyless demo` is the README's first command: it must work end to end.

The demo runs three xDS-enabled backends in their own processes, over
mTLS with certificates from the embedded control plane, and must report
the identities on both ends, the refusal of a caller the
AuthorizationPolicy does not allow, and exit 1 when the mesh does not
behave as its config says.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from proxyless.controlplane.examples import example_template, render_example
from proxyless.demo import run_demo
from proxyless.testing.backends import ECHO_METHOD, decode_reply

CLIENT = "spiffe://cluster.local/ns/default/sa/productpage"
SERVER = "spiffe://cluster.local/ns/default/sa/reviews"
RATINGS = "spiffe://cluster.local/ns/default/sa/ratings"
BACKENDS = ("reviews-v1-a", "reviews-v1-b", "reviews-v2")


def test_demo_runs_and_reports_the_mesh() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "proxyless.cli", "demo", "--calls", "600"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    # routing and resilience, through mTLS
    assert "route 'split': v1 90%, v2 10%" in out
    assert "reviews-v2          100  subset v2" in out  # the Mobile route
    assert "calls that failed at the caller: 0" in out
    assert "ejected by outlier detection: 127.0.0.1:" in out
    # identities: the client's SVID, each server's as the client verified it
    assert f"this client (productpage) is {CLIENT}" in out
    assert "(from SDS secret 'default', valid 60 more minutes)" in out
    assert f"it accepts reviews servers matching: exact {SERVER}" in out
    for name in BACKENDS:
        assert re.search(rf"^   {name} +presented {SERVER}: verified$", out, re.M), out
    # what each backend's handler saw: productpage, once, and nobody else
    saw = re.findall(r"^   (\S+) saw caller (\S+)$", out, re.M)
    assert sorted(saw) == [(name, CLIENT) for name in BACKENDS], out
    # the refused workload, and why
    assert f"One call from another workload, ratings: {RATINGS}" in out
    assert (
        "PERMISSION_DENIED: RBAC filter 'envoy.filters.http.rbac': no ALLOW policy matched" in out
    )
    assert "AuthorizationPolicy default/reviews-viewers (allows " + CLIENT[9:] + ")" in out
    assert f"the reviews server refused {RATINGS}" in out
    assert "OK: demo finished" in out
    assert "Traceback" not in res.stderr
    assert "No match found for server name" not in res.stderr


RATINGS_ALLOWED = (
    "        - cluster.local/ns/default/sa/productpage\n",
    "        - cluster.local/ns/default/sa/productpage\n        - cluster.local/ns/default/sa/ratings\n",
)
NO_MTLS = ("      mode: ISTIO_MUTUAL\n", "      mode: DISABLE\n")


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        pytest.param(RATINGS_ALLOWED, "not refused: the call succeeded", id="ratings-allowed"),
        pytest.param(
            NO_MTLS,
            "stopped: SecurityError: cluster 'outbound|9080|v1|reviews.default.svc.cluster.local'"
            " is not a TLS cluster",
            id="no-istio-mutual",
        ),
    ],
)
def test_demo_fails_when_the_mesh_does_not_do_what_it_shows(
    edit: tuple[str, str], said: str
) -> None:
    template = example_template("reviews-mtls")
    assert edit[0] in template
    out = io.StringIO()
    assert run_demo(out, calls=200, template=template.replace(edit[0], edit[1])) == 1
    text = out.getvalue()
    assert said in text, text
    assert "FAILED: demo finished" in text


def test_bundled_mtls_example_analyzes_without_errors(tmp_path: Path) -> None:
    endpoints = {name: ("127.0.0.1", 5001 + i) for i, name in enumerate(BACKENDS)}
    path = tmp_path / "reviews-mtls.yaml"
    path.write_text(render_example("reviews-mtls", endpoints))
    res = subprocess.run(
        [sys.executable, "-m", "proxyless.cli", "analyze", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    # productpage is a client only: no workload of the YAML runs as it.
    assert "0 errors, 1 warning" in res.stdout, res.stdout
    assert "'cluster.local/ns/default/sa/productpage' can never match" in res.stdout


def test_backend_process_takes_failure_commands() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxyless.testing.backends", "plain"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        word, port = proc.stdout.readline().split()
        assert word == "READY"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary(ECHO_METHOD, None, None)
            reply = decode_reply(echo(b"hi", timeout=5))
            assert reply["backend"] == "plain" and "caller" not in reply
            for command, answer in (
                ("fail UNAVAILABLE", "FAILING UNAVAILABLE"),
                ("bogus", "ERROR"),
            ):
                proc.stdin.write(command + "\n")
                proc.stdin.flush()
                assert proc.stdout.readline().startswith(answer)
            try:
                echo(b"hi", timeout=5)
                raise AssertionError("the backend did not fail")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
            proc.stdin.write("fail\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "FAILING none"
            assert decode_reply(echo(b"hi", timeout=5))["backend"] == "plain"
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_example_client_runs() -> None:
    res = subprocess.run(
        [sys.executable, "examples/reviews_client.py"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Mobile route (v2): {'reviews-v2': 50}" in res.stdout
    assert f"the backends saw caller: {CLIENT}" in res.stdout
