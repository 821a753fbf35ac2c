"""EDS-driven endpoint changes on real gRPC calls: priority failover when
priority 0 goes unhealthy and back when it recovers (gRFC A56 / Envoy
priority levels), and draining of an endpoint removed while calls to it are
in flight."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from tests.e2e.grpc.conftest import (
    SERVICE,
    TARGET,
    Xds,
    backend_of,
    call_until,
    count_backends,
    wait_until,
)

import proxyless.grpc
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer
from proxyless.testing.resources import route


@pytest.mark.parametrize(
    "mode", [pytest.param("envoy", id="envoy"), pytest.param("grpc", id="grpc")]
)
def test_priority_failover_and_back(
    mode: str,
    xds: Xds,
    make_mesh: Callable[..., Mesh],
    backends: Callable[..., list[EchoServer]],
) -> None:
    p0a, p0b, p1 = backends("p0a", "p0b", "p1")
    prio = [[p0a.address, p0b.address], [p1.address]]
    xds.cluster("c", prio)
    xds.service(SERVICE, [route(prefix="/", cluster="c")])
    echo = proxyless.grpc.channel(TARGET, mesh=make_mesh(priority_mode=mode)).unary_unary(
        ECHO_METHOD
    )
    echo(b"warm-up", timeout=10)
    healthy = count_backends(echo, 100)
    assert set(healthy) == {"p0a", "p0b"}, healthy

    xds.endpoints("c", prio, health={p0a.address: "UNHEALTHY", p0b.address: "UNHEALTHY"})
    call_until(echo, "p1")
    failed_over = count_backends(echo, 100)
    assert failed_over == {"p1": 100}, failed_over

    xds.endpoints("c", prio, health={p0a.address: "HEALTHY", p0b.address: "HEALTHY"})
    call_until(echo, "p0a")
    back = count_backends(echo, 100)
    assert set(back) == {"p0a", "p0b"}, back


def test_removed_endpoint_drains_without_failing_calls(
    xds: Xds,
    mesh: Mesh,
    backends: Callable[..., list[EchoServer]],
    echo: Callable[..., bytes],
) -> None:
    slow, fast = backends("slow", "fast")
    xds.simple(SERVICE, [slow, fast], lb="round_robin")
    call_until(echo, "slow")
    call_until(echo, "fast")
    slow.delay = 0.6
    slow_before = slow.calls

    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            got = backend_of(echo(b"x", timeout=10))
        except Exception as exc:  # every failure counts, whatever its type
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(got)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    wait_until(lambda: slow.calls - slow_before >= 2, what="calls in flight on the slow endpoint")

    xds.endpoints("c", [fast.address])
    wait_until(lambda: _addresses(mesh, "c") == {fast.address}, what="the endpoint removal")
    with lock:
        assert "slow" not in results, "the slow calls ended before the removal: no drain tested"
    # New calls go to the remaining endpoint at once, while the old ones finish.
    assert count_backends(echo, 50) == {"fast": 50}

    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert errors == [], errors
    assert len(results) == 6
    assert results.count("slow") == slow.calls - slow_before


def _addresses(mesh: Mesh, cluster: str) -> set[str]:
    rt = mesh.clusters.get(cluster)
    return set() if rt is None else {e.address for e in rt.endpoints()}


def test_endpoint_removed_after_an_earlier_mesh_closed_is_released(
    xds: Xds, make_mesh: Callable[..., Mesh], backends: Callable[..., list[EchoServer]]
) -> None:
    """Endpoint connections are process-wide and closed once no cluster
    lists the endpoint. A Mesh that was closed lists nothing any more, so it
    must not keep a removed endpoint's connection open for a later Mesh."""
    from proxyless.grpc._pool import POOL

    a, b = backends("a", "b")
    xds.simple(SERVICE, [a, b], lb="round_robin")

    first = make_mesh()
    echo1 = proxyless.grpc.channel(TARGET, mesh=first).unary_unary(ECHO_METHOD)
    call_until(echo1, "a")
    first.close()

    second = make_mesh()
    echo2 = proxyless.grpc.channel(TARGET, mesh=second).unary_unary(ECHO_METHOD)
    call_until(echo2, "a")
    xds.endpoints("c", [b.address])
    wait_until(lambda: _addresses(second, "c") == {b.address}, what="the endpoint removal")
    assert count_backends(echo2, 10) == {"b": 10}
    assert not POOL.referenced(a.address), "the removed endpoint's connection stays open"
