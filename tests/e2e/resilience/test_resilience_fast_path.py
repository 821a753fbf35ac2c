"""The sync gRPC channel's fast path behaves exactly like the general one.

A unary call without metadata on a route that routes every such call the
same way (one cluster, no hash policy, fault filter or hedging) skips
routing once the route was seen in the current snapshot, and makes its
first attempt without a Call. These tests warm that path, check that it is
taken, then make the first attempt fail in each way the general path
handles: retries, per-try timeouts, ejection, the breaker, deadlines, errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from tests.e2e.resilience.conftest import (
    CLUSTER,
    Echo,
    Service,
    backend_of,
    breaker_cluster,
    outlier_detection,
    reset_counts,
    retry_policy,
    runtime,
    wait_served,
    wait_until,
)

import proxyless.grpc
import proxyless.grpc.aio
from proxyless.grpc import XdsChannel
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer
from proxyless.testing.resources import (
    CLUSTER_URL,
    ENDPOINT_URL,
    cluster,
    endpoints,
    header_match,
    route,
)

Backends = Callable[..., list[EchoServer]]
TARGET = "xds:///svc:80"


@pytest.fixture
def chan(mesh: Mesh) -> XdsChannel:
    return proxyless.grpc.channel(TARGET, mesh=mesh)


def warm(ch: XdsChannel, servers: list[EchoServer], calls: int = 4) -> Echo:
    """Serve a few calls, then check the method has a lane in the current snapshot."""
    echo: Echo = ch.unary_unary(ECHO_METHOD)
    wait_served(echo, servers)
    for _ in range(calls):
        echo(b"warm", timeout=5)
    lane = ch._core.lanes.get(ECHO_METHOD)
    assert lane is not None and lane.state is ch._core.runtime.current, "no fast path"
    reset_counts(servers)
    return echo


def test_two_failures_then_success_takes_three_attempts(
    service: Service, backends: Backends, chan: XdsChannel, mesh: Mesh
) -> None:
    (a,) = backends("a")
    service.publish([a], retry_policy=retry_policy("unavailable", 2))
    echo = warm(chan, [a])
    a.fail_next(2, grpc.StatusCode.UNAVAILABLE)
    assert backend_of(echo(b"x", timeout=5)) == "a"
    assert a.calls == 3
    assert runtime(mesh).breakers.default.requests == 0


def test_last_error_when_retries_run_out_and_not_retried_codes(
    service: Service, backends: Backends, chan: XdsChannel
) -> None:
    (a,) = backends("a")
    service.publish([a], retry_policy=retry_policy("unavailable", 2))
    echo = warm(chan, [a])
    a.fail_next(3, grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.RpcError) as info:
        echo(b"x", timeout=5)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert a.calls == 3
    a.fail_next(1, grpc.StatusCode.INTERNAL)
    with pytest.raises(grpc.RpcError) as info:
        echo(b"x", timeout=5)
    assert info.value.code() is grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert a.calls == 4


def test_per_try_timeout_moves_the_retry_to_the_fast_endpoint(
    service: Service, backends: Backends, chan: XdsChannel
) -> None:
    slow, fast = backends("slow", "fast")
    service.publish(
        [slow, fast],
        retry_policy=retry_policy(
            "unavailable,deadline-exceeded", 2, per_try_timeout=0.5, previous_hosts=True
        ),
    )
    echo = warm(chan, [slow, fast])
    slow.delay = 2.5
    try:
        for _ in range(4):
            assert backend_of(echo(b"x", timeout=2.0)) == "fast"
    finally:
        slow.delay = 0.0
    assert slow.calls >= 1


def test_failing_endpoint_is_ejected(
    service: Service, backends: Backends, chan: XdsChannel, mesh: Mesh
) -> None:
    a, bad = backends("a", "bad")
    od = outlier_detection(consecutive_5xx=2, base_ejection_time=30.0, max_ejection_percent=50)
    service.publish(
        [a, bad],
        cluster_proto=breaker_cluster(outlier=od),
        retry_policy=retry_policy("unavailable", 2, previous_hosts=True),
    )
    echo = warm(chan, [a, bad])
    bad.fail_always(grpc.StatusCode.UNAVAILABLE)
    for _ in range(10):
        assert backend_of(echo(b"x", timeout=5)) == "a"
    assert bad.calls == 2
    ejected = {es.address: es.ejected for es in runtime(mesh).endpoints()}
    assert ejected == {a.address: False, bad.address: True}
    assert all(es.active_requests == 0 for es in runtime(mesh).endpoints())


def test_deadline_and_open_breaker_errors_match_the_general_path(
    service: Service, backends: Backends, chan: XdsChannel, mesh: Mesh
) -> None:
    (a,) = backends("a")
    service.publish([a], cluster_proto=breaker_cluster(max_requests=1))
    echo = warm(chan, [a])
    a.delay = 0.5
    try:
        with pytest.raises(grpc.RpcError) as info:
            echo(b"x", timeout=0.1)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
        # hold the only request slot with a slow call, then call again
        future = chan.unary_unary(ECHO_METHOD).future(b"slow", timeout=5)
        wait_until(lambda: runtime(mesh).breakers.default.requests == 1, what="the slow call")
        with pytest.raises(grpc.RpcError) as info:
            echo(b"x", timeout=5)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert "max_requests=1" in info.value.details()  # type: ignore[attr-defined]
        future.result(timeout=5)
    finally:
        a.delay = 0.0
    wait_until(lambda: runtime(mesh).breakers.default.requests == 0, what="slots given back")


def test_metadata_and_config_changes_take_the_general_path(
    service: Service, backends: Backends, chan: XdsChannel
) -> None:
    a, b = backends("a", "b")
    service.publish([a])
    echo = warm(chan, [a])
    # a header route to b before the catch-all: calls with the header go to b,
    # calls without metadata keep a lane (they can never match the header)
    service.ads.set_resources(
        ENDPOINT_URL, {CLUSTER: endpoints(CLUSTER, [a.address]), "b": endpoints("b", [b.address])}
    )
    service.ads.set_resources(CLUSTER_URL, {CLUSTER: cluster(CLUSTER), "b": cluster("b")})
    service.set_routes(
        [
            route(prefix="/", cluster="b", headers=[header_match("x-to", exact="b")]),
            route(prefix="/", cluster=CLUSTER),
        ]
    )
    md = (("x-to", "b"),)
    wait_until(
        lambda: backend_of(echo(b"x", timeout=5, metadata=md)) == "b", what="the header route"
    )
    assert {backend_of(echo(b"x", timeout=5)) for _ in range(5)} == {"a"}
    assert chan._core.lanes[ECHO_METHOD].state is chan._core.runtime.current
    # the route moves: the lane of the old snapshot is not used
    service.set_routes([route(prefix="/", cluster="b")])
    wait_until(lambda: backend_of(echo(b"x", timeout=5)) == "b", what="the move to b")
    assert {backend_of(echo(b"x", timeout=5)) for _ in range(5)} == {"b"}
    current = chan._core.runtime.current
    assert all(lane.state is current for lane in chan._core.lanes.values())


def test_aio_fast_path_retries_ejects_and_gives_slots_back(
    service: Service, backends: Backends, mesh: Mesh
) -> None:
    a, bad = backends("a", "bad")
    od = outlier_detection(consecutive_5xx=2, base_ejection_time=30.0, max_ejection_percent=50)
    service.publish(
        [a, bad],
        cluster_proto=breaker_cluster(outlier=od),
        retry_policy=retry_policy("unavailable", 2, previous_hosts=True),
    )

    async def main() -> None:
        async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
            echo = ch.unary_unary(ECHO_METHOD)
            await _warm_aio(ch, echo, calls=4)  # round robin back where the test expects it
            reset_counts([a, bad])
            a.fail_next(1, grpc.StatusCode.UNAVAILABLE)
            bad.fail_always(grpc.StatusCode.UNAVAILABLE)
            for _ in range(10):
                assert backend_of(await echo(b"x", timeout=5)) == "a"

    asyncio.run(main())
    assert bad.calls == 2
    ejected = {es.address: es.ejected for es in runtime(mesh).endpoints()}
    assert ejected == {a.address: False, bad.address: True}
    assert runtime(mesh).breakers.default.requests == 0
    assert all(es.active_requests == 0 for es in runtime(mesh).endpoints())


def test_aio_fast_calls_cancelled_give_their_slots_back(
    service: Service, backends: Backends, mesh: Mesh
) -> None:
    (a,) = backends("a")
    service.publish([a])

    async def main() -> None:
        async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
            echo = ch.unary_unary(ECHO_METHOD)
            await _warm_aio(ch, echo)
            a.delay = 0.3
            at_once = [echo(b"x", timeout=5) for _ in range(3)]
            for c in at_once:  # before the call's task ran at all
                c.cancel()
            in_flight = [echo(b"x", timeout=5) for _ in range(3)]
            await asyncio.sleep(0.05)
            assert runtime(mesh).breakers.default.requests == 3  # on their way
            for c in in_flight:
                c.cancel()
            for c in at_once + in_flight:
                with pytest.raises(asyncio.CancelledError):
                    await c
            await asyncio.sleep(0)

    try:
        asyncio.run(main())
    finally:
        a.delay = 0.0
    assert runtime(mesh).breakers.default.requests == 0
    assert all(es.active_requests == 0 for es in runtime(mesh).endpoints())


async def _warm_aio(ch: Any, echo: Any, calls: int = 3) -> None:
    """Serve until a call succeeds (bounded), a few more, then check the lane."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            await echo(b"warm", timeout=5)
            break
        except grpc.aio.AioRpcError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.01)
    for _ in range(calls):
        await echo(b"warm", timeout=5)
    lane = ch._core.lanes.get(ECHO_METHOD)
    assert lane is not None and lane.state is ch._core.runtime.current, "no fast path"


async def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def test_aio_fast_call_objects_behave_like_grpc_aio_calls(
    service: Service, backends: Backends, mesh: Mesh
) -> None:
    (a,) = backends("a")
    service.publish([a], retry_policy=retry_policy("unavailable", 2))
    breaker = lambda: runtime(mesh).breakers.default.requests  # noqa: E731

    async def main() -> None:
        async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
            echo = ch.unary_unary(ECHO_METHOD)
            await _warm_aio(ch, echo)
            reset_counts([a])

            # awaited only after it ended: the outcome was recorded meanwhile
            late = echo(b"late", timeout=5)
            await _until(lambda: breaker() == 0 and a.calls == 1, "the late call to end")
            assert late.done()
            assert backend_of(await late) == "a"
            assert backend_of(await late) == "a"  # awaiting again gives the same answer
            assert await late.code() is grpc.StatusCode.OK

            # never awaited: still sent, and its slots come back
            echo(b"fire-and-forget", timeout=5)
            await _until(lambda: breaker() == 0 and a.calls == 2, "the unawaited call")

            # a failure nobody awaits yet is retried all the same
            a.fail_next(1, grpc.StatusCode.UNAVAILABLE)
            retried = echo(b"retried", timeout=5)
            await _until(lambda: a.calls == 4 and breaker() == 0, "the retry")
            assert backend_of(await retried) == "a"

            # methods used while another coroutine awaits the call
            a.delay = 0.2
            watched = echo(b"watched", timeout=5)
            waiting = asyncio.ensure_future(_awaited_in_task(watched))
            await asyncio.sleep(0.05)  # the other task now drives the call
            seen: list[Any] = []
            watched.add_done_callback(seen.append)
            assert not watched.done()
            assert await watched.code() is grpc.StatusCode.OK
            assert backend_of(await waiting) == "a"
            await _until(lambda: seen == [watched], "the done callback")

            # the same for a call that fails for good
            a.fail_next(1, grpc.StatusCode.INTERNAL)
            failing = echo(b"failing", timeout=5)
            waiting = asyncio.ensure_future(_awaited_in_task(failing))
            await asyncio.sleep(0.05)
            assert await failing.code() is grpc.StatusCode.INTERNAL
            with pytest.raises(grpc.aio.AioRpcError):
                await waiting
            a.delay = 0.0

    try:
        asyncio.run(main())
    finally:
        a.delay = 0.0
    assert runtime(mesh).breakers.default.requests == 0
    assert all(es.active_requests == 0 for es in runtime(mesh).endpoints())


async def _awaited_in_task(call: Any) -> Any:
    return await call
