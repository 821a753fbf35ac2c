"""Fixtures for network-fault tests of the httpx transports.

The HTTP/1.1 echo backends, ``service`` (``svc:8080`` -> cluster ``c``),
the Mesh on a fake clock and ``make_client`` come from
``tests/e2e/httpx/conftest.py``; the fault proxy, the black hole and the
call figures from ``tests/e2e/faults/conftest.py``. The route retries on
``connect-failure,reset,5xx`` with a per-try timeout, and the cluster has a
``connect_timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from envoy.config.cluster.v3 import cluster_pb2
from tests.e2e.faults.conftest import CONNECT_TIMEOUT, NUM_RETRIES, PER_TRY, Figures
from tests.e2e.faults.conftest import black_hole as black_hole
from tests.e2e.faults.conftest import fault_cluster as fault_cluster
from tests.e2e.faults.conftest import fault_proxy as fault_proxy
from tests.e2e.httpx.conftest import URL, HttpEcho, Service, retry_policy
from tests.e2e.httpx.conftest import backends as backends
from tests.e2e.httpx.conftest import client as client
from tests.e2e.httpx.conftest import make_client as make_client
from tests.e2e.httpx.conftest import mesh as mesh
from tests.e2e.httpx.conftest import service as service
from tests.e2e.httpx.conftest import wait_until as wait_until

from proxyless.testing.resources import route

HTTP_RETRY_ON = "connect-failure,reset,5xx"

__all__ = ["CONNECT_TIMEOUT", "PER_TRY", "URL", "HttpEcho", "Service"]


def publish_http(
    service: Service,
    addresses: list[str],
    *,
    cluster_proto: cluster_pb2.Cluster | None = None,
    per_try: float | None = PER_TRY,
    previous_hosts: bool = False,
) -> None:
    """``svc:8080`` -> ``c`` over ``addresses`` with the fault route and cluster."""
    policy = retry_policy(
        HTTP_RETRY_ON, NUM_RETRIES, per_try_timeout=per_try, previous_hosts=previous_hosts
    )
    service.cluster("c", addresses, cluster_proto or fault_cluster())
    service.routes_for("svc:8080", [route(prefix="/", cluster="c", retry_policy=policy)])


def http_calls(client: httpx.Client, n: int, *, timeout: float = 5.0) -> Figures:
    fig = Figures()
    for _ in range(n):
        start = time.monotonic()
        try:
            r = client.get(f"{URL}/x", timeout=timeout)
            if r.status_code == 200:
                fig.served[r.headers["x-backend"]] += 1
            else:
                fig.failed[str(r.status_code)] += 1
        except httpx.HTTPError as exc:
            fig.failed[type(exc).__name__] += 1
            fig.errors.append(str(exc))
        fig.latencies.append(time.monotonic() - start)
    return fig


def wait_http_served(client: httpx.Client) -> None:
    def ok() -> bool:
        try:
            return client.get(f"{URL}/warm", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ok, what="a first call served through svc:8080")


Clients = Callable[..., httpx.Client]
