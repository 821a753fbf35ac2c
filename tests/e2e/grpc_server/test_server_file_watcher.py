"""The server side of istio-agent's set-up: a bootstrap ``file_watcher``
certificate-provider instance ``default`` (certificate, key and CA files)
and the inbound Listener's DownstreamTlsContext exactly as istiod sends it.
Rewriting the files rotates the certificate new handshakes present;
connections made before keep working."""

from __future__ import annotations

from pathlib import Path

import grpc
from tests.e2e.conftest import bootstrap_for, wait_until
from tests.e2e.grpc_server.conftest import (
    CLIENT_ID,
    METHOD,
    SERVER_ID,
    TEMPLATE,
    WHO_HANDLER,
    inbound_chain,
    istiod_downstream_tls,
    publish,
)
from tests.e2e.grpc_server.test_server_security import _leaf, _presented

import proxyless.grpc
from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing import FakeClock

SERVER_DNS = "reviews.default.svc"


def test_istio_agent_files_serve_and_rotate(ads: AdsServer, ca: DevCA, tmp_path: Path) -> None:
    from concurrent import futures

    cert, key, roots = tmp_path / "cert-chain.pem", tmp_path / "key.pem", tmp_path / "root-cert.pem"
    first = ca.issue(SERVER_ID, dns=(SERVER_DNS,))
    cert.write_bytes(first.chain_pem)
    key.write_bytes(first.key_pem)
    roots.write_bytes(ca.roots_pem)
    providers = {
        "default": {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": str(cert),
                "private_key_file": str(key),
                "ca_certificate_file": str(roots),
                "refresh_interval": "60s",
            },
        }
    }
    clock = FakeClock()
    bootstrap = bootstrap_for(
        ads,
        "e2e-grpc-server-files",
        certificate_providers=providers,
        server_listener_resource_name_template=TEMPLATE,
    )
    with Mesh(bootstrap, clock=clock) as mesh:
        server = proxyless.grpc.server(
            futures.ThreadPoolExecutor(4), mesh=mesh, handlers=[WHO_HANDLER]
        )
        port = server.add_port("127.0.0.1:0")
        server.start()
        try:
            publish(ads, port, [inbound_chain("mtls", istiod_downstream_tls())])
            wait_until(server.serving, what="the server to serve")
            client = ca.issue(CLIENT_ID)
            creds = grpc.ssl_channel_credentials(ca.roots_pem, client.key_pem, client.chain_pem)
            options = [("grpc.ssl_target_name_override", SERVER_DNS)]
            old = grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options)
            call = old.unary_unary(METHOD)
            assert call(b"", timeout=5) == CLIENT_ID.encode()
            assert _presented(port, ca, client) == _leaf(first)

            renewed = ca.issue(SERVER_ID, dns=(SERVER_DNS,))
            cert.write_bytes(renewed.chain_pem)
            key.write_bytes(renewed.key_pem)

            def rotated() -> bool:
                clock.advance(60)  # the refresh timer fires on the Mesh's loop
                return _presented(port, ca, client) == _leaf(renewed)

            wait_until(rotated, what="new handshakes to present the rewritten certificate")
            assert call(b"", timeout=5) == CLIENT_ID.encode()
            old.close()
        finally:
            server.stop(0).wait(5)
