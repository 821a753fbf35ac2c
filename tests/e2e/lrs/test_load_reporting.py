"""LRS load reporting end to end: a cluster with ``lrs_server: self`` has its
load reported to the ADS server on a real ``StreamLoadStats`` stream, and
the counts match the calls made (issued, succeeded, failed, dropped)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from envoy.type.v3 import percent_pb2
from tests.e2e.conftest import bootstrap_for, close_endpoint_pools, wait_until
from tests.e2e.httpx.conftest import HttpEcho

import proxyless.grpc
import proxyless.httpx
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.runtime.load_report import LRS_FEATURE
from proxyless.testing.backends import ECHO_METHOD, EchoServer
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

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def lrs_ads() -> Iterator[AdsServer]:
    server = AdsServer()
    server.lrs_interval = 0.1
    server.lrs_endpoint_granularity = True
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mesh(lrs_ads: AdsServer) -> Iterator[Mesh]:
    m = Mesh(bootstrap_for(lrs_ads, "e2e-lrs"))
    yield m
    m.close()
    close_endpoint_pools()


def _publish(ads: AdsServer, name: str, addresses: list[str], *, lrs: bool = True,
             drop_percent: int | None = None) -> None:  # fmt: skip
    cl = f"{name}-c"
    c = cluster(cl)
    if lrs:
        c.lrs_server.self.SetInParent()
    cla = endpoints(cl, addresses, locality=("r1", "z1", ""))
    if drop_percent is not None:
        drop = cla.policy.drop_overloads.add(category="throttle")
        drop.drop_percentage.numerator = drop_percent
        drop.drop_percentage.denominator = percent_pb2.FractionalPercent.HUNDRED
    ads.set_resource(ENDPOINT_URL, cl, cla)
    ads.set_resource(CLUSTER_URL, cl, c)
    host = name.split(":")[0]
    ads.set_resource(
        ROUTE_URL,
        f"{name}-r",
        route_config(f"{name}-r", sorted({name, host}), [route(prefix="/", cluster=cl)]),
    )
    ads.set_resource(LISTENER_URL, name, listener(name, f"{name}-r"))


def _totals(ads: AdsServer, cluster_name: str) -> dict[str, Any]:
    out = {"issued": 0, "ok": 0, "error": 0, "dropped": 0, "endpoints": set(), "locality": set()}
    for report in list(ads.load_reports):
        for stats in report.cluster_stats:
            if stats.cluster_name != cluster_name:
                continue
            out["dropped"] += stats.total_dropped_requests
            for loc in stats.upstream_locality_stats:
                out["issued"] += loc.total_issued_requests
                out["ok"] += loc.total_successful_requests
                out["error"] += loc.total_error_requests
                out["locality"].add((loc.locality.region, loc.locality.zone))
                for ep in loc.upstream_endpoint_stats:
                    out["endpoints"].add(ep.address.socket_address.port_value)
    return out


def test_grpc_calls_are_reported_per_locality_and_endpoint(
    lrs_ads: AdsServer, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> None:
    a, b = backends("a", "b")
    _publish(lrs_ads, "svc:80", [a.address, b.address])
    ch = proxyless.grpc.channel("xds:///svc:80", mesh=mesh)
    echo = ch.unary_unary(ECHO_METHOD)
    for _ in range(8):
        echo(b"x", timeout=5)
    a.fail_next(2, grpc.StatusCode.INTERNAL)
    failed = 0
    for _ in range(4):
        try:
            echo(b"x", timeout=5)
        except grpc.RpcError:
            failed += 1
    assert failed >= 1
    wait_until(
        lambda: _totals(lrs_ads, "svc:80-c")["issued"] == 12,
        what="load reports covering the 12 calls",
    )
    totals = _totals(lrs_ads, "svc:80-c")
    assert totals["ok"] == 12 - failed and totals["error"] == failed
    assert totals["locality"] == {("r1", "z1")}
    assert totals["endpoints"] == {a.port, b.port}
    assert LRS_FEATURE in lrs_ads.load_reports[0].node.client_features
    assert lrs_ads.load_reports[0].node.id == "e2e-lrs"
    ch.close()


def test_drops_and_httpx_requests_are_reported(lrs_ads: AdsServer, mesh: Mesh) -> None:
    web = HttpEcho("web").start()
    try:
        _publish(lrs_ads, "web", [web.address], drop_percent=100)
        client = httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh, hosts=["web"]))
        for _ in range(5):
            with pytest.raises(httpx.TransportError):
                client.get("http://web/")
        _publish(lrs_ads, "web", [web.address])  # no drops any more
        wait_until(lambda: _ok(client), what="the drop-free assignment")
        for _ in range(3):
            assert client.get("http://web/").status_code == 200
        client.close()
    finally:
        web.stop()
    wait_until(
        lambda: (
            _totals(lrs_ads, "web-c")["issued"] >= 4 and _totals(lrs_ads, "web-c")["dropped"] >= 5
        ),
        what="load reports with the drops and the requests",
    )
    totals = _totals(lrs_ads, "web-c")
    # the five requests made under drop_percent 100 (and any made while the
    # new assignment was on its way) were dropped, never issued; every
    # request issued succeeded
    assert totals["dropped"] >= 5
    assert totals["error"] == 0 and totals["ok"] == totals["issued"] >= 4


def _ok(client: httpx.Client) -> bool:
    try:
        return client.get("http://web/").status_code == 200
    except httpx.TransportError:
        return False


def test_clusters_without_lrs_server_are_not_reported(
    lrs_ads: AdsServer, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> None:
    (a,) = backends("a")
    _publish(lrs_ads, "plain:80", [a.address], lrs=False)
    _publish(lrs_ads, "svc:80", [a.address])
    for target in ("xds:///plain:80", "xds:///svc:80"):
        ch = proxyless.grpc.channel(target, mesh=mesh)
        ch.unary_unary(ECHO_METHOD)(b"x", timeout=5)
        ch.close()
    wait_until(lambda: _totals(lrs_ads, "svc:80-c")["issued"] == 1, what="a report of svc")
    names = {s.cluster_name for r in lrs_ads.load_reports for s in r.cluster_stats}
    assert "plain:80-c" not in names
