"""A gRPC channel watches the clusters of the virtual host its authority
selects, not of every virtual host of the route configuration (gRFC A74,
what gRPC's own dependency manager does); something that routes any
``Host`` (an httpx transport, ``Mesh.target``'s default) widens the watch to
every virtual host, without interrupting the channel."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from tests.e2e.conftest import ECHO_METHOD
from tests.e2e.grpc.conftest import SERVICE, TARGET, Xds, backend_of, call_until, wait_until

import proxyless.grpc
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import EchoServer
from proxyless.testing.resources import (
    CLUSTER_URL,
    LISTENER_URL,
    ROUTE_URL,
    listener,
    route,
    route_config,
    virtual_host,
)


@pytest.fixture
def backends() -> Iterator[dict[str, EchoServer]]:
    servers = {name: EchoServer(name).start() for name in ("a", "b", "c")}
    yield servers
    for s in servers.values():
        s.stop()


def _requested_clusters(ads: AdsServer) -> set[str]:
    names: set[str] = set()
    for r in ads.requests:
        if r.type_url == CLUSTER_URL:
            names.update(r.resource_names)
    return names


def _publish(ads: AdsServer, own: str) -> None:
    """``svc:80`` routes to ``own``; the same configuration's second virtual
    host, ``other:80``, to ``cb``."""
    rc = f"{SERVICE}-routes"
    config = route_config(
        rc,
        [SERVICE],
        [route(prefix="/", cluster=own)],
        extra_vhosts=[virtual_host(["other:80"], [route(prefix="/", cluster="cb")])],
    )
    ads.set_resources(ROUTE_URL, {rc: config})
    ads.set_resources(LISTENER_URL, {SERVICE: listener(SERVICE, rc)})


def _channel_to_a(
    ads: AdsServer, xds: Xds, mesh: Mesh, backends: dict[str, EchoServer]
) -> Callable[..., bytes]:
    """Clusters ``ca``, ``cb``, ``cc`` (one backend each), ``svc:80`` routed
    to ``ca``, and a channel's echo method that has reached it."""
    for name in ("a", "b", "c"):
        xds.cluster(f"c{name}", [backends[name].address])
    _publish(ads, "ca")
    call: Callable[..., bytes] = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(ECHO_METHOD)
    assert backend_of(call(b"x", timeout=5)) == "a"
    return call


def test_a_channel_watches_its_virtual_host_and_others_widen_the_watch(
    ads: AdsServer, xds: Xds, mesh: Mesh, backends: dict[str, EchoServer]
) -> None:
    call = _channel_to_a(ads, xds, mesh, backends)
    watcher = mesh.config(SERVICE, SERVICE)
    snap = watcher.snapshot
    assert snap is not None and set(snap.clusters) == {"ca"}
    assert snap.hosts == frozenset({SERVICE})
    assert "cb" not in _requested_clusters(ads)  # never subscribed

    # Routing any Host needs every virtual host's clusters: the watch widens,
    # and the channel keeps working meanwhile.
    every = mesh.target(TARGET)
    wait_until(lambda: every.current is not None, what="an every-host snapshot")
    assert every.current is not None
    assert set(every.current[0].clusters) == {"ca", "cb"}
    assert every.current[0].hosts is None
    assert "cb" in _requested_clusters(ads)
    assert backend_of(call(b"x", timeout=5)) == "a"


def test_a_channel_follows_its_virtual_host_when_the_routes_change(
    ads: AdsServer, xds: Xds, mesh: Mesh, backends: dict[str, EchoServer]
) -> None:
    call = _channel_to_a(ads, xds, mesh, backends)
    _publish(ads, "cc")
    call_until(call, "c")
    snap = mesh.config(SERVICE, SERVICE).snapshot
    assert snap is not None and set(snap.clusters) == {"cc"}
    assert "cb" not in _requested_clusters(ads)
