"""The httpx transports' fast path behaves exactly like the general one.

A request on a route every request with the same Host and path takes
(no header or query matchers before it, one cluster, no hash policy, fault
filter, mirror, rewrite or header mutation) skips routing once the route was
seen in the current snapshot, and makes its first attempt without a Call.
These tests warm that path first, then make it fail in each way the general
path handles: retries, ejection, timeouts, replayed bodies, config changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest
from tests.e2e.httpx.conftest import (
    CLUSTER,
    SERVICE,
    URL,
    HttpEcho,
    Service,
    header_option,
    outlier_detection,
    reply,
    retry_policy,
    wait_until,
)

import proxyless.httpx
from proxyless.mesh import Mesh
from proxyless.testing.controlplane import free_port
from proxyless.testing.resources import cluster, header_match, route


def lanes(client: httpx.Client | httpx.AsyncClient) -> int:
    """How many fast-path routes the client's transport holds."""
    return len(client._transport._core.lanes)  # type: ignore[union-attr]


def _clusters_a_and_b(service: Service, backends: Callable[..., list[HttpEcho]]) -> None:
    """Clusters ``a`` and ``b``, one backend each, and a route to ``a``."""
    a, b = backends("a", "b")
    service.cluster("a", [a])
    service.cluster("b", [b])
    service.routes_for(SERVICE, [route(prefix="/", cluster="a")])


def warm(client: httpx.Client, path: str = "/", times: int = 2) -> None:
    for _ in range(times):
        assert client.get(f"{URL}{path}").status_code == 200
    assert lanes(client) >= 1


def test_plain_route_gets_a_fast_path_header_routes_do_not(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    _clusters_a_and_b(service, backends)
    service.routes_for(
        SERVICE,
        [
            route(prefix="/h", cluster="b", headers=[header_match("x-user", exact="kim")]),
            route(prefix="/", cluster="a"),
        ],
    )
    for _ in range(3):
        assert reply(client.get(f"{URL}/h"))["backend"] == "a"
        assert reply(client.get(f"{URL}/h", headers={"x-user": "kim"}))["backend"] == "b"
    assert lanes(client) == 0  # a header route comes first: every request is routed
    service.routes_for(SERVICE, [route(prefix="/", cluster="a")])
    wait_until(
        lambda: reply(client.get(f"{URL}/h", headers={"x-user": "kim"}))["backend"] == "a",
        what="the header route to go away",
    )
    warm(client, "/h")


def test_warm_503_is_retried_on_another_endpoint_then_ejected(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client, mesh: Mesh
) -> None:
    bad, good = backends("bad", "good")
    service.simple(
        [bad, good],
        cluster_proto=cluster(CLUSTER, outlier=outlier_detection(consecutive_5xx=2)),
        retry_policy=retry_policy("5xx", 2, previous_hosts=True),
    )
    warm(client, times=4)
    bad.always = 503
    before = len(bad.requests)
    for _ in range(12):
        response = client.get(f"{URL}/")
        assert response.status_code == 200
        assert reply(response)["backend"] == "good"
    assert len(bad.requests) - before == 2
    runtime = mesh.clusters.get(CLUSTER)
    assert runtime is not None
    assert {es.address: es.ejected for es in runtime.endpoints()} == {
        bad.address: True,
        good.address: False,
    }
    assert runtime.breakers.default.requests == 0  # every slot given back


def test_warm_failure_without_retry_policy_is_returned_and_counted(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client, mesh: Mesh
) -> None:
    (a,) = backends("a")
    service.simple([a], cluster_proto=cluster(CLUSTER, outlier=outlier_detection(5)))
    warm(client)
    a.fail_next(2, 503)
    assert [client.get(f"{URL}/").status_code for _ in range(3)] == [503, 503, 200]
    runtime = mesh.clusters.get(CLUSTER)
    assert runtime is not None
    (es,) = runtime.endpoints()
    assert es.active_requests == 0 and runtime.breakers.default.requests == 0


def test_warm_connect_failure_is_retried(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (good,) = backends("good")
    dead = f"127.0.0.1:{free_port()}"
    service.simple(
        [dead, good], retry_policy=retry_policy("connect-failure", 2, previous_hosts=True)
    )
    for _ in range(8):
        assert reply(client.get(f"{URL}/"))["backend"] == "good"
    assert lanes(client) == 1


def test_warm_connect_failure_without_retry_names_the_endpoint(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    service.simple([a])
    for _ in range(2):  # no connection kept: the next request must connect
        assert client.get(f"{URL}/", headers={"connection": "close"}).status_code == 200
    assert lanes(client) == 1
    a.stop()
    with pytest.raises(httpx.ConnectError) as info:
        client.get(f"{URL}/")
    text = str(info.value)
    assert "upstream" in text and a.address in text and "cluster 'c'" in text


def test_warm_per_try_timeout_moves_to_another_endpoint(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    slow, fast = backends("slow", "fast")
    service.simple(
        [slow, fast],
        retry_policy=retry_policy("5xx", 2, per_try_timeout=0.2, previous_hosts=True),
    )
    warm(client, times=4)
    slow.hold()
    try:
        for _ in range(4):
            assert reply(client.get(f"{URL}/"))["backend"] == "fast"
        assert slow.held >= 1
    finally:
        slow.release()


def test_warm_route_timeout_names_the_route_timeout(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (slow,) = backends("slow")
    service.simple([slow], timeout=0.2)
    warm(client)
    slow.hold()
    try:
        with pytest.raises(httpx.ReadTimeout) as info:
            client.get(f"{URL}/")
    finally:
        slow.release()
    assert "route timeout 0.2s expired" in str(info.value) and "[UT]" in str(info.value)


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 8):
        yield b"abcdefgh"


def test_warm_bodies_are_replayed_only_when_replayable(
    service: Service,
    backends: Callable[..., list[HttpEcho]],
    make_client: Callable[..., httpx.Client],
) -> None:
    (a,) = backends("a")
    service.simple([a], retry_policy=retry_policy("5xx", 2))
    client = make_client(retry_buffer_limit=1024)
    warm(client, "/upload")
    seen = len(a.requests)
    a.fail_next(1, 500)
    assert client.post(f"{URL}/upload", json={"k": "v"}).status_code == 200
    assert [r["body"] for r in a.requests[seen:]] == ['{"k":"v"}'] * 2
    seen = len(a.requests)
    a.fail_next(1, 503)
    assert client.post(f"{URL}/upload", content=_chunks(4096)).status_code == 503
    assert len(a.requests) - seen == 1  # a stream past the buffer is sent once
    seen = len(a.requests)
    a.fail_next(1, 503)
    assert client.post(f"{URL}/upload", content=b"x" * 2048).status_code == 503
    assert len(a.requests) - seen == 1  # so are bytes past the buffer


def test_warm_retriable_request_headers_still_apply(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    policy = retry_policy("5xx", 2)
    policy.retriable_request_headers.append(header_match(":method", exact="GET"))
    service.simple([a], retry_policy=policy)
    warm(client)
    seen = len(a.requests)
    a.fail_next(1, 503)
    assert client.post(f"{URL}/", content=b"x").status_code == 503
    a.fail_next(1, 503)
    assert client.get(f"{URL}/").status_code == 200
    assert [r["method"] for r in a.requests[seen:]] == ["POST", "GET", "GET"]


def test_config_change_retires_the_fast_path(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    _clusters_a_and_b(service, backends)
    warm(client)
    service.routes_for(SERVICE, [route(prefix="/", cluster="b")])
    wait_until(lambda: reply(client.get(f"{URL}/"))["backend"] == "b", what="the move to b")
    assert {reply(client.get(f"{URL}/"))["backend"] for _ in range(5)} == {"b"}


def test_routes_that_change_the_request_stay_on_the_general_path(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    service.cluster(CLUSTER, [a])
    r = route(prefix="/", cluster=CLUSTER)
    r.request_headers_to_add.append(header_option("x-added", "1"))
    service.routes_for(SERVICE, [r])
    for _ in range(3):
        record = reply(client.get(f"{URL}/"))
        assert ["x-added", "1"] in record["headers"]
    assert lanes(client) == 0


def test_async_warm_retry_timeout_and_ejection(
    service: Service, backends: Callable[..., list[HttpEcho]], mesh: Mesh
) -> None:
    bad, good, slow = backends("bad", "good", "slow")
    service.cluster(
        CLUSTER, [bad, good], cluster(CLUSTER, outlier=outlier_detection(consecutive_5xx=2))
    )
    service.cluster("slow", [slow])
    service.routes_for(
        SERVICE,
        [
            route(prefix="/slow", cluster="slow", timeout=0.2),
            route(prefix="/", cluster=CLUSTER, retry_policy=retry_policy("5xx", 2)),
        ],
    )

    async def run() -> None:
        async with httpx.AsyncClient(
            transport=proxyless.httpx.AsyncTransport(mesh=mesh), timeout=10.0
        ) as client:
            for _ in range(4):
                assert (await client.get(f"{URL}/")).status_code == 200
                assert (await client.get(f"{URL}/slow")).status_code == 200
            assert lanes(client) == 2
            bad.always = 503
            for _ in range(10):
                response = await client.get(f"{URL}/")
                assert response.status_code == 200
                assert reply(response)["backend"] == "good"
            slow.hold()
            with pytest.raises(httpx.ReadTimeout) as info:
                await client.get(f"{URL}/slow")
            assert "route timeout 0.2s expired" in str(info.value)

    try:
        asyncio.run(run())
    finally:
        slow.release()
    runtime = mesh.clusters.get(CLUSTER)
    assert runtime is not None
    assert {es.address: es.ejected for es in runtime.endpoints()}[bad.address] is True
    assert runtime.breakers.default.requests == 0


def test_a_new_snapshot_drops_the_target_s_old_lanes(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    _clusters_a_and_b(service, backends)
    warm(client, "/one")
    warm(client, "/two")
    assert lanes(client) == 2
    service.routes_for(SERVICE, [route(prefix="/", cluster="b")])
    wait_until(lambda: reply(client.get(f"{URL}/one"))["backend"] == "b", what="the move to b")
    assert reply(client.get(f"{URL}/one"))["backend"] == "b"
    assert lanes(client) == 1  # /two's lane of the old snapshot is gone, not kept
