"""Bookinfo's routing samples, served by one control plane to proxyless and to real Envoy.

For each sample (:mod:`tests.interop.bookinfo_samples`) the control plane
takes the services, the DestinationRules and the sample; once both nodes
have ACKed the new versions, the routing the sample describes is observed
through ``proxyless.grpc.channel`` (``proxyless.httpx.Transport`` for the
HTTP service httpbin) and through one Envoy process with a listener per
service. Splits are checked over a bounded number of calls with generous
tolerances (proxyless picks with a seeded RNG). Delays, timeouts and aborts
are observed as the status a call ends with, never as elapsed time.
"""

from __future__ import annotations

import collections
import io
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from tests.e2e.conftest import close_endpoint_pools
from tests.e2e.controlplane.http_backend import HttpBackend
from tests.interop.bookinfo_samples import SAMPLES, WORKLOADS, mesh_text, yaml_hosts

import proxyless.grpc
import proxyless.httpx
from proxyless.controlplane import ControlPlane
from proxyless.controlplane.model import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply
from proxyless.testing.controlplane import EnvoyProcess, free_port

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(120)]

SERVICES = {
    name: f"{name}.default.svc.cluster.local:{8000 if name == 'httpbin' else 9080}"
    for name in ("productpage", "details", "reviews", "ratings", "httpbin")
}
JASON = (("end-user", "jason"),)
SPLIT_CALLS = 400


class Bookinfo:
    """The backends, the control plane, a proxyless Mesh and Envoy, for the whole module."""

    def __init__(self) -> None:
        self.grpc = {w: EchoServer(w).start() for w in WORKLOADS if not w.startswith("httpbin")}
        self.http = {w: HttpBackend(w) for w in WORKLOADS if w.startswith("httpbin")}
        self.ports = {w: int(s.address.rsplit(":", 1)[1]) for w, s in self.grpc.items()}
        self.ports.update({w: b.port for w, b in self.http.items()})
        self.cp = ControlPlane(mesh_text(self.ports), stderr=io.StringIO()).start()
        self.mesh = Mesh(self.cp.bootstrap("bookinfo-proxyless"), rng=random.Random(13))
        self.listeners = {name: free_port() for name in SERVICES}
        self.channels: dict[str, grpc.Channel] = {}
        self.envoy = EnvoyProcess(
            self.cp.envoy_bootstrap(
                "bookinfo-envoy",
                listener_ports={SERVICES[n]: port for n, port in self.listeners.items()},
            )
        )
        try:
            self.envoy.start()
        except BaseException:
            self.close()
            raise
        # subscribe the proxyless node to every service before the first sample
        for service in SERVICES:
            if service == "httpbin":
                self.http_get("proxyless", service)
            else:
                self.grpc_call("proxyless", service)

    def close(self) -> None:
        self.envoy.stop()
        self.mesh.close()
        close_endpoint_pools()
        self.cp.stop()
        for server in self.grpc.values():
            server.stop(0)
        for backend in self.http.values():
            backend.stop()

    def apply(self, sample: str) -> None:
        """Serve ``sample``; return once Envoy ACKed it and proxyless routes by it."""
        types = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE)
        before = {t: self.cp.server.version(t) for t in types}
        routes = {name: self._route_config(name) for name in SERVICES}
        since = len(self.cp.server.requests)
        self.cp.update(mesh_text(self.ports, sample))
        for type_url in types:
            version = self.cp.server.version(type_url)
            if version == before[type_url]:
                continue
            self.cp.server.wait_for(
                lambda r, t=type_url, v=version: (
                    r.node.id == "bookinfo-envoy"
                    and r.type_url == t
                    and r.version_info == v
                    and r.error_detail is None
                ),
                15,
                since=since,
            )
        # proxyless publishes a target's new routes once every cluster they name is
        # known (its CDS and EDS subscriptions follow the routes): wait for that
        changed = set(yaml_hosts(sample))
        for _ in range(500):
            if all(self._route_config(name) is not routes[name] for name in changed):
                return
            threading.Event().wait(0.02)
        raise AssertionError(f"proxyless did not take the routes of {sample}")

    def _route_config(self, service: str) -> object:
        # the routing state the checks use: the httpx transport's for httpbin,
        # the gRPC channel's (which follows its own virtual host) for the others
        every_host = service == "httpbin"
        state = self.mesh.target(f"xds:///{SERVICES[service]}", every_host=every_host).current
        return None if state is None else state[0].route_config

    # calls --------------------------------------------------------------------------
    def grpc_call(
        self,
        via: str,
        service: str,
        *,
        metadata: tuple[tuple[str, str], ...] = (),
        timeout: float = 10,
    ) -> str:
        """One Echo call to ``service`` through proxyless or Envoy; the backend that answered."""
        if via == "proxyless":
            channel = self.channels.get(service)
            if channel is None:
                channel = proxyless.grpc.channel(f"xds:///{SERVICES[service]}", mesh=self.mesh)
                self.channels[service] = channel
            echo = channel.unary_unary(ECHO_METHOD)
            return str(decode_reply(echo(b"x", timeout=timeout, metadata=metadata))["backend"])
        with grpc.insecure_channel(f"127.0.0.1:{self.listeners[service]}") as plain:
            echo = plain.unary_unary(ECHO_METHOD)
            return str(decode_reply(echo(b"x", timeout=timeout, metadata=metadata))["backend"])

    def grpc_calls(self, via: str, service: str, count: int, **kw: Any) -> collections.Counter[str]:
        return collections.Counter(self.grpc_call(via, service, **kw) for _ in range(count))

    def grpc_error(self, via: str, service: str, **kw: Any) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as caught:
            self.grpc_call(via, service, **kw)
        code: grpc.StatusCode = caught.value.code()
        return code

    def http_get(self, via: str, service: str) -> str:
        if via == "proxyless":
            with httpx.Client(transport=proxyless.httpx.Transport(mesh=self.mesh), timeout=10) as c:
                reply = c.get(f"http://{SERVICES[service]}/get")
        else:
            with httpx.Client(timeout=10) as c:
                reply = c.get(
                    f"http://127.0.0.1:{self.listeners[service]}/get",
                    headers={"host": SERVICES[service]},
                )
        reply.raise_for_status()
        return str(reply.json()["backend"])


@pytest.fixture(scope="module")
def bookinfo() -> Iterator[Bookinfo]:
    setup = Bookinfo()
    try:
        yield setup
    finally:
        setup.close()


VIA = [pytest.param("proxyless", id="proxyless"), pytest.param("envoy", id="envoy")]


def _share(counts: collections.Counter[str], backend: str) -> float:
    return 100.0 * counts[backend] / sum(counts.values())


def _all_v1(b: Bookinfo, via: str) -> None:
    for service in ("productpage", "details", "reviews", "ratings"):
        assert b.grpc_calls(via, service, 20) == {f"{service}_v1": 20}


def _split(first: str, second: str, percent_second: float) -> Callable[[Bookinfo, str], None]:
    def check(b: Bookinfo, via: str) -> None:
        counts = b.grpc_calls(via, "reviews", SPLIT_CALLS)
        assert set(counts) == {first, second}, counts
        assert abs(_share(counts, second) - percent_second) <= 10.0, counts

    return check


def _jason_to_v2(b: Bookinfo, via: str) -> None:
    assert b.grpc_calls(via, "reviews", 20, metadata=JASON) == {"reviews_v2": 20}
    assert b.grpc_calls(via, "reviews", 20) == {"reviews_v1": 20}


def _ratings_delay(b: Bookinfo, via: str) -> None:
    # the 2 s delay outlasts jason's 0.5 s deadline; other users are not delayed
    assert b.grpc_error(via, "ratings", metadata=JASON, timeout=0.5) == (
        grpc.StatusCode.DEADLINE_EXCEEDED
    )
    assert b.grpc_calls(via, "ratings", 10, timeout=10) == {"ratings_v1": 10}


def _ratings_abort(b: Bookinfo, via: str) -> None:
    before = b.grpc["ratings_v1"].calls
    for _ in range(5):
        assert b.grpc_error(via, "ratings", metadata=JASON) != grpc.StatusCode.OK
    assert b.grpc["ratings_v1"].calls == before, "an aborted call reached the backend"
    assert b.grpc_calls(via, "ratings", 10) == {"ratings_v1": 10}


def _mirror(b: Bookinfo, via: str) -> None:
    before = b.http["httpbin_v2"].requests
    assert collections.Counter(b.http_get(via, "httpbin") for _ in range(10)) == {"httpbin_v1": 10}
    # the copies are sent without waiting for them: allow them a bounded while to land
    deadline = threading.Event()
    for _ in range(100):
        if b.http["httpbin_v2"].requests - before >= 10:
            break
        deadline.wait(0.05)
    assert b.http["httpbin_v2"].requests - before == 10


def _timeout(b: Bookinfo, via: str) -> None:
    server = b.grpc["reviews_v2"]
    server.delay = 2.0
    try:
        code = b.grpc_error(via, "reviews", timeout=10)
    finally:
        server.delay = 0.0
    # proxyless ends the call at the route's max_stream_duration (gRFC A31); Envoy answers
    # its route timeout with HTTP 504, which gRPC reads as UNAVAILABLE
    expected = {
        "proxyless": {grpc.StatusCode.DEADLINE_EXCEEDED},
        "envoy": {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED},
    }[via]
    assert code in expected


def _retries(b: Bookinfo, via: str) -> None:
    server = b.grpc["reviews_v2"]
    before = server.calls
    server.fail_next(2, grpc.StatusCode.UNAVAILABLE)
    assert b.grpc_call(via, "reviews") == "reviews_v2"
    assert server.calls - before == 3


CHECKS: dict[str, Callable[[Bookinfo, str], None]] = {
    "virtual-service-all-v1.yaml": _all_v1,
    "virtual-service-reviews-50-v3.yaml": _split("reviews_v1", "reviews_v3", 50),
    "virtual-service-reviews-80-20.yaml": _split("reviews_v1", "reviews_v2", 20),
    "virtual-service-reviews-v2-v3.yaml": _split("reviews_v2", "reviews_v3", 50),
    "virtual-service-reviews-test-v2.yaml": _jason_to_v2,
    "virtual-service-ratings-test-delay.yaml": _ratings_delay,
    "virtual-service-ratings-test-abort.yaml": _ratings_abort,
    "virtual-service-httpbin-mirror.yaml": _mirror,
    "virtual-service-reviews-timeout.yaml": _timeout,
    "virtual-service-reviews-retries.yaml": _retries,
}


def test_every_sample_has_a_check() -> None:
    assert set(CHECKS) == set(SAMPLES)


@pytest.mark.parametrize("sample", SAMPLES)
def test_sample_routes_alike_through_proxyless_and_envoy(bookinfo: Bookinfo, sample: str) -> None:
    bookinfo.apply(sample)
    for via in ("proxyless", "envoy"):
        CHECKS[sample](bookinfo, via)
    assert bookinfo.cp.server.nacks() == []
    rejected = {
        k: v for k, v in bookinfo.envoy.stats().items() if k.endswith("update_rejected") and v
    }
    assert rejected == {}
