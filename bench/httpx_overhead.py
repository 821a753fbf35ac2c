"""What an HTTP request costs through proxyless.httpx, side by side with plain httpx.

One process run measures sequential HTTP/1.1 ``GET`` requests to one backend
(a minimal keep-alive HTTP server on 127.0.0.1 in its own process, so its
work does not share this interpreter's lock) through:

1. ``plain``             — ``httpx.Client()`` to ``http://127.0.0.1:PORT/``: the floor;
2. ``proxyless``         — ``httpx.Client(transport=proxyless.httpx.Transport(mesh))``
   to ``http://svc:8080/``: listener -> route -> cluster -> one endpoint from
   an in-process ADS server (:class:`proxyless.controlplane.server.AdsServer`);

3. ``envoy-mtls``        — ``httpx.Client()`` to an Envoy sidecar pair (app ->
   Envoy A -> HTTP/2 over SPIFFE mTLS -> Envoy B -> HTTP/1.1 -> backend), the
   Istio sidecar path, built by :class:`bench._common.EnvoySidecarPair`
   (``--no-envoy`` skips it);

and, in an asyncio loop, ``async-plain`` (``httpx.AsyncClient()``) against
``proxyless-async`` (``AsyncTransport``).

Contenders run interleaved: after a warm-up, ``--rounds`` rounds of
``--calls`` requests per contender, taken in slices of 50 requests whose
order rotates every slice, so that load from elsewhere on the machine (and
the Envoy pair's own after-work) hits every contender alike; reported figures are medians across rounds and ratios are
medians of per-round ratios to ``plain`` (``async-plain`` for the async pair). RSS: this process after the
plain client warmed up, and after the Mesh and proxyless transports did.

Run ``python bench/httpx_overhead.py [--calls N] [--rounds R] [--quick] [--json out.json]``.
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
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench import _common

SERVICE = "svc:8080"
TARGET_P50 = 1.05
#: Requests per contender before switching to the other one.
SLICE = 50

_BACKEND = r"""
import asyncio, socket, sys
BODY = b'{"backend":"bench","ok":true}'
RESP = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)

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
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.t.write(RESP)

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Proto, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


class Backend:
    """The HTTP backend in its own process; ``address`` is ``127.0.0.1:PORT``."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BACKEND], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        atexit.register(self.stop)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode().strip() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"HTTP backend did not start within {timeout}s")
        self.address = f"127.0.0.1:{line}"

    def stop(self) -> None:
        proc = self.process
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def percentile(values: Sequence[float], q: float) -> float:
    return _common.percentile(sorted(values), q)


def rss_mb() -> float:
    return _common.rss_bytes() / 2**20


def timed(call: Callable[[], Any], count: int, cap: float) -> list[float]:
    """Durations in µs of up to ``count`` calls (see :func:`bench._common.timed_calls`)."""
    return [ns / 1000.0 for ns in _common.timed_calls(call, count, cap)]


async def atimed(call: Callable[[], Awaitable[Any]], count: int, cap: float) -> list[float]:
    out: list[float] = []
    clock = time.perf_counter_ns
    stop_at = clock() + int(cap * 1e9)
    for _ in range(count):
        t0 = clock()
        await call()
        t1 = clock()
        out.append((t1 - t0) / 1000.0)
        if t1 > stop_at:
            break
    return out


def _serve(ads: Any, address: str) -> None:
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

    ads.set_resources(ENDPOINT_URL, {"svc": endpoints("svc", [address])})
    ads.set_resources(CLUSTER_URL, {"svc": cluster("svc")})
    ads.set_resources(
        ROUTE_URL,
        {"svc-routes": route_config("svc-routes", SERVICE, [route(prefix="/", cluster="svc")])},
    )
    ads.set_resources(LISTENER_URL, {SERVICE: listener(SERVICE, "svc-routes")})


def run(calls: int, rounds: int, warmup: int, cap: float, envoy: bool = True) -> dict[str, Any]:
    import tempfile

    import proxyless.httpx
    from proxyless.controlplane.server import AdsServer
    from proxyless.mesh import Mesh

    backend = Backend()
    ads = AdsServer()
    ads.start()
    results: dict[str, Any] = {}
    try:
        _serve(ads, backend.address)
        plain = httpx.Client()
        direct_url = f"http://{backend.address}/"
        for _ in range(warmup):
            plain.get(direct_url)
        gc.collect()
        rss_plain = rss_mb()
        mesh = Mesh(
            {
                "xds_servers": [
                    {"server_uri": ads.target, "channel_creds": [{"type": "insecure"}]}
                ],
                "node": {"id": "bench-httpx"},
            }
        )
        mesh_client = httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh))
        mesh_url = f"http://{SERVICE}/"
        for _ in range(warmup):
            r = mesh_client.get(mesh_url)
            assert r.status_code == 200, r
        sync = {
            "plain": lambda: plain.get(direct_url),
            "proxyless": lambda: mesh_client.get(mesh_url),
        }
        pair = None
        if envoy:
            from bench._common import EnvoySidecarPair, make_spiffe_certs

            certs = make_spiffe_certs(Path(tempfile.mkdtemp(prefix="proxyless-bench-certs-")))
            pair = EnvoySidecarPair(certs, backend.address, backend_http2=False)
            envoy_client = httpx.Client()
            envoy_url = f"http://{pair.address}/"
            for _ in range(warmup):
                r = envoy_client.get(envoy_url)
                assert r.status_code == 200, r
            sync["envoy-mtls"] = lambda: envoy_client.get(envoy_url)
        per_round: dict[str, list[dict[str, float]]] = {k: [] for k in sync}
        names = list(sync)
        for i in range(rounds):
            samples: dict[str, list[float]] = {k: [] for k in names}
            stop_at = time.monotonic() + cap
            # alternate in slices of SLICE requests so machine noise hits both alike
            for j in range(max(1, calls // SLICE)):
                # rotate the order every slice: each contender follows each other one
                # (a slice right after the Envoy pair's runs on a busier machine)
                k = (i + j) % len(names)
                order = names[k:] + names[:k]
                for name in order:
                    samples[name].extend(timed(sync[name], SLICE, cap))
                if time.monotonic() > stop_at:
                    break
            gc.collect()
            for name in names:
                per_round[name].append(
                    {
                        "p50": percentile(samples[name], 50),
                        "p99": percentile(samples[name], 99),
                        "n": len(samples[name]),
                    }
                )

        async def async_rounds() -> dict[str, list[dict[str, float]]]:
            aplain = httpx.AsyncClient()
            amesh = httpx.AsyncClient(transport=proxyless.httpx.AsyncTransport(mesh=mesh))
            try:
                for _ in range(warmup):
                    await aplain.get(direct_url)
                    await amesh.get(mesh_url)
                fns = {
                    "async-plain": lambda: aplain.get(direct_url),
                    "proxyless-async": lambda: amesh.get(mesh_url),
                }
                out: dict[str, list[dict[str, float]]] = {k: [] for k in fns}
                keys = list(fns)
                for i in range(rounds):
                    got: dict[str, list[float]] = {k: [] for k in keys}
                    stop_at = time.monotonic() + cap
                    for j in range(max(1, calls // SLICE)):
                        order = keys if (i + j) % 2 == 0 else keys[::-1]
                        for name in order:
                            got[name].extend(await atimed(fns[name], SLICE, cap))
                        if time.monotonic() > stop_at:
                            break
                    gc.collect()
                    for name in keys:
                        out[name].append(
                            {
                                "p50": percentile(got[name], 50),
                                "p99": percentile(got[name], 99),
                                "n": len(got[name]),
                            }
                        )
                return out
            finally:
                await aplain.aclose()
                await amesh.aclose()

        per_round.update(asyncio.run(async_rounds()))
        if pair is not None:
            results["envoy_rss_mb"] = {k: round(v / 2**20, 1) for k, v in pair.rss().items()}
            results["envoy_start_failures"] = pair.start_failures
            pair.stop()
        gc.collect()
        rss_mesh = rss_mb()
        mesh_client.close()
        plain.close()
        mesh.close()

        def summary(name: str, base: str) -> dict[str, float]:
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

        results["contenders"] = {
            "plain": summary("plain", "plain"),
            "proxyless": summary("proxyless", "plain"),
            **({"envoy-mtls": summary("envoy-mtls", "plain")} if pair is not None else {}),
            "async-plain": summary("async-plain", "async-plain"),
            "proxyless-async": summary("proxyless-async", "async-plain"),
        }
        results["rss_mb"] = {
            "after_plain_warmup": round(rss_plain, 1),
            "after_proxyless_warmup": round(rss_mesh, 1),
            "added_by_proxyless": round(rss_mesh - rss_plain, 1),
        }
    finally:
        ads.stop()
        backend.stop()
    results["machine"] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "httpx": httpx.__version__,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    results["settings"] = {"calls": calls, "rounds": rounds, "warmup": warmup}
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--time-cap", type=float, default=30.0, help="seconds per batch, at most")
    parser.add_argument("--quick", action="store_true", help="300 calls x 3 rounds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-envoy", action="store_true", help="skip the Envoy sidecar pair")
    args = parser.parse_args(argv)
    calls, rounds = (300, 3) if args.quick else (args.calls, args.rounds)
    results = run(calls, rounds, min(args.warmup, calls), args.time_cap, envoy=not args.no_envoy)
    print(f"{'contender':<18}{'p50 µs':>10}{'p99 µs':>10}{'p50 x':>8}{'p99 x':>8}")
    for name, row in results["contenders"].items():
        print(
            f"{name:<18}{row['p50_us']:>10.1f}{row['p99_us']:>10.1f}"
            f"{row['p50_ratio']:>8.3f}{row['p99_ratio']:>8.3f}"
        )
    rss = results["rss_mb"]
    print(
        f"RSS: {rss['after_plain_warmup']} MB with plain httpx, "
        f"{rss['after_proxyless_warmup']} MB after proxyless (+{rss['added_by_proxyless']} MB)"
    )
    ratio = results["contenders"]["proxyless"]["p50_ratio"]
    verdict = "meets" if ratio <= TARGET_P50 else "misses"
    print(f"proxyless p50 ratio {ratio:.3f}: {verdict} the {TARGET_P50}x target")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
