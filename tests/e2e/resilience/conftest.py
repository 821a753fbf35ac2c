"""Fixtures for end-to-end tests of the resilience layer on the gRPC channel.

Everything is real and on 127.0.0.1. From ``tests/e2e/conftest.py``: the
ADS server, gRPC echo backends that fail or stall on demand
(:class:`proxyless.testing.backends.EchoServer`), ``echo`` and the fake
clock. Here: a :class:`proxyless.mesh.Mesh` with that
:class:`~proxyless.testing.FakeClock` (outlier-detection sweeps and ejection
times move only when a test advances it) and a seeded RNG.

:class:`Service` publishes one service: listener ``svc:80`` (optionally with
HTTP fault filters) -> route configuration ``svc:80-routes`` -> cluster
``c`` -> endpoints, built with :mod:`proxyless.testing.resources` and
extra protos for retry policies, circuit breakers and outlier detection.
Every wait here is bounded in time and count.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from google.protobuf import wrappers_pb2
from tests.e2e.conftest import PUSH_WAIT, SERVICE, TARGET
from tests.e2e.conftest import backend_of as backend_of
from tests.e2e.conftest import fault_filter as fault_filter
from tests.e2e.conftest import wait_until as wait_until

from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.runtime.cluster import ClusterRuntime
from proxyless.testing import FakeClock
from proxyless.testing.backends import EchoServer
from proxyless.testing.resources import (
    CLUSTER_URL,
    ENDPOINT_URL,
    LISTENER_URL,
    ROUTE_URL,
    cluster,
    duration,
    endpoints,
    listener,
    route,
    route_config,
)

CLUSTER = "c"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
SERVER_STREAM_METHOD = "/proxyless.test.Echo/ServerStream"
CLIENT_STREAM_METHOD = "/proxyless.test.Echo/ClientStream"

Echo = Callable[..., bytes]


# -- proto builders -------------------------------------------------------------------


def retry_policy(
    retry_on: str = "unavailable",
    num_retries: int | None = 2,
    *,
    per_try_timeout: float | None = None,
    previous_hosts: bool = False,
    host_selection_max_attempts: int = 0,
    base_interval: float | None = None,
    max_interval: float | None = None,
) -> route_components_pb2.RetryPolicy:
    """An Envoy route ``RetryPolicy``."""
    p = route_components_pb2.RetryPolicy(retry_on=retry_on)
    if num_retries is not None:
        p.num_retries.value = num_retries
    if per_try_timeout is not None:
        p.per_try_timeout.CopyFrom(duration(per_try_timeout))
    if previous_hosts:
        predicate = p.retry_host_predicate.add(name=PREVIOUS_HOSTS)
        predicate.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    if host_selection_max_attempts:
        p.host_selection_retry_max_attempts = host_selection_max_attempts
    if base_interval is not None:
        p.retry_back_off.base_interval.CopyFrom(duration(base_interval))
        if max_interval is not None:
            p.retry_back_off.max_interval.CopyFrom(duration(max_interval))
    return p


def breaker_cluster(
    name: str = CLUSTER,
    *,
    max_requests: int | None = None,
    budget_percent: float | None = None,
    min_retry_concurrency: int | None = None,
    outlier: outlier_detection_pb2.OutlierDetection | None = None,
    lb: str = "round_robin",
) -> cluster_pb2.Cluster:
    """An EDS cluster with a DEFAULT-priority threshold (and retry budget when asked)."""
    c = cluster(name, lb=lb, outlier=outlier)
    if max_requests is None and budget_percent is None and min_retry_concurrency is None:
        return c
    t = c.circuit_breakers.thresholds.add(priority=0)
    if max_requests is not None:
        t.max_requests.value = max_requests
    if budget_percent is not None or min_retry_concurrency is not None:
        t.retry_budget.SetInParent()
        if budget_percent is not None:
            t.retry_budget.budget_percent.value = budget_percent
        if min_retry_concurrency is not None:
            t.retry_budget.min_retry_concurrency.value = min_retry_concurrency
    return c


def outlier_detection(
    *,
    consecutive_5xx: int = 3,
    interval: float = 1.0,
    base_ejection_time: float = 10.0,
    max_ejection_time: float | None = None,
    max_ejection_percent: int = 100,
) -> outlier_detection_pb2.OutlierDetection:
    od = outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=wrappers_pb2.UInt32Value(value=consecutive_5xx),
        enforcing_consecutive_5xx=wrappers_pb2.UInt32Value(value=100),
        interval=duration(interval),
        base_ejection_time=duration(base_ejection_time),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=max_ejection_percent),
    )
    if max_ejection_time is not None:
        od.max_ejection_time.CopyFrom(duration(max_ejection_time))
    return od


# -- publishing -----------------------------------------------------------------------


class Service:
    """Publishes ``svc:80`` -> route -> cluster ``c`` on an :class:`AdsServer`."""

    def __init__(self, ads: AdsServer) -> None:
        self.ads = ads

    def publish(
        self,
        backends: Sequence[EchoServer] | Sequence[str],
        *,
        cluster_proto: cluster_pb2.Cluster | None = None,
        routes: Sequence[route_components_pb2.Route] | None = None,
        http_filters: Sequence[hcm_pb2.HttpFilter] = (),
        **route_kw: Any,
    ) -> None:
        """Endpoints, cluster, route configuration and listener, in that order."""
        addresses = [b if isinstance(b, str) else b.address for b in backends]
        self.ads.set_resources(ENDPOINT_URL, {CLUSTER: endpoints(CLUSTER, addresses)})
        self.set_cluster(cluster_proto if cluster_proto is not None else cluster(CLUSTER))
        self.set_routes(
            routes if routes is not None else [route(prefix="/", cluster=CLUSTER, **route_kw)]
        )
        self.set_listener(http_filters)

    def set_cluster(self, proto: cluster_pb2.Cluster) -> None:
        self.ads.set_resources(CLUSTER_URL, {CLUSTER: proto})

    def set_routes(self, routes: Sequence[route_components_pb2.Route]) -> None:
        rc = f"{SERVICE}-routes"
        self.ads.set_resources(ROUTE_URL, {rc: route_config(rc, SERVICE, list(routes))})

    def set_listener(self, http_filters: Sequence[hcm_pb2.HttpFilter] = ()) -> None:
        self.ads.set_resources(
            LISTENER_URL,
            {SERVICE: listener(SERVICE, f"{SERVICE}-routes", http_filters=http_filters)},
        )


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
def service(ads: AdsServer) -> Service:
    return Service(ads)


@pytest.fixture
def mesh(make_mesh: Callable[..., Mesh], clock: FakeClock) -> Mesh:
    """A Mesh on the test's ADS server with the fake clock and a seeded RNG
    (closed by ``make_mesh``, which then empties the endpoint channel pools)."""
    return make_mesh(clock=clock, rng=random.Random(1234))


def runtime(mesh: Mesh, name: str = CLUSTER) -> ClusterRuntime:
    rt = mesh.clusters.get(name)
    assert rt is not None, f"cluster {name!r} has no runtime"
    return rt


def wait_served(echo: Echo, backends: Sequence[EchoServer], *, attempts: int = 500) -> None:
    """Call until a call succeeds (the config reached the data path), bounded."""
    deadline = time.monotonic() + PUSH_WAIT
    last: Exception | None = None
    for _ in range(attempts):
        try:
            echo(b"warm-up", timeout=5)
            return
        except grpc.RpcError as exc:
            last = exc
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    raise AssertionError(f"no call succeeded through {TARGET}: {last!r}")


def reset_counts(servers: Sequence[EchoServer]) -> None:
    for s in servers:
        s.calls = 0
        s.max_in_flight = 0
