"""Hedged unary calls and client-streaming replay on the sync channel."""

from __future__ import annotations

import grpc
import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

import proxyless.grpc
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply
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

CLIENT_STREAM = "/proxyless.test.Echo/ClientStream"


def _retry_policy() -> rc.RetryPolicy:
    rp = rc.RetryPolicy(retry_on="unavailable")
    rp.num_retries.value = 2
    pred = rp.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts")
    pred.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    return rp


@pytest.fixture
def mesh_env():
    a, b = EchoServer("a").start(), EchoServer("b").start()
    ads = AdsServer()
    ads.start()
    ads.set_resources(LISTENER_URL, {"svc:80": listener("svc:80", "r")})
    ads.set_resources(CLUSTER_URL, {"c": cluster("c")})
    ads.set_resources(ENDPOINT_URL, {"c": endpoints("c", [a.address, b.address])})
    mesh = Mesh(
        {
            "xds_servers": [{"server_uri": ads.target, "channel_creds": [{"type": "insecure"}]}],
            "node": {"id": "hedge"},
        }
    )
    yield ads, mesh, a, b
    mesh.close()
    ads.stop()
    a.stop()
    b.stop()


def _routes(ads: AdsServer, *routes: rc.Route) -> None:
    ads.set_resources(ROUTE_URL, {"r": route_config("r", "svc:80", list(routes))})


def test_hedged_call_takes_the_first_response(mesh_env):
    ads, mesh, a, b = mesh_env
    hedged = route(cluster="c")
    hedged.route.hedge_policy.initial_requests.value = 2
    _routes(ads, hedged)
    echo = proxyless.grpc.channel("xds:///svc:80", mesh=mesh).unary_unary(ECHO_METHOD)
    a.delay = 1.0
    for _ in range(5):
        assert decode_reply(echo(b"x", timeout=5))["backend"] == "b"
    # the fast endpoint answered every call; the slow attempts were cancelled
    assert b.calls == 5 and a.calls >= 1
    rt = mesh.clusters.get("c")
    assert rt is not None and rt.breakers.default.retry_budget.active == 0


def test_hedged_call_fails_only_when_every_attempt_fails(mesh_env):
    ads, mesh, a, b = mesh_env
    hedged = route(cluster="c")
    hedged.route.hedge_policy.initial_requests.value = 2
    _routes(ads, hedged)
    echo = proxyless.grpc.channel("xds:///svc:80", mesh=mesh).unary_unary(ECHO_METHOD)
    echo(b"warm", timeout=5)
    a.fail_always(grpc.StatusCode.UNAVAILABLE)
    for _ in range(3):
        assert decode_reply(echo(b"x", timeout=5))["backend"] == "b"
    b.fail_always(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.RpcError) as err:
        echo(b"x", timeout=5)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_client_stream_is_replayed_on_retry(mesh_env):
    ads, mesh, a, b = mesh_env
    _routes(ads, route(cluster="c", retry_policy=_retry_policy()))
    send = proxyless.grpc.channel("xds:///svc:80", mesh=mesh).stream_unary(CLIENT_STREAM)
    send(iter([b"warm"]), timeout=5)
    a.fail_next(1)
    b.fail_next(1)
    a.calls = b.calls = 0
    reply = decode_reply(send(iter([b"1", b"2", b"3"]), timeout=5))
    assert reply["received"] == ["1", "2", "3"]
    assert a.calls + b.calls == 3  # two failures, then the replayed stream


def test_aio_hedged_call_takes_the_first_response(mesh_env):
    import asyncio

    ads, mesh, a, _b = mesh_env
    hedged = route(cluster="c")
    hedged.route.hedge_policy.initial_requests.value = 2
    _routes(ads, hedged)
    a.delay = 1.0

    async def main() -> list[str]:
        channel = proxyless.grpc.aio.channel("xds:///svc:80", mesh=mesh)
        echo = channel.unary_unary(ECHO_METHOD)
        return [decode_reply(await echo(b"x", timeout=5))["backend"] for _ in range(3)]

    assert asyncio.run(main()) == ["b", "b", "b"]
    rt = mesh.clusters.get("c")
    assert rt is not None and rt.breakers.default.retry_budget.active == 0
    assert rt.breakers.default.requests == 0


def test_aio_hedged_call_fails_when_every_attempt_fails(mesh_env):
    import asyncio

    ads, mesh, a, b = mesh_env
    hedged = route(cluster="c")
    hedged.route.hedge_policy.initial_requests.value = 2
    _routes(ads, hedged)
    a.fail_always(grpc.StatusCode.UNAVAILABLE)
    b.fail_always(grpc.StatusCode.UNAVAILABLE)

    async def main() -> grpc.StatusCode:
        channel = proxyless.grpc.aio.channel("xds:///svc:80", mesh=mesh)
        try:
            await channel.unary_unary(ECHO_METHOD)(b"x", timeout=5)
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    assert asyncio.run(main()) is grpc.StatusCode.UNAVAILABLE


def test_aio_client_stream_is_replayed_on_retry(mesh_env):
    import asyncio

    ads, mesh, a, b = mesh_env
    _routes(ads, route(cluster="c", retry_policy=_retry_policy()))

    async def requests():
        for item in (b"1", b"2", b"3"):
            yield item

    async def main() -> dict:
        channel = proxyless.grpc.aio.channel("xds:///svc:80", mesh=mesh)
        send = channel.stream_unary(CLIENT_STREAM)
        await send(iter([b"warm"]), timeout=5)
        a.fail_next(1)
        b.fail_next(1)
        a.calls = b.calls = 0
        return decode_reply(await send(requests(), timeout=5))

    reply = asyncio.run(main())
    assert reply["received"] == ["1", "2", "3"]
    assert a.calls + b.calls == 3


def test_aio_server_stream_retries_until_its_first_message(mesh_env):
    import asyncio

    ads, mesh, a, b = mesh_env
    _routes(ads, route(cluster="c", retry_policy=_retry_policy()))

    async def main() -> tuple[list[int], list[int]]:
        channel = proxyless.grpc.aio.channel("xds:///svc:80", mesh=mesh)
        stream = channel.unary_stream("/proxyless.test.Echo/ServerStream")
        await channel.unary_unary(ECHO_METHOD)(b"warm", timeout=5)
        a.fail_next(1)
        b.fail_next(1)
        first = [decode_reply(m)["index"] async for m in stream(b"3", timeout=5)]
        call = stream(b"2", timeout=5)
        second = []
        while (m := await call.read()) is not grpc.aio.EOF:
            second.append(decode_reply(m)["index"])
        return first, second

    first, second = asyncio.run(main())
    assert first == [0, 1, 2]  # two failed attempts, then the stream
    assert second == [0, 1]
    rt = mesh.clusters.get("c")
    assert rt is not None and rt.breakers.default.requests == 0


def test_aio_server_stream_cancelled_during_the_backoff_starts_no_other_attempt(mesh_env):
    """Cancelled while it waits to retry (a 5 s backoff window), the stream
    ends CANCELLED at once and no attempt starts after the cancel."""
    import asyncio

    ads, mesh, a, b = mesh_env
    rp = _retry_policy()
    rp.retry_back_off.base_interval.FromSeconds(5)
    rp.retry_back_off.max_interval.FromSeconds(5)
    _routes(ads, route(cluster="c", retry_policy=rp))

    async def main() -> tuple[grpc.StatusCode, int, int]:
        channel = proxyless.grpc.aio.channel("xds:///svc:80", mesh=mesh)
        await channel.unary_unary(ECHO_METHOD)(b"warm", timeout=5)
        a.fail_always(grpc.StatusCode.UNAVAILABLE)
        b.fail_always(grpc.StatusCode.UNAVAILABLE)
        calls_before = a.calls + b.calls
        call = channel.unary_stream("/proxyless.test.Echo/ServerStream")(b"2", timeout=30)
        at_cancel = [0]

        async def cancel_in_the_backoff() -> None:
            while a.calls + b.calls == calls_before:  # the first attempt failed
                await asyncio.sleep(0.005)
            call.cancel()
            await asyncio.sleep(0.1)  # an attempt started before the cancel has arrived
            at_cancel[0] = a.calls + b.calls

        canceller = asyncio.ensure_future(cancel_in_the_backoff())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
        await canceller
        await asyncio.sleep(0.3)
        return info.value.code(), at_cancel[0], a.calls + b.calls

    code, at_cancel, after = asyncio.run(main())
    assert code is grpc.StatusCode.CANCELLED
    assert after == at_cancel  # nothing started after the cancel
    a.fail_always(None)
    b.fail_always(None)
    rt = mesh.clusters.get("c")
    assert rt is not None and rt.breakers.default.requests == 0
