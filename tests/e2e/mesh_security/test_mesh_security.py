"""SPIFFE mTLS across a whole proxyless mesh, the embedded control plane its only config.

``web`` reaches ``reviews`` (``proxyless.grpc.server``, STRICT, ALLOW
``sa/web`` only) through sync and aio channels and gets its own SPIFFE ID
echoed; ``ratings`` is refused with PERMISSION_DENIED naming the policy; a
plaintext caller is refused; ``web``'s httpx transport reaches the HTTP
backend ``details`` over the ISTIO_MUTUAL cluster, identities checked both
ways. Then the control plane re-issues every SVID a few times while a sync
and an aio client call in a loop: no call fails, and after each rotation the
server sees the client's new certificate and presents its own new one.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from tests.e2e.mesh_security.conftest import (
    DETAILS,
    DETAILS_HOST,
    METHOD,
    RATINGS,
    REVIEWS,
    WEB,
    MeshUnderTest,
    fingerprint,
    wait_until,
)

import proxyless.grpc
import proxyless.grpc.aio
import proxyless.httpx
from proxyless.mesh import Mesh
from proxyless.security.peer import peer_certificate

pytestmark = pytest.mark.timeout(120)

#: Rotations under load, and the bounds of each load loop.
ROTATIONS = 5
MAX_CALLS = 20_000
MAX_SECONDS = 60.0


def _handshake(world: MeshUnderTest, tmp: Path) -> tuple[str | None, str]:
    """(SPIFFE ID, leaf fingerprint) the ``reviews`` server presents to a new connection."""
    issued = world.cp.ca.issue(WEB)
    chain, key = tmp / "probe.pem", tmp / "probe-key.pem"
    chain.write_bytes(issued.chain_pem)
    key.write_bytes(issued.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the SVID has only a URI SAN, read below
    ctx.load_verify_locations(cadata=world.cp.ca.roots_pem.decode())
    ctx.load_cert_chain(chain, key)
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", world.port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return peer_certificate(der).spiffe_id, fingerprint(der)


def test_identities_authorization_and_plaintext_refusal(world: MeshUnderTest) -> None:
    web = world.client("web")
    who = proxyless.grpc.channel(world.target, mesh=web).unary_unary(METHOD)
    assert who(b"sync", timeout=20, wait_for_ready=True) == WEB.encode()

    async def aio_call() -> bytes:
        async with proxyless.grpc.aio.channel(world.target, mesh=web) as channel:
            reply: bytes = await channel.unary_unary(METHOD)(b"aio", timeout=20)
            return reply

    assert asyncio.run(aio_call()) == WEB.encode()
    assert {(tag, caller) for tag, caller, _ in world.record.calls} == {
        ("sync", WEB),
        ("aio", WEB),
    }

    ratings = world.client("ratings")
    with pytest.raises(grpc.RpcError) as refused:
        proxyless.grpc.channel(world.target, mesh=ratings).unary_unary(METHOD)(
            b"ratings", timeout=20, wait_for_ready=True
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "policy[web-only]" in (refused.value.details() or ""), refused.value.details()

    with grpc.insecure_channel(f"127.0.0.1:{world.port}") as plaintext:
        with pytest.raises(grpc.RpcError) as closed:
            plaintext.unary_unary(METHOD)(b"plaintext", timeout=5)
    assert closed.value.code() == grpc.StatusCode.UNAVAILABLE
    # Neither refused caller reached the handler.
    assert {tag for tag, _, _ in world.record.calls} == {"sync", "aio"}
    assert world.cp.server.nacks() == []

    with httpx.Client(transport=proxyless.httpx.Transport(mesh=web), timeout=20) as client:
        reply = json.loads(client.get(world.http_url + "/details/1").content)
    assert reply["backend"] == "details" and reply["client"] == WEB
    assert reply["client_cert"] == world.client_leaf(web)
    # ... and the client pinned the backend's SPIFFE ID, from its ServiceEntry.
    cluster = web.clusters.get(f"outbound|{world.details.port}||{DETAILS_HOST}")
    assert cluster is not None and cluster.tls is not None
    assert [m.matcher.value for m in cluster.tls.current().matchers] == [DETAILS]


class _Load:
    """A bounded call loop (sync thread or aio task) recording failures."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.calls = 0
        self.failures: list[str] = []
        self.stop = threading.Event()


def _sync_loop(world: MeshUnderTest, load: _Load, channel: grpc.Channel) -> None:
    who = channel.unary_unary(METHOD)
    deadline = time.monotonic() + MAX_SECONDS
    while not load.stop.is_set() and load.calls < MAX_CALLS and time.monotonic() < deadline:
        try:
            assert who(load.tag.encode(), timeout=10) == WEB.encode()
        except grpc.RpcError as exc:
            load.failures.append(f"{exc.code().name}: {exc.details()}")
        load.calls += 1


async def _aio_loop(world: MeshUnderTest, load: _Load, web: Mesh) -> None:
    deadline = time.monotonic() + MAX_SECONDS
    async with proxyless.grpc.aio.channel(world.target, mesh=web) as channel:
        who = channel.unary_unary(METHOD)
        await who(load.tag.encode(), timeout=20, wait_for_ready=True)
        while not load.stop.is_set() and load.calls < MAX_CALLS and time.monotonic() < deadline:
            replies = await asyncio.gather(
                *(who(load.tag.encode(), timeout=10) for _ in range(4)), return_exceptions=True
            )
            for reply in replies:
                if isinstance(reply, grpc.RpcError):
                    load.failures.append(f"{reply.code().name}: {reply.details()}")
                elif reply != WEB.encode():
                    load.failures.append(repr(reply))
            load.calls += len(replies)


def test_rotation_under_load_fails_no_call(world: MeshUnderTest, tmp_path: Path) -> None:
    sync_mesh, aio_mesh = world.client("web"), world.client("web")
    channel = proxyless.grpc.channel(world.target, mesh=sync_mesh)
    assert channel.unary_unary(METHOD)(b"warm", timeout=20, wait_for_ready=True) == WEB.encode()
    loads = [_Load("sync"), _Load("aio")]
    threads = [
        threading.Thread(target=_sync_loop, args=(world, loads[0], channel)),
        threading.Thread(target=lambda: asyncio.run(_aio_loop(world, loads[1], aio_mesh))),
    ]
    for thread in threads:
        thread.start()
    server_certs = {_handshake(world, tmp_path)[1]}
    try:
        wait_until(lambda: all(load.calls > 20 for load in loads), what="calls before rotating")
        for _ in range(ROTATIONS):
            before = [load.calls for load in loads]
            assert world.rotate() >= 3  # the server's, and each client's
            for tag, mesh in (("sync", sync_mesh), ("aio", aio_mesh)):
                new = world.client_leaf(mesh)
                wait_until(
                    lambda tag=tag, new=new: world.record.seen(tag, new),
                    what=f"a {tag} call presenting the renewed client certificate",
                )
            presented = world.server_leaf()
            wait_until(
                lambda presented=presented: _handshake(world, tmp_path) == (REVIEWS, presented),
                what="the server to present its renewed SVID",
            )
            server_certs.add(presented)
            wait_until(
                lambda before=before: all(
                    load.calls > b + 50 for load, b in zip(loads, before, strict=True)
                ),
                what="calls after the rotation",
            )
    finally:
        for load in loads:
            load.stop.set()
        for thread in threads:
            thread.join(20)
    total = sum(load.calls for load in loads)
    print(
        f"rotations={ROTATIONS} calls={total} "
        + " ".join(f"{load.tag}={load.calls}" for load in loads)
        + f" failures={sum(len(load.failures) for load in loads)}"
    )
    assert [load.failures for load in loads] == [[], []]
    assert len(server_certs) == ROTATIONS + 1
    # Every caller was web, over mTLS; each rotation brought new client certificates.
    assert {caller for _, caller, _ in world.record.calls} == {WEB}
    # (over SDS each node has its own SVID; the two Meshes share web's files)
    assert len(world.record.certs()) == (ROTATIONS + 1) * (1 if world.relay else 2)
    assert RATINGS not in {caller for _, caller, _ in world.record.calls}
    assert world.cp.server.nacks() == []
