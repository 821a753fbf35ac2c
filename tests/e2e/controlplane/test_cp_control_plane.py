"""The embedded control plane over real ADS streams: node kinds, hot reload, refusals, CLI."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from proxyless.controlplane import ControlPlane, MeshConfigError, render_example
from proxyless.controlplane.model import ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply
from proxyless.testing.controlplane import RawAdsStream, control_plane_fixture, make_node

HOST = "reviews.default.svc.cluster.local"
ROUTE = f"{HOST}:9080"
ENDPOINTS = {
    "reviews-v1-a": "127.0.0.1:7001",
    "reviews-v1-b": "127.0.0.1:7002",
    "reviews-v2": "127.0.0.1:7003",
}
MESH = render_example("reviews", ENDPOINTS)

mesh = control_plane_fixture(MESH)


@pytest.fixture
def mesh_file(tmp_path: Path) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(MESH)
    return path


@pytest.fixture
def watched(mesh_file: Path) -> Iterator[tuple[ControlPlane, io.StringIO]]:
    errors = io.StringIO()
    with ControlPlane(mesh_file, poll_interval=0.05, stderr=errors) as cp:
        yield cp, errors


def unpack(any_msg: object, cls: type) -> object:
    msg = cls()
    assert any_msg.Unpack(msg)  # type: ignore[attr-defined]
    return msg


def wait(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def subscribe_route(
    cp: ControlPlane, node_id: str, namespace: str = "default"
) -> tuple[RawAdsStream, object]:
    stream = RawAdsStream(cp.target)
    stream.request(ROUTE_TYPE, [ROUTE], node=make_node(node_id, metadata={"NAMESPACE": namespace}))
    response = stream.recv()
    stream.request(ROUTE_TYPE, [ROUTE], version_info=response.version_info, nonce=response.nonce)
    return stream, response


def test_fixture_serves_proxyless_listeners(mesh: ControlPlane) -> None:
    with RawAdsStream(mesh.target) as stream:
        stream.request(LISTENER_TYPE, ["reviews:9080", "missing:1"], node=make_node("grpc-client"))
        response = stream.recv()
    (any_listener,) = response.resources
    listener = unpack(any_listener, listener_pb2.Listener)
    assert listener.name == "reviews:9080"  # type: ignore[attr-defined]
    assert listener.HasField("api_listener")  # type: ignore[attr-defined]


def test_envoy_node_gets_socket_listeners(mesh: ControlPlane) -> None:
    node = make_node(
        "envoy-1",
        user_agent_name="envoy",
        metadata={"PROXYLESS_LISTENER_PORTS": {"reviews:9080": 15123}},
    )
    with RawAdsStream(mesh.target) as stream:
        stream.request(LISTENER_TYPE, [], node=node)  # Envoy subscribes with a wildcard
        response = stream.recv()
    (any_listener,) = response.resources
    listener = unpack(any_listener, listener_pb2.Listener)
    assert listener.name == ROUTE  # type: ignore[attr-defined]
    assert listener.address.socket_address.port_value == 15123  # type: ignore[attr-defined]


def test_endpoints_are_the_configured_backends(mesh: ControlPlane) -> None:
    with RawAdsStream(mesh.target) as stream:
        stream.request(ENDPOINT_TYPE, [f"outbound|9080|v1|{HOST}"], node=make_node())
        cla = unpack(stream.recv().resources[0], endpoint_pb2.ClusterLoadAssignment)
    addresses = {
        f"{e.endpoint.address.socket_address.address}:{e.endpoint.address.socket_address.port_value}"
        for group in cla.endpoints  # type: ignore[attr-defined]
        for e in group.lb_endpoints
    }
    assert addresses == {ENDPOINTS["reviews-v1-a"], ENDPOINTS["reviews-v1-b"]}


def test_hot_reload_pushes_a_new_version(
    watched: tuple[ControlPlane, io.StringIO], mesh_file: Path
) -> None:
    cp, errors = watched
    stream, first = subscribe_route(cp, "client")
    with stream:
        mesh_file.write_text(
            MESH.replace("weight: 90", "weight: 70").replace("weight: 10", "weight: 30")
        )
        pushed = stream.recv()
        assert int(pushed.version_info) > int(first.version_info)  # type: ignore[attr-defined]
        config = unpack(pushed.resources[0], route_pb2.RouteConfiguration)
        weights = [
            c.weight.value
            for c in config.virtual_hosts[0].routes[1].route.weighted_clusters.clusters
        ]  # type: ignore[attr-defined]
        assert weights == [70, 30]
        assert cp.version == 2
    assert errors.getvalue() == ""


def test_broken_edit_is_refused_and_reported(
    watched: tuple[ControlPlane, io.StringIO], mesh_file: Path
) -> None:
    cp, errors = watched
    stream, _ = subscribe_route(cp, "client")
    with stream:
        mesh_file.write_text(
            MESH.replace("subset: v2\n      weight: 10", "subset: v3\n      weight: 10")
        )
        wait(lambda: cp.last_error is not None)
        report = errors.getvalue()
        assert f"refusing {mesh_file} (1 error); still serving version 1" in report
        assert (
            f"{mesh_file}:doc2 VirtualService/reviews: spec.http[1].route[1].destination.subset: [IST0101] ReferencedResourceNotFound: subset 'v3'"
            in report
        )
        assert cp.version == 1
        # nothing was pushed: the next response answers this new subscription
        stream.request(ENDPOINT_TYPE, ["x"])
        assert stream.recv().type_url == ENDPOINT_TYPE
        # fixing the file applies it again
        mesh_file.write_text(
            MESH.replace("weight: 90", "weight: 80").replace("weight: 10", "weight: 20")
        )
        assert stream.recv().type_url == ROUTE_TYPE
        assert cp.version == 2
        assert cp.last_error is None


def test_invalid_yaml_edit_keeps_serving(
    watched: tuple[ControlPlane, io.StringIO], mesh_file: Path
) -> None:
    cp, errors = watched
    mesh_file.write_text(MESH + "\n  - [unclosed\n")
    wait(lambda: cp.last_error is not None)
    assert "invalid YAML at line" in errors.getvalue()
    with RawAdsStream(cp.target) as stream:
        stream.request(LISTENER_TYPE, [ROUTE], node=make_node())
        assert len(stream.recv().resources) == 1


def test_pushes_only_to_nodes_whose_resources_changed(mesh_file: Path) -> None:
    with ControlPlane(mesh_file, poll_interval=0) as cp:
        default_stream, _ = subscribe_route(cp, "a", "default")
        canary_stream, _ = subscribe_route(cp, "b", "canary")
        with default_stream, canary_stream:
            canary_only = MESH.replace(
                "  - name: split\n",
                "  - name: canary\n    match: [{sourceNamespace: canary}]\n"
                "    route: [{destination: {host: reviews, subset: v2}}]\n  - name: split\n",
            )
            mesh_file.write_text(canary_only)
            assert cp.reload()
            pushed = canary_stream.recv()
            config = unpack(pushed.resources[0], route_pb2.RouteConfiguration)
            assert [r.name for r in config.virtual_hosts[0].routes] == ["mobile", "canary", "split"]  # type: ignore[attr-defined]
            default_stream.request(
                ENDPOINT_TYPE, ["x"]
            )  # barrier: no push for the default namespace
            assert default_stream.recv().type_url == ENDPOINT_TYPE


def test_update_api_validates_whole_config(mesh: ControlPlane) -> None:
    with pytest.raises(
        MeshConfigError, match=r"<config>:doc1 ServiceEntry/reviews: spec.ports\[0\].number"
    ):
        mesh.update(MESH.replace("number: 9080", "number: 0"))
    assert mesh.version == 1
    mesh.update(MESH.replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50"))
    assert mesh.version == 2


def test_bootstrap_points_at_the_server(mesh: ControlPlane) -> None:
    bootstrap = mesh.bootstrap(
        "client-7", metadata={"LABELS": {"app": "web"}}, locality={"region": "us"}
    )
    assert bootstrap["xds_servers"] == [
        {
            "server_uri": mesh.target,
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }
    ]
    assert bootstrap["node"] == {
        "id": "client-7",
        "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default", "LABELS": {"app": "web"}},
        "locality": {"region": "us"},
    }


def test_cli_serves_and_stops_on_sigterm(mesh_file: Path, tmp_path: Path) -> None:
    bootstrap = tmp_path / "bootstrap.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxyless.cli",
            "control-plane",
            "--config",
            str(mesh_file),
            "--port",
            "0",
            "--bootstrap-out",
            str(bootstrap),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert lines[0].startswith(f"wrote xDS bootstrap {bootstrap}")
        assert f"serving {mesh_file} on 127.0.0.1:" in lines[1]
        target = lines[1].split(" on ", 1)[1].split()[0]
        with RawAdsStream(target) as stream:
            stream.request(LISTENER_TYPE, [ROUTE], node=make_node())
            assert len(stream.recv().resources) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert '"server_uri": "' + target in bootstrap.read_text()


def test_cli_refuses_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MESH.replace("subset: v1", "subset: v7"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxyless.cli",
            "control-plane",
            "--config",
            str(path),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert (
        f"{path}:doc2 VirtualService/reviews: spec.http[1].route[0].destination.subset"
        in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_translated_endpoints_reach_the_echo_backend() -> None:
    with EchoServer("reviews-v2") as backend:
        text = render_example(
            "reviews",
            {
                "reviews-v1-a": "127.0.0.1:1",
                "reviews-v1-b": "127.0.0.1:2",
                "reviews-v2": backend.address,
            },
        )
        with ControlPlane(text) as cp, RawAdsStream(cp.target) as stream:
            stream.request(ENDPOINT_TYPE, [f"outbound|9080|v2|{HOST}"], node=make_node())
            cla = unpack(stream.recv().resources[0], endpoint_pb2.ClusterLoadAssignment)
        (group,) = cla.endpoints  # type: ignore[attr-defined]
        (lb_endpoint,) = group.lb_endpoints
        socket_address = lb_endpoint.endpoint.address.socket_address
        with grpc.insecure_channel(
            f"{socket_address.address}:{socket_address.port_value}"
        ) as channel:
            reply = decode_reply(channel.unary_unary(ECHO_METHOD)(b"hi", timeout=5))
        assert reply["backend"] == "reviews-v2"
