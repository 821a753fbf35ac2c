"""The resilience layer on ``proxyless.grpc.aio`` channels: the same retry
policy, budget and breaker as the sync channel (gRFC A44, A32), exercised
with real ``grpc.aio`` calls to real backends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import grpc.aio
from tests.e2e.resilience.conftest import (
    CLUSTER,
    SERVER_STREAM_METHOD,
    TARGET,
    Echo,
    Service,
    backend_of,
    breaker_cluster,
    outlier_detection,
    reset_counts,
    retry_policy,
    runtime,
    wait_served,
)

import proxyless.grpc.aio
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer

Backends = Callable[..., list[EchoServer]]


def test_aio_two_failures_then_success_takes_three_attempts(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    (a,) = backends("a")
    service.publish([a], retry_policy=retry_policy("unavailable", 2))
    wait_served(echo, [a])
    reset_counts([a])
    a.fail_next(2, grpc.StatusCode.UNAVAILABLE)

    async def main() -> bytes | grpc.aio.AioRpcError:
        async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
            try:
                reply: bytes = await ch.unary_unary(ECHO_METHOD)(b"x", timeout=5)
            except grpc.aio.AioRpcError as err:
                return err
            return reply

    result = asyncio.run(main())

    assert a.calls == 3, f"{a.calls} attempt(s) at the backend; the call ended with {result!r}"
    assert isinstance(result, bytes) and backend_of(result) == "a"


def test_aio_failure_keeps_its_status_code(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    # No retry policy: one attempt, and the caller sees the backend's status.
    (a,) = backends("a")
    service.publish([a])
    wait_served(echo, [a])
    reset_counts([a])
    a.fail_next(1, grpc.StatusCode.RESOURCE_EXHAUSTED)

    async def main() -> grpc.aio.AioRpcError:
        async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
            try:
                await ch.unary_unary(ECHO_METHOD)(b"x", timeout=5)
            except grpc.aio.AioRpcError as err:
                return err
            raise AssertionError("the call succeeded")

    err = asyncio.run(main())

    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert a.calls == 1


def test_aio_max_requests_overflow_fails_fast_and_is_not_retried(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    (a,) = backends("a", max_workers=32)
    service.publish(
        [a],
        cluster_proto=breaker_cluster(max_requests=10),
        retry_policy=retry_policy("unavailable", 3),
    )
    wait_served(echo, [a])
    breaker = runtime(mesh).breakers.default
    reset_counts([a])
    a.delay = 1.5

    async def main() -> list[bytes | BaseException]:
        async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
            fn = ch.unary_unary(ECHO_METHOD)
            return await asyncio.gather(
                *(fn(b"x", timeout=10) for _ in range(50)), return_exceptions=True
            )

    results = asyncio.run(main())

    ok = [r for r in results if isinstance(r, bytes)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 10 and len(failed) == 40, results[:3]
    for err in failed:
        assert err.code() is grpc.StatusCode.UNAVAILABLE
        assert "max_requests=10" in (err.details() or "")
        assert f"cluster {CLUSTER!r}" in (err.details() or "")
    assert a.calls == 10
    assert breaker.stats["upstream_rq_overflow"] == 40
    assert breaker.requests == 0


def test_aio_streaming_failures_feed_outlier_detection(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    a, b, bad = backends("a", "b", "bad")
    od = outlier_detection(consecutive_5xx=3, interval=1.0, base_ejection_time=10.0)
    service.publish([a, b, bad], cluster_proto=breaker_cluster(outlier=od))
    wait_served(echo, [a, b, bad])
    detector = runtime(mesh).outlier
    assert detector is not None
    reset_counts([a, b, bad])
    bad.fail_always(grpc.StatusCode.UNAVAILABLE)

    async def main() -> int:
        failures = 0
        async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
            fn = ch.unary_stream(SERVER_STREAM_METHOD)
            for _ in range(30):
                try:
                    async for _reply in fn(b"2", timeout=5):
                        pass
                except grpc.aio.AioRpcError as err:
                    assert err.code() is grpc.StatusCode.UNAVAILABLE
                    failures += 1
        return failures

    failures = asyncio.run(main())

    assert failures >= 3
    assert detector.ejected_count == 1, (
        f"{failures} failed streaming calls, {bad.calls} at the failing endpoint, "
        f"stats {detector.stats['ejections_enforced_total']} ejections"
    )
    assert bad.calls == 3
