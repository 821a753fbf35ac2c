"""proxyless' own gRPC channel against the embedded control plane and real echo backends."""

from __future__ import annotations

import collections
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import proxyless.grpc
from proxyless.controlplane import ControlPlane, render_example
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply

TARGET = "xds:///reviews.default.svc.cluster.local:9080"
NAMES = ("reviews-v1-a", "reviews-v1-b", "reviews-v2")


@pytest.fixture
def backends() -> Iterator[dict[str, EchoServer]]:
    servers = {name: EchoServer(name).start() for name in NAMES}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop(0)


@pytest.fixture
def mesh_file(tmp_path: Path, backends: dict[str, EchoServer]) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(render_example("reviews", {n: s.address for n, s in backends.items()}))
    return path


@pytest.fixture
def setup(mesh_file: Path) -> Iterator[tuple[ControlPlane, Mesh]]:
    with ControlPlane(mesh_file, poll_interval=0.05, stderr=io.StringIO()) as cp:
        mesh = Mesh(cp.bootstrap("own-client"))
        try:
            yield cp, mesh
        finally:
            mesh.close()


def test_split_and_mobile_route(setup: tuple[ControlPlane, Mesh]) -> None:
    cp, mesh = setup
    channel = proxyless.grpc.channel(TARGET, mesh=mesh)
    echo = channel.unary_unary(ECHO_METHOD)
    echo(b"warmup", timeout=10, wait_for_ready=True)
    counts = collections.Counter(
        decode_reply(echo(b"x", timeout=10))["backend"] for _ in range(2000)
    )
    assert set(counts) == set(NAMES)
    assert 7.0 <= 100 * counts["reviews-v2"] / 2000 <= 13.0, counts
    mobile = collections.Counter(
        decode_reply(echo(b"x", timeout=10, metadata=[("user-agent", "Pixel Mobile")]))["backend"]
        for _ in range(30)
    )
    assert mobile == {"reviews-v2": 30}
    short = proxyless.grpc.channel("xds:///reviews:9080", mesh=mesh).unary_unary(ECHO_METHOD)
    assert (
        decode_reply(short(b"x", timeout=10, metadata=[("user-agent", "Mobile")]))["backend"]
        == "reviews-v2"
    )
    assert cp.server.nacks() == []


def test_edit_moves_traffic_without_failures(
    setup: tuple[ControlPlane, Mesh], mesh_file: Path
) -> None:
    """90/10 becomes 10/90 while calls keep flowing; every call succeeds."""
    cp, mesh = setup
    echo = proxyless.grpc.channel(TARGET, mesh=mesh).unary_unary(ECHO_METHOD)
    for _ in range(50):
        echo(b"x", timeout=10, wait_for_ready=True)
    mesh_file.write_text(
        mesh_file.read_text()
        .replace("weight: 90", "weight: @")
        .replace("weight: 10", "weight: 90")
        .replace("weight: @", "weight: 10")
    )
    recent: collections.deque[str] = collections.deque(maxlen=200)
    deadline = time.monotonic() + 10
    for _ in range(50_000):  # every call must succeed while the config changes
        recent.append(decode_reply(echo(b"x", timeout=10))["backend"])
        if len(recent) == 200 and recent.count("reviews-v2") >= 150:
            break
        assert time.monotonic() < deadline, f"traffic did not move: {collections.Counter(recent)}"
    assert cp.version == 2
    assert cp.server.nacks() == []
