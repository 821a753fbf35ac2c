"""Helpers shared by the control-plane interop tests (not a test module)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from proxyless.controlplane import ControlPlane
from proxyless.testing.backends import ECHO_METHOD, decode_reply

CLIENT_SCRIPT = str(Path(__file__).with_name("cp_xds_client.py"))
REVIEWS = "reviews.default.svc.cluster.local:9080"
V2 = "reviews-v2"


def write_bootstrap(cp: ControlPlane, directory: Path, node_id: str = "grpc-client") -> Path:
    path = directory / f"bootstrap-{node_id}.json"
    path.write_text(json.dumps(cp.bootstrap(node_id)))
    return path


def xds_client_command(target: str, *args: str) -> list[str]:
    return [sys.executable, CLIENT_SCRIPT, target, *args]


def run_xds_client(bootstrap: Path, target: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run grpcio's xDS client in its own process; its JSON summary."""
    done = subprocess.run(
        xds_client_command(target, *args),
        env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"xDS client failed ({done.returncode}):\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def share(counts: dict[str, int], backend: str) -> float:
    total = sum(counts.values())
    return 100.0 * counts.get(backend, 0) / total if total else 0.0


def call_through(
    address: str, count: int, *, user_agent: str | None = None
) -> collections.Counter[str]:
    """``count`` calls through a plain gRPC channel (e.g. to an Envoy listener)."""
    options = [("grpc.primary_user_agent", user_agent)] if user_agent else []
    counts: collections.Counter[str] = collections.Counter()
    with grpc.insecure_channel(address, options=options) as channel:
        echo = channel.unary_unary(ECHO_METHOD)
        for _ in range(count):
            counts[decode_reply(echo(b"x", timeout=10, wait_for_ready=True))["backend"]] += 1
    return counts


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` (bounded by ``timeout``); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class CallLog:
    """Outcomes of a background call loop, appended as they happen."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def add(self, backend: str | None, error: str | None = None) -> None:
        with self.lock:
            if error is not None:
                self.errors.append(error)
            else:
                assert backend is not None
                self.outcomes.append(backend)

    def count(self) -> int:
        with self.lock:
            return len(self.outcomes)

    def last(self, n: int) -> list[str]:
        with self.lock:
            return self.outcomes[-n:]

    def since(self, index: int) -> list[str]:
        with self.lock:
            return self.outcomes[index:]


class EnvoyCallLoop(threading.Thread):
    """Calls through an Envoy listener until stopped (bounded in count and time)."""

    def __init__(self, address: str, *, max_calls: int = 50_000, max_seconds: float = 40.0) -> None:
        super().__init__(daemon=True, name="envoy-call-loop")
        self.address = address
        self.log = CallLog()
        self.stop_event = threading.Event()
        self.max_calls = max_calls
        self.max_seconds = max_seconds

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with grpc.insecure_channel(self.address) as channel:
            echo = channel.unary_unary(ECHO_METHOD)
            for _ in range(self.max_calls):
                if self.stop_event.is_set() or time.monotonic() > deadline:
                    return
                try:
                    self.log.add(decode_reply(echo(b"x", timeout=10))["backend"])
                except grpc.RpcError as exc:
                    self.log.add(None, f"{exc.code().name}: {exc.details()}")

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=15)


class XdsClientLoop:
    """grpcio's xDS client in a subprocess streaming one JSON line per call."""

    def __init__(
        self, bootstrap: Path, target: str, stop_file: Path, max_seconds: float = 40.0
    ) -> None:
        self.stop_file = stop_file
        self.log = CallLog()
        self.stderr_path = stop_file.with_suffix(".stderr")
        self._stderr = self.stderr_path.open("w")
        self.process = subprocess.Popen(
            xds_client_command(
                target,
                "--stream",
                "--count",
                "100000",
                "--until-file",
                str(stop_file),
                "--max-seconds",
                str(max_seconds),
            ),
            env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)},
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True, name="xds-client-reader")
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            record = json.loads(line)
            self.log.add(record.get("backend"), record.get("error"))

    def stop(self) -> str:
        """Ask the client to finish; its stderr."""
        self.stop_file.touch()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        self._stderr.close()
        return self.stderr_path.read_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.close()
