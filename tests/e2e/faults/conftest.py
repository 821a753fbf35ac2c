"""Fixtures for network-fault tests of the data path.

Everything is real and on 127.0.0.1: the ADS server and gRPC echo backends
of ``tests/e2e/conftest.py``, the publishing helpers of
``tests/e2e/resilience/conftest.py`` (``svc:80`` -> cluster ``c``), and
:class:`proxyless.testing.faultproxy.FaultProxy` in front of a backend to
inject a fault (:class:`~proxyless.testing.faultproxy.BlackHole` for a
connect that hangs). The route retries on ``connect-failure,reset,unavailable``
with a per-try timeout, and the cluster has a ``connect_timeout``: the
three knobs a user sets against a bad network. Every wait is bounded.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.route.v3 import route_components_pb2
from tests.e2e.conftest import backend_of
from tests.e2e.resilience.conftest import (
    CLUSTER,
    Service,
    retry_policy,
)
from tests.e2e.resilience.conftest import mesh as mesh
from tests.e2e.resilience.conftest import service as service
from tests.e2e.resilience.conftest import wait_served as wait_served

from proxyless.testing.faultproxy import BlackHole, Fault, FaultProxy
from proxyless.testing.resources import cluster, duration

#: the route's per-try timeout and the cluster's connect timeout (the issue's figures)
PER_TRY = 0.3
CONNECT_TIMEOUT = 0.25
RETRY_ON = "connect-failure,reset,unavailable"
NUM_RETRIES = 2
#: the caller's deadline: far above what the retries need
CALL_TIMEOUT = 5.0

#: ``PROXYLESS_LONG=1`` runs the long forms (the issue's 300 calls per fault)
LONG = os.environ.get("PROXYLESS_LONG") == "1"


def calls(short: int, long: int = 300) -> int:
    """How many calls a fault test makes: ``short`` in CI, ``long`` with PROXYLESS_LONG=1."""
    return long if LONG else short


def fault_cluster(
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    outlier: outlier_detection_pb2.OutlierDetection | None = None,
    max_retries: int | None = None,
) -> cluster_pb2.Cluster:
    """Cluster ``c`` with ``connect_timeout`` (and a DEFAULT-priority
    ``max_retries`` threshold when given; Envoy's default is 3)."""
    c = cluster(CLUSTER, outlier=outlier)
    c.connect_timeout.CopyFrom(duration(connect_timeout))
    if max_retries is not None:
        c.circuit_breakers.thresholds.add(priority=0).max_retries.value = max_retries
    return c


def fault_retries(per_try: float | None = PER_TRY) -> route_components_pb2.RetryPolicy:
    return retry_policy(RETRY_ON, NUM_RETRIES, per_try_timeout=per_try)


def publish_faulty(service: Service, addresses: list[str], **kw: object) -> None:
    """``svc:80`` -> ``c`` over ``addresses`` with the fault route and cluster."""
    service.publish(
        addresses,
        cluster_proto=kw.pop("cluster_proto", None) or fault_cluster(),  # type: ignore[arg-type]
        retry_policy=kw.pop("retry_policy", None) or fault_retries(),
        **kw,
    )


@dataclass
class Figures:
    """What N calls gave: who served, what failed, and how long each took."""

    served: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.latencies)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    def __str__(self) -> str:
        return (
            f"{sum(self.failed.values())}/{self.calls} failed {dict(self.failed)}, "
            f"served {dict(self.served)}, p50 {self.percentile(0.5) * 1000:.1f} ms, "
            f"p99 {self.percentile(0.99) * 1000:.1f} ms"
        )


def run_calls(echo: Callable[..., bytes], n: int, *, timeout: float = CALL_TIMEOUT) -> Figures:
    """``n`` sequential unary calls; every outcome and latency recorded."""
    fig = Figures()
    for _ in range(n):
        start = time.monotonic()
        try:
            fig.served[backend_of(echo(b"x", timeout=timeout))] += 1
        except grpc.RpcError as exc:
            fig.failed[exc.code().name] += 1  # type: ignore[attr-defined]
            fig.errors.append(exc.details())  # type: ignore[attr-defined]
        fig.latencies.append(time.monotonic() - start)
    return fig


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """``fault_proxy(backend.address, fault=...)``: closed at teardown."""
    made: list[FaultProxy] = []

    def make(upstream: str, fault: Fault | None = None) -> FaultProxy:
        p = FaultProxy(upstream, fault=fault)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    with BlackHole() as hole:
        yield hole
