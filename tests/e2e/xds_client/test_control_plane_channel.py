"""The channel to the control plane: TLS and mTLS (gRFC A65 ``tls`` channel
credentials) and istio-agent's unix socket, against the embedded control
plane served the same ways, through a proxyless gRPC channel."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tests.e2e.conftest import close_endpoint_pools
from tests.e2e.xds_client.test_fallback import publish

import proxyless.grpc
from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply

CP_IDENTITY = "spiffe://cluster.local/ns/istio-system/sa/istiod"
CLIENT_IDENTITY = "spiffe://cluster.local/ns/default/sa/client"


@pytest.fixture
def backend() -> Iterator[EchoServer]:
    server = EchoServer("a").start()
    yield server
    server.stop(0)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (a unix socket path is at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="pl-xds-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def serve() -> Iterator[Callable[..., AdsServer]]:
    started: list[AdsServer] = []

    def start(**kwargs: Any) -> AdsServer:
        server = AdsServer(**kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def mesh_for() -> Iterator[Callable[..., Mesh]]:
    made: list[Mesh] = []

    def make(server_uri: str, creds: dict[str, Any]) -> Mesh:
        mesh = Mesh(
            {
                "xds_servers": [{"server_uri": server_uri, "channel_creds": [creds]}],
                "node": {"id": "e2e-cp-channel"},
            }
        )
        made.append(mesh)
        return mesh

    yield make
    for mesh in made:
        mesh.close()
    close_endpoint_pools()


def tls_control_plane(
    ca: DevCA, serve: Callable[..., AdsServer], *, client_auth: bool
) -> AdsServer:
    # grpcio checks the server's DNS SANs against the target's host: "localhost".
    cert = ca.issue(CP_IDENTITY, dns=("localhost",))
    creds = grpc.ssl_server_credentials(
        [(cert.key_pem, cert.chain_pem)],
        root_certificates=ca.roots_pem if client_auth else None,
        require_client_auth=client_auth,
    )
    return serve(server_credentials=creds)


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def echo(mesh: Mesh) -> Callable[..., bytes]:
    call: Callable[..., bytes] = proxyless.grpc.channel("xds:///svc:80", mesh=mesh).unary_unary(
        ECHO_METHOD
    )
    return call


def test_mtls_control_plane(
    tmp_path: Path,
    backend: EchoServer,
    serve: Callable[..., AdsServer],
    mesh_for: Callable[..., Mesh],
) -> None:
    ca = DevCA()
    ads = tls_control_plane(ca, serve, client_auth=True)
    publish(ads, backend, ("svc:80",))
    client = ca.issue(CLIENT_IDENTITY)
    creds = {
        "type": "tls",
        "config": {
            "ca_certificate_file": write(tmp_path / "ca.pem", ca.roots_pem),
            "certificate_file": write(tmp_path / "cert.pem", client.chain_pem),
            "private_key_file": write(tmp_path / "key.pem", client.key_pem),
            "refresh_interval": "600s",
        },
    }
    mesh = mesh_for(f"localhost:{ads.port}", creds)
    assert decode_reply(echo(mesh)(b"x", timeout=10))["backend"] == "a"
    assert ads.node_ids() == ["e2e-cp-channel"]


def test_tls_control_plane_without_client_certificate(
    tmp_path: Path,
    backend: EchoServer,
    serve: Callable[..., AdsServer],
    mesh_for: Callable[..., Mesh],
) -> None:
    ca = DevCA()
    ads = tls_control_plane(ca, serve, client_auth=False)
    publish(ads, backend, ("svc:80",))
    creds = {
        "type": "tls",
        "config": {"ca_certificate_file": write(tmp_path / "ca.pem", ca.roots_pem)},
    }
    mesh = mesh_for(f"localhost:{ads.port}", creds)
    assert decode_reply(echo(mesh)(b"x", timeout=10))["backend"] == "a"


def test_wrong_ca_is_refused_naming_the_server_and_the_ca_file(
    tmp_path: Path,
    backend: EchoServer,
    serve: Callable[..., AdsServer],
    mesh_for: Callable[..., Mesh],
) -> None:
    ads = tls_control_plane(DevCA(), serve, client_auth=False)
    publish(ads, backend, ("svc:80",))
    wrong_ca = write(tmp_path / "other-ca.pem", DevCA().roots_pem)
    uri = f"localhost:{ads.port}"
    mesh = mesh_for(uri, {"type": "tls", "config": {"ca_certificate_file": wrong_ca}})
    with pytest.raises(grpc.RpcError) as info:
        echo(mesh)(b"x", timeout=10)
    message = str(info.value.details())  # type: ignore[attr-defined]
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert uri in message and wrong_ca in message, message
    assert "TLS handshake" in message
    assert ads.node_ids() == []  # no stream was ever opened by the client


def test_google_default_credentials_are_refused_clearly(
    serve: Callable[..., AdsServer], mesh_for: Callable[..., Mesh]
) -> None:
    ads = serve()
    mesh = mesh_for(ads.target, {"type": "google_default"})
    with pytest.raises(grpc.RpcError) as info:
        echo(mesh)(b"x", timeout=10)
    message = str(info.value.details())  # type: ignore[attr-defined]
    assert "'google_default'" in message and ads.target in message, message
    assert "not supported" in message


@pytest.mark.parametrize("form", ["unix:///", "unix:/"])
def test_unix_socket_control_plane(
    form: str,
    short_dir: Path,
    backend: EchoServer,
    serve: Callable[..., AdsServer],
    mesh_for: Callable[..., Mesh],
) -> None:
    socket_path = short_dir / "XDS"
    ads = serve(address=f"unix:{socket_path}")
    publish(ads, backend, ("svc:80",))
    uri = form + str(socket_path).lstrip("/")  # unix:///tmp/.../XDS, as istio-agent writes
    mesh = mesh_for(uri, {"type": "insecure"})
    assert decode_reply(echo(mesh)(b"x", timeout=10))["backend"] == "a"
    assert ads.node_ids() == ["e2e-cp-channel"]
