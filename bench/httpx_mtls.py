"""What an mTLS request costs through proxyless.httpx, side by side with plain httpx over the same mTLS.

One process run measures sequential HTTP/1.1 ``GET`` requests to one backend
that requires a client certificate (a minimal keep-alive HTTPS server on
127.0.0.1 in its own process; certificates from a
:class:`proxyless.controlplane.ca.DevCA`: the backend presents the SPIFFE ID
``.../sa/reviews``, the client ``.../sa/web``) through:

1. ``plain-mtls``      — ``httpx.Client(verify=ctx)`` to ``https://127.0.0.1:PORT/``
   with ``ctx`` the same client context the transport uses (client
   certificate, trust bundle, TLS 1.2+; no SPIFFE check): the floor;
2. ``proxyless-mtls``  — ``httpx.Client(transport=proxyless.httpx.Transport(mesh))``
   to ``http://svc:8080/``: listener -> route -> a TLS cluster whose
   ``UpstreamTlsContext`` (inline certificates) pins the backend's SPIFFE ID;

and, in an asyncio loop, ``async-plain-mtls`` against ``proxyless-async-mtls``.
Keep-alive requests reuse one connection; ``--new-connections`` rounds send
``connection: close`` so that every request pays a TCP connect, a TLS
handshake with client certificate and (for proxyless) the SAN check — the
handshake cost of a new connection.

Contenders run interleaved in slices of 50 requests whose order rotates
(as in ``bench/httpx_overhead.py``); figures are medians across rounds, and
ratios medians of per-round ratios to the plain contender of the same kind.

Run ``python bench/httpx_mtls.py [--calls N] [--rounds R] [--quick] [--json out.json]``.
Every loop is bounded by a request count and a time cap; the backend process
is killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.httpx_overhead import atimed, percentile, timed

SERVICE = "svc:8080"
TARGET_P50 = 1.10
GOAL_P50 = 1.05
SLICE = 50
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/web"
SERVER_ID = "spiffe://cluster.local/ns/default/sa/reviews"

_BACKEND = r"""
import asyncio, socket, ssl, sys
cert, key, ca = sys.argv[1:4]
CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
CTX.load_cert_chain(cert, key)
CTX.load_verify_locations(ca)
CTX.verify_mode = ssl.CERT_REQUIRED
BODY = b'{"backend":"bench","ok":true}'
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + str(len(BODY)).encode()

class Proto(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length, close = 0, False
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                elif line.startswith(b"connection:") and b"close" in line:
                    close = True
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            if close:
                self.t.write(HEAD + b"\r\nconnection: close\r\n\r\n" + BODY)
                self.t.close()
                return
            self.t.write(HEAD + b"\r\n\r\n" + BODY)

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Proto, "127.0.0.1", 0, ssl=CTX)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


class TlsBackend:
    """The HTTPS backend in its own process; ``address`` is ``127.0.0.1:PORT``."""

    def __init__(self, cert: Path, key: Path, ca: Path, timeout: float = 30.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BACKEND, str(cert), str(key), str(ca)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        atexit.register(self.stop)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode().strip() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"HTTPS backend did not start within {timeout}s")
        self.address = f"127.0.0.1:{line}"

    def stop(self) -> None:
        proc = self.process
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def _tls_cluster(client: Any, roots_pem: bytes) -> Any:
    from envoy.config.core.v3 import base_pb2
    from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
    from envoy.type.matcher.v3 import string_pb2

    from proxyless.testing.resources import cluster

    common = tls_pb2.CommonTlsContext()
    common.tls_certificates.add(
        certificate_chain=base_pb2.DataSource(inline_bytes=client.chain_pem),
        private_key=base_pb2.DataSource(inline_bytes=client.key_pem),
    )
    common.validation_context.trusted_ca.inline_bytes = roots_pem
    common.validation_context.match_typed_subject_alt_names.add(
        san_type=common_pb2.SubjectAltNameMatcher.URI,
        matcher=string_pb2.StringMatcher(exact=SERVER_ID),
    )
    c = cluster("svc")
    c.transport_socket.name = "envoy.transport_sockets.tls"
    c.transport_socket.typed_config.Pack(tls_pb2.UpstreamTlsContext(common_tls_context=common))
    return c


def _serve(ads: Any, address: str, tls_cluster: Any) -> None:
    from proxyless.testing.resources import (
        CLUSTER_URL,
        ENDPOINT_URL,
        LISTENER_URL,
        ROUTE_URL,
        endpoints,
        listener,
        route,
        route_config,
    )

    ads.set_resources(ENDPOINT_URL, {"svc": endpoints("svc", [address])})
    ads.set_resources(CLUSTER_URL, {"svc": tls_cluster})
    ads.set_resources(
        ROUTE_URL,
        {"svc-routes": route_config("svc-routes", SERVICE, [route(prefix="/", cluster="svc")])},
    )
    ads.set_resources(LISTENER_URL, {SERVICE: listener(SERVICE, "svc-routes")})


def _interleave(
    fns: dict[str, Callable[[], Any]], rounds: int, calls: int, cap: float
) -> dict[str, list[dict[str, float]]]:
    names = list(fns)
    out: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    for i in range(rounds):
        got: dict[str, list[float]] = {k: [] for k in names}
        stop_at = time.monotonic() + cap
        for j in range(max(1, calls // SLICE)):
            k = (i + j) % len(names)
            for name in names[k:] + names[:k]:
                got[name].extend(timed(fns[name], SLICE, cap))
            if time.monotonic() > stop_at:
                break
        gc.collect()
        for name in names:
            out[name].append(
                {
                    "p50": percentile(got[name], 50),
                    "p99": percentile(got[name], 99),
                    "n": len(got[name]),
                }
            )
    return out


async def _ainterleave(
    fns: dict[str, Callable[[], Awaitable[Any]]], rounds: int, calls: int, cap: float
) -> dict[str, list[dict[str, float]]]:
    names = list(fns)
    out: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    for i in range(rounds):
        got: dict[str, list[float]] = {k: [] for k in names}
        stop_at = time.monotonic() + cap
        for j in range(max(1, calls // SLICE)):
            order = names if (i + j) % 2 == 0 else names[::-1]
            for name in order:
                got[name].extend(await atimed(fns[name], SLICE, cap))
            if time.monotonic() > stop_at:
                break
        gc.collect()
        for name in names:
            out[name].append(
                {
                    "p50": percentile(got[name], 50),
                    "p99": percentile(got[name], 99),
                    "n": len(got[name]),
                }
            )
    return out


def run(
    calls: int, rounds: int, warmup: int, cap: float, new_connection_calls: int
) -> dict[str, Any]:
    import proxyless.httpx
    from proxyless.controlplane.ca import DevCA
    from proxyless.controlplane.server import AdsServer
    from proxyless.mesh import Mesh
    from proxyless.security import client_context, load_identity, load_trust

    ca = DevCA("cluster.local")
    server_cert, client_cert = ca.issue(SERVER_ID), ca.issue(CLIENT_ID)
    tmp = Path(tempfile.mkdtemp(prefix="proxyless-bench-mtls-"))
    (tmp / "cert.pem").write_bytes(server_cert.chain_pem)
    (tmp / "key.pem").write_bytes(server_cert.key_pem)
    (tmp / "ca.pem").write_bytes(ca.roots_pem)
    os.chmod(tmp / "key.pem", 0o600)
    backend = TlsBackend(tmp / "cert.pem", tmp / "key.pem", tmp / "ca.pem")
    ads = AdsServer()
    ads.start()
    results: dict[str, Any] = {}
    try:
        _serve(ads, backend.address, _tls_cluster(client_cert, ca.roots_pem))
        identity = load_identity(
            client_cert.chain_pem, client_cert.key_pem, source="client", now=time.time()
        )
        ctx = client_context(identity, load_trust(ca.roots_pem, source="roots"), ("http/1.1",))
        plain = httpx.Client(verify=ctx)
        direct_url = f"https://{backend.address}/"
        mesh = Mesh(
            {
                "xds_servers": [
                    {"server_uri": ads.target, "channel_creds": [{"type": "insecure"}]}
                ],
                "node": {"id": "bench-httpx-mtls"},
            }
        )
        mesh_client = httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh))
        mesh_url = f"http://{SERVICE}/"
        close = {"connection": "close"}
        for _ in range(warmup):
            assert plain.get(direct_url).status_code == 200
            assert mesh_client.get(mesh_url).status_code == 200
        per_round = _interleave(
            {
                "plain-mtls": lambda: plain.get(direct_url),
                "proxyless-mtls": lambda: mesh_client.get(mesh_url),
            },
            rounds,
            calls,
            cap,
        )
        per_round.update(
            _interleave(
                {
                    "plain-mtls-new-conn": lambda: plain.get(direct_url, headers=close),
                    "proxyless-mtls-new-conn": lambda: mesh_client.get(mesh_url, headers=close),
                },
                rounds,
                new_connection_calls,
                cap,
            )
        )

        async def async_rounds() -> dict[str, list[dict[str, float]]]:
            aplain = httpx.AsyncClient(verify=ctx)
            amesh = httpx.AsyncClient(transport=proxyless.httpx.AsyncTransport(mesh=mesh))
            try:
                for _ in range(warmup):
                    await aplain.get(direct_url)
                    await amesh.get(mesh_url)
                return await _ainterleave(
                    {
                        "async-plain-mtls": lambda: aplain.get(direct_url),
                        "proxyless-async-mtls": lambda: amesh.get(mesh_url),
                    },
                    rounds,
                    calls,
                    cap,
                )
            finally:
                await aplain.aclose()
                await amesh.aclose()

        per_round.update(asyncio.run(async_rounds()))
        mesh_client.close()
        plain.close()
        mesh.close()

        def summary(name: str, base: str) -> dict[str, Any]:
            rows = per_round[name]
            ratios = [r["p50"] / b["p50"] for r, b in zip(rows, per_round[base], strict=True)]
            ratios99 = [r["p99"] / b["p99"] for r, b in zip(rows, per_round[base], strict=True)]
            return {
                "p50_us": round(statistics.median(r["p50"] for r in rows), 1),
                "p99_us": round(statistics.median(r["p99"] for r in rows), 1),
                "p50_ratio": round(statistics.median(ratios), 3),
                "p50_ratio_rounds": [round(r, 3) for r in ratios],
                "p99_ratio": round(statistics.median(ratios99), 3),
                "requests": int(sum(r["n"] for r in rows)),
            }

        pairs = [
            ("plain-mtls", "plain-mtls"),
            ("proxyless-mtls", "plain-mtls"),
            ("plain-mtls-new-conn", "plain-mtls-new-conn"),
            ("proxyless-mtls-new-conn", "plain-mtls-new-conn"),
            ("async-plain-mtls", "async-plain-mtls"),
            ("proxyless-async-mtls", "async-plain-mtls"),
        ]
        results["contenders"] = {name: summary(name, base) for name, base in pairs}
    finally:
        ads.stop()
        backend.stop()
    results["machine"] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "httpx": httpx.__version__,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    results["settings"] = {
        "calls": calls,
        "rounds": rounds,
        "warmup": warmup,
        "new_connection_calls": new_connection_calls,
    }
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument(
        "--new-connections", type=int, default=300, help="requests per round on new connections"
    )
    parser.add_argument("--time-cap", type=float, default=30.0, help="seconds per batch, at most")
    parser.add_argument("--quick", action="store_true", help="300 calls x 3 rounds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    calls, rounds, fresh = (
        (300, 3, 100) if args.quick else (args.calls, args.rounds, args.new_connections)
    )
    results = run(calls, rounds, min(args.warmup, calls), args.time_cap, fresh)
    print(f"{'contender':<26}{'p50 µs':>10}{'p99 µs':>10}{'p50 x':>8}{'p99 x':>8}")
    for name, row in results["contenders"].items():
        print(
            f"{name:<26}{row['p50_us']:>10.1f}{row['p99_us']:>10.1f}"
            f"{row['p50_ratio']:>8.3f}{row['p99_ratio']:>8.3f}"
        )
    for name in ("proxyless-mtls", "proxyless-async-mtls"):
        ratio = results["contenders"][name]["p50_ratio"]
        verdict = "meets" if ratio <= TARGET_P50 else "misses"
        print(
            f"{name} p50 ratio {ratio:.3f}: {verdict} the {TARGET_P50}x target (goal {GOAL_P50}x)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
