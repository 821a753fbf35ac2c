"""The demo's backends: one process each, xDS-enabled servers of the demo's control plane.

Each backend is ``python -m proxyless.testing.backends NAME --xds``
(:func:`proxyless.testing.backends.main`) with its own xDS bootstrap in
``GRPC_XDS_BOOTSTRAP_CONFIG``: a proxyless node of the embedded control
plane whose metadata says which workload it is (see :func:`backend_bootstrap`).
The process talks over its standard streams: it prints ``READY <port>``
once bound, ``SERVING`` when its inbound Listener arrived, ``CALLER <id>``
the first time it serves each caller, and answers ``fail CODE`` commands;
it exits when its standard input closes, so it never outlives the demo.
Its standard error is passed on, each line prefixed with its name.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from proxyless.bootstrap.loader import ENV_BOOTSTRAP, ENV_BOOTSTRAP_CONFIG
from proxyless.controlplane.embedded import ControlPlane
from proxyless.controlplane.istio.inbound import INSTANCE_IPS_KEY, SERVER_LISTENER_PREFIX

__all__ = ["BackendProcess", "backend_bootstrap", "start_backends"]

#: How long a backend may take to bind, and then to get its Listener.
START_TIMEOUT = 30.0


def backend_bootstrap(
    cp: ControlPlane,
    name: str,
    *,
    service_account: str,
    labels: Mapping[str, str],
    host: str = "127.0.0.1",
) -> dict[str, Any]:
    """The xDS bootstrap of backend ``name``: a server node of ``cp``.

    The control plane matches a server node to its workload by the address
    in ``INSTANCE_IPS``. The demo's backends share one address (127.0.0.1),
    so each matches every reviews endpoint and is sent the inbound Listener
    of each one's port, named ``xds.istio.io/grpc/lds/inbound/<ip>:<port>``;
    it subscribes only to its own port's. What would differ per workload is
    said in the metadata, as istio-agent says it: ``LABELS`` (which select
    the PeerAuthentication and AuthorizationPolicy that apply) and
    ``SERVICE_ACCOUNT`` (the SPIFFE ID the control plane's CA issues to it).
    """
    bootstrap = cp.bootstrap(
        node_id=f"{name}.default",
        metadata={
            INSTANCE_IPS_KEY: host,
            "LABELS": dict(labels),
            "SERVICE_ACCOUNT": service_account,
        },
    )
    bootstrap["server_listener_resource_name_template"] = f"{SERVER_LISTENER_PREFIX}%s"
    return bootstrap


class BackendProcess:
    """One backend process (see the module docstring)."""

    def __init__(self, name: str, bootstrap: Mapping[str, Any], host: str = "127.0.0.1") -> None:
        self.name = name
        self.port = 0
        env = {k: v for k, v in os.environ.items() if k != ENV_BOOTSTRAP}
        env[ENV_BOOTSTRAP_CONFIG] = json.dumps(bootstrap)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxyless.testing.backends", name, "--xds", "--host", host],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._callers: list[str] = []
        self._lock = threading.Condition()
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"demo-{name}", daemon=True)
        self._reader.start()
        self._errors = threading.Thread(target=self._relay_stderr, name=f"demo-{name}-stderr")
        self._errors.daemon = True
        self._errors.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.rstrip("\n")
            if line.startswith("CALLER "):
                with self._lock:
                    self._callers.append(line[len("CALLER ") :])
                    self._lock.notify_all()
            else:
                self._lines.put(line)
        self._lines.put(None)

    def _relay_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            sys.stderr.write(f"[{self.name}] {line}")
            sys.stderr.flush()

    def wait_callers(self, timeout: float) -> list[str]:
        """The caller identities the backend reported, in order (``plaintext``
        for a caller without one); waits up to ``timeout`` for the first."""
        with self._lock:
            self._lock.wait_for(lambda: bool(self._callers), timeout)
            return list(self._callers)

    def expect(self, word: str, timeout: float) -> str:
        """The next line starting with ``word``; other lines are skipped.
        Raises RuntimeError when the process exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        skipped = ""
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                why = f" (last: {skipped})" if skipped else ""
                raise RuntimeError(
                    f"backend {self.name}: no {word} within {timeout:.0f}s{why}"
                ) from None
            if line is None:
                self.process.wait(5)
                raise RuntimeError(f"backend {self.name} exited (status {self.process.returncode})")
            if line.split(" ", 1)[0] == word:
                return line
            skipped = line

    def command(self, text: str, timeout: float = 5.0) -> str:
        """Send one command line; return the backend's answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        answer = self.expect("FAILING", timeout)
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()

    def wait(self) -> None:
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@contextlib.contextmanager
def start_backends(
    names: Sequence[str], bootstraps: Mapping[str, Mapping[str, Any]]
) -> Iterator[dict[str, BackendProcess]]:
    """Start one :class:`BackendProcess` per name (in parallel), wait until
    each is bound (its ``port`` set), and stop them all on exit."""
    procs: dict[str, BackendProcess] = {}
    try:
        for name in names:
            procs[name] = BackendProcess(name, bootstraps[name])
        for proc in procs.values():
            proc.port = int(proc.expect("READY", START_TIMEOUT).split()[1])
        yield procs
    finally:
        for proc in procs.values():
            proc.close()
        for proc in procs.values():
            proc.wait()
