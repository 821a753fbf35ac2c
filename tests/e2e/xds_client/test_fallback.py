"""Fallback between two xDS servers (gRFC A71) through a proxyless gRPC channel.

Two embedded control planes serve the same config; the bootstrap lists the
primary first. Killing the primary under load fails no call (everything the
channel uses is cached, so the client keeps the cache and keeps retrying the
primary); a target first asked for while the primary is down is served by
the fallback; once the primary is back the client returns to it and closes
the fallback's stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from tests.e2e.conftest import close_endpoint_pools, wait_until

import proxyless.grpc
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply
from proxyless.testing.controlplane import free_port
from proxyless.testing.resources import (
    CLUSTER_URL,
    ENDPOINT_URL,
    LISTENER_URL,
    ROUTE_URL,
    cluster,
    endpoints,
    listener,
    route,
    route_config,
)

#: Bounds of the load loop: calls and seconds.
LOAD_CALLS = 4000
LOAD_SECONDS = 30.0


def publish(ads: AdsServer, backend: EchoServer, services: tuple[str, ...]) -> None:
    """The same config on ``ads``: each service routes to its own cluster on ``backend``."""
    listeners, routes, clusters, eds = {}, {}, {}, {}
    for svc in services:
        rc, cl = f"{svc}-routes", f"{svc}-cluster"
        listeners[svc] = listener(svc, rc)
        routes[rc] = route_config(rc, [svc], [route(prefix="/", cluster=cl)])
        clusters[cl] = cluster(cl)
        eds[cl] = endpoints(cl, [backend.address])
    ads.set_resources(ENDPOINT_URL, eds)
    ads.set_resources(CLUSTER_URL, clusters)
    ads.set_resources(ROUTE_URL, routes)
    ads.set_resources(LISTENER_URL, listeners)


def bootstrap(*servers: str, delta: bool = False) -> dict[str, Any]:
    features = ["xds_v3", "delta_xds"] if delta else ["xds_v3"]
    return {
        "xds_servers": [
            {"server_uri": s, "channel_creds": [{"type": "insecure"}], "server_features": features}
            for s in servers
        ],
        "node": {"id": "e2e-fallback"},
    }


def sources(mesh: Mesh) -> dict[str, str]:
    """Resource name -> the xDS server its cached value came from (CSDS)."""
    return {s.name: s.server for s in mesh.xds_client.dump() if s.cached}


@pytest.fixture
def backend() -> Iterator[EchoServer]:
    server = EchoServer("a").start()
    yield server
    server.stop(0)


@pytest.fixture
def mesh_of() -> Iterator[Callable[..., Mesh]]:
    made: list[Mesh] = []

    def make(*servers: str, delta: bool = False) -> Mesh:
        mesh = Mesh(bootstrap(*servers, delta=delta))
        made.append(mesh)
        return mesh

    yield make
    for mesh in made:
        mesh.close()
    close_endpoint_pools()


class Load:
    """Calls ``call`` in a loop on a thread until stopped (bounded in calls and time)."""

    def __init__(self, call: Callable[..., bytes]) -> None:
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._call = call
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        for _ in range(LOAD_CALLS):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                decode_reply(self._call(b"x", timeout=5))
                self.ok += 1
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code()}: {exc.details()}")
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_primary_lost_cache_serves_new_target_falls_back_then_primary_returns(
    backend: EchoServer, mesh_of: Callable[..., Mesh], delta: bool
) -> None:
    port = free_port()
    primary = AdsServer(port=port)
    primary.start()
    fallback = AdsServer()
    fallback.start()
    restarted: AdsServer | None = None
    try:
        for ads in (primary, fallback):
            publish(ads, backend, ("svc:80", "new:80"))
        mesh = mesh_of(primary.target, fallback.target, delta=delta)
        call = proxyless.grpc.channel("xds:///svc:80", mesh=mesh).unary_unary(ECHO_METHOD)
        decode_reply(call(b"x", timeout=10))
        assert set(sources(mesh).values()) == {primary.target}
        assert fallback.streams_opened == 0
        assert primary.requests[0].delta is delta

        load = Load(call)
        try:
            wait_until(lambda: load.ok >= 20, what="the load loop to start")
            primary.stop()
            # Everything in use is cached: no fallback, the cache keeps serving.
            wait_until(
                lambda: any(
                    s["server_uri"] == primary.target and s["last_error"]
                    for s in mesh.xds_client.server_states()
                ),
                what="the client to see the primary fail",
            )
            before = load.ok
            wait_until(lambda: load.ok >= before + 20, what="calls served from the cache")
            assert fallback.streams_opened == 0

            # A target never asked for before: its Listener is not cached -> fallback.
            new = proxyless.grpc.channel("xds:///new:80", mesh=mesh).unary_unary(ECHO_METHOD)
            decode_reply(new(b"x", timeout=10))
            assert sources(mesh)["new:80"] == fallback.target
            assert fallback.open_streams == 1
            # Everything the fallback sent replaced what the primary had sent.
            assert set(sources(mesh).values()) == {fallback.target}

            restarted = AdsServer(port=port)
            restarted.start()
            publish(restarted, backend, ("svc:80", "new:80"))
            # The client keeps retrying the primary (backoff 1 s, x1.6 per attempt).
            wait_until(
                lambda: set(sources(mesh).values()) == {restarted.target},  # type: ignore[union-attr]
                timeout=30,
                what="every resource to come from the primary again",
            )
            wait_until(lambda: fallback.open_streams == 0, what="the fallback stream to be closed")
            assert [s["server_uri"] for s in mesh.xds_client.server_states()] == [primary.target]
            decode_reply(new(b"x", timeout=10))
            before = load.ok
            wait_until(lambda: load.ok >= before + 20, what="calls after the switch back")
        finally:
            load.stop()
        assert load.failures == []
        assert load.ok > 60
    finally:
        for ads in (primary, fallback, restarted):
            if ads is not None:
                ads.stop()


def test_unreachable_primary_at_start_falls_back_at_once(
    backend: EchoServer, mesh_of: Callable[..., Mesh]
) -> None:
    fallback = AdsServer()
    fallback.start()
    try:
        publish(fallback, backend, ("svc:80",))
        dead = f"127.0.0.1:{free_port()}"
        mesh = mesh_of(dead, fallback.target)
        call = proxyless.grpc.channel("xds:///svc:80", mesh=mesh).unary_unary(ECHO_METHOD)
        decode_reply(call(b"x", timeout=10))
        assert set(sources(mesh).values()) == {fallback.target}
        states = {s["server_uri"]: s for s in mesh.xds_client.server_states()}
        assert states[dead]["last_error"] and states[fallback.target]["connected"]
    finally:
        fallback.stop()
