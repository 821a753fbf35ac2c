"""Shared pieces of the benchmarks: timing, statistics, memory, backends, xDS config,
SPIFFE certificates and an Envoy sidecar pair.

Everything listens on 127.0.0.1 only. Every loop here is bounded by a call
count and a time cap. Processes started here (the echo backend, Envoy) are
killed on exit, also through :mod:`atexit` when the benchmark dies early.
"""

from __future__ import annotations

import atexit
import datetime
import gc
import json
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Backend",
    "EnvoySidecarPair",
    "SpiffeCerts",
    "Stats",
    "machine_info",
    "make_spiffe_certs",
    "median",
    "percentile",
    "rss_bytes",
    "serve_service",
    "settle_rss",
    "summarize",
    "timed_calls",
    "xds_bootstrap",
]

MB = 1024 * 1024


# --- statistics ---------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        raise ValueError("percentile of no samples")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


@dataclass(frozen=True, slots=True)
class Stats:
    """Latency summary of one batch of calls, in microseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float]:
        return {
            "n": self.n,
            "p50_us": round(self.p50, 1),
            "p90_us": round(self.p90, 1),
            "p99_us": round(self.p99, 1),
            "max_us": round(self.max, 1),
            "mean_us": round(self.mean, 1),
        }


def summarize(samples_ns: Sequence[int]) -> Stats:
    """p50/p90/p99/max/mean in µs of per-call durations in nanoseconds."""
    us = sorted(s / 1000.0 for s in samples_ns)
    return Stats(
        n=len(us),
        p50=percentile(us, 50),
        p90=percentile(us, 90),
        p99=percentile(us, 99),
        max=us[-1],
        mean=sum(us) / len(us),
    )


def timed_calls(call: Callable[[], Any], count: int, time_cap: float) -> list[int]:
    """Run ``call`` up to ``count`` times (stopping after ``time_cap`` seconds);
    the duration of each call in nanoseconds."""
    out: list[int] = []
    append = out.append
    clock = time.perf_counter_ns
    stop_at = clock() + int(time_cap * 1e9)
    for _ in range(count):
        t0 = clock()
        call()
        t1 = clock()
        append(t1 - t0)
        if t1 > stop_at:
            break
    return out


# --- memory ---------------------------------------------------------------------------------


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (VmRSS in /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def settle_rss() -> int:
    """This process's RSS after a full garbage collection."""
    gc.collect()
    gc.collect()
    return rss_bytes()


# --- the machine --------------------------------------------------------------------------


def machine_info(*, envoy_version: bool = True) -> dict[str, Any]:
    """nproc, CPU model, kernel, and the versions of Python, grpcio, protobuf and Envoy."""
    import google.protobuf
    import grpc

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    envoy = _envoy_version() if envoy_version else "not asked"
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = -1.0
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "envoy": envoy,
        "loadavg_1m_at_start": round(load, 2),
        "revision": _revision(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _revision() -> str:
    """The repository's commit, with "+changes" when src/ differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+changes" if head and dirty else head or "unknown"


def _envoy_version() -> str:
    from proxyless.testing.controlplane import envoy_binary

    try:
        out = subprocess.run(
            [envoy_binary(), "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"not found ({exc})"
    found = re.search(r"/(\d+\.\d+\.\d+)/", out)
    return found.group(1) if found else out.strip()


# --- processes ---------------------------------------------------------------------------------

_children: list[subprocess.Popen[bytes]] = []


def _kill_children() -> None:
    for proc in _children:
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


atexit.register(_kill_children)

_BACKEND_CODE = """
import sys
from proxyless.testing.backends import EchoServer
server = EchoServer("backend", max_workers=int(sys.argv[1])).start()
print(server.address, flush=True)
sys.stdin.read()
server.stop(0)
"""


class Backend:
    """The gRPC echo backend (:class:`proxyless.testing.backends.EchoServer`) in its
    own process, so its Python handler does not share the client's interpreter lock."""

    def __init__(self, *, max_workers: int = 4, timeout: float = 30.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BACKEND_CODE, str(max_workers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        _children.append(self.process)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode().strip() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"echo backend did not start within {timeout}s")
        self.address = line

    def stop(self) -> None:
        proc = self.process
        if proc.poll() is None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=5)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- xDS config -------------------------------------------------------------------------------


def xds_bootstrap(ads_target: str, node_id: str = "bench-client") -> dict[str, Any]:
    """A gRPC xDS bootstrap for an ADS server without TLS (grpcio reads the same shape)."""
    return {
        "xds_servers": [
            {
                "server_uri": ads_target,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "cluster": "bench", "locality": {"zone": "local"}},
    }


def serve_service(
    ads: Any, name: str, addresses: Sequence[str], *, cluster_name: str | None = None
) -> dict[str, dict[str, Any]]:
    """The four resources of one service ``name`` (listener -> route config -> one
    cluster -> ``addresses``), as ``{type_url: {resource name: proto}}``; served on
    ``ads`` when it is not None (replacing what was there)."""
    from proxyless.testing.resources import (
        CLUSTER_URL,
        ENDPOINT_URL,
        LISTENER_URL,
        ROUTE_URL,
        cluster,
        endpoints,
        listener,
        route,
        route_config,
    )

    cname = cluster_name or name.split(":")[0]
    rc = f"{cname}-routes"
    resources: dict[str, dict[str, Any]] = {
        LISTENER_URL: {name: listener(name, rc)},
        ROUTE_URL: {rc: route_config(rc, name, [route(prefix="/", cluster=cname)])},
        CLUSTER_URL: {cname: cluster(cname)},
        ENDPOINT_URL: {cname: endpoints(cname, list(addresses))},
    }
    if ads is not None:
        for type_url, named in resources.items():
            ads.set_resources(type_url, named)
    return resources


# --- SPIFFE certificates ---------------------------------------------------------------------

SPIFFE_CLIENT = "spiffe://cluster.local/ns/default/sa/client"
SPIFFE_SERVER = "spiffe://cluster.local/ns/default/sa/server"


@dataclass(frozen=True, slots=True)
class SpiffeCerts:
    """Paths of a CA and two SPIFFE leaf certificates (PEM)."""

    ca: Path
    client_cert: Path
    client_key: Path
    server_cert: Path
    server_key: Path


def make_spiffe_certs(directory: Path) -> SpiffeCerts:
    """A CA and two leaf certificates whose only SAN is a SPIFFE URI (as Istio issues
    them): the client's ``.../sa/client`` and the server's ``.../sa/server``.
    Issued by the development CA of :mod:`proxyless.controlplane.ca`; each
    leaf file holds the leaf only."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from proxyless.controlplane.ca import DevCA

    ca = DevCA("cluster.local")
    directory.mkdir(parents=True, exist_ok=True)
    certs = SpiffeCerts(
        ca=directory / "ca.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
    )
    certs.ca.write_bytes(ca.roots_pem)
    for spiffe_id, cert_path, key_path in (
        (SPIFFE_CLIENT, certs.client_cert, certs.client_key),
        (SPIFFE_SERVER, certs.server_cert, certs.server_key),
    ):
        svid = ca.issue(spiffe_id, ttl=datetime.timedelta(days=1))
        leaf = x509.load_pem_x509_certificates(svid.chain_pem)[0]
        cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(svid.key_pem)
        key_path.chmod(0o600)
    return certs


# --- Envoy sidecar pair ----------------------------------------------------------------------

_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_H2_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_DOWNSTREAM_TLS = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _hcm(stat_prefix: str, cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _HCM,
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "route_config": {
                "name": stat_prefix,
                "virtual_hosts": [
                    {
                        "name": stat_prefix,
                        "domains": ["*"],
                        "routes": [
                            {
                                "match": {"prefix": "/"},
                                "route": {"cluster": cluster, "timeout": "0s"},
                            }
                        ],
                    }
                ],
            },
            "http_filters": [
                {"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}
            ],
        },
    }


def _static_cluster(name: str, host: str, port: int, *, http2: bool = True) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _H2_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def _tls_context(cert: Path, key: Path, ca: Path, peer_id: str) -> dict[str, Any]:
    return {
        "alpn_protocols": ["h2"],
        "tls_certificates": [
            {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}
        ],
        "validation_context": {
            "trusted_ca": {"filename": str(ca)},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": peer_id}}],
        },
    }


def envoy_server_sidecar(
    certs: SpiffeCerts, backend: str, *, backend_http2: bool = True
) -> dict[str, Any]:
    """Envoy B (the server's sidecar): mTLS listener on 127.0.0.1 (port chosen by the
    kernel) that accepts only the client's SPIFFE ID, HTTP/2 (or HTTP/1.1 with
    ``backend_http2=False``) to the backend."""
    host, _, port = backend.rpartition(":")
    return {
        "admin": {"address": _address("127.0.0.1", 0)},
        "static_resources": {
            "listeners": [
                {
                    "name": "inbound",
                    "address": _address("127.0.0.1", 0),
                    "filter_chains": [
                        {
                            "filters": [_hcm("inbound", "app")],
                            "transport_socket": {
                                "name": "envoy.transport_sockets.tls",
                                "typed_config": {
                                    "@type": _DOWNSTREAM_TLS,
                                    "require_client_certificate": True,
                                    "common_tls_context": _tls_context(
                                        certs.server_cert,
                                        certs.server_key,
                                        certs.ca,
                                        SPIFFE_CLIENT,
                                    ),
                                },
                            },
                        }
                    ],
                }
            ],
            "clusters": [_static_cluster("app", host, int(port), http2=backend_http2)],
        },
    }


def envoy_client_sidecar(certs: SpiffeCerts, peer_port: int) -> dict[str, Any]:
    """Envoy A (the client's sidecar): plaintext listener on 127.0.0.1 for the app,
    HTTP/2 over mTLS to Envoy B, accepting only the server's SPIFFE ID."""
    cluster = _static_cluster("outbound", "127.0.0.1", peer_port)
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _UPSTREAM_TLS,
            "sni": "outbound_.80_._.svc.default.svc.cluster.local",
            "common_tls_context": _tls_context(
                certs.client_cert, certs.client_key, certs.ca, SPIFFE_SERVER
            ),
        },
    }
    return {
        "admin": {"address": _address("127.0.0.1", 0)},
        "static_resources": {
            "listeners": [
                {
                    "name": "outbound",
                    "address": _address("127.0.0.1", 0),
                    "filter_chains": [{"filters": [_hcm("outbound", "outbound")]}],
                }
            ],
            "clusters": [cluster],
        },
    }


def _listener_port(envoy: Any, name: str) -> int:
    with urllib.request.urlopen(f"http://{envoy.admin}/listeners?format=json", timeout=5) as r:
        body = json.loads(r.read())
    for status in body.get("listener_statuses", []):
        if status.get("name") == name:
            return int(status["local_address"]["socket_address"]["port_value"])
    raise RuntimeError(f"envoy has no listener {name!r}: {body}")


class EnvoySidecarPair:
    """app -> Envoy A (plaintext) -> SPIFFE mTLS -> Envoy B -> backend, both Envoys
    with ``--concurrency 1``. :attr:`address` is Envoy A's listener."""

    def __init__(
        self, certs: SpiffeCerts, backend: str, *, attempts: int = 3, backend_http2: bool = True
    ) -> None:
        self._attempts = attempts
        self._started: list[Any] = []
        #: Envoy starts that failed and were retried (the process died during start-up)
        self.start_failures: list[str] = []
        atexit.register(self.stop)
        try:
            self.server_side = self._start(
                envoy_server_sidecar(certs, backend, backend_http2=backend_http2)
            )
            peer_port = _listener_port(self.server_side, "inbound")
            self.client_side = self._start(envoy_client_sidecar(certs, peer_port))
            self.address = f"127.0.0.1:{_listener_port(self.client_side, 'outbound')}"
        except BaseException:
            self.stop()
            raise

    def _start(self, bootstrap: dict[str, Any]) -> Any:
        from proxyless.testing.controlplane import EnvoyProcess

        for attempt in range(1, self._attempts + 1):
            envoy = EnvoyProcess(bootstrap)
            try:
                envoy.start()
            except RuntimeError as exc:  # exited during start-up (EnvoyProcess stopped it)
                if attempt == self._attempts:
                    raise
                self.start_failures.append(str(exc).splitlines()[0])
                continue
            self._started.append(envoy)
            return envoy
        raise AssertionError("unreachable")

    def pids(self) -> list[int]:
        return [e.process.pid for e in self._started if e.process is not None]

    def rss(self) -> dict[str, int]:
        """RSS in bytes of Envoy A (the client's sidecar) and Envoy B (the server's)."""
        return {
            "A": rss_bytes(self.client_side.process.pid),
            "B": rss_bytes(self.server_side.process.pid),
        }

    def stats(self) -> list[dict[str, int]]:
        return [e.stats() for e in self._started if e.process is not None]

    def stop(self) -> None:
        while self._started:
            self._started.pop().stop()

    def __enter__(self) -> EnvoySidecarPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
