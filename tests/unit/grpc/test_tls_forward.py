"""Local forwarders: the private directory, the peer-credential check that
refuses other processes, and the error a failed attempt reports."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from proxyless.controlplane.ca import DevCA
from proxyless.errors import IdentityMismatch
from proxyless.grpc._errors import XdsRpcError
from proxyless.grpc._tls import explain_failure
from proxyless.grpc._tls_forward import Forwarder, ForwarderHub
from proxyless.resources.model.security import (
    CertificateValidationContext,
    DataSource,
    UpstreamTlsContext,
)
from proxyless.security.credentials import ClientTls, ClusterCredentials, SecretSources


@pytest.fixture(scope="module")
def tls() -> ClientTls:
    ca = DevCA()
    ctx = UpstreamTlsContext(
        validation=CertificateValidationContext(trusted_ca=DataSource(inline=ca.roots_pem))
    )
    return ClusterCredentials("c", ctx, SecretSources()).current()


@pytest.fixture
def hub() -> Iterator[ForwarderHub]:
    h = ForwarderHub()
    yield h
    h.close()


def _listening(fwd: Forwarder) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(fwd.path)
                return
        except OSError:
            time.sleep(0.01)
    raise AssertionError("the forwarder never listened")


def test_the_socket_directory_is_private(hub: ForwarderHub) -> None:
    mode = stat.S_IMODE(os.stat(hub.directory).st_mode)
    assert mode == 0o700


def test_another_process_is_refused(hub: ForwarderHub, tls: ClientTls) -> None:
    """A connection from another process (same user) is closed unread; the
    endpoint is never dialled for it."""
    with socket.socket() as endpoint:
        endpoint.bind(("127.0.0.1", 0))
        endpoint.listen(1)
        endpoint.settimeout(0.5)
        fwd = hub.open(tls, f"127.0.0.1:{endpoint.getsockname()[1]}")
        _listening(fwd)  # this process: accepted (and dialled once)
        endpoint.accept()[0].close()
        script = (
            "import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);"
            "s.settimeout(5);s.sendall(b'PRI * HTTP/2.0');print(repr(s.recv(10)))"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, fwd.path], capture_output=True, text=True, timeout=20
        )
        assert out.stdout.strip() in ("b''", "")  # closed at once, nothing relayed
        with pytest.raises(TimeoutError):
            endpoint.accept()  # never dialled for the other process


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _Pooled:
    def __init__(self, fwd: Forwarder | None) -> None:
        self.forwarder = fwd


MISMATCH = "cluster 'c' endpoint 127.0.0.1:9: the peer presented Y, expected X"


@pytest.mark.parametrize(
    ("code", "details", "recorded", "expected"),
    [
        pytest.param(
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: Socket closed",
            True,
            (grpc.StatusCode.UNAVAILABLE, f"failed to connect to 127.0.0.1:9: {MISMATCH}"),
            id="connect-failure",
        ),
        pytest.param(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "Deadline Exceeded",
            True,
            (
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"Deadline Exceeded (last connection attempt: {MISMATCH})",
            ),
            id="wait-for-ready-deadline",
        ),
        pytest.param(
            grpc.StatusCode.PERMISSION_DENIED, "denied", True, None, id="server-status-unchanged"
        ),
        pytest.param(
            grpc.StatusCode.UNAVAILABLE, "Socket closed", False, None, id="nothing-recorded"
        ),
    ],
)
def test_a_failed_attempt_reports_the_handshake_failure(
    hub: ForwarderHub,
    tls: ClientTls,
    code: grpc.StatusCode,
    details: str,
    recorded: bool,
    expected: tuple[grpc.StatusCode, str] | None,
) -> None:
    fwd = hub.open(tls, "127.0.0.1:9")
    err = _Failed(code, details)
    assert explain_failure(_Pooled(None), err) is err  # a plaintext endpoint: unchanged
    if recorded:
        fwd.last_error = IdentityMismatch(MISMATCH)
    out = explain_failure(_Pooled(fwd), err)
    if expected is None:
        assert out is err
        return
    assert isinstance(out, XdsRpcError)
    assert (out.code(), out.details()) == expected
    assert out.proxyless_error is fwd.last_error
