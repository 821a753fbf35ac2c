"""Fixtures and helpers every end-to-end folder shares.

Everything is real and on 127.0.0.1: an ADS server
(:class:`proxyless.controlplane.server.AdsServer`), gRPC echo backends
(:class:`proxyless.testing.backends.EchoServer`) and Meshes pointed at the
ADS server. Every wait is bounded in time.

- ``ads``: a started ADS server, stopped at teardown;
- ``clock``: a :class:`~proxyless.testing.FakeClock` for a Mesh's timers;
- ``make_mesh(**mesh_kwargs)``: Meshes on ``ads`` (node id ``e2e-<folder>``),
  closed at teardown, after which the process-wide gRPC endpoint channel
  pools are emptied so no test inherits a channel to a port another used;
- ``backends("a", "b")``: one EchoServer per name, stopped at teardown
  (``httpx/`` overrides it with HTTP echo backends);
- ``echo``: unary echo on :data:`TARGET` through a sync proxyless channel on
  the folder's ``mesh`` fixture.

Folders import the helpers (:func:`wait_until`, :func:`backend_of`,
:func:`bootstrap_for`, :func:`fault_filter`) from here and keep only what is specific to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2

import proxyless.grpc
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing import FakeClock
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply

#: The gRPC service the echo tests talk to unless they need more than one.
SERVICE = "svc:80"
TARGET = f"xds:///{SERVICE}"

#: Upper bound of any wait for the data path to follow a config push.
PUSH_WAIT = 10.0

FAULT_FILTER = "envoy.filters.http.fault"


def wait_until(cond: Callable[[], bool], *, timeout: float = PUSH_WAIT, what: str) -> None:
    """Poll ``cond`` until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.005)


def backend_of(reply: bytes) -> str:
    """The name of the EchoServer that produced ``reply``."""
    name: str = decode_reply(reply)["backend"]
    return name


def bootstrap_for(ads: AdsServer, node_id: str = "e2e", **extra: Any) -> dict[str, Any]:
    """A bootstrap dict for one insecure xDS server, ``ads``."""
    return {
        "xds_servers": [{"server_uri": ads.target, "channel_creds": [{"type": "insecure"}]}],
        "node": {"id": node_id},
        **extra,
    }


def fault_filter(fault: fault_pb2.HTTPFault | None = None) -> hcm_pb2.HttpFilter:
    """The HTTP fault filter with ``fault`` (default: an empty one), for a listener."""
    packed = any_pb2.Any()
    packed.Pack(fault or fault_pb2.HTTPFault())
    return hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=packed)


def close_endpoint_pools() -> None:
    """Empty the process-wide gRPC endpoint channel pools (sync and aio)."""
    from proxyless.grpc._pool import AIO_POOL, POOL

    POOL.close_all()
    AIO_POOL.close_all()


@pytest.fixture
def ads() -> Iterator[AdsServer]:
    server = AdsServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_mesh(ads: AdsServer, request: pytest.FixtureRequest) -> Iterator[Callable[..., Mesh]]:
    """Build Meshes on the test's ADS server; all are closed at teardown,
    then the endpoint channel pools are emptied."""
    node_id = f"e2e-{request.path.parent.name}"
    made: list[Mesh] = []

    def make(**kwargs: Any) -> Mesh:
        mesh = Mesh(bootstrap_for(ads, node_id), **kwargs)
        made.append(mesh)
        return mesh

    yield make
    for mesh in made:
        mesh.close()
    close_endpoint_pools()


@pytest.fixture
def backends() -> Iterator[Callable[..., list[EchoServer]]]:
    """``backends("a", "b")`` starts one EchoServer per name; all stop at teardown."""
    started: list[EchoServer] = []

    def start(*names: str, max_workers: int = 16) -> list[EchoServer]:
        servers = [EchoServer(n, max_workers=max_workers).start() for n in names]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.stop(0)


@pytest.fixture
def echo(mesh: Mesh) -> Callable[..., bytes]:
    """Unary echo on ``xds:///svc:80`` through a sync proxyless channel."""
    ch = proxyless.grpc.channel(TARGET, mesh=mesh)
    fn: Callable[..., bytes] = ch.unary_unary(ECHO_METHOD)
    return fn
