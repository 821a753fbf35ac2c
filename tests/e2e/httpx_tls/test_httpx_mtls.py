"""The httpx transports against TLS clusters: mTLS with the cluster's
credentials, the server's SPIFFE ID checked before the request is written,
fail closed (gRFC A29; Envoy ``UpstreamTlsContext``).

Every case runs through ``Transport`` and ``AsyncTransport``. A TLS cluster
used to be refused by both; it is now reached over mTLS.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.e2e.httpx.conftest import HttpEcho, Service
from tests.e2e.httpx_tls.conftest import CLUSTER, RATINGS, REVIEWS, URL, WEB, TlsEcho, tls_cluster

import proxyless.httpx
from proxyless.controlplane.ca import DevCA, IssuedCertificate
from proxyless.errors import CertificateError, IdentityMismatch, SecurityError
from proxyless.mesh import Mesh
from proxyless.testing.resources import cluster, route

Send = Callable[..., httpx.Response]


@pytest.fixture(params=["sync", "async"])
def send(request: pytest.FixtureRequest, mesh: Mesh) -> Send:
    """``send(path, timeout=...)``: one GET through a fresh proxyless
    ``Transport`` or ``AsyncTransport`` (the parameter)."""

    def sync(path: str = "/", **kw: Any) -> httpx.Response:
        with httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh), timeout=10.0) as c:
            response = c.get(URL + path, **kw)
            response.read()
            return response

    async def _async(path: str, **kw: Any) -> httpx.Response:
        transport = proxyless.httpx.AsyncTransport(mesh=mesh)
        async with httpx.AsyncClient(transport=transport, timeout=10.0) as c:
            response = await c.get(URL + path, **kw)
            await response.aread()
            return response

    def run_async(path: str = "/", **kw: Any) -> httpx.Response:
        return asyncio.run(_async(path, **kw))

    return sync if request.param == "sync" else run_async


def _publish(service: Service, backends: list[Any], cluster_proto: Any, **route_kw: Any) -> None:
    service.cluster(CLUSTER, backends, cluster_proto)
    service.routes_for("svc:8080", [route(prefix="/", cluster=CLUSTER, **route_kw)])


def _body(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.content)
    return data


def test_reaches_the_server_presenting_the_pinned_svid(
    send: Send,
    service: Service,
    servers: Callable[..., TlsEcho],
    ca: DevCA,
    web: IssuedCertificate,
) -> None:
    server = servers("reviews", ca.issue(REVIEWS))
    _publish(service, [server], tls_cluster(CLUSTER, web, ca.roots_pem, [REVIEWS]))
    response = send("/reviews/1")
    assert response.status_code == 200
    record = _body(response)
    assert record["backend"] == "reviews" and record["path"] == "/reviews/1"
    assert record["client"] == WEB  # the client presented its SVID
    assert record["host"] == "svc:8080"  # the Host header stays the mesh authority
    assert server.sni == [None]  # no `sni` in the context: none sent, as Envoy does


def test_sni_comes_from_the_context(
    send: Send,
    service: Service,
    servers: Callable[..., TlsEcho],
    ca: DevCA,
    web: IssuedCertificate,
) -> None:
    server = servers("reviews", ca.issue(REVIEWS))
    proto = tls_cluster(CLUSTER, web, ca.roots_pem, [REVIEWS], sni="reviews.default.svc")
    _publish(service, [server], proto)
    assert send("/").status_code == 200
    assert server.sni == ["reviews.default.svc"]


def _refused(send: Send) -> proxyless.httpx.MeshConnectError:
    with pytest.raises(proxyless.httpx.MeshConnectError) as info:
        send("/secret")
    err = info.value
    assert err.stage == "upstream"
    assert isinstance(err, httpx.ConnectError)
    assert f"cluster {CLUSTER!r} endpoint 127.0.0.1:" in str(err)
    return err


def test_refuses_another_spiffe_id_of_the_same_ca(
    send: Send,
    service: Service,
    servers: Callable[..., TlsEcho],
    ca: DevCA,
    web: IssuedCertificate,
) -> None:
    impostor = servers("ratings", ca.issue(RATINGS))
    _publish(service, [impostor], tls_cluster(CLUSTER, web, ca.roots_pem, [REVIEWS]))
    err = _refused(send)
    assert isinstance(err.proxyless_error, IdentityMismatch)
    assert f"presented {RATINGS}" in str(err) and REVIEWS in str(err)
    assert impostor.requests == []  # not a byte of the request reached it


def test_refuses_a_certificate_from_another_ca(
    send: Send,
    service: Service,
    servers: Callable[..., TlsEcho],
    other_ca: DevCA,
    ca: DevCA,
    web: IssuedCertificate,
) -> None:
    stranger = servers("stranger", other_ca.issue(REVIEWS))
    _publish(service, [stranger], tls_cluster(CLUSTER, web, ca.roots_pem, [REVIEWS]))
    err = _refused(send)
    assert isinstance(err.proxyless_error, CertificateError)
    assert "does not verify against the cluster's trust bundle" in str(err)
    assert REVIEWS in str(err)
    assert stranger.requests == []


def test_refuses_a_plaintext_server(
    send: Send, service: Service, ca: DevCA, web: IssuedCertificate
) -> None:
    plain = HttpEcho("plain").start()
    try:
        _publish(service, [plain], tls_cluster(CLUSTER, web, ca.roots_pem, [REVIEWS]))
        err = _refused(send)
    finally:
        plain.stop()
    assert type(err.proxyless_error) is SecurityError
    assert "TLS handshake failed" in str(err)
    assert plain.requests == []  # the ClientHello is all it got: no request


def test_a_refused_identity_is_a_connect_failure_for_retries(
    send: Send,
    service: Service,
    servers: Callable[..., TlsEcho],
    ca: DevCA,
    web: IssuedCertificate,
) -> None:
    """``connect-failure`` retries move on from an impostor to the pinned server."""
    from tests.e2e.httpx.conftest import retry_policy

    good = servers("reviews", ca.issue(REVIEWS))
    impostor = servers("ratings", ca.issue(RATINGS))
    _publish(
        service,
        [impostor, good],
        tls_cluster(CLUSTER, web, ca.roots_pem, [REVIEWS]),
        retry_policy=retry_policy("connect-failure", 3, previous_hosts=True),
    )
    for _ in range(4):
        assert _body(send("/"))["backend"] == "reviews"
    assert impostor.requests == [] and len(good.requests) == 4


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_refused_identity_is_a_local_origin_failure_for_outlier_detection(
    kind: str,
    mesh: Mesh,
    service: Service,
    servers: Callable[..., TlsEcho],
    ca: DevCA,
    web: IssuedCertificate,
) -> None:
    """One client (so the fast path serves warm requests): the impostor is
    ejected after two refused handshakes and every request succeeds."""
    from tests.e2e.httpx.conftest import outlier_detection, retry_policy

    from proxyless.testing.resources import cluster

    good = servers("reviews", ca.issue(REVIEWS))
    impostor = servers("ratings", ca.issue(RATINGS))
    proto = cluster(CLUSTER, outlier=outlier_detection(consecutive_5xx=2))
    _publish(
        service,
        [impostor, good],
        tls_cluster(CLUSTER, web, ca.roots_pem, [REVIEWS], proto=proto),
        retry_policy=retry_policy("connect-failure", 2, previous_hosts=True),
    )

    def sync_run() -> list[str]:
        with httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh), timeout=10.0) as c:
            return [_body(c.get(URL + "/"))["backend"] for _ in range(12)]

    async def async_run() -> list[str]:
        transport = proxyless.httpx.AsyncTransport(mesh=mesh)
        async with httpx.AsyncClient(transport=transport, timeout=10.0) as c:
            return [_body(await c.get(URL + "/"))["backend"] for _ in range(12)]

    served = sync_run() if kind == "sync" else asyncio.run(async_run())
    assert served == ["reviews"] * 12
    assert impostor.requests == []
    runtime = mesh.clusters.get(CLUSTER)
    assert runtime is not None
    assert {es.address: es.ejected for es in runtime.endpoints()} == {
        impostor.address: True,
        good.address: False,
    }


def test_an_unreadable_certificate_file_fails_at_once_naming_the_file(
    send: Send,
    service: Service,
    servers: Callable[..., TlsEcho],
    ca: DevCA,
    tmp_path: Any,
) -> None:
    from envoy.config.core.v3 import base_pb2

    server = servers("reviews", ca.issue(REVIEWS))
    proto = tls_cluster(CLUSTER, None, ca.roots_pem, [REVIEWS])
    missing = str(tmp_path / "missing-cert.pem")
    context = _unpack_context(proto)
    context.common_tls_context.tls_certificates.add(
        certificate_chain=base_pb2.DataSource(filename=missing),
        private_key=base_pb2.DataSource(filename=str(tmp_path / "missing-key.pem")),
    )
    proto.transport_socket.typed_config.Pack(context)
    _publish(service, [server], proto)
    with pytest.raises(proxyless.httpx.MeshConnectError) as info:
        send("/", timeout=httpx.Timeout(10.0, connect=5.0))
    err = info.value
    assert isinstance(err.proxyless_error, CertificateError)
    assert missing in str(err) and err.stage == "upstream"
    assert server.connections == [] and server.handshake_failures == []


def _unpack_context(proto: Any) -> Any:
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    context = tls_pb2.UpstreamTlsContext()
    proto.transport_socket.typed_config.Unpack(context)
    return context


def _publish_aggregate(service: Service, backends: list[Any], leaf: Any) -> None:
    """The route points at an aggregate cluster whose only child is the TLS
    cluster ``leaf`` (over ``backends``)."""
    service.cluster(CLUSTER, backends, leaf)
    service.cluster("agg", [], cluster("agg", aggregate=[CLUSTER]))
    service.routes_for("svc:8080", [route(prefix="/", cluster="agg")])


def test_an_aggregate_clusters_tls_child_is_reached_over_mtls(
    send: Send,
    service: Service,
    servers: Callable[..., TlsEcho],
    ca: DevCA,
    web: IssuedCertificate,
) -> None:
    """The leaf cluster's ``transport_socket`` decides, not the aggregate's."""
    server = servers("reviews", ca.issue(REVIEWS))
    _publish_aggregate(service, [server], tls_cluster(CLUSTER, web, ca.roots_pem, [REVIEWS]))
    response = send("/reviews/1")
    assert response.status_code == 200
    assert _body(response)["client"] == WEB


def test_an_aggregate_clusters_tls_child_never_gets_plaintext(
    send: Send, service: Service, ca: DevCA, web: IssuedCertificate
) -> None:
    plain = HttpEcho("plain").start()
    try:
        _publish_aggregate(service, [plain], tls_cluster(CLUSTER, web, ca.roots_pem, [REVIEWS]))
        err = _refused(send)
    finally:
        plain.stop()
    assert isinstance(err.proxyless_error, SecurityError)
    assert plain.requests == []
