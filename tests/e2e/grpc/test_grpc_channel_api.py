"""``proxyless.grpc.channel`` used as a ``grpc.Channel``: the four RPC shapes
(with ``with_call`` and ``future``), metadata and ``:authority`` as the
backend sees them, ``grpc.intercept_channel`` around it, ``with`` blocks, and
one ADS stream per Mesh whatever the number of channels and targets."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from tests.e2e.grpc.conftest import (
    SERVICE,
    TARGET,
    AnyMethodServer,
    Xds,
    backend_of,
    call_until,
)

import proxyless.grpc
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply
from proxyless.testing.resources import LISTENER_URL, header_match, route

SERVER_STREAM = "/proxyless.test.Echo/ServerStream"
CLIENT_STREAM = "/proxyless.test.Echo/ClientStream"
BIDI_STREAM = "/proxyless.test.Echo/BidiStream"


@pytest.fixture
def ch(
    xds: Xds, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> proxyless.grpc.XdsChannel:
    (a,) = backends("a")
    xds.simple(SERVICE, [a])
    channel = proxyless.grpc.channel(TARGET, mesh=mesh)
    channel.unary_unary(ECHO_METHOD)(b"warm-up", timeout=10)
    return channel


def test_unary_unary_call_with_call_and_future(ch: proxyless.grpc.XdsChannel) -> None:
    mc = ch.unary_unary(ECHO_METHOD)
    assert decode_reply(mc(b"one", timeout=5))["echo"] == "one"

    reply, call = mc.with_call(b"two", timeout=5)
    assert decode_reply(reply)["echo"] == "two"
    assert call.code() is grpc.StatusCode.OK

    future = mc.future(b"three", timeout=5)
    assert decode_reply(future.result(timeout=5))["echo"] == "three"
    assert future.code() is grpc.StatusCode.OK


def test_unary_stream(ch: proxyless.grpc.XdsChannel) -> None:
    replies = [decode_reply(r) for r in ch.unary_stream(SERVER_STREAM)(b"3", timeout=5)]
    assert [r["index"] for r in replies] == [0, 1, 2]
    assert {r["backend"] for r in replies} == {"a"}


def test_stream_unary_call_with_call_and_future(ch: proxyless.grpc.XdsChannel) -> None:
    mc = ch.stream_unary(CLIENT_STREAM)
    assert decode_reply(mc(iter([b"a", b"b", b"c"]), timeout=5))["received"] == ["a", "b", "c"]

    reply, call = mc.with_call(iter([b"d"]), timeout=5)
    assert decode_reply(reply)["received"] == ["d"]
    assert call.code() is grpc.StatusCode.OK

    future = mc.future(iter([b"e", b"f"]), timeout=5)
    assert decode_reply(future.result(timeout=5))["received"] == ["e", "f"]


def test_stream_stream(ch: proxyless.grpc.XdsChannel) -> None:
    replies = [
        decode_reply(r) for r in ch.stream_stream(BIDI_STREAM)(iter([b"x", b"y"]), timeout=5)
    ]
    assert [r["echo"] for r in replies] == ["x", "y"]


def test_metadata_reaches_the_backend(ch: proxyless.grpc.XdsChannel) -> None:
    reply = decode_reply(
        ch.unary_unary(ECHO_METHOD)(b"x", timeout=5, metadata=(("x-request-id", "r-1"),))
    )
    assert reply["metadata"]["x-request-id"] == "r-1"


def test_backend_sees_the_target_name_as_authority(
    xds: Xds, mesh: Mesh, any_servers: Callable[..., list[AnyMethodServer]]
) -> None:
    (server,) = any_servers("a")
    xds.simple(SERVICE, [server])  # type: ignore[list-item]
    channel = proxyless.grpc.channel(TARGET, mesh=mesh)
    reply = json.loads(channel.unary_unary("/a.B/C")(b"", timeout=10))
    assert reply["authority"] == SERVICE


class _AddMetadata(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Adds ``x-env: canary`` to every unary call."""

    def __init__(self) -> None:
        self.calls = 0

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls += 1
        metadata = [*(details.metadata or ()), ("x-env", "canary")]
        # grpc passes its own ClientCallDetails namedtuple.
        return continuation(details._replace(metadata=metadata), request)


def test_intercept_channel_wraps_the_proxyless_channel(
    xds: Xds, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> None:
    """Metadata added by an interceptor is seen by routing (header route)."""
    stable, canary = backends("stable", "canary")
    xds.cluster("stable", [stable.address])
    xds.cluster("canary", [canary.address])
    xds.service(
        SERVICE,
        [
            route(prefix="/", headers=[header_match("x-env", exact="canary")], cluster="canary"),
            route(prefix="/", cluster="stable"),
        ],
    )
    plain = proxyless.grpc.channel(TARGET, mesh=mesh)
    call_until(plain.unary_unary(ECHO_METHOD), "stable")
    interceptor = _AddMetadata()
    wrapped = grpc.intercept_channel(plain, interceptor)
    for _ in range(5):
        reply = decode_reply(wrapped.unary_unary(ECHO_METHOD, None, None)(b"x", timeout=5))
        assert reply["backend"] == "canary"
        assert reply["metadata"]["x-env"] == "canary"
    assert interceptor.calls == 5

    # The same interceptor passed in when the channel is made.
    given = _AddMetadata()
    ch = proxyless.grpc.channel(TARGET, mesh=mesh, interceptors=[given])
    reply = decode_reply(ch.unary_unary(ECHO_METHOD)(b"x", timeout=5))
    assert reply["backend"] == "canary" and given.calls == 1


def test_channel_as_context_manager(
    xds: Xds, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> None:
    (a,) = backends("a")
    xds.simple(SERVICE, [a])
    with proxyless.grpc.channel(TARGET, mesh=mesh) as channel:
        mc = channel.unary_unary(ECHO_METHOD)
        assert backend_of(mc(b"x", timeout=10)) == "a"
    with pytest.raises(ValueError):
        mc(b"x", timeout=5)


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "aio"])
def test_channel_options_reach_the_endpoint_connections(
    xds: Xds, mesh: Mesh, backends: Callable[..., list[EchoServer]], aio: bool
) -> None:
    """``options`` apply to every endpoint connection: a receive limit below
    the reply's size fails the call with RESOURCE_EXHAUSTED, while a channel
    without it gets the reply."""
    import asyncio

    (a,) = backends("a")
    xds.simple(SERVICE, [a])
    small = [("grpc.max_receive_message_length", 8)]
    if aio:

        async def call(options: Any) -> bytes:
            ch = proxyless.grpc.aio.channel(TARGET, mesh=mesh, options=options)
            try:
                reply: bytes = await ch.unary_unary(ECHO_METHOD)(b"x", timeout=10)
                return reply
            finally:
                await ch.close()

        assert backend_of(asyncio.run(call(None))) == "a"
        with pytest.raises(grpc.RpcError) as info:
            asyncio.run(call(small))
    else:
        assert (
            backend_of(
                proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(ECHO_METHOD)(b"x", timeout=10)
            )
            == "a"
        )
        limited = proxyless.grpc.channel(TARGET, mesh=mesh, options=small)
        with pytest.raises(grpc.RpcError) as info:
            limited.unary_unary(ECHO_METHOD)(b"x", timeout=10)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]


def test_two_targets_share_one_ads_stream(
    xds: Xds, ads: AdsServer, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> None:
    one, two = backends("one", "two")
    xds.cluster("c1", [one.address])
    xds.cluster("c2", [two.address])
    xds.service("one:80", [route(prefix="/", cluster="c1")])
    xds.service("two:80", [route(prefix="/", cluster="c2")])
    ch1 = proxyless.grpc.channel("xds:///one:80", mesh=mesh)
    ch2 = proxyless.grpc.channel("xds:///two:80", mesh=mesh)
    assert backend_of(ch1.unary_unary(ECHO_METHOD)(b"x", timeout=10)) == "one"
    assert backend_of(ch2.unary_unary(ECHO_METHOD)(b"x", timeout=10)) == "two"
    assert ads.streams_opened == 1
    assert ads.open_streams == 1


def test_first_call_waits_for_the_config(
    xds: Xds, ads: AdsServer, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> None:
    """A call made before the control plane has sent anything waits for the
    config (within its deadline) instead of failing."""
    (a,) = backends("a")
    channel = proxyless.grpc.channel(TARGET, mesh=mesh)
    outcome: list[object] = []

    def first() -> None:
        try:
            outcome.append(backend_of(channel.unary_unary(ECHO_METHOD)(b"x", timeout=10)))
        except Exception as exc:  # reported below, whatever its type
            outcome.append(exc)

    thread = threading.Thread(target=first, daemon=True)
    thread.start()
    ads.wait_for(lambda r: r.type_url == LISTENER_URL and SERVICE in r.resource_names, timeout=10)
    assert outcome == []
    xds.simple(SERVICE, [a])
    thread.join(10)
    assert outcome == ["a"]
