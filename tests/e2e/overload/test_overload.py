"""Bounded under overload (reliability issue, item 1).

A slow backend behind a cluster with a small ``max_requests`` (or, for
httpx, ``max_pending_requests``): the calls beyond the limit fail at once
with the breaker's error (``[UO]``), the backend never sees more than the
limit at a time, and the process's memory grows by a bounded amount.
Oversized inputs (a 1 MiB header, 10,000 metadata entries, a 100 MiB body
with retries configured) end cleanly, without buffering for retries.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import wrappers_pb2
from tests.e2e.conftest import bootstrap_for, close_endpoint_pools
from tests.e2e.httpx.conftest import HttpEcho, retry_policy

import proxyless.grpc
import proxyless.grpc.aio
import proxyless.httpx
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer
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

pytestmark = pytest.mark.timeout(120)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.fixture
def mesh(ads: AdsServer) -> Iterator[Mesh]:
    m = Mesh(bootstrap_for(ads, "e2e-overload"))
    yield m
    m.close()
    close_endpoint_pools()


def _publish(ads: AdsServer, name: str, addresses: list[str], *, max_requests: int = 1024,
             max_pending: int | None = None, **route_kw: Any) -> None:  # fmt: skip
    cl = f"{name}-c"
    c = cluster(cl, max_requests=max_requests)
    if max_pending is not None:
        c.circuit_breakers.thresholds[0].max_pending_requests.CopyFrom(
            wrappers_pb2.UInt32Value(value=max_pending)
        )
    ads.set_resource(ENDPOINT_URL, cl, endpoints(cl, addresses))
    ads.set_resource(CLUSTER_URL, cl, c)
    host = name.split(":")[0]
    ads.set_resource(
        ROUTE_URL,
        f"{name}-r",
        route_config(
            f"{name}-r", sorted({name, host}), [route(prefix="/", cluster=cl, **route_kw)]
        ),
    )
    ads.set_resource(LISTENER_URL, name, listener(name, f"{name}-r"))


def _fail_fast_and_bounded(results: list[tuple[str, float]], backend: EchoServer) -> dict[str, int]:
    """Every call succeeded or was refused with the breaker's error, and the
    refused ones never reached the backend (refused, not queued)."""
    counts: dict[str, int] = {}
    for kind, _took in results:
        counts[kind] = counts.get(kind, 0) + 1
    assert set(counts) <= {"ok", "UO"}, counts
    assert backend.calls == counts.get("ok", 0) + 1  # + the warm-up call
    return counts


def test_a_thousand_threads_on_a_sync_channel(
    ads: AdsServer, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> None:
    (slow,) = backends("slow", max_workers=64)
    slow.delay = 0.3
    _publish(ads, "slow:80", [slow.address], max_requests=20)
    echo = proxyless.grpc.channel("xds:///slow:80", mesh=mesh).unary_unary(ECHO_METHOD)
    echo(b"warm", timeout=10)
    results: list[tuple[str, float]] = []
    lock = threading.Lock()
    start = threading.Barrier(1000, timeout=30)

    def one() -> None:
        start.wait()
        t0 = time.monotonic()
        try:
            echo(b"x", timeout=20)
            kind = "ok"
        except grpc.RpcError as exc:
            kind = "UO" if exc.details().endswith("[UO]") else f"other: {exc.details()}"
        with lock:
            results.append((kind, time.monotonic() - t0))

    before = _rss_mb()
    threads = [threading.Thread(target=one, daemon=True) for _ in range(1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    grown = _rss_mb() - before
    counts = _fail_fast_and_bounded(results, slow)
    assert len(results) == 1000 and counts["UO"] >= 900
    assert slow.max_in_flight <= 20
    assert grown < 200, f"RSS grew {grown:.0f} MiB"


def test_ten_thousand_concurrent_aio_calls(
    ads: AdsServer, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> None:
    (slow,) = backends("slow", max_workers=64)
    slow.delay = 0.3
    _publish(ads, "slow:80", [slow.address], max_requests=50)

    async def scenario() -> list[tuple[str, float]]:
        async with proxyless.grpc.aio.channel("xds:///slow:80", mesh=mesh) as ch:
            echo = ch.unary_unary(ECHO_METHOD)
            await echo(b"warm", timeout=10)

            async def one() -> tuple[str, float]:
                t0 = time.monotonic()
                try:
                    await echo(b"x", timeout=30)
                    return "ok", 0.0
                except grpc.aio.AioRpcError as exc:
                    took = time.monotonic() - t0
                    return ("UO" if (exc.details() or "").endswith("[UO]") else "other"), took

            return await asyncio.gather(*(one() for _ in range(10_000)))

    before = _rss_mb()
    results = asyncio.run(scenario())
    grown = _rss_mb() - before
    counts = _fail_fast_and_bounded(results, slow)
    assert counts["UO"] >= 9_000
    assert slow.max_in_flight <= 50
    assert grown < 300, f"RSS grew {grown:.0f} MiB"


def test_httpx_requests_beyond_the_connections_queue_up_to_max_pending(
    ads: AdsServer, mesh: Mesh
) -> None:
    """Two connections per endpoint, three pending requests allowed: of 20
    concurrent requests to a backend that holds them, 2 are sent, 3 wait,
    15 fail at once naming max_pending_requests."""
    web = HttpEcho("web").start()
    web.hold()
    _publish(ads, "web", [web.address], max_requests=100, max_pending=3)
    transport = proxyless.httpx.Transport(
        mesh=mesh, hosts=["web"], limits=httpx.Limits(max_connections=2)
    )
    client = httpx.Client(transport=transport, timeout=20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            client.get("http://web/")
            kind = "ok"
        except httpx.TransportError as exc:
            kind = "UO" if "max_pending_requests" in str(exc) and "[UO]" in str(exc) else str(exc)
        with lock:
            outcomes.append(kind)

    try:
        threads = [threading.Thread(target=one, daemon=True) for _ in range(20)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(outcomes) < 15 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert outcomes.count("UO") == 15, outcomes
        assert web.held == 2  # only the two connections reached the backend
        web.release()
        for t in threads:
            t.join(20)
        # (a str message: pytest would cut a list short, and the odd one out
        # is what matters)
        odd = [o for o in outcomes if o not in ("ok", "UO")]
        assert outcomes.count("ok") == 5 and len(outcomes) == 20, f"{len(outcomes)} ended: {odd}"
        breaker = mesh.clusters.get("web-c").breakers  # type: ignore[union-attr]
        assert breaker.default.pending_requests == 0
    finally:
        web.release()
        client.close()
        web.stop()


class _Gates:
    """An HTTP/1.1 server on 127.0.0.1 that holds each request until the
    gate named by its path's first segment opens (at most 30 s: longer than
    the test waits for anything)."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {"a": threading.Event(), "b": threading.Event()}
        self.held: dict[str, int] = {"a": 0, "b": 0}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                gate = self.path.strip("/").split("/")[0]
                owner.held[gate] += 1
                owner.gates[gate].wait(30)
                owner.held[gate] -= 1
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        for gate in self.gates.values():
            gate.set()
        self._server.shutdown()
        self._server.server_close()


def test_httpx_a_pending_request_gives_its_slot_back_once_it_has_a_connection(
    ads: AdsServer, mesh: Mesh
) -> None:
    """Envoy's pool: ``max_pending_requests`` counts the requests waiting for
    a connection, not those being served. Two connections, three pending
    allowed: once the first two are answered, two of the waiting three are
    being served and one still waits, so two more may wait."""
    web = _Gates()
    _publish(ads, "web", [web.address], max_requests=100, max_pending=3)
    transport = proxyless.httpx.Transport(
        mesh=mesh, hosts=["web"], limits=httpx.Limits(max_connections=2)
    )
    client = httpx.Client(transport=transport, timeout=20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one(path: str) -> None:
        try:
            kind = client.get(f"http://web{path}").text
        except httpx.TransportError as exc:
            kind = "UO" if "max_pending_requests" in str(exc) else str(exc)
        with lock:
            outcomes.append(kind)

    def start(path: str, n: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=one, args=(path,), daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        return threads

    try:
        threads = start("/a", 2)
        _wait(lambda: web.held["a"] == 2, "the first two served")
        breaker = mesh.clusters.get("web-c").breakers.default  # type: ignore[union-attr]
        threads += start("/b", 3)
        _wait(lambda: breaker.pending_requests == 3, "three waiting")
        web.gates["a"].set()
        _wait(lambda: web.held["b"] == 2, "two of the waiting three served")
        _wait(lambda: breaker.pending_requests == 1, "one still waiting")
        threads += start("/b", 2)  # room for two more
        _wait(lambda: breaker.pending_requests == 3, "three waiting again")
        assert outcomes == ["ok", "ok"]
        web.gates["b"].set()
        for t in threads:
            t.join(20)
        assert outcomes == ["ok"] * 7, outcomes
        assert breaker.pending_requests == 0
    finally:
        client.close()
        web.stop()


def _wait(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_httpx_beyond_max_requests_fails_fast(ads: AdsServer, mesh: Mesh) -> None:
    web = HttpEcho("web").start()
    web.hold()
    _publish(ads, "web", [web.address], max_requests=10)
    client = httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh, hosts=["web"]), timeout=20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            client.get("http://web/")
            kind = "ok"
        except httpx.TransportError as exc:
            kind = "UO" if "max_requests" in str(exc) else str(exc)
        with lock:
            outcomes.append(kind)

    try:
        threads = [threading.Thread(target=one, daemon=True) for _ in range(200)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(outcomes) < 190 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert outcomes.count("UO") == 190 and web.held <= 10
        web.release()
        for t in threads:
            t.join(20)
        assert outcomes.count("ok") == 10
    finally:
        web.release()
        client.close()
        web.stop()


# -- oversized inputs -----------------------------------------------------------------------


def test_a_one_mib_header_and_ten_thousand_metadata_entries_end_cleanly(
    ads: AdsServer, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> None:
    (b,) = backends("b")
    _publish(ads, "svc:80", [b.address])
    echo = proxyless.grpc.channel("xds:///svc:80", mesh=mesh).unary_unary(ECHO_METHOD)
    echo(b"warm", timeout=10)
    for metadata in (
        [("big", "x" * (1 << 20))],
        [(f"k{i}", "v") for i in range(10_000)],
    ):
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            echo(b"x", timeout=10, metadata=metadata)
        assert info.value.code() in (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNAVAILABLE,
        )
        assert time.monotonic() - t0 < 10
    assert echo(b"after", timeout=10)  # the channel keeps working


def _sink_503() -> tuple[socket.socket, list[int], threading.Thread]:
    """An HTTP/1.1 server that reads each request's body, counting bytes,
    and answers 503 (so a retry policy would want to retry)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    seen: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                got = len(rest)
                while got < length:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        break
                    got += len(chunk)
                seen.append(got)
                conn.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, seen, t


def test_a_100_mib_body_is_sent_once_and_not_kept_for_retries(ads: AdsServer, mesh: Mesh) -> None:
    srv, seen, thread = _sink_503()
    port = srv.getsockname()[1]
    _publish(ads, "sink", [f"127.0.0.1:{port}"], retry_policy=retry_policy("5xx", num_retries=3))
    client = httpx.Client(
        transport=proxyless.httpx.Transport(mesh=mesh, hosts=["sink"]), timeout=60
    )
    body = b"x" * (100 << 20)
    try:
        before = _rss_mb()
        response = client.post("http://sink/upload", content=body)
        grown = _rss_mb() - before
        # past retry_buffer_limit (1 MiB) the body is not kept: one attempt,
        # the backend's own answer, no second copy of the body
        assert response.status_code == 503
        assert seen == [100 << 20]
        assert grown < 150, f"RSS grew {grown:.0f} MiB for a 100 MiB body"
    finally:
        client.close()
        srv.close()
        thread.join(5)


@pytest.mark.parametrize(
    "headers",
    [{"x-big": "x" * (1 << 20)}, {f"x-h{i}": "v" for i in range(10_000)}],
    ids=["one-mib-header", "ten-thousand-headers"],
)
def test_httpx_oversized_request_headers_are_answered_431_locally(
    ads: AdsServer, mesh: Mesh, headers: dict[str, str]
) -> None:
    """Envoy answers headers past its limits (60 KiB, 100 headers) with 431
    before routing: the backend never sees the request."""
    web = HttpEcho("web").start()
    try:
        _publish(ads, "web", [web.address])
        client = httpx.Client(
            transport=proxyless.httpx.Transport(mesh=mesh, hosts=["web"]), timeout=10
        )
        assert client.get("http://web/").status_code == 200
        response = client.get("http://web/", headers=headers)
        assert response.status_code == 431
        assert b"over the limit" in response.content
        assert len(web.requests) == 1  # only the first request reached it
        client.close()
    finally:
        web.stop()
