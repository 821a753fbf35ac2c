"""SPIFFE mTLS between proxyless and real Envoy 1.40, the embedded control plane the only config.

* Envoy as a client: its outbound ISTIO_MUTUAL cluster and its SVID (SDS
  ``default``/``ROOTCA``, node ``SERVICE_ACCOUNT: web``) come from the
  control plane; it calls the ``reviews`` ``proxyless.grpc.server`` (STRICT,
  AuthorizationPolicy ``web-only``) whose ``peer_identity`` sees Envoy's
  SPIFFE ID; when the policy allows another identity, Envoy's calls end in
  PERMISSION_DENIED naming the policy; when the mesh names another service
  account for ``reviews``, Envoy refuses the server's SVID
  (``ssl.fail_verify_san``).
* Envoy as a sidecar: the control plane gives it an inbound listener (STRICT
  mTLS with its SVID ``sa/reviews``, RBAC allowing ``sa/web``) in front of
  plaintext HTTP and gRPC applications. proxyless clients (httpx and gRPC)
  with identity ``web`` pass Envoy's RBAC, ``ratings`` is refused by it
  (403 / PERMISSION_DENIED), and when the mesh names another service account
  for the destination, the proxyless client refuses Envoy's SVID, naming
  both identities.
* grpcio's own xDS client (``xds_channel_credentials``, a ``file_watcher``
  instance ``default`` over the control plane's ``ca_dir`` files, the
  cluster in istiod's gRPC shape) calls the ``reviews`` server over mTLS:
  ``peer_identity`` sees its SPIFFE ID; with ``ratings``' files it is
  refused by the policy.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from tests.e2e.mesh_security.conftest import (
    METHOD,
    REVIEWS_HOST,
    WEB,
    MeshUnderTest,
    mesh_yaml,
)
from tests.interop.cp_interop_helpers import wait_until

import proxyless.grpc
import proxyless.httpx
from proxyless.controlplane import ControlPlane, NodeIdentity
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply
from proxyless.testing.controlplane import EnvoyProcess, free_port

pytestmark = pytest.mark.timeout(120)


def _rejected(envoy: EnvoyProcess) -> dict[str, int]:
    return {k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v}


def _listeners(envoy: EnvoyProcess) -> dict[str, str]:
    """Dynamic listener name -> "active" or "warming"."""
    out = {}
    for config in envoy.config_dump()["configs"]:
        if config["@type"].endswith("ListenersConfigDump"):
            for item in config.get("dynamic_listeners", []):
                out[item["name"]] = "active" if "active_state" in item else "warming"
    return out


# Envoy calls our xDS-enabled server --------------------------------------------------


@pytest.fixture
def world() -> Iterator[MeshUnderTest]:
    under_test = MeshUnderTest()
    try:
        yield under_test
    finally:
        under_test.close()


@pytest.mark.envoy
def test_envoy_calls_our_server_over_mtls_and_rbac_applies(world: MeshUnderTest) -> None:
    listener = free_port()
    bootstrap = world.cp.envoy_bootstrap(
        "envoy-web", listener_ports={f"{REVIEWS_HOST}:{world.port}": listener}
    )
    bootstrap["node"]["metadata"]["SERVICE_ACCOUNT"] = "web"
    with (
        EnvoyProcess(bootstrap) as envoy,
        grpc.insecure_channel(f"127.0.0.1:{listener}") as channel,
    ):
        who = channel.unary_unary(METHOD)
        deadline = time.monotonic() + 30
        while True:  # until Envoy has its listener, cluster and secrets
            try:
                reply = who(b"envoy", timeout=5, wait_for_ready=True)
                break
            except grpc.RpcError as exc:
                assert time.monotonic() < deadline, (exc, envoy.log_tail())
                time.sleep(0.1)
        assert reply == WEB.encode()
        # (a try that timed out on a loaded machine may have reached it too)
        recorded = [(tag, caller) for tag, caller, _ in world.record.calls]
        assert recorded and set(recorded) == {("envoy", WEB)}
        assert _rejected(envoy) == {}

        # The policy now admits ratings only: Envoy (sa/web) is refused by our server.
        details = world.details.port
        world.cp.update(mesh_yaml(world.port, details).replace("sa/web]", "sa/ratings]", 1))

        # calls that may have reached the handler: served before the new
        # policy arrived, or ended otherwise (a timeout on a loaded machine)
        not_refused = [0]

        def refused() -> bool:
            try:
                who(b"envoy-refused", timeout=5)
                not_refused[0] += 1
                return False
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                    not_refused[0] += 1
                    return False
                assert "policy[web-only]" in (exc.details() or ""), exc.details()
                return True

        wait_until(refused, 20, "our server to refuse Envoy's identity")
        # a refused call never reached the handler
        reached = [tag for tag, _, _ in world.record.calls if tag == "envoy-refused"]
        assert len(reached) <= not_refused[0]

    assert world.cp.server.nacks() == []


@pytest.mark.envoy
def test_envoy_refuses_our_server_presenting_another_identity(world: MeshUnderTest) -> None:
    """The mesh says reviews runs as sa/details: Envoy refuses the server's sa/reviews SVID."""
    world.cp.update(
        mesh_yaml(world.port, world.details.port).replace(
            "serviceAccount: reviews", "serviceAccount: details"
        )
    )
    listener = free_port()
    bootstrap = world.cp.envoy_bootstrap(
        "envoy-web", listener_ports={f"{REVIEWS_HOST}:{world.port}": listener}
    )
    bootstrap["node"]["metadata"]["SERVICE_ACCOUNT"] = "web"
    stat = f"cluster.outbound|{world.port}||{REVIEWS_HOST}.ssl.fail_verify_san"
    with (
        EnvoyProcess(bootstrap) as envoy,
        grpc.insecure_channel(f"127.0.0.1:{listener}") as channel,
    ):
        who = channel.unary_unary(METHOD)

        def refused() -> bool:
            try:
                who(b"envoy", timeout=5, wait_for_ready=True)
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.UNAVAILABLE and envoy.stats().get(stat, 0) > 0
            return False

        wait_until(refused, 30, "Envoy to refuse the server's SVID")
        assert _rejected(envoy) == {}
    assert len(world.record) == 0


# Our clients call through Envoy's inbound listener ------------------------------------

SIDECAR_MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{{number: {http}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, labels: {{app: reviews}}, serviceAccount: {account}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.default.svc.cluster.local]
  ports: [{{number: {grpc}, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, labels: {{app: reviews}}, serviceAccount: {account}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: echo.default.svc.cluster.local
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: web-only, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/web]}}}}]
"""


class _App(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"reviews:" + self.path.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def apps() -> Iterator[tuple[int, EchoServer]]:
    """A plaintext HTTP application and a plaintext gRPC one behind the sidecar."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    echo = EchoServer("echo-app").start()
    try:
        yield server.server_address[1], echo
    finally:
        echo.stop(0)
        server.shutdown()
        server.server_close()


def _client(cp: ControlPlane, account: str) -> Mesh:
    return Mesh(cp.bootstrap(f"{account}-client", metadata={"SERVICE_ACCOUNT": account}))


@pytest.mark.envoy
def test_our_clients_call_through_an_envoy_sidecar_with_mtls(
    apps: tuple[int, EchoServer],
) -> None:
    app_port, echo = apps
    http_port, grpc_port = free_port(), free_port()
    config = {"http": http_port, "grpc": grpc_port, "account": "reviews"}
    with ControlPlane(SIDECAR_MESH.format(**config), stderr=io.StringIO()) as cp:
        bootstrap = cp.envoy_bootstrap("envoy-reviews", listener_ports={})
        meta = bootstrap["node"]["metadata"]
        meta["INSTANCE_IPS"] = "127.0.0.1"
        meta["SERVICE_ACCOUNT"] = "reviews"
        meta["PROXYLESS_INBOUND_PORTS"] = {str(http_port): app_port, str(grpc_port): echo.port}
        with EnvoyProcess(bootstrap) as envoy, _client(cp, "web") as web:
            with _client(cp, "ratings") as ratings:
                for port in (http_port, grpc_port):
                    wait_until(
                        lambda port=port: _listeners(envoy).get(f"inbound|{port}") == "active",
                        30,
                        f"Envoy's inbound listener on {port} to be active",
                    )
                url = f"http://reviews.default.svc.cluster.local:{http_port}/reviews/1"
                target = f"xds:///echo.default.svc.cluster.local:{grpc_port}"

                # web: verified Envoy's SVID (sa/reviews), passed Envoy's RBAC.
                with httpx.Client(transport=proxyless.httpx.Transport(mesh=web), timeout=20) as c:
                    response = c.get(url)
                    assert (response.status_code, response.content) == (
                        200,
                        b"reviews:/reviews/1",
                    )
                echo_call = proxyless.grpc.channel(target, mesh=web).unary_unary(ECHO_METHOD)
                reply = decode_reply(echo_call(b"x", timeout=20, wait_for_ready=True))
                assert reply["backend"] == "echo-app"

                # ratings: mTLS succeeds, Envoy's RBAC refuses the identity.
                with httpx.Client(
                    transport=proxyless.httpx.Transport(mesh=ratings), timeout=20
                ) as c:
                    assert c.get(url).status_code == 403
                refused = proxyless.grpc.channel(target, mesh=ratings).unary_unary(ECHO_METHOD)
                with pytest.raises(grpc.RpcError) as denied:
                    refused(b"x", timeout=20, wait_for_ready=True)
                assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
                rbac = {k: v for k, v in envoy.stats().items() if "rbac" in k and v}
                assert any(k.endswith("rbac.denied") for k in rbac), rbac
                assert any(k.endswith("rbac.allowed") for k in rbac), rbac

                # The mesh now names another service account for the destination:
                # the client pins it and refuses Envoy's SVID (sa/reviews).
                cp.update(SIDECAR_MESH.format(**{**config, "account": "details"}))
                cluster = f"outbound|{http_port}||reviews.default.svc.cluster.local"

                def pinned() -> bool:
                    runtime = web.clusters.get(cluster)
                    if runtime is None or runtime.tls is None:
                        return False
                    values = [m.matcher.value for m in runtime.tls.current().matchers]
                    return values == ["spiffe://cluster.local/ns/default/sa/details"]

                wait_until(pinned, 20, "the client to pin sa/details")
                with httpx.Client(transport=proxyless.httpx.Transport(mesh=web), timeout=20) as c:
                    with pytest.raises(httpx.HTTPError) as mismatch:
                        c.get(url)
                message = str(mismatch.value)
                assert "sa/details" in message and "sa/reviews" in message, message
            assert _rejected(envoy) == {}
        assert cp.server.nacks() == []


# grpcio's own xDS client calls our server ----------------------------------------------

GRPCIO_CLIENT = """
import json, sys, grpc, grpc.experimental
creds = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
with grpc.secure_channel(sys.argv[1], creds) as channel:
    who = channel.unary_unary(sys.argv[2])
    try:
        print(json.dumps({"reply": who(b"grpcio", timeout=20, wait_for_ready=True).decode()}))
    except grpc.RpcError as exc:
        print(json.dumps({"error": exc.code().name, "details": exc.details()}))
"""


def _grpcio_call(world: MeshUnderTest, account: str, tmp: Path) -> dict[str, str]:
    bootstrap = world.cp.bootstrap(
        f"grpcio-{account}",
        metadata={"SERVICE_ACCOUNT": account},
        certificates=NodeIdentity("default", account),
    )
    path = tmp / f"bootstrap-{account}.json"
    path.write_text(json.dumps(bootstrap))
    done = subprocess.run(
        [sys.executable, "-c", GRPCIO_CLIENT, world.target, METHOD],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(path)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_grpcio_xds_client_with_file_watcher_calls_our_server(tmp_path: Path) -> None:
    world = MeshUnderTest(tmp_path / "certs", files_for_proxyless=False)
    try:
        assert _grpcio_call(world, "web", tmp_path) == {"reply": WEB}
        ((tag, caller, cert),) = world.record.calls
        assert (tag, caller) == ("grpcio", WEB)
        assert cert == world.files_leaf("web")  # the certificate of the files it was given
        refused = _grpcio_call(world, "ratings", tmp_path)
        assert refused["error"] == "PERMISSION_DENIED", refused
        assert "policy[web-only]" in refused["details"], refused
        assert len(world.record.calls) == 1
        assert world.cp.server.nacks() == []
    finally:
        world.close()
