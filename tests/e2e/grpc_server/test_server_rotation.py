"""Rotation of the server certificate under load, with the DownstreamTlsContext
exactly as istiod sends it (certificate-provider instance ``default``, both
field generations): the instance is served by a provider handler on the
Mesh's secret sources, which delivers a renewed certificate every 0.3 s
while calls keep flowing. No call fails, connections made before a rotation
keep working, and each new handshake presents the newest certificate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from tests.e2e.conftest import wait_until
from tests.e2e.grpc_server.conftest import (
    CLIENT_ID,
    METHOD,
    SERVER_ID,
    inbound_chain,
    istiod_downstream_tls,
    publish,
)
from tests.e2e.grpc_server.test_server_security import _leaf, _presented

from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.security.material import load_identity, load_trust

SERVER_DNS = "reviews.default.svc"


class _Provider:
    """A certificate-provider instance ``default`` whose certificate the test renews."""

    def __init__(self, ca: DevCA) -> None:
        self.ca = ca
        self.delivers: list[Callable[[Any], None]] = []
        self.current = ca.issue(SERVER_ID, dns=(SERVER_DNS,))

    def identity(self, ref: Any, deliver: Callable[[Any], None]) -> Callable[[], None]:
        self.delivers.append(deliver)
        deliver(self._material())
        return lambda: self.delivers.remove(deliver)

    def trust(self, ref: Any, deliver: Callable[[Any], None]) -> Callable[[], None]:
        assert ref.certificate_name == "ROOTCA"
        deliver(load_trust(self.ca.roots_pem, source="instance 'default' ROOTCA"))
        return lambda: None

    def _material(self) -> Any:
        c = self.current
        return load_identity(c.chain_pem, c.key_pem, source="instance 'default'", now=time.time())

    def renew(self) -> None:
        self.current = self.ca.issue(SERVER_ID, dns=(SERVER_DNS,))
        for deliver in list(self.delivers):
            deliver(self._material())


def test_rotation_under_load_with_istiods_tls_context(
    ads: AdsServer, mesh: Mesh, ca: DevCA, start_server: Callable[..., tuple[Any, int]]
) -> None:
    provider = _Provider(ca)
    mesh.secrets.provider_identity = provider.identity
    mesh.secrets.provider_trust = provider.trust
    server, port = start_server()
    publish(ads, port, [inbound_chain("mtls", istiod_downstream_tls())])
    wait_until(server.serving, what="the server to serve")
    client = ca.issue(CLIENT_ID)
    creds = grpc.ssl_channel_credentials(ca.roots_pem, client.key_pem, client.chain_pem)
    options = [("grpc.ssl_target_name_override", SERVER_DNS)]
    first = grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options)
    stop = threading.Event()
    results = {"ok": 0, "failed": 0}

    def load() -> None:
        call = first.unary_unary(METHOD)
        while not stop.is_set():
            try:
                assert call(b"", timeout=5) == CLIENT_ID.encode()
                results["ok"] += 1
            except grpc.RpcError:
                results["failed"] += 1

    worker = threading.Thread(target=load)
    worker.start()
    try:
        for _ in range(5):
            stop.wait(0.3)
            provider.renew()
            renewed = _leaf(provider.current)
            wait_until(
                lambda: _presented(port, ca, client) == renewed,  # noqa: B023
                what="a new handshake to present the renewed certificate",
            )
            with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as fresh:
                assert fresh.unary_unary(METHOD)(b"", timeout=5) == CLIENT_ID.encode()
    finally:
        stop.set()
        worker.join(10)
        first.close()
    assert results["failed"] == 0 and results["ok"] > 0, results
