"""``proxyless.grpc.aio.channel`` routes like the sync channel for the same
config (weighted split, header route), and serves the four RPC shapes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import grpc
import pytest
from tests.e2e.grpc.conftest import SERVICE, TARGET, Xds, backend_of, count_backends, weights_of

import proxyless.grpc
import proxyless.grpc.aio
from proxyless import errors
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply
from proxyless.testing.resources import header_match, route

CALLS = 1000


@pytest.fixture
def split_service(xds: Xds, backends: Callable[..., list[EchoServer]]) -> None:
    a, b, canary = backends("a", "b", "canary")
    xds.cluster("ca", [a.address])
    xds.cluster("cb", [b.address])
    xds.cluster("canary", [canary.address])
    xds.service(
        SERVICE,
        [
            route(prefix="/", headers=[header_match("x-env", exact="canary")], cluster="canary"),
            route(prefix="/", weighted={"ca": 70, "cb": 30}),
        ],
    )


async def _aio_routing(mesh: Mesh) -> tuple[Counter[str], set[str]]:
    async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
        mc = ch.unary_unary(ECHO_METHOD)
        await mc(b"warm-up", timeout=10)
        counts: Counter[str] = Counter()
        for start in range(0, CALLS, 50):
            batch = [mc(b"x", timeout=5) for _ in range(min(50, CALLS - start))]
            counts.update(backend_of(r) for r in await asyncio.gather(*batch))
        header = {
            backend_of(await mc(b"x", timeout=5, metadata=(("x-env", "canary"),)))
            for _ in range(10)
        }
    return counts, header


def test_sync_and_aio_route_alike(split_service: None, mesh: Mesh) -> None:
    sync = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(ECHO_METHOD)
    sync(b"warm-up", timeout=10)
    sync_shares = weights_of(count_backends(sync, CALLS))
    sync_header = {
        backend_of(sync(b"x", timeout=5, metadata=(("x-env", "canary"),))) for _ in range(10)
    }

    aio_counts, aio_header = asyncio.run(_aio_routing(mesh))
    aio_shares = weights_of(aio_counts)

    assert set(sync_shares) == set(aio_shares) == {"a", "b"}, (sync_shares, aio_shares)
    for name, expected in (("a", 70.0), ("b", 30.0)):
        assert abs(sync_shares[name] - expected) <= 5.0, sync_shares
        assert abs(aio_shares[name] - expected) <= 5.0, aio_shares
        assert abs(sync_shares[name] - aio_shares[name]) <= 7.0, (sync_shares, aio_shares)
    assert sync_header == aio_header == {"canary"}


async def _aio_shapes(mesh: Mesh) -> None:
    async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
        reply = decode_reply(
            await ch.unary_unary(ECHO_METHOD)(b"u", timeout=10, metadata=[("x-k", "v")])
        )
        assert reply["echo"] == "u"
        assert reply["metadata"]["x-k"] == "v"

        got = [
            decode_reply(r)["index"]
            async for r in ch.unary_stream("/proxyless.test.Echo/ServerStream")(b"3", timeout=5)
        ]
        assert got == [0, 1, 2]

        async def requests() -> object:
            for item in (b"p", b"q"):
                yield item

        reply = decode_reply(
            await ch.stream_unary("/proxyless.test.Echo/ClientStream")(requests(), timeout=5)
        )
        assert reply["received"] == ["p", "q"]

        bidi = ch.stream_stream("/proxyless.test.Echo/BidiStream")(timeout=5)
        await bidi.write(b"m")
        first = decode_reply(await bidi.read())
        await bidi.done_writing()
        assert first["echo"] == "m"
        assert await bidi.code() is grpc.StatusCode.OK


def test_aio_rpc_shapes(xds: Xds, mesh: Mesh, backends: Callable[..., list[EchoServer]]) -> None:
    (a,) = backends("a")
    xds.simple(SERVICE, [a])
    asyncio.run(_aio_shapes(mesh))


async def _aio_unroutable(mesh: Mesh) -> None:
    async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ch.unary_unary(ECHO_METHOD)(b"x", timeout=10)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert TARGET in (info.value.details() or "")
        assert isinstance(getattr(info.value, "proxyless_error", None), errors.NoMatchingRoute)


def test_aio_unroutable_call_fails_unavailable(
    xds: Xds, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> None:
    (a,) = backends("a")
    xds.cluster("c", [a.address])
    xds.service(SERVICE, [route(path="/only.This/Method", cluster="c")])
    asyncio.run(_aio_unroutable(mesh))
    assert a.calls == 0
