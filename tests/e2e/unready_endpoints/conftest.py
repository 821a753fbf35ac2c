"""Fixtures for a cluster whose endpoints cannot all take a call.

Everything is real and on 127.0.0.1: the ADS server and Meshes of
``tests/e2e/conftest.py``, gRPC echo backends
(:class:`proxyless.testing.backends.EchoServer`), HTTP echo backends
(``tests/e2e/httpx``), and two plain TCP servers that are not backends:

- :class:`SilentServer` accepts every connection and never answers (no
  HTTP/2 settings, no HTTP response) until it stops;
- :class:`ResettingServer` accepts every connection and closes it at once
  with ``SO_LINGER`` 0, so the client gets a TCP reset.

:func:`publish` makes the issue's three-endpoint case: the service's route
retries on ``connect-failure,reset,unavailable`` with a 300 ms per-try
timeout to a cluster with a 250 ms ``connect_timeout``, and a second
service, ``good``, sends to the good endpoint alone (the baseline measured
side by side). Every wait and loop is bounded in time and count.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from tests.e2e.httpx.conftest import Service

from proxyless.testing.resources import cluster, duration, route

#: The route's retry conditions and timeouts (the issue's case).
RETRY_ON = "connect-failure,reset,unavailable"
PER_TRY_TIMEOUT = 0.3
CONNECT_TIMEOUT = 0.25
#: Attempts per call: the first call may meet the silent and the resetting
#: endpoint before their connections are known, and then the good one.
NUM_RETRIES = 2
#: Sequential calls per run (the issue's figure).
CALLS = 300


class _TcpServer:
    """A listening socket on 127.0.0.1 whose accepted connections are
    handed to :meth:`_accepted`; stops within 0.2 s."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=repr(self), daemon=True)

    def start(self) -> _TcpServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address}, accepted={self.accepted})"


class SilentServer(_TcpServer):
    """Accepts connections and holds them without a byte of answer."""

    def __init__(self) -> None:
        super().__init__()
        self._held: list[socket.socket] = []

    def _accepted(self, conn: socket.socket) -> None:
        self._held.append(conn)

    def stop(self) -> None:
        super().stop()
        for conn in self._held:
            conn.close()


class ResettingServer(_TcpServer):
    """Accepts connections and resets each at once (``SO_LINGER`` 0)."""

    def _accepted(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


@pytest.fixture
def bad_endpoints() -> Iterator[tuple[SilentServer, ResettingServer]]:
    """A silent and a resetting server, stopped at teardown."""
    silent = SilentServer().start()
    resetting = ResettingServer().start()
    yield silent, resetting
    silent.stop()
    resetting.stop()


@pytest.fixture
def service(ads: Any) -> Service:
    return Service(ads)


def retry_policy(num_retries: int = NUM_RETRIES) -> Any:
    from envoy.config.route.v3 import route_components_pb2

    p = route_components_pb2.RetryPolicy(retry_on=RETRY_ON)
    p.num_retries.value = num_retries
    p.per_try_timeout.CopyFrom(duration(PER_TRY_TIMEOUT))
    return p


def cluster_with_timeout(
    name: str,
    outlier: outlier_detection_pb2.OutlierDetection | None = None,
    panic_threshold: float | None = None,
) -> cluster_pb2.Cluster:
    c = cluster(name, outlier=outlier)
    c.connect_timeout.CopyFrom(duration(CONNECT_TIMEOUT))
    if panic_threshold is not None:
        c.common_lb_config.healthy_panic_threshold.value = panic_threshold
    return c


def publish(
    service: Service,
    good: str,
    bad: Sequence[str],
    *,
    names: tuple[str, str],
    outlier: outlier_detection_pb2.OutlierDetection | None = None,
    num_retries: int = NUM_RETRIES,
    panic_threshold: float | None = None,
) -> None:
    """``names[0]`` -> cluster ``three`` (``bad`` and ``good``, the bad ones
    first), ``names[1]`` -> cluster ``good`` (``good`` alone); both routes
    with the issue's retry policy."""
    service.cluster("three", [*bad, good], cluster_with_timeout("three", outlier, panic_threshold))
    service.cluster("good", [good], cluster_with_timeout("good"))
    policy = retry_policy(num_retries)
    service.routes_for(names[0], [route(prefix="/", cluster="three", retry_policy=policy)])
    service.routes_for(names[1], [route(prefix="/", cluster="good", retry_policy=policy)])


def p99(latencies: Sequence[float]) -> float:
    """The nearest-rank 99th percentile."""
    ordered = sorted(latencies)
    return ordered[max(0, -(-len(ordered) * 99 // 100) - 1)]


def side_by_side(
    call: Callable[[str], None], targets: tuple[str, str], count: int = CALLS
) -> tuple[list[float], list[float], list[BaseException]]:
    """``count`` calls to each target, alternating; their latencies and the failures."""
    import time

    measured: tuple[list[float], list[float]] = ([], [])
    failures: list[BaseException] = []
    for _ in range(count):
        for index, target in enumerate(targets):
            started = time.perf_counter()
            try:
                call(target)
            except Exception as exc:
                failures.append(exc)
            measured[index].append(time.perf_counter() - started)
    return measured[0], measured[1], failures
