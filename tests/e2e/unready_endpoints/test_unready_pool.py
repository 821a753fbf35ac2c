"""The endpoint channel pool reports each connection's state to the cluster
endpoints it serves: READY once connected, not ready while the server is
gone, READY again when it is back, unknown once the channel is closed.

A pool of its own with a fast reconnect backoff, a real gRPC server on a
fixed loopback port that is stopped and started again; every wait is
bounded (:func:`wait_until`).
"""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import wait_until

from proxyless.grpc._pool import ChannelPool
from proxyless.lb.state import EndpointState
from proxyless.resources.model import Endpoint, Locality
from proxyless.testing.backends import ECHO_METHOD, EchoServer

FAST_BACKOFF = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 200),
)


def endpoint_of(server: EchoServer) -> EndpointState:
    host, port = server.address.rsplit(":", 1)
    return EndpointState(Endpoint(host, int(port)), Locality(), 0)


def test_sync_channel_reports_connectivity_until_closed() -> None:
    server = EchoServer("a").start()
    port = server.port
    pool = ChannelPool(FAST_BACKOFF)
    es = endpoint_of(server)
    other = endpoint_of(server)  # the same address in another cluster
    try:
        pooled = pool.get(server.address)
        pooled.watch(es)
        pooled.watch(other)
        wait_until(lambda: es.connectivity == "READY", what="READY")
        assert es.ready and other.connectivity == "READY"
        server.stop(0)
        # A lost connection goes IDLE (pickable: a call reconnects); a call
        # that finds the port closed leaves it in TRANSIENT_FAILURE.
        wait_until(lambda: es.connectivity != "READY", what="the connection lost")
        call = pooled.callable("unary_unary", ECHO_METHOD, None, None)
        try:
            call(b"x", timeout=1)
        except Exception:
            pass
        wait_until(lambda: not es.ready, what="not ready")
        server = EchoServer("a", port=port).start()
        wait_until(lambda: es.connectivity == "READY", what="READY again")
        assert other.ready
    finally:
        pool.close_all()
        server.stop(0)
    assert (es.connectivity, es.ready, es.watcher) == (None, True, None)


def test_aio_channel_reports_connectivity_until_closed() -> None:
    server = EchoServer("a").start()
    pool = ChannelPool(FAST_BACKOFF)
    es = endpoint_of(server)

    async def main() -> list[str | None]:
        seen: list[str | None] = []
        pooled = pool.get(server.address, loop=asyncio.get_running_loop())
        pooled.watch(es)
        for _ in range(500):  # at most 5 s
            if es.connectivity == "READY":
                break
            await asyncio.sleep(0.01)
        seen.append(es.connectivity)
        pool.close_all()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if es.connectivity is None:
                break
        seen.append(es.connectivity)
        return seen

    try:
        assert asyncio.run(main()) == ["READY", None]
    finally:
        server.stop(0)
    assert es.ready
