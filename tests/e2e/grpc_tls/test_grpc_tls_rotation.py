"""Rotation of a TLS cluster's client certificate (a CDS push changing the
inline certificate) under continuous load, sync and grpc.aio: no call
fails, and connections made after the push present the new certificate.
And configurations that cannot be honoured never yield a plaintext
connection (asserted on the server side)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

import grpc
import pytest
from tests.e2e.conftest import PUSH_WAIT, wait_until
from tests.e2e.grpc_tls.conftest import (
    CLIENT,
    CLUSTER,
    METHOD,
    REVIEWS,
    TARGET,
    TlsServer,
    Xds,
    tls_context,
)

import proxyless.grpc
import proxyless.grpc.aio
from proxyless.controlplane.ca import DevCA
from proxyless.grpc._pool import AIO_POOL, POOL
from proxyless.mesh import Mesh

#: Calls made after the new certificate was first seen, per load loop.
AFTER = 50


def _sync_load(mesh: Mesh, stop: threading.Event, failures: list[BaseException]) -> int:
    call = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(METHOD)
    n = 0
    deadline = time.monotonic() + 4 * PUSH_WAIT
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            call(b"x", timeout=5.0)
        except grpc.RpcError as exc:
            failures.append(exc)
        n += 1
    return n


async def _aio_load(mesh: Mesh, stop: threading.Event, failures: list[BaseException]) -> int:
    n = 0
    deadline = time.monotonic() + 4 * PUSH_WAIT
    async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
        call = ch.unary_unary(METHOD)
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                await asyncio.gather(*(call(b"x", timeout=5.0) for _ in range(4)))
            except grpc.RpcError as exc:
                failures.append(exc)
            n += 4
    return n


@pytest.mark.parametrize("kind", [pytest.param("sync", id="sync"), pytest.param("aio", id="aio")])
def test_rotation_under_load_fails_no_call(
    kind: str,
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    server = servers("reviews", ca.issue(REVIEWS), ca.roots_pem)
    old, new = ca.issue(CLIENT), ca.issue(CLIENT)
    xds.publish([server.address], tls_context(old, ca.roots_pem))
    mesh = make_mesh()
    proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(METHOD)(b"x", timeout=PUSH_WAIT)
    assert server.certs[-1] == old.chain_pem.split(b"-----END CERTIFICATE-----")[0] + (
        b"-----END CERTIFICATE-----\n"
    )

    stop = threading.Event()
    failures: list[BaseException] = []
    counts: list[int] = []

    def load() -> None:
        if kind == "sync":
            counts.append(_sync_load(mesh, stop, failures))
        else:
            counts.append(asyncio.run(_aio_load(mesh, stop, failures)))

    loops = [threading.Thread(target=load) for _ in range(2)]
    for t in loops:
        t.start()
    try:
        wait_until(lambda: server.calls > 20, what="calls before the push")
        xds.publish([server.address], tls_context(new, ca.roots_pem))
        new_leaf = new.chain_pem.split(b"-----END CERTIFICATE-----")[0]
        wait_until(
            lambda: any(c.startswith(new_leaf) for c in server.certs[-200:]),
            what="a connection presenting the new certificate",
        )
        seen = server.calls
        wait_until(lambda: server.calls > seen + AFTER, what="calls after the rotation")
    finally:
        stop.set()
        for t in loops:
            t.join(PUSH_WAIT)
    assert failures == []
    # Once rotated, calls run on connections with the new certificate only.
    assert all(c.startswith(new_leaf) for c in server.certs[-AFTER:])
    assert server.insecure_calls == 0
    # The endpoint channels made with the old certificate were retired and closed.
    pool = AIO_POOL if kind == "aio" else POOL

    def old_gone() -> bool:
        return all(
            e.tls is None or e.tls.identity is None or e.tls.identity.chain_pem != old.chain_pem
            for e in list(pool._entries.values())
        )

    wait_until(old_gone, what="the old certificate's channels to close")


def _no_trust(ca: DevCA) -> object:
    ctx = tls_context(ca.issue(CLIENT), ca.roots_pem)
    ctx.common_tls_context.ClearField("validation_context")
    return ctx


def _bad_certificate(ca: DevCA) -> object:
    ctx = tls_context(ca.issue(CLIENT), ca.roots_pem)
    ctx.common_tls_context.tls_certificates[0].certificate_chain.inline_bytes = b"not a PEM"
    return ctx


def _unservable_sds(ca: DevCA) -> object:
    return tls_context(None, ca.roots_pem, sds_identity="default")


def _untrusted_everything(ca: DevCA) -> object:
    return tls_context(ca.issue(CLIENT), DevCA("elsewhere").roots_pem)


@pytest.mark.parametrize(
    "make_context",
    [
        pytest.param(_no_trust, id="no-trust"),
        pytest.param(_bad_certificate, id="bad-certificate"),
        pytest.param(_unservable_sds, id="sds-without-source"),
        pytest.param(_untrusted_everything, id="wrong-trust-bundle"),
    ],
)
def test_a_pathological_tls_config_never_sends_plaintext(
    make_context: Callable[[DevCA], object],
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    plain = servers("plain", None)
    xds.publish([plain.address], make_context(ca))  # type: ignore[arg-type]
    mesh = make_mesh()
    call = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(METHOD)
    for _ in range(5):
        with pytest.raises(grpc.RpcError) as info:
            call(b"x", timeout=1.0)
        assert info.value.code() in (  # type: ignore[attr-defined]
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
    rt = mesh.clusters.get(CLUSTER)
    assert rt is None or rt.tls is not None  # a TLS cluster, or none at all (NACKed)
    assert plain.calls == 0


def test_an_aggregate_clusters_tls_child_is_reached_over_mtls_only(
    ca: DevCA,
    servers: Callable[..., TlsServer],
    xds: Xds,
    make_mesh: Callable[..., Mesh],
) -> None:
    """The leaf cluster's ``transport_socket`` decides, not the aggregate's."""
    plain = servers("plain", None)
    xds.publish([plain.address], tls_context(ca.issue(CLIENT), ca.roots_pem), aggregate=True)
    mesh = make_mesh()
    call = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(METHOD)
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            call(b"x", timeout=2.0)
    assert plain.calls == 0
    server = servers("reviews", ca.issue(REVIEWS), ca.roots_pem)
    xds.publish([server.address], tls_context(ca.issue(CLIENT), ca.roots_pem), aggregate=True)
    deadline = time.monotonic() + PUSH_WAIT
    while server.calls == 0 and time.monotonic() < deadline:
        with contextlib.suppress(grpc.RpcError):
            call(b"x", timeout=2.0)
    assert server.calls > 0 and server.insecure_calls == 0
    assert plain.calls == 0
