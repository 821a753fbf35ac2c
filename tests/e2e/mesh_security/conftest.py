"""A whole mesh with proxyless on both sides, configured by the embedded control plane.

One Istio YAML (:func:`mesh_yaml`): ServiceEntries for ``reviews`` (gRPC,
its endpoint a WorkloadEntry) and ``details`` (HTTP, a ``TlsEcho``
requiring a client certificate) with their ``serviceAccount``,
DestinationRules ``ISTIO_MUTUAL``, PeerAuthentication STRICT in ``default``
and an AuthorizationPolicy ``web-only`` allowing
``cluster.local/ns/default/sa/web`` on ``reviews``. :class:`MeshUnderTest`
runs the control plane (SVIDs renewed by hand with a
:class:`~proxyless.testing.FakeClock`), the ``reviews`` server
(``proxyless.grpc.server`` on a node with ``INSTANCE_IPS``, ``LABELS`` and
``SERVICE_ACCOUNT`` metadata, certificates over SDS) whose handler answers
the caller's ``peer_identity`` and records the fingerprint of the client
certificate of every call, and client Meshes by service account.
``reviews`` is a ``proxyless.grpc.server`` or, with ``aio_server``, a
``proxyless.grpc.aio.server`` on its own event loop thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from tests.e2e.httpx_tls.conftest import TlsEcho

import proxyless.grpc
import proxyless.grpc.aio
from proxyless.controlplane import ControlPlane, NodeIdentity
from proxyless.controlplane.ca import IssuedCertificate
from proxyless.controlplane.cert_files import file_watcher_provider
from proxyless.controlplane.model import SECRET_TYPE, NodeInfo, Snapshot
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing import FakeClock

TEMPLATE = "xds.istio.io/grpc/lds/inbound/%s"
REVIEWS_HOST = "reviews.default.svc.cluster.local"
DETAILS_HOST = "details.default.svc.cluster.local"
WEB = "spiffe://cluster.local/ns/default/sa/web"
RATINGS = "spiffe://cluster.local/ns/default/sa/ratings"
REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"
DETAILS = "spiffe://cluster.local/ns/default/sa/details"
METHOD = "/mesh.Reviews/Who"
#: The SVIDs' lifetime; a rotation advances the control plane's clock past 80% of it.
TTL = 30.0


def mesh_yaml(grpc_port: int, http_port: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{REVIEWS_HOST}]
  ports: [{{number: {grpc_port}, name: grpc, protocol: GRPC}}]
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-1, namespace: default}}
spec: {{address: 127.0.0.1, labels: {{app: reviews}}, serviceAccount: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: details, namespace: default}}
spec:
  hosts: [{DETAILS_HOST}]
  ports: [{{number: {http_port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, labels: {{app: details}}, serviceAccount: details}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: {REVIEWS_HOST}
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: details, namespace: default}}
spec:
  host: {DETAILS_HOST}
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
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/web]}}}}]
"""


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:16]


def leaf_fingerprint(issued: IssuedCertificate) -> str:
    """The fingerprint of ``issued``'s leaf certificate."""
    end = b"-----END CERTIFICATE-----"
    leaf = issued.chain_pem.split(end)[0] + end + b"\n"
    return fingerprint(ssl.PEM_cert_to_DER_cert(leaf.decode()))


def wait_until(cond: Any, *, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class CallRecord:
    """What the ``reviews`` server saw: (loop tag, caller SPIFFE ID, client certificate)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str | None, str]] = []

    def add(self, tag: str, who: str | None, cert: str) -> None:
        with self.lock:
            self.calls.append((tag, who, cert))

    def seen(self, tag: str, cert: str) -> bool:
        with self.lock:
            return any(t == tag and c == cert for t, _, c in self.calls)

    def certs(self) -> set[str]:
        with self.lock:
            return {c for _, _, c in self.calls}

    def __len__(self) -> int:
        with self.lock:
            return len(self.calls)


class MeshUnderTest:
    """The control plane, the ``reviews`` server and client Meshes (module docstring)."""

    def __init__(
        self,
        ca_dir: Path | None = None,
        *,
        files_for_proxyless: bool = True,
        aio_server: bool = False,
    ) -> None:
        self.clock = FakeClock(start=0.0, wall_offset=float(int(time.time())))
        self.record = CallRecord()
        self.ca_dir = ca_dir
        self.cp = ControlPlane(
            "",
            stderr=io.StringIO(),
            clock=self.clock,
            certificate_ttl=TTL,
            renew_check_interval=0,
            ca_dir=ca_dir,
            identities=(NodeIdentity("default", "web"), NodeIdentity("default", "ratings")),
        ).start()
        self.relay: AdsServer | None = None
        if ca_dir is not None and files_for_proxyless:
            self.relay = AdsServer(snapshot_fn=self._as_grpc_node)
            self.relay.start()
        self.details = TlsEcho("details", self.cp.ca.issue(DETAILS), self.cp.ca).start()
        http_port = self.details.port
        self.meshes: list[Mesh] = []
        self.node_ids: dict[int, str] = {}
        bootstrap = self.cp.bootstrap(
            "reviews-1",
            metadata={
                "INSTANCE_IPS": "127.0.0.1",
                "LABELS": {"app": "reviews"},
                "SERVICE_ACCOUNT": "reviews",
            },
        )
        bootstrap["server_listener_resource_name_template"] = TEMPLATE
        self._use_files(bootstrap, "reviews")
        self.server_mesh = self._mesh(bootstrap)
        self.loop: asyncio.AbstractEventLoop | None = None
        # Bind first: the ServiceEntry names the server's port.
        if aio_server:
            self.loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True)
            self._loop_thread.start()
            self.port = asyncio.run_coroutine_threadsafe(self._start_aio(), self.loop).result(10)
        else:
            handler = grpc.method_handlers_generic_handler(
                "mesh.Reviews", {"Who": grpc.unary_unary_rpc_method_handler(self._who)}
            )
            self.server = proxyless.grpc.server(
                futures.ThreadPoolExecutor(max_workers=8), mesh=self.server_mesh, handlers=[handler]
            )
            self.port = self.server.add_port("127.0.0.1:0")
            self.server.start()
        self.cp.update(mesh_yaml(self.port, http_port))
        if self.relay is not None:
            self.relay.refresh()
        self.target = f"xds:///{REVIEWS_HOST}:{self.port}"
        self.http_url = f"http://{DETAILS_HOST}:{http_port}"

    async def _start_aio(self) -> int:
        async def who(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            return self._who(request, context)

        handler = grpc.method_handlers_generic_handler(
            "mesh.Reviews", {"Who": grpc.unary_unary_rpc_method_handler(who)}
        )
        self.aio_server = proxyless.grpc.aio.server(mesh=self.server_mesh, handlers=[handler])
        port = self.aio_server.add_port("127.0.0.1:0")
        await self.aio_server.start()
        return port

    def _who(self, request: bytes, context: Any) -> bytes:
        who = proxyless.grpc.peer_identity(context)
        pems = context.auth_context().get("x509_pem_cert")
        cert = fingerprint(ssl.PEM_cert_to_DER_cert(pems[0].decode())) if pems else ""
        self.record.add(request.decode(), who, cert)
        return (who or "plaintext").encode()

    def _as_grpc_node(self, node: NodeInfo) -> Snapshot:
        """What the control plane serves a grpcio node in ``node``'s place:
        TLS contexts naming the certificate-provider instance ``default``
        (istiod's gRPC shape), and no Secrets."""
        grpc_node = dataclasses.replace(node, user_agent_name="grpc-python")
        resources = dict(self.cp.snapshot_for(grpc_node).resources)
        resources.pop(SECRET_TYPE, None)
        return Snapshot(resources)

    def _use_files(self, bootstrap: dict[str, Any], account: str) -> None:
        """With ``ca_dir``: take config from the relay and certificates from
        ``ca_dir`` files (a ``file_watcher`` instance ``default``)."""
        if self.ca_dir is None or self.relay is None:
            return
        bootstrap["xds_servers"][0]["server_uri"] = self.relay.target
        bootstrap["certificate_providers"] = {
            "default": file_watcher_provider(
                self.ca_dir, NodeIdentity("default", account), refresh_interval="0.1s"
            )
        }

    def files_leaf(self, account: str) -> str:
        """The fingerprint of the certificate now in ``account``'s files."""
        assert self.ca_dir is not None
        chain = (self.ca_dir / "default" / account / "cert-chain.pem").read_bytes()
        return leaf_fingerprint(IssuedCertificate(chain, b"", 0.0))

    def _mesh(self, bootstrap: dict[str, Any]) -> Mesh:
        mesh = Mesh(bootstrap)
        self.meshes.append(mesh)
        return mesh

    def client(self, account: str) -> Mesh:
        """A client Mesh whose node claims ``SERVICE_ACCOUNT: account``."""
        node_id = f"{account}-{len(self.meshes)}"
        bootstrap = self.cp.bootstrap(node_id, metadata={"SERVICE_ACCOUNT": account})
        self._use_files(bootstrap, account)
        mesh = self._mesh(bootstrap)
        self.node_ids[id(mesh)] = node_id
        return mesh

    def node_of(self, mesh: Mesh) -> str:
        return self.node_ids[id(mesh)]

    def client_leaf(self, mesh: Mesh) -> str:
        """The fingerprint of the certificate ``mesh`` should present now."""
        if self.relay is not None:
            return self.files_leaf(self.node_of(mesh).rsplit("-", 1)[0])
        return leaf_fingerprint(self.held(self.node_of(mesh)))

    def server_leaf(self) -> str:
        """The fingerprint of the certificate the ``reviews`` server should present now."""
        if self.relay is not None:
            return self.files_leaf("reviews")
        return leaf_fingerprint(self.held("reviews-1"))

    def held(self, node_id: str) -> IssuedCertificate:
        """The SVID the control plane currently holds for ``node_id``."""
        for (key, _), issued in self.cp.svids.held().items():
            if key == node_id:
                return issued.certificate
        raise AssertionError(f"no SVID held for {node_id!r}")

    def rotate(self) -> int:
        """Move the clock past the renewal point and re-issue every SVID."""
        self.clock.advance(0.85 * TTL)
        return self.cp.renew_certificates()

    def close(self) -> None:
        if self.loop is not None:
            asyncio.run_coroutine_threadsafe(self.aio_server.stop(0), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._loop_thread.join(10)
            self.loop.close()
        else:
            self.server.stop(0).wait(5)
        for mesh in self.meshes:
            mesh.close()
        self.details.stop()
        if self.relay is not None:
            self.relay.stop()
        self.cp.stop()


@pytest.fixture(
    params=[
        pytest.param(("sds", "sync"), id="sds"),
        pytest.param(("files", "sync"), id="file_watcher"),
        pytest.param(("sds", "aio"), id="sds-aio-server"),
    ]
)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MeshUnderTest]:
    """The mesh with certificates over SDS, or from ``ca_dir`` files (see
    :meth:`MeshUnderTest._as_grpc_node`); ``reviews`` a ``proxyless.grpc.server``
    or a ``proxyless.grpc.aio.server``."""
    certificates, server = request.param
    under_test = MeshUnderTest(
        tmp_path / "certs" if certificates == "files" else None, aio_server=server == "aio"
    )
    try:
        yield under_test
    finally:
        under_test.close()
