"""gRPC channels (sync and grpc.aio) to a TLS cluster pinning the reviews
SPIFFE ID: verified mTLS to the right server; refused, with an error naming
the cluster, endpoint and identities, by an impostor from the same CA, a
server from another CA and a plaintext server; never a plaintext byte."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from tests.e2e.conftest import wait_until
from tests.e2e.grpc_tls.conftest import (
    CLIENT,
    CLUSTER,
    METHOD,
    RATINGS,
    REVIEWS,
    TARGET,
    TlsServer,
    Xds,
    reply,
    tls_context,
)

import proxyless.grpc
import proxyless.grpc.aio
from proxyless.controlplane.ca import DevCA
from proxyless.mesh import Mesh


def _ready(mesh: Mesh) -> None:
    mesh.target(TARGET)  # subscribe, as a channel does

    def has_tls() -> bool:
        rt = mesh.clusters.get(CLUSTER)
        return rt is not None and rt.tls is not None and bool(rt.endpoints())

    wait_until(has_tls, what="the TLS cluster")


def _sync_call(mesh: Mesh) -> Callable[..., bytes]:
    ch = proxyless.grpc.channel(TARGET, mesh=mesh)
    fn: Callable[..., bytes] = ch.unary_unary(METHOD)
    return fn


def _aio_call(mesh: Mesh, timeout: float = 5.0) -> bytes:
    async def go() -> bytes:
        async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
            out: bytes = await ch.unary_unary(METHOD)(b"x", timeout=timeout)
            return out

    return asyncio.run(go())


def _call(kind: str, mesh: Mesh, timeout: float = 5.0) -> bytes:
    if kind == "sync":
        return _sync_call(mesh)(b"x", timeout=timeout)
    return _aio_call(mesh, timeout)


KINDS = [pytest.param("sync", id="sync"), pytest.param("aio", id="aio")]


@pytest.mark.parametrize("kind", KINDS)
def test_reaches_the_pinned_identity_over_mtls(
    kind: str,
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    server = servers("reviews", ca.issue(REVIEWS), ca.roots_pem)
    xds.publish([server.address], tls_context(ca.issue(CLIENT), ca.roots_pem))
    mesh = make_mesh()
    _ready(mesh)
    for _ in range(3):
        got = reply(_call(kind, mesh))
        assert got == {"server": "reviews", "peer": [CLIENT]}
    assert server.insecure_calls == 0


def _refused(kind: str, mesh: Mesh) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _call(kind, mesh, timeout=3.0)
    err = info.value
    assert err.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    return err


@pytest.mark.parametrize("kind", KINDS)
def test_an_impostor_from_the_same_ca_is_refused(
    kind: str,
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    impostor = servers("ratings", ca.issue(RATINGS), ca.roots_pem)
    xds.publish([impostor.address], tls_context(ca.issue(CLIENT), ca.roots_pem))
    mesh = make_mesh()
    _ready(mesh)
    details = _refused(kind, mesh).details()  # type: ignore[attr-defined]
    assert CLUSTER in details and impostor.address in details
    assert REVIEWS in details and RATINGS in details
    assert impostor.calls == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_server_from_another_ca_is_refused(
    kind: str,
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    other = DevCA("cluster.local")
    stranger = servers("stranger", other.issue(REVIEWS), ca.roots_pem)
    xds.publish([stranger.address], tls_context(ca.issue(CLIENT), ca.roots_pem))
    mesh = make_mesh()
    _ready(mesh)
    details = _refused(kind, mesh).details()  # type: ignore[attr-defined]
    assert CLUSTER in details and stranger.address in details
    assert "does not verify against the cluster's trust bundle" in details
    assert stranger.calls == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_plaintext_server_is_refused_and_gets_no_plaintext(
    kind: str,
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    plain = servers("plain", None)
    xds.publish([plain.address], tls_context(ca.issue(CLIENT), ca.roots_pem))
    mesh = make_mesh()
    _ready(mesh)
    details = _refused(kind, mesh).details()  # type: ignore[attr-defined]
    assert CLUSTER in details and plain.address in details
    assert "TLS" in details
    assert plain.calls == 0


def test_channel_credentials_do_not_replace_the_clusters_tls(
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    """xDS security wins over the channel's ``credentials=`` (which would
    trust any server of the CA): the impostor is still refused."""
    impostor = servers("ratings", ca.issue(RATINGS), ca.roots_pem)
    xds.publish([impostor.address], tls_context(ca.issue(CLIENT), ca.roots_pem))
    mesh = make_mesh()
    _ready(mesh)
    creds = grpc.ssl_channel_credentials(root_certificates=ca.roots_pem)
    ch = proxyless.grpc.channel(TARGET, mesh=mesh, credentials=creds)
    with pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(METHOD)(b"x", timeout=3.0)
    assert RATINGS in info.value.details()  # type: ignore[attr-defined]
    assert impostor.calls == 0


def _sds_never(mesh: Mesh) -> list[Callable[[Any], None]]:
    """Make the Mesh's SDS identity source one the test feeds by hand."""
    waiting: list[Callable[[Any], None]] = []

    def handler(ref: Any, deliver: Callable[[Any], None]) -> Callable[[], None]:
        waiting.append(deliver)
        return lambda: None

    mesh.secrets.sds_identity = handler
    return waiting


@pytest.mark.parametrize("kind", KINDS)
def test_credentials_not_ready_wait_then_name_what_is_missing(
    kind: str,
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    server = servers("reviews", ca.issue(REVIEWS), ca.roots_pem)
    mesh = make_mesh()
    _sds_never(mesh)
    xds.publish([server.address], tls_context(None, ca.roots_pem, sds_identity="default"))
    _ready(mesh)
    with pytest.raises(grpc.RpcError) as info:
        _call(kind, mesh, timeout=0.3)
    err = info.value
    assert err.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    details = err.details()  # type: ignore[attr-defined]
    assert CLUSTER in details and "SDS secret 'default'" in details
    assert server.calls == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_call_waits_for_credentials_that_arrive(
    kind: str,
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    import threading
    import time

    from proxyless.security.material import load_identity

    server = servers("reviews", ca.issue(REVIEWS), ca.roots_pem)
    mesh = make_mesh()
    waiting = _sds_never(mesh)
    xds.publish([server.address], tls_context(None, ca.roots_pem, sds_identity="default"))
    _ready(mesh)
    wait_until(lambda: bool(waiting), what="the SDS subscription")
    svid = ca.issue(CLIENT)

    def deliver() -> None:
        waiting[-1](
            load_identity(
                svid.chain_pem, svid.key_pem, source="SDS secret 'default'", now=time.time()
            )
        )

    timer = threading.Timer(0.3, deliver)
    timer.start()
    try:
        got = reply(_call(kind, mesh, timeout=10.0))
    finally:
        timer.cancel()
    assert got["peer"] == [CLIENT]


@pytest.mark.parametrize(
    "shape", [pytest.param("future", id="unary-future"), pytest.param("stream", id="server-stream")]
)
def test_sync_future_and_stream_calls_say_why_the_server_was_refused(
    shape: str,
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    impostor = servers("ratings", ca.issue(RATINGS), ca.roots_pem)
    xds.publish([impostor.address], tls_context(ca.issue(CLIENT), ca.roots_pem))
    mesh = make_mesh()
    _ready(mesh)
    ch = proxyless.grpc.channel(TARGET, mesh=mesh)
    with pytest.raises(grpc.RpcError) as info:
        if shape == "future":
            ch.unary_unary(METHOD).future(b"x", timeout=3.0).result()
        else:
            list(ch.unary_stream(METHOD)(b"x", timeout=3.0))
    err = info.value
    assert err.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert RATINGS in err.details() and REVIEWS in err.details()  # type: ignore[attr-defined]
    assert impostor.calls == 0


def test_an_aio_call_waits_for_credentials_without_blocking_its_loop(
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    server = servers("reviews", ca.issue(REVIEWS), ca.roots_pem)
    mesh = make_mesh()
    _sds_never(mesh)
    xds.publish([server.address], tls_context(None, ca.roots_pem, sds_identity="default"))
    _ready(mesh)

    async def go() -> tuple[int, grpc.RpcError]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.ensure_future(ticker())
        async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
            try:
                await ch.unary_unary(METHOD)(b"x", timeout=0.5)
            except grpc.RpcError as exc:
                err = exc
            else:
                raise AssertionError("the call did not wait for its credentials")
        done.set()
        await task
        return ticks, err

    ticks, err = asyncio.run(go())
    assert ticks >= 3  # the loop kept running while the call waited (blocked: 1)
    assert "SDS secret 'default'" in err.details()  # type: ignore[attr-defined]


def test_an_aio_server_stream_says_why_the_server_was_refused(
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    impostor = servers("ratings", ca.issue(RATINGS), ca.roots_pem)
    xds.publish([impostor.address], tls_context(ca.issue(CLIENT), ca.roots_pem))
    mesh = make_mesh()
    _ready(mesh)

    async def go() -> None:
        async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
            async for _ in ch.unary_stream(METHOD)(b"x", timeout=3.0):
                pass

    with pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(go())
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert RATINGS in (info.value.details() or "")
    assert impostor.calls == 0
