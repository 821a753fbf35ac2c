"""Retries, timeouts and outlier detection through proxyless.httpx (Envoy
router semantics: retry_on conditions, replayable bodies, Retry-After,
per-try and route timeouts, consecutive 5xx ejection)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest
from envoy.config.route.v3 import route_components_pb2
from tests.e2e.httpx.conftest import (
    CLUSTER,
    SERVICE,
    URL,
    HttpEcho,
    Service,
    outlier_detection,
    reply,
    retry_policy,
)

import proxyless.httpx
from proxyless.mesh import Mesh
from proxyless.testing.controlplane import free_port
from proxyless.testing.resources import cluster, header_match, route


def test_503_is_retried_on_another_endpoint_then_ejected(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client, mesh: Mesh
) -> None:
    bad, good = backends("bad", "good")
    bad.always = 503
    service.simple(
        [bad, good],
        cluster_proto=cluster(CLUSTER, outlier=outlier_detection(consecutive_5xx=2)),
        retry_policy=retry_policy("5xx", 2, previous_hosts=True),
    )
    for _ in range(12):
        response = client.get(f"{URL}/")
        assert response.status_code == 200
        assert reply(response)["backend"] == "good"
    assert len(bad.requests) == 2  # two consecutive 5xx: ejected, never picked again
    runtime = mesh.clusters.get(CLUSTER)
    assert runtime is not None
    ejected = {es.address: es.ejected for es in runtime.endpoints()}
    assert ejected == {bad.address: True, good.address: False}


def test_last_failure_is_returned_when_retries_run_out(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    a.always = 502
    service.simple([a], retry_policy=retry_policy("gateway-error", 2))
    response = client.get(f"{URL}/")
    assert response.status_code == 502
    assert len(a.requests) == 3


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 8):
        yield b"abcdefgh"


@pytest.mark.parametrize(
    ("size", "limit", "attempts", "status"),
    [
        pytest.param(32, 1024, 2, 200, id="small-stream-buffered-and-replayed"),
        pytest.param(4096, 1024, 1, 503, id="stream-over-the-buffer-not-retried"),
    ],
)
def test_streamed_post_body_retried_only_when_replayable(
    service: Service,
    backends: Callable[..., list[HttpEcho]],
    make_client: Callable[..., httpx.Client],
    size: int,
    limit: int,
    attempts: int,
    status: int,
) -> None:
    (a,) = backends("a")
    service.simple([a], retry_policy=retry_policy("5xx", 2))
    client = make_client(retry_buffer_limit=limit)
    a.fail_next(1, 503)
    response = client.post(f"{URL}/upload", content=_chunks(size))
    assert response.status_code == status
    assert len(a.requests) == attempts
    assert all(len(r["body"]) == size for r in a.requests)


def test_bytes_body_is_replayed(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    service.simple([a], retry_policy=retry_policy("5xx", 1))
    a.fail_next(1, 500)
    response = client.post(f"{URL}/", json={"k": "v"})
    assert response.status_code == 200
    assert [r["body"] for r in a.requests] == ['{"k":"v"}'] * 2


def test_retriable_request_headers_limit_retries_to_matching_methods(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    policy = retry_policy("5xx", 2)
    policy.retriable_request_headers.append(header_match(":method", exact="GET"))
    service.simple([a], retry_policy=policy)
    a.fail_next(1, 503)
    assert client.post(f"{URL}/", content=b"x").status_code == 503
    a.fail_next(1, 503)
    assert client.get(f"{URL}/").status_code == 200
    assert [r["method"] for r in a.requests] == ["POST", "GET", "GET"]


@pytest.mark.parametrize(
    ("retry_after", "status", "attempts"),
    [
        pytest.param("0", 200, 2, id="retry-after-0-retried-at-once"),
        pytest.param("3600", 503, 1, id="retry-after-too-long-stops"),
    ],
)
def test_retry_after(
    service: Service,
    backends: Callable[..., list[HttpEcho]],
    client: httpx.Client,
    retry_after: str,
    status: int,
    attempts: int,
) -> None:
    (a,) = backends("a")
    service.simple([a], retry_policy=retry_policy("5xx", 2))
    a.fail_next(1, 503, {"retry-after": retry_after})
    assert client.get(f"{URL}/").status_code == status
    assert len(a.requests) == attempts


def test_retriable_status_codes(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    service.simple(
        [a], retry_policy=retry_policy("retriable-status-codes", 2, retriable_status_codes=[409])
    )
    a.fail_next(2, 409)
    assert client.get(f"{URL}/").status_code == 200
    a.fail_next(1, 404)
    assert client.get(f"{URL}/").status_code == 404
    assert len(a.requests) == 4


def test_connect_failure_is_retried_on_another_endpoint(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (good,) = backends("good")
    dead = f"127.0.0.1:{free_port()}"
    service.simple(
        [dead, good], retry_policy=retry_policy("connect-failure", 2, previous_hosts=True)
    )
    for _ in range(4):
        assert reply(client.get(f"{URL}/"))["backend"] == "good"


def test_connect_failure_without_retry_is_an_httpx_connect_error(
    service: Service, client: httpx.Client
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    service.simple([dead])
    with pytest.raises(httpx.ConnectError) as info:
        client.get(f"{URL}/")
    text = str(info.value)
    assert "upstream" in text and dead in text and "cluster 'c'" in text
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_per_try_timeout_moves_to_another_endpoint(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    slow, fast = backends("slow", "fast")
    slow.hold()
    service.simple(
        [slow, fast],
        retry_policy=retry_policy("5xx", 2, per_try_timeout=0.2, previous_hosts=True),
    )
    try:
        for _ in range(4):
            assert reply(client.get(f"{URL}/"))["backend"] == "fast"
        assert slow.held >= 1
    finally:
        slow.release()


def test_route_timeout_is_an_httpx_read_timeout(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (slow,) = backends("slow")
    slow.hold()
    service.simple([slow], timeout=0.2)
    try:
        with pytest.raises(httpx.ReadTimeout) as info:
            client.get(f"{URL}/")
    finally:
        slow.release()
    err = info.value
    assert isinstance(err, proxyless.httpx.MeshReadTimeout)
    assert err.stage == "timeout"
    assert "route timeout 0.2s expired" in str(err) and "[UT]" in str(err)


def test_async_retry_and_timeout(
    service: Service, backends: Callable[..., list[HttpEcho]], mesh: Mesh
) -> None:
    a, slow = backends("a", "slow")
    service.cluster("a", [a])
    service.cluster("slow", [slow])
    r_slow = route(prefix="/slow", cluster="slow", timeout=0.2)
    r_a = route(prefix="/", cluster="a", retry_policy=retry_policy("5xx", 2))
    service.routes_for(SERVICE, [r_slow, r_a])
    a.fail_next(2, 503)
    slow.hold()

    async def run() -> None:
        async with httpx.AsyncClient(
            transport=proxyless.httpx.AsyncTransport(mesh=mesh), timeout=10.0
        ) as client:
            assert (await client.get(f"{URL}/")).status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"{URL}/slow")

    try:
        asyncio.run(run())
    finally:
        slow.release()
    assert len(a.requests) == 3


def test_vhost_retry_policy_applies(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    service.cluster(CLUSTER, [a])
    vh = route_components_pb2.VirtualHost(
        name="svc", domains=["svc:8080"], routes=[route(prefix="/", cluster=CLUSTER)]
    )
    vh.retry_policy.CopyFrom(retry_policy("5xx", 1))
    service.routes_for(SERVICE, [], vhost=vh)
    a.fail_next(1, 500)
    assert client.get(f"{URL}/").status_code == 200
