"""A TLS cluster's credentials over time, through the httpx transports:
requests wait for credentials still on their way (bounded by their
timeout, without blocking the event loop) and fail naming what is missing;
a rotated certificate is used by new connections at once while requests
keep flowing (0 failures under load).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.e2e.httpx.conftest import Service, wait_until
from tests.e2e.httpx_tls.conftest import (
    CLUSTER,
    REVIEWS,
    URL,
    WEB,
    TlsEcho,
    cert_fingerprint,
    tls_cluster,
)

import proxyless.httpx
from proxyless.controlplane.ca import DevCA, IssuedCertificate
from proxyless.errors import CredentialsNotReady
from proxyless.mesh import Mesh
from proxyless.resources.model.security import TlsIdentity
from proxyless.security import load_identity
from proxyless.security.credentials import Material
from proxyless.testing.resources import route


class LateSecret:
    """An SDS identity source whose secret arrives when the test says."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._deliver: list[Callable[[Material], None]] = []

    def __call__(self, ref: TlsIdentity, deliver: Callable[[Material], None]) -> Callable[[], None]:
        self.asked.append(getattr(ref, "name", ""))
        self._deliver.append(deliver)
        return lambda: None

    def deliver(self, issued: IssuedCertificate) -> None:
        identity = load_identity(
            issued.chain_pem, issued.key_pem, source="SDS secret 'default'", now=time.time()
        )
        for fn in self._deliver:
            fn(identity)


def _publish(service: Service, backends: list[Any], proto: Any) -> None:
    service.cluster(CLUSTER, backends, proto)
    service.routes_for("svc:8080", [route(prefix="/", cluster=CLUSTER)])


@pytest.fixture
def late(mesh: Mesh) -> LateSecret:
    source = LateSecret()
    mesh.secrets.sds_identity = source
    return source


def _sync_get(mesh: Mesh, timeout: httpx.Timeout) -> httpx.Response:
    with httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh)) as client:
        return client.get(URL + "/", timeout=timeout)


def _async_get(mesh: Mesh, timeout: httpx.Timeout) -> tuple[httpx.Response | Exception, int]:
    """The response (or error) and how many times the event loop ran
    another task while the request was in progress."""

    async def main() -> tuple[httpx.Response | Exception, int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        transport = proxyless.httpx.AsyncTransport(mesh=mesh)
        async with httpx.AsyncClient(transport=transport) as client:
            try:
                result: httpx.Response | Exception = await client.get(URL + "/", timeout=timeout)
            except Exception as exc:
                result = exc
        seen = ticks
        done.set()
        await task
        return result, seen

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_credentials_never_delivered_fail_naming_the_secret(
    kind: str,
    mesh: Mesh,
    late: LateSecret,
    service: Service,
    servers: Callable[..., TlsEcho],
    ca: DevCA,
) -> None:
    server = servers("reviews", ca.issue(REVIEWS))
    _publish(
        service,
        [server],
        tls_cluster(CLUSTER, None, ca.roots_pem, [REVIEWS], sds_identity="default"),
    )
    timeout = httpx.Timeout(10.0, connect=0.3)
    if kind == "sync":
        with pytest.raises(proxyless.httpx.MeshConnectError) as info:
            _sync_get(mesh, timeout)
        err: Exception = info.value
    else:
        err, ticks = _async_get(mesh, timeout)
        assert ticks >= 3  # the loop kept running while the request waited
    assert isinstance(err, proxyless.httpx.MeshConnectError)
    assert err.stage == "upstream"
    assert isinstance(err.proxyless_error, CredentialsNotReady)
    assert f"cluster {CLUSTER!r}" in str(err) and "SDS secret 'default'" in str(err)
    assert late.asked == ["default"]
    assert server.connections == [] and server.handshake_failures == []  # never plaintext


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_requests_wait_for_credentials_on_their_way(
    kind: str,
    mesh: Mesh,
    late: LateSecret,
    service: Service,
    servers: Callable[..., TlsEcho],
    ca: DevCA,
    web: IssuedCertificate,
) -> None:
    server = servers("reviews", ca.issue(REVIEWS))
    _publish(
        service,
        [server],
        tls_cluster(CLUSTER, None, ca.roots_pem, [REVIEWS], sds_identity="default"),
    )
    # The secret arrives once the request is waiting for it.
    threading.Thread(
        target=lambda: (
            wait_until(lambda: bool(late.asked), what="the SDS subscription"),
            time.sleep(0.2),
            late.deliver(web),
        ),
        daemon=True,
    ).start()
    timeout = httpx.Timeout(10.0)
    if kind == "sync":
        response: Any = _sync_get(mesh, timeout)
    else:
        response, ticks = _async_get(mesh, timeout)
        assert ticks >= 3
    assert isinstance(response, httpx.Response) and response.status_code == 200
    assert response.json()["client"] == WEB


def _rotations(ca: DevCA, n: int) -> list[IssuedCertificate]:
    return [ca.issue(WEB) for _ in range(n)]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_rotation_under_load_fails_no_request(
    kind: str,
    mesh: Mesh,
    service: Service,
    servers: Callable[..., TlsEcho],
    ca: DevCA,
) -> None:
    """Two rotations while 4 workers send requests without pause: none
    fails, and each new certificate is presented by new connections."""
    server = servers("reviews", ca.issue(REVIEWS))
    certs = _rotations(ca, 3)
    _publish(service, [server], tls_cluster(CLUSTER, certs[0], ca.roots_pem, [REVIEWS]))
    stop = threading.Event()
    failures: list[BaseException] = []
    served: list[str] = []  # the client certificate the server saw, per request
    limit = 3000

    def record(response: httpx.Response) -> None:
        served.append(response.json()["client_cert"])

    def sync_load() -> None:
        with httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh), timeout=10.0) as c:
            while not stop.is_set() and len(served) < limit:
                try:
                    record(c.get(URL + "/load"))
                except Exception as exc:
                    failures.append(exc)

    async def async_load() -> None:
        transport = proxyless.httpx.AsyncTransport(mesh=mesh)
        async with httpx.AsyncClient(transport=transport, timeout=10.0) as c:

            async def worker() -> None:
                while not stop.is_set() and len(served) < limit:
                    try:
                        record(await c.get(URL + "/load"))
                    except Exception as exc:
                        failures.append(exc)

            await asyncio.gather(*(worker() for _ in range(4)))

    if kind == "sync":
        threads = [threading.Thread(target=sync_load, daemon=True) for _ in range(4)]
    else:
        threads = [threading.Thread(target=lambda: asyncio.run(async_load()), daemon=True)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(served) >= 50, what="requests before the first rotation")
        for cert in certs[1:]:
            fp = cert_fingerprint(cert)
            service.cluster(CLUSTER, [server], tls_cluster(CLUSTER, cert, ca.roots_pem, [REVIEWS]))
            wait_until(
                lambda fp=fp: fp in served[-20:],
                what="requests on the rotated certificate",
            )
            mark = len(served)
            wait_until(
                lambda mark=mark: len(served) >= mark + 50,
                what="requests after the rotation",
            )
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert failures == []
    fingerprints = [cert_fingerprint(c) for c in certs]
    assert set(server.connections) == set(fingerprints)  # each presented on new connections
    # Once a rotation is seen, requests never go back to older certificates.
    last = fingerprints.index(served[0])
    for fp in served:
        index = fingerprints.index(fp)
        assert index >= last or index == last - 1  # an in-flight request of the previous one
        last = max(last, index)
    assert served[-1] == fingerprints[-1]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_secret_rotated_by_its_source_is_used_by_the_next_connection(
    kind: str,
    mesh: Mesh,
    late: LateSecret,
    service: Service,
    servers: Callable[..., TlsEcho],
    ca: DevCA,
) -> None:
    """An SDS-style source delivers a renewed identity: the same transport's
    next request connects presenting it."""
    server = servers("reviews", ca.issue(REVIEWS))
    first, renewed = _rotations(ca, 2)
    late_cluster = tls_cluster(CLUSTER, None, ca.roots_pem, [REVIEWS], sds_identity="default")
    _publish(service, [server], late_cluster)
    threading.Thread(
        target=lambda: (
            wait_until(lambda: bool(late.asked), what="the SDS subscription"),
            late.deliver(first),
        ),
        daemon=True,
    ).start()

    def sync_run() -> list[str]:
        with httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh), timeout=10.0) as c:
            out = [c.get(URL + "/").json()["client_cert"]]
            late.deliver(renewed)
            out.append(c.get(URL + "/").json()["client_cert"])
            # the idle connection of the old certificate is closed at once
            wait_until(lambda: server.closed == out[:1], what="the old connection to close")
            return out

    async def async_run() -> list[str]:
        transport = proxyless.httpx.AsyncTransport(mesh=mesh)
        async with httpx.AsyncClient(transport=transport, timeout=10.0) as c:
            out = [(await c.get(URL + "/")).json()["client_cert"]]
            late.deliver(renewed)
            out.append((await c.get(URL + "/")).json()["client_cert"])
            for _ in range(1000):  # at most 10 s
                if server.closed:
                    break
                await asyncio.sleep(0.01)
            assert server.closed == out[:1]  # the old certificate's idle connection
            return out

    served = sync_run() if kind == "sync" else asyncio.run(async_run())
    assert served == [cert_fingerprint(first), cert_fingerprint(renewed)]
    assert server.connections == served  # one connection per certificate
