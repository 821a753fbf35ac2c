"""Fixtures for end-to-end tests of the gRPC data path.

The ADS server, the echo backends, ``make_mesh`` and ``echo`` come from
``tests/e2e/conftest.py``. Helpers here publish a service's config
(listener -> route configuration -> clusters -> endpoints) and wait, in
bounded loops, for the data path to follow it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2
from tests.e2e.conftest import (
    PUSH_WAIT,
    SERVICE,
    TARGET,
    backend_of,
    bootstrap_for,
    wait_until,
)

from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import EchoServer
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

__all__ = [
    "SERVICE",
    "TARGET",
    "AnyMethodServer",
    "Xds",
    "backend_of",
    "bootstrap_for",
    "call_until",
    "count_backends",
    "wait_until",
]


def count_backends(
    call: Callable[..., bytes],
    n: int,
    *,
    metadata: Sequence[tuple[str, str | bytes]] | None = None,
    timeout: float = 5.0,
) -> Counter[str]:
    """Make ``n`` calls and count which backend served each."""
    return Counter(backend_of(call(b"x", timeout=timeout, metadata=metadata)) for _ in range(n))


def call_until(
    call: Callable[..., bytes],
    backend: str,
    *,
    metadata: Sequence[tuple[str, str | bytes]] | None = None,
    attempts: int = 2000,
    timeout: float = PUSH_WAIT,
) -> None:
    """Call until ``backend`` serves a call (a config push took effect).

    Bounded both in calls and in time; failing calls count as "not yet"
    only when they are routing failures proxyless raised (the config the
    caller waits for may not have arrived), any other error propagates.
    """
    deadline = time.monotonic() + timeout
    seen: Counter[str] = Counter()
    for _ in range(attempts):
        try:
            got = backend_of(call(b"x", timeout=5, metadata=metadata))
        except grpc.RpcError as exc:
            if getattr(exc, "proxyless_error", None) is None:
                raise
            got = f"error:{type(exc.proxyless_error).__name__}"  # type: ignore[attr-defined]
        if got == backend:
            return
        seen[got] += 1
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    raise AssertionError(f"no call reached {backend!r} (seen: {dict(seen)})")


class Xds:
    """Publishes services on an :class:`AdsServer` with the test resource builders."""

    def __init__(self, ads: AdsServer) -> None:
        self.ads = ads
        self.listeners: dict[str, Any] = {}
        self.routes: dict[str, Any] = {}
        self.clusters: dict[str, cluster_pb2.Cluster] = {}
        self.eds: dict[str, endpoint_pb2.ClusterLoadAssignment] = {}

    def service(
        self,
        name: str,
        routes: Sequence[route_components_pb2.Route],
        *,
        domains: Sequence[str] | None = None,
        max_stream_duration: float | None = None,
    ) -> None:
        """Listener ``name`` -> route configuration ``name-routes`` with one
        virtual host for ``domains`` (default: ``[name]``)."""
        rc = f"{name}-routes"
        self.listeners[name] = listener(name, rc, max_stream_duration=max_stream_duration)
        self.routes[rc] = route_config(rc, list(domains or [name]), list(routes))
        self.ads.set_resources(ROUTE_URL, self.routes)
        self.ads.set_resources(LISTENER_URL, self.listeners)

    def cluster(
        self,
        name: str,
        addresses: Sequence[str] | Sequence[Sequence[str]] | None,
        *,
        lb: str = "round_robin",
        proto: cluster_pb2.Cluster | None = None,
        **eds: Any,
    ) -> None:
        """Cluster ``name`` (or ``proto``) and, unless ``addresses`` is None,
        its endpoints (``eds`` goes to :func:`endpoints`)."""
        if addresses is not None:
            self.endpoints(name, addresses, **eds)
        self.clusters[name] = proto if proto is not None else cluster(name, lb=lb)
        self.ads.set_resources(CLUSTER_URL, self.clusters)

    def endpoints(
        self,
        name: str,
        addresses: Sequence[str] | Sequence[Sequence[str]],
        **eds: Any,
    ) -> None:
        """Replace the endpoints of cluster ``name``."""
        self.eds[name] = endpoints(name, addresses, **eds)
        self.ads.set_resources(ENDPOINT_URL, self.eds)

    def remove_cluster(self, name: str) -> None:
        self.clusters.pop(name, None)
        self.ads.set_resources(CLUSTER_URL, self.clusters)

    def simple(
        self,
        name: str,
        backends: Sequence[EchoServer],
        *,
        lb: str = "round_robin",
        cluster_name: str = "c",
        **route_kw: Any,
    ) -> None:
        """One service, one catch-all route, one cluster over ``backends``."""
        self.cluster(cluster_name, [b.address for b in backends], lb=lb)
        self.service(name, [route(prefix="/", cluster=cluster_name, **route_kw)])


@pytest.fixture
def xds(ads: AdsServer) -> Xds:
    return Xds(ads)


@pytest.fixture
def mesh(make_mesh: Callable[..., Mesh]) -> Mesh:
    return make_mesh()


def weights_of(counts: Mapping[str, int]) -> dict[str, float]:
    """Shares in percent."""
    total = sum(counts.values())
    return {k: 100.0 * v / total for k, v in counts.items()}


class AnyMethodServer:
    """A gRPC server on 127.0.0.1 answering every method (unary) with JSON
    naming itself, the method, the ``:authority`` it saw and the metadata.
    A request ``sleep=<seconds>`` makes it wait that long before answering.

    The authority comes from grpcio's server-side call details
    (``context._rpc_event.call_details.host``): the public ServicerContext
    does not expose it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self._server.add_generic_rpc_handlers((_AnyHandler(self),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> AnyMethodServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0).wait()

    def reply(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls += 1
        if request.startswith(b"sleep="):
            time.sleep(float(request[6:]))
        host = context._rpc_event.call_details.host  # type: ignore[attr-defined]
        authority = host.decode() if isinstance(host, bytes) else str(host)
        metadata = {k: v for k, v in context.invocation_metadata() if not k.endswith("-bin")}
        return json.dumps(
            {"backend": self.name, "method": method, "authority": authority, "metadata": metadata}
        ).encode()


class _AnyHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self, server: AnyMethodServer) -> None:
        self._server = server

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        server = self._server
        return grpc.unary_unary_rpc_method_handler(lambda req, ctx: server.reply(method, req, ctx))


@pytest.fixture
def any_servers() -> Iterator[Callable[..., list[AnyMethodServer]]]:
    """``any_servers("a", "b")``: one AnyMethodServer per name, stopped at teardown."""
    started: list[AnyMethodServer] = []

    def start(*names: str) -> list[AnyMethodServer]:
        servers = [AnyMethodServer(n).start() for n in names]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.stop()
