"""Fixtures for interop tests: real backends, the embedded control plane on a file, Envoy."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxyless.controlplane import ControlPlane, render_example
from proxyless.testing.backends import EchoServer

BACKENDS = ("reviews-v1-a", "reviews-v1-b", "reviews-v2")


@pytest.fixture
def backends() -> Iterator[dict[str, EchoServer]]:
    servers = {name: EchoServer(name).start() for name in BACKENDS}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop(0)


@pytest.fixture
def mesh_yaml(backends: dict[str, EchoServer]) -> str:
    return render_example("reviews", {name: s.address for name, s in backends.items()})


@pytest.fixture
def mesh_file(tmp_path: Path, mesh_yaml: str) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(mesh_yaml)
    return path


@pytest.fixture
def control_plane(mesh_file: Path) -> Iterator[ControlPlane]:
    with ControlPlane(mesh_file, poll_interval=0.1, stderr=io.StringIO()) as cp:
        yield cp
