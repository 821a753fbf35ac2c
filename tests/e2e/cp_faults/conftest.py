"""Fixtures for control-plane fault tests.

Real servers on 127.0.0.1: gRPC echo backends and the project's ADS server
(``tests/e2e/conftest.py``), and :class:`ScriptedAds`
(``tests/e2e/cp_faults/scripted_ads.py``), a grpcio ADS servicer that is
slow, silent, partial, huge, fast or drops streams when told to. Meshes run
on a :class:`~proxyless.testing.FakeClock`: the xDS client's reconnect
backoff and does-not-exist timers move only when a test advances it, so a
test can step through reconnects without sleeping. Every wait is bounded.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from tests.e2e.conftest import SERVICE, TARGET, backend_of, close_endpoint_pools, wait_until
from tests.e2e.cp_faults.scripted_ads import ScriptedAds

import proxyless.grpc
from proxyless.mesh import Mesh
from proxyless.testing import FakeClock
from proxyless.testing.backends import ECHO_METHOD
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

__all__ = ["SERVICE", "TARGET", "backend_of", "wait_until"]

CLUSTER = "c"
ROUTES = f"{SERVICE}-routes"
LONG = os.environ.get("PROXYLESS_LONG") == "1"


def good_config(addresses: list[str]) -> dict[str, dict[str, Any]]:
    """``svc:80`` -> route configuration -> cluster ``c`` -> ``addresses``."""
    return {
        LISTENER_URL: {SERVICE: listener(SERVICE, ROUTES)},
        ROUTE_URL: {ROUTES: route_config(ROUTES, SERVICE, [route(prefix="/", cluster=CLUSTER)])},
        CLUSTER_URL: {CLUSTER: cluster(CLUSTER)},
        ENDPOINT_URL: {CLUSTER: endpoints(CLUSTER, addresses)},
    }


def rss_bytes() -> int:
    """This process' resident set size, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def scripted() -> Iterator[ScriptedAds]:
    server = ScriptedAds().start()
    yield server
    server.stop()


@pytest.fixture
def scripted_mesh(scripted: ScriptedAds, clock: FakeClock) -> Iterator[Callable[..., Mesh]]:
    """Meshes on the scripted server with the fake clock; closed at teardown."""
    made: list[Mesh] = []

    def make(**kwargs: Any) -> Mesh:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("rng", random.Random(7))
        mesh = Mesh(
            {
                "xds_servers": [
                    {"server_uri": scripted.target, "channel_creds": [{"type": "insecure"}]}
                ],
                "node": {"id": "cp-faults"},
            },
            **kwargs,
        )
        made.append(mesh)
        return mesh

    yield make
    for mesh in made:
        mesh.close()
    close_endpoint_pools()


class Caller:
    """Unary echo calls on ``xds:///svc:80`` through one sync channel,
    counting outcomes; :meth:`background` keeps calling from a thread."""

    def __init__(self, mesh: Mesh) -> None:
        self._fn = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(ECHO_METHOD)
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def call(self, timeout: float = 5.0) -> bool:
        try:
            self._fn(b"x", timeout=timeout)
        except grpc.RpcError as exc:
            self.failed.append(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
            return False
        self.ok += 1
        return True

    def calls(self, n: int) -> None:
        for _ in range(n):
            self.call()

    def background(self, pause: float = 0.005) -> None:
        def run() -> None:
            deadline = time.monotonic() + 120
            while not self._stop.is_set() and time.monotonic() < deadline:
                self.call()
                self._stop.wait(pause)

        self._thread = threading.Thread(target=run, name="cp-faults-caller", daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def wait_served(self) -> None:
        wait_until(lambda: self.call(timeout=2.0), what=f"a call served through {TARGET}")
        self.failed.clear()
        self.ok = 0
