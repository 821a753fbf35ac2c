"""Fixtures for end-to-end tests of the httpx transports.

Everything is real and on 127.0.0.1: the ADS server of
``tests/e2e/conftest.py``, HTTP/1.1 echo backends (:class:`HttpEcho`, a
threaded ``http.server`` that answers with JSON naming itself and echoing
the method, path, query, headers, host and body it received, and that fails
or holds requests on demand; ``backends`` here overrides the shared gRPC
one), and a :class:`proxyless.mesh.Mesh` with a
:class:`~proxyless.testing.FakeClock` (the does-not-exist timer, outlier
sweeps and ejection times move only when a test advances it) and a seeded
RNG. Every wait is bounded in time and count.
"""

from __future__ import annotations

import json
import random
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2
from tests.e2e.conftest import bootstrap_for as bootstrap_for
from tests.e2e.conftest import fault_filter as fault_filter
from tests.e2e.conftest import wait_until as wait_until

import proxyless.httpx
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing import FakeClock
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

SERVICE = "svc:8080"
URL = "http://svc:8080"
CLUSTER = "c"


# -- the HTTP echo backend ------------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a timeout test) is not an error here


class HttpEcho:
    """A threaded HTTP/1.1 server on 127.0.0.1 that echoes what it received.

    Reply: ``{"backend", "method", "path", "query", "host", "headers": [[name,
    value], ...], "body"}``. ``fail_next(n, status, headers)`` makes the next
    ``n`` requests answer ``status``; ``always`` answers every request with a
    status; ``hold()`` makes requests wait (at most 10 s) until ``release()``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[dict[str, Any]] = []
        self.always: int | None = None
        self._fails: list[tuple[int, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self._gate.set()
        self.held = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # one small write per header block and body: no Nagle stalls
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("content-length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                owner._serve(self, body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> HttpEcho:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def fail_next(self, n: int, status: int = 503, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._fails.extend([(status, headers or {})] * n)

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def _serve(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        raw_path = handler.path
        path, _, query = raw_path.partition("?")
        record = {
            "backend": self.name,
            "method": handler.command,
            "path": path,
            "query": query,
            "host": handler.headers.get("host"),
            "headers": [[k.lower(), v] for k, v in handler.headers.items()],
            "body": body.decode("latin-1"),
        }
        with self._lock:
            self.requests.append(record)
            fail = self._fails.pop(0) if self._fails else None
        if not self._gate.is_set():
            with self._lock:
                self.held += 1
            self._gate.wait(10)
        status, extra = fail if fail else (self.always or 200, {})
        data = json.dumps(record).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        handler.send_header("x-backend", self.name)
        for k, v in extra.items():
            handler.send_header(k, v)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)


def reply(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.content)
    return data


def header_values(record: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in record["headers"] if k == name]


# -- proto builders ----------------------------------------------------------------------------


def retry_policy(
    retry_on: str = "5xx",
    num_retries: int = 2,
    *,
    per_try_timeout: float | None = None,
    retriable_status_codes: Sequence[int] = (),
    base_interval: float | None = 0.001,
    previous_hosts: bool = False,
) -> route_components_pb2.RetryPolicy:
    p = route_components_pb2.RetryPolicy(retry_on=retry_on)
    p.num_retries.value = num_retries
    p.retriable_status_codes.extend(retriable_status_codes)
    if per_try_timeout is not None:
        p.per_try_timeout.CopyFrom(duration(per_try_timeout))
    if base_interval is not None:
        p.retry_back_off.base_interval.CopyFrom(duration(base_interval))
        p.retry_back_off.max_interval.CopyFrom(duration(base_interval * 2))
    if previous_hosts:
        from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

        pred = p.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts")
        pred.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    return p


def header_option(
    key: str, value: str, action: str = "APPEND_IF_EXISTS_OR_ADD"
) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.HeaderAppendAction.Value(action),
    )


def outlier_detection(
    consecutive_5xx: int = 2, base_ejection_time: float = 30.0
) -> outlier_detection_pb2.OutlierDetection:
    return outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=wrappers_pb2.UInt32Value(value=consecutive_5xx),
        enforcing_consecutive_5xx=wrappers_pb2.UInt32Value(value=100),
        interval=duration(1.0),
        base_ejection_time=duration(base_ejection_time),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=50),
    )


class Service:
    """Publishes a service (listener -> route configuration -> clusters -> endpoints)."""

    def __init__(self, ads: AdsServer) -> None:
        self.ads = ads
        self.listeners: dict[str, Any] = {}
        self.routes: dict[str, Any] = {}
        self.clusters: dict[str, cluster_pb2.Cluster] = {}
        self.eds: dict[str, Any] = {}

    def cluster(
        self,
        name: str,
        backends: Sequence[HttpEcho] | Sequence[str],
        proto: cluster_pb2.Cluster | None = None,
    ) -> None:
        addresses = [b if isinstance(b, str) else b.address for b in backends]
        self.eds[name] = endpoints(name, addresses)
        self.ads.set_resources(ENDPOINT_URL, self.eds)
        self.clusters[name] = proto if proto is not None else cluster(name)
        self.ads.set_resources(CLUSTER_URL, self.clusters)

    def endpoints_proto(self, name: str, proto: Any) -> None:
        self.eds[name] = proto
        self.ads.set_resources(ENDPOINT_URL, self.eds)

    def routes_for(
        self,
        name: str,
        routes: Sequence[route_components_pb2.Route],
        *,
        domains: Sequence[str] | None = None,
        vhost: route_components_pb2.VirtualHost | None = None,
        http_filters: Sequence[hcm_pb2.HttpFilter] = (),
        rc_proto: Any = None,
    ) -> None:
        rc = f"{name}-routes"
        if rc_proto is not None:
            rc_proto.name = rc
            self.routes[rc] = rc_proto
        elif vhost is not None:
            proto = route_config(rc, list(domains or [name]), list(routes))
            del proto.virtual_hosts[:]
            proto.virtual_hosts.append(vhost)
            self.routes[rc] = proto
        else:
            self.routes[rc] = route_config(
                rc, list(domains or [name, name.split(":")[0]]), list(routes)
            )
        self.ads.set_resources(ROUTE_URL, self.routes)
        self.listeners[name] = listener(name, rc, http_filters=http_filters)
        self.ads.set_resources(LISTENER_URL, self.listeners)

    def simple(
        self,
        backends: Sequence[HttpEcho],
        name: str = SERVICE,
        *,
        cluster_proto: cluster_pb2.Cluster | None = None,
        http_filters: Sequence[hcm_pb2.HttpFilter] = (),
        **route_kw: Any,
    ) -> None:
        self.cluster(CLUSTER, backends, cluster_proto)
        self.routes_for(
            name, [route(prefix="/", cluster=CLUSTER, **route_kw)], http_filters=http_filters
        )


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def service(ads: AdsServer) -> Service:
    return Service(ads)


@pytest.fixture
def mesh(make_mesh: Callable[..., Mesh], clock: FakeClock) -> Mesh:
    """A Mesh on the test's ADS server with the fake clock and a seeded RNG."""
    return make_mesh(clock=clock, rng=random.Random(1234))


@pytest.fixture
def backends() -> Iterator[Callable[..., list[HttpEcho]]]:
    """``backends("a", "b")``: one HttpEcho per name, stopped at teardown."""
    started: list[HttpEcho] = []

    def start(*names: str) -> list[HttpEcho]:
        servers = [HttpEcho(n).start() for n in names]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def make_client(mesh: Mesh) -> Iterator[Callable[..., httpx.Client]]:
    """``make_client(**transport_kwargs)``: an httpx.Client on a proxyless Transport."""
    made: list[httpx.Client] = []

    def make(**kwargs: Any) -> httpx.Client:
        kwargs.setdefault("mesh", mesh)
        client = httpx.Client(transport=proxyless.httpx.Transport(**kwargs), timeout=10.0)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., httpx.Client]) -> httpx.Client:
    return make_client()
