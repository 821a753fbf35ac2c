"""gRPC through a cluster of a good, a silent and a resetting endpoint.

The issue's case: round robin over three endpoints, one of which accepts TCP
and never answers and one of which resets every connection; the route
retries on ``connect-failure,reset,unavailable`` with a 300 ms per-try
timeout. The pickers skip endpoints whose connections are not READY while
the good one is, so 300 sequential calls through sync gRPC and through
grpc.aio all succeed, and their p99 stays near the good endpoint's own p99,
measured side by side on a second service that lists the good endpoint
alone. The assertion is a ratio with a floor for a loaded machine: p99 <=
max(2 x baseline p99, baseline p99 + 20 ms); both figures are printed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
from tests.e2e.unready_endpoints.conftest import (
    CALLS,
    ResettingServer,
    Service,
    SilentServer,
    p99,
    publish,
    side_by_side,
)

import proxyless.grpc
import proxyless.grpc.aio
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer

NAMES = ("three:80", "good:80")


def _check(three: list[float], good: list[float], failures: list[BaseException], what: str) -> None:
    base = p99(good)
    got = p99(three)
    print(
        f"{what}: {len(three)} calls, {len(failures)} failed; p99 {got * 1000:.2f} ms "
        f"(good endpoint alone: {base * 1000:.2f} ms)"
    )
    assert not failures, f"{what}: {len(failures)} calls failed, first: {failures[0]!r}"
    assert got <= max(2 * base, base + 0.020), (got, base)


def test_sync_channel_skips_endpoints_not_ready(
    make_mesh: Callable[..., Mesh],
    service: Service,
    backends: Callable[..., list[EchoServer]],
    bad_endpoints: tuple[SilentServer, ResettingServer],
) -> None:
    (good,) = backends("good")
    silent, resetting = bad_endpoints
    publish(service, good.address, [silent.address, resetting.address], names=NAMES)
    mesh = make_mesh()
    stubs = {
        name: proxyless.grpc.channel(f"xds:///{name}", mesh=mesh).unary_unary(ECHO_METHOD)
        for name in NAMES
    }

    def call(name: str) -> None:
        stubs[name](b"x", timeout=5)

    three, alone, failures = side_by_side(call, NAMES)
    _check(three, alone, failures, "sync gRPC")
    states = {es.address: es.connectivity for es in mesh.clusters.get("three").endpoints()}
    assert states[good.address] == "READY", states
    assert states[resetting.address] in ("CONNECTING", "TRANSIENT_FAILURE"), states
    assert states[silent.address] in ("CONNECTING", "TRANSIENT_FAILURE"), states


def test_aio_channel_skips_endpoints_not_ready(
    make_mesh: Callable[..., Mesh],
    service: Service,
    backends: Callable[..., list[EchoServer]],
    bad_endpoints: tuple[SilentServer, ResettingServer],
) -> None:
    (good,) = backends("good")
    silent, resetting = bad_endpoints
    publish(service, good.address, [silent.address, resetting.address], names=NAMES)
    mesh = make_mesh()

    async def main() -> tuple[list[float], list[float], list[BaseException]]:
        channels = [proxyless.grpc.aio.channel(f"xds:///{name}", mesh=mesh) for name in NAMES]
        stubs = [ch.unary_unary(ECHO_METHOD) for ch in channels]
        measured: tuple[list[float], list[float]] = ([], [])
        failures: list[BaseException] = []
        for _ in range(CALLS):
            for index, stub in enumerate(stubs):
                started = time.perf_counter()
                try:
                    await stub(b"x", timeout=5)
                except grpc.RpcError as exc:
                    failures.append(exc)
                measured[index].append(time.perf_counter() - started)
        for ch in channels:
            await ch.close()
        return measured[0], measured[1], failures

    three, alone, failures = asyncio.run(main())
    _check(three, alone, failures, "grpc.aio")
