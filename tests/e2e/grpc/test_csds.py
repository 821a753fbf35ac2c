"""CSDS (gRFC A40) from a proxyless process: the admin server, the
``proxyless status`` command and the JSON endpoint, against a real ADS
server, with a NACKed resource."""

from __future__ import annotations

import contextlib
import io
import json
import urllib.request
from collections.abc import Callable

import grpc
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from tests.e2e.conftest import SERVICE, TARGET, wait_until
from tests.e2e.grpc.conftest import Xds

import proxyless
from proxyless.cli import main
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer
from proxyless.testing.resources import cluster


def _fetch(target: str) -> csds_pb2.ClientStatusResponse:
    with grpc.insecure_channel(target) as ch:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(ch)
        return stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)


def _by_name(
    response: csds_pb2.ClientStatusResponse, kind: str = "Cluster"
) -> dict[str, csds_pb2.ClientConfig.GenericXdsConfig]:
    """The entries of one resource type (``kind``: the message name) by name."""
    (config,) = response.config
    return {g.name: g for g in config.generic_xds_configs if g.type_url.endswith(f".{kind}")}


def test_csds_reports_acked_and_nacked_resources(
    xds: Xds, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> None:
    (a,) = backends("a")
    xds.simple(SERVICE, [a])
    proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(ECHO_METHOD)(b"x", timeout=5)

    with proxyless.admin.serve(meshes=[mesh]) as admin:
        response = _fetch(admin.target)
        (config,) = response.config
        assert config.node.id == mesh.bootstrap.node.id
        entries = _by_name(response)
        assert set(entries) == {"c"}
        assert set(_by_name(response, "Listener")) == {SERVICE}
        assert set(_by_name(response, "RouteConfiguration")) == {f"{SERVICE}-routes"}
        assert set(_by_name(response, "ClusterLoadAssignment")) == {"c"}
        c = entries["c"]
        assert c.client_status == config_dump_shared_pb2.ACKED and c.version_info
        decoded = cluster_pb2.Cluster()
        assert c.xds_config.Unpack(decoded) and decoded.name == "c"
        good_version = c.version_info

        # A broken update of the cluster: NACKed, the last good version stays.
        bad = cluster("c")
        bad.type = cluster_pb2.Cluster.STRICT_DNS
        xds.cluster("c", None, proto=bad)

        def nacked() -> bool:
            return (
                _by_name(_fetch(admin.target))["c"].client_status == config_dump_shared_pb2.NACKED
            )

        wait_until(nacked, what="the cluster NACKed in CSDS")
        c = _by_name(_fetch(admin.target))["c"]
        assert c.version_info == good_version  # still serving the cached one
        assert "STRICT_DNS" in c.error_state.details
        assert c.error_state.version_info and c.error_state.version_info != good_version
        assert c.error_state.HasField("last_update_attempt")

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["status", admin.target])
        assert code == 1  # something is not ACKED
        text = out.getvalue()
        assert f"node {mesh.bootstrap.node.id!r}" in text
        assert "NACKED" in text and "STRICT_DNS" in text and "ACKED" in text


def test_status_command_names_an_unreachable_process() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["status", "127.0.0.1:1", "--timeout", "0.5"]) == 2
    assert "cannot read CSDS from 127.0.0.1:1" in err.getvalue()


def test_json_endpoint_dumps_config_and_clusters(
    xds: Xds, mesh: Mesh, backends: Callable[..., list[EchoServer]]
) -> None:
    (a,) = backends("a")
    xds.simple(SERVICE, [a])
    proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(ECHO_METHOD)(b"x", timeout=5)
    with proxyless.admin.serve_http(meshes=[mesh]) as admin:
        base = f"http://{admin.target}"
        with urllib.request.urlopen(f"{base}/config_dump", timeout=5) as r:
            (dump,) = json.loads(r.read())
        assert dump["node"]["id"] == mesh.bootstrap.node.id
        assert {res["name"] for res in dump["resources"]} >= {SERVICE, "c"}
        assert all(res["status"] == "ACKED" for res in dump["resources"])
        with urllib.request.urlopen(f"{base}/clusters", timeout=5) as r:
            (entry,) = json.loads(r.read())
        (c,) = [x for x in entry["clusters"] if x["name"] == "c"]
        (ep,) = c["endpoints"]
        assert ep["address"] == a.address and ep["total_requests"] >= 1
        assert c["circuit_breaker"]["max_requests"] == 1024
        assert c["tls"] is None
