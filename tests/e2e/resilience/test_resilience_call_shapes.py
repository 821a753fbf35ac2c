"""Retries and outlier counting for every call shape of the sync channel.

Issue 5 asks for retries on every call until it commits (gRFC A44 / A6:
a streaming call commits on its first response message or headers; the
requests of a client-streaming call are buffered for replay up to a bound).
Outlier detection must count the attempts of every shape.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from tests.e2e.resilience.conftest import (
    CLIENT_STREAM_METHOD,
    SERVER_STREAM_METHOD,
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

from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply

Backends = Callable[..., list[EchoServer]]


def test_with_call_is_retried(service: Service, backends: Backends, echo: Echo, mesh: Mesh) -> None:
    import proxyless.grpc

    (a,) = backends("a")
    service.publish([a], retry_policy=retry_policy("unavailable", 2))
    wait_served(echo, [a])
    reset_counts([a])
    a.fail_next(2, grpc.StatusCode.UNAVAILABLE)

    ch = proxyless.grpc.channel("xds:///svc:80", mesh=mesh)
    reply, call = ch.unary_unary(ECHO_METHOD).with_call(b"x", timeout=5)

    assert backend_of(reply) == "a"
    assert call.code() is grpc.StatusCode.OK
    assert a.calls == 3


def test_unary_future_is_retried(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    import proxyless.grpc

    (a,) = backends("a")
    service.publish([a], retry_policy=retry_policy("unavailable", 2))
    wait_served(echo, [a])
    reset_counts([a])
    a.fail_next(2, grpc.StatusCode.UNAVAILABLE)

    ch = proxyless.grpc.channel("xds:///svc:80", mesh=mesh)
    future = ch.unary_unary(ECHO_METHOD).future(b"x", timeout=5)
    error = future.exception(timeout=10)

    assert error is None and a.calls == 3, f"{a.calls} attempt(s); the future ended with {error!r}"


def test_server_stream_failing_before_any_response_is_retried(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    import proxyless.grpc

    (a,) = backends("a")
    service.publish([a], retry_policy=retry_policy("unavailable", 2))
    wait_served(echo, [a])
    reset_counts([a])
    a.fail_next(1, grpc.StatusCode.UNAVAILABLE)

    ch = proxyless.grpc.channel("xds:///svc:80", mesh=mesh)
    replies: list[int] = []
    error: grpc.RpcError | None = None
    try:
        for reply in ch.unary_stream(SERVER_STREAM_METHOD)(b"3", timeout=5):
            replies.append(decode_reply(reply)["index"])
    except grpc.RpcError as err:
        error = err

    assert replies == [0, 1, 2] and a.calls == 2, f"{a.calls} attempt(s); ended with {error!r}"


def test_client_stream_is_replayed_on_retry(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    import proxyless.grpc

    (a,) = backends("a")
    service.publish([a], retry_policy=retry_policy("unavailable", 2))
    wait_served(echo, [a])
    reset_counts([a])
    a.fail_next(1, grpc.StatusCode.UNAVAILABLE)

    ch = proxyless.grpc.channel("xds:///svc:80", mesh=mesh)
    result: object
    try:
        result = decode_reply(
            ch.stream_unary(CLIENT_STREAM_METHOD)(iter([b"m1", b"m2", b"m3"]), timeout=5)
        )["received"]
    except grpc.RpcError as err:
        result = err

    assert result == ["m1", "m2", "m3"] and a.calls == 2, f"{a.calls} attempt(s): {result!r}"


def test_sync_streaming_failures_feed_outlier_detection(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    import proxyless.grpc

    a, b, bad = backends("a", "b", "bad")
    od = outlier_detection(consecutive_5xx=3, interval=1.0, base_ejection_time=10.0)
    service.publish([a, b, bad], cluster_proto=breaker_cluster(outlier=od))
    wait_served(echo, [a, b, bad])
    detector = runtime(mesh).outlier
    assert detector is not None
    reset_counts([a, b, bad])
    bad.fail_always(grpc.StatusCode.UNAVAILABLE)

    ch = proxyless.grpc.channel("xds:///svc:80", mesh=mesh)
    fn = ch.unary_stream(SERVER_STREAM_METHOD)
    failures = 0
    for _ in range(30):
        try:
            assert len(list(fn(b"2", timeout=5))) == 2
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            failures += 1

    assert detector.ejected_count == 1
    assert bad.calls == 3 and failures == 3


def test_streaming_failure_does_not_draw_on_the_retry_budget(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    import proxyless.grpc

    (a,) = backends("a")
    # A budget of 0 % / 0: any retry asked for is refused and counted.
    service.publish(
        [a],
        cluster_proto=breaker_cluster(budget_percent=0.0, min_retry_concurrency=0),
        retry_policy=retry_policy("unavailable", 2),
    )
    wait_served(echo, [a])
    breaker = runtime(mesh).breakers.default
    reset_counts([a])
    a.fail_next(1, grpc.StatusCode.UNAVAILABLE)

    # Bidirectional streams are never retried, so they never ask the budget.
    ch = proxyless.grpc.channel("xds:///svc:80", mesh=mesh)
    with pytest.raises(grpc.RpcError):
        list(ch.stream_stream("/proxyless.test.Echo/BidiStream")(iter([b"2"]), timeout=5))

    assert a.calls == 1
    assert breaker.stats["budget_exhausted"] == 0, breaker.stats
    assert breaker.stats["upstream_rq_retry_overflow"] == 0, breaker.stats
