"""Which requests go through the mesh, and how failures surface.

The Mesh runs on a FakeClock that no test advances: the xDS client's 15 s
does-not-exist timer can never fire, so every answer here (pass-through,
refusal, NACK) comes without waiting on a timer.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import httpx
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from tests.e2e.httpx.conftest import (
    CLUSTER,
    SERVICE,
    URL,
    HttpEcho,
    Service,
    reply,
    wait_until,
)

import proxyless.httpx
from proxyless.controlplane.server import AdsServer
from proxyless.errors import (
    CircuitBreakerOpen,
    ControlPlaneUnreachable,
    NoHealthyEndpoints,
    NoMatchingRoute,
    ResourceNacked,
)
from proxyless.mesh import Mesh
from proxyless.testing import FakeClock
from proxyless.testing.controlplane import free_port
from proxyless.testing.resources import LISTENER_URL, cluster, route


def _listeners_subscribed(ads: AdsServer) -> set[str]:
    names: set[str] = set()
    for record in ads.requests:
        if record.type_url == LISTENER_URL:
            names.update(record.resource_names)
    return names


def test_ip_literal_passes_through_without_xds(
    ads: AdsServer, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    got = reply(client.get(f"http://127.0.0.1:{a.port}/direct?q=1"))
    assert (got["backend"], got["path"], got["query"]) == ("a", "/direct", "q=1")
    assert not any("127.0.0.1" in n for n in _listeners_subscribed(ads))


def test_unknown_host_gets_a_fast_negative_answer_then_passes_through(
    ads: AdsServer,
    service: Service,
    backends: Callable[..., list[HttpEcho]],
    make_client: Callable[..., httpx.Client],
) -> None:
    a, b = backends("a", "b")
    service.simple([b])  # the control plane knows svc:8080, not localhost:<port>
    client = make_client(hosts=[f"localhost:{a.port}", "*.mesh"])
    got = reply(client.get(f"http://localhost:{a.port}/x"))
    assert got["backend"] == "a"
    assert f"localhost:{a.port}" in _listeners_subscribed(ads)
    # the fake clock never moved, so no timer decided this; the LDS answer did


def test_refused_host_names_the_reason(
    service: Service,
    backends: Callable[..., list[HttpEcho]],
    make_client: Callable[..., httpx.Client],
) -> None:
    (b,) = backends("b")
    service.simple([b])
    client = make_client(fallback="refuse")
    with pytest.raises(proxyless.httpx.MeshConnectError) as info:
        client.get("http://unknown-service:9080/")
    err = info.value
    assert isinstance(err, httpx.ConnectError)
    assert err.stage == "config"
    assert "does not include listener 'unknown-service:9080'" in str(err)
    with pytest.raises(proxyless.httpx.MeshConnectError, match="not a mesh host"):
        client.get(f"http://127.0.0.1:{b.port}/")


def test_listener_created_later_takes_over(
    service: Service,
    backends: Callable[..., list[HttpEcho]],
    make_client: Callable[..., httpx.Client],
) -> None:
    (a,) = backends("a")
    client = make_client(fallback="refuse")
    with pytest.raises(proxyless.httpx.MeshConnectError):
        client.get(f"{URL}/")
    service.simple([a])

    def routed() -> bool:
        try:
            return client.get(f"{URL}/").status_code == 200
        except proxyless.httpx.MeshConnectError:
            return False

    wait_until(routed, what="the new listener to take over")


def test_nacked_listener_fails_with_the_reason(
    ads: AdsServer, make_client: Callable[..., httpx.Client]
) -> None:
    ads.set_resources(LISTENER_URL, {SERVICE: listener_pb2.Listener(name=SERVICE)})
    client = make_client()
    with pytest.raises(proxyless.httpx.MeshConnectError) as info:
        client.get(f"{URL}/")
    err = info.value
    assert err.stage == "config"
    assert isinstance(err.proxyless_error, ResourceNacked)
    assert "has no api_listener" in str(err) and "[NC]" in str(err)


def test_unreachable_control_plane_fails_fast(
    backends: Callable[..., list[HttpEcho]],
) -> None:
    dead = {
        "xds_servers": [
            {"server_uri": f"127.0.0.1:{free_port()}", "channel_creds": [{"type": "insecure"}]}
        ],
        "node": {"id": "no-cp"},
    }
    (a,) = backends("a")
    with (
        Mesh(dead, clock=FakeClock(), rng=random.Random(1)) as mesh,
        httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh), timeout=10.0) as client,
    ):
        with pytest.raises(proxyless.httpx.MeshConnectError) as info:
            client.get(f"{URL}/")
        assert isinstance(info.value.proxyless_error, ControlPlaneUnreachable)
        assert "unreachable" in str(info.value) or "not connected" in str(info.value)
        # IP literals never need the control plane
        assert reply(client.get(f"http://127.0.0.1:{a.port}/"))["backend"] == "a"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://svc:8080/file", id="scheme"),
        pytest.param("http:///no-host", id="no-host"),
    ],
)
def test_malformed_urls(client: httpx.Client, url: str) -> None:
    with pytest.raises(httpx.UnsupportedProtocol) as info:
        client.get(url)
    assert isinstance(info.value, proxyless.httpx.MeshRequestError)
    assert info.value.stage == "url"


def test_no_route_no_healthy_endpoint_and_open_breaker(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    (a,) = backends("a")
    breaker = cluster(CLUSTER)
    breaker.circuit_breakers.thresholds.add(priority=0).max_requests.value = 1
    service.cluster(CLUSTER, [a], breaker)
    service.cluster("sick", [a])
    service.endpoints_proto("sick", endpoint_pb2.ClusterLoadAssignment(cluster_name="sick"))
    service.routes_for(
        SERVICE, [route(prefix="/sick", cluster="sick"), route(prefix="/ok", cluster=CLUSTER)]
    )
    with pytest.raises(proxyless.httpx.MeshConnectError) as info:
        client.get(f"{URL}/nowhere")
    assert isinstance(info.value.proxyless_error, NoMatchingRoute)
    assert (info.value.stage, "[NR]" in str(info.value)) == ("routing", True)
    with pytest.raises(proxyless.httpx.MeshConnectError) as info:
        client.get(f"{URL}/sick")
    assert isinstance(info.value.proxyless_error, NoHealthyEndpoints)
    assert info.value.stage == "upstream"
    with client.stream("GET", f"{URL}/ok") as held:  # holds the only request slot
        with pytest.raises(proxyless.httpx.MeshConnectError) as info:
            client.get(f"{URL}/ok")
        assert isinstance(info.value.proxyless_error, CircuitBreakerOpen)
        assert "[UO]" in str(info.value)
        held.read()
    assert client.get(f"{URL}/ok").status_code == 200


def test_endpoint_removed_from_eds_is_drained(
    service: Service,
    backends: Callable[..., list[HttpEcho]],
    make_client: Callable[..., httpx.Client],
) -> None:
    a, b = backends("a", "b")
    service.simple([a])
    client = make_client()
    pools = client._transport._core.pools  # type: ignore[attr-defined]
    assert client.get(f"{URL}/").status_code == 200
    with client.stream("GET", f"{URL}/") as in_flight:
        service.cluster(CLUSTER, [b])
        wait_until(lambda: not pools.referenced(a.address), what="EDS to drop a")
        entry = next(e for e in pools.entries() if e.address == a.address)
        assert entry.closing and entry.in_flight == 1  # kept while its response is open
        assert reply(httpx.Response(200, content=in_flight.read()))["backend"] == "a"
    assert all(e.address != a.address for e in pools.entries())
    wait_until(lambda: reply(client.get(f"{URL}/"))["backend"] == "b", what="requests to reach b")


def test_requests_from_many_threads(
    service: Service, backends: Callable[..., list[HttpEcho]], client: httpx.Client
) -> None:
    a, b = backends("a", "b")
    service.simple([a, b])
    seen: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                seen.append(reply(client.get(f"{URL}/"))["backend"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(seen) == 80 and set(seen) == {"a", "b"}
