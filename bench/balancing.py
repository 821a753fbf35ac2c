"""Load-aware balancing with one slow endpoint: round robin vs weighted round
robin (gRFC A58) vs peak EWMA, side by side in one run.

Three gRPC servers on 127.0.0.1 run in one child process (so they do not
share the client's GIL); one of them adds ``--slow-ms`` (5 ms) to every
call. Every server puts an ORCA report in each response with the
``backend_metrics`` recorder: qps 100, cpu utilization 0.2 for the two fast
servers and 0.8 for the slow one (a static report standing for "this
backend is busier"; A58 weights 500 : 500 : 125). One Mesh serves three
services over the same three endpoints, each through its own cluster:

* ``round_robin``: the cluster's default policy;
* ``weighted_round_robin``: ``client_side_weighted_round_robin`` with A58's
  defaults except ``blackout_period`` 0 (so the run need not wait 10 s for
  weights), fed by the per-request reports;
* ``peak_ewma``: the TypedStruct ``type.googleapis.com/proxyless.lb.PeakEwma``
  with Linkerd's defaults (decay 10 s, default RTT 30 ms).

``--threads`` client threads (4) make unary calls. After a warm-up per
variant (at least ``--warmup`` seconds, so weights and RTT estimates are
set), rounds rotate the variants' order and run ``--batch`` calls of each.
Reported per variant: the slow endpoint's share of the calls, and p50 / p99
latency. Every loop is bounded by a call count and a time cap; the server
process is killed on exit.

Run::

    .venv/bin/python bench/balancing.py --quick     # about 20 s
    .venv/bin/python bench/balancing.py --json out.json
"""

from __future__ import annotations

import argparse
import atexit
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

import proxyless.grpc
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.lb_policies import cluster_with_policy, peak_ewma, weighted_round_robin
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

METHOD = "/bench.Balance/Call"
VARIANTS = ("round_robin", "weighted_round_robin", "peak_ewma")
ROOT = Path(__file__).resolve().parents[1]

_children: list[subprocess.Popen[str]] = []


def _kill_children() -> None:
    for proc in _children:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


atexit.register(_kill_children)


# -- the servers (child process) ------------------------------------------------------


def serve(spec: list[dict[str, Any]]) -> None:
    """Run one gRPC server per ``spec`` entry (name, delay, utilization);
    print their ports as a JSON list; stop when stdin closes."""
    servers = []
    ports = []
    for entry in spec:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.unary_unary_rpc_method_handler(
            _handler(entry["name"], entry["delay"], entry["utilization"])
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("bench.Balance", {"Call": handler}),)
        )
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servers.append(server)
    print(json.dumps(ports), flush=True)
    sys.stdin.read()
    for server in servers:
        server.stop(0)


def _handler(name: str, delay: float, utilization: float) -> Callable[[bytes, Any], bytes]:
    reply = name.encode()

    def handle(request: bytes, context: Any) -> bytes:
        if delay:
            time.sleep(delay)
        metrics = proxyless.grpc.backend_metrics(context)
        metrics.set_cpu_utilization(utilization)
        metrics.set_qps(100.0)
        return reply

    return handle


def start_servers(slow_ms: float) -> tuple[subprocess.Popen[str], dict[str, str]]:
    spec = [
        {"name": "fast-1", "delay": 0.0, "utilization": 0.2},
        {"name": "fast-2", "delay": 0.0, "utilization": 0.2},
        {"name": "slow", "delay": slow_ms / 1000.0, "utilization": 0.8},
    ]
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
        f"from bench.balancing import serve; serve({spec!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    _children.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    try:
        ports = json.loads(line)
    except ValueError:
        proc.kill()
        raise RuntimeError(f"the servers did not start (got {line!r})") from None
    return proc, {e["name"]: f"127.0.0.1:{p}" for e, p in zip(spec, ports, strict=True)}


def stop_servers(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# -- config ---------------------------------------------------------------------------


def publish(ads: AdsServer, addresses: Sequence[str]) -> None:
    policies: dict[str, Any] = {
        "round_robin": None,
        "weighted_round_robin": weighted_round_robin(blackout_period=0),
        "peak_ewma": peak_ewma(),
    }
    clusters, eds, listeners, routes = {}, {}, {}, {}
    for variant, policy in policies.items():
        proto = cluster(variant)
        clusters[variant] = proto if policy is None else cluster_with_policy(proto, policy)
        eds[variant] = endpoints(variant, list(addresses))
        routes[f"{variant}-routes"] = route_config(
            f"{variant}-routes", [variant], [route(prefix="/", cluster=variant)]
        )
        listeners[variant] = listener(variant, f"{variant}-routes")
    ads.set_resources(ENDPOINT_URL, eds)
    ads.set_resources(CLUSTER_URL, clusters)
    ads.set_resources(ROUTE_URL, routes)
    ads.set_resources(LISTENER_URL, listeners)


# -- load -----------------------------------------------------------------------------


def load(
    call: Callable[..., bytes], count: int, threads: int, deadline: float
) -> tuple[Counter[str], list[int]]:
    """``count`` calls over ``threads`` threads: backends seen, latencies (ns)."""
    lock = threading.Lock()
    left = [count]
    seen: Counter[str] = Counter()
    samples: list[int] = []

    def worker() -> None:
        local: list[tuple[str, int]] = []
        while time.monotonic() < deadline:
            with lock:
                if left[0] <= 0:
                    break
                left[0] -= 1
            started = time.perf_counter_ns()
            name = call(b"x", timeout=5).decode()
            local.append((name, time.perf_counter_ns() - started))
        with lock:
            for name, ns in local:
                seen[name] += 1
                samples.append(ns)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(max(0.0, deadline - time.monotonic()) + 10)
    return seen, samples


def _pct(sorted_ns: Sequence[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    k = min(len(sorted_ns) - 1, max(0, round(q / 100.0 * (len(sorted_ns) - 1))))
    return sorted_ns[k] / 1e6


def run(
    rounds: int, batch: int, threads: int, warmup: float, slow_ms: float, time_cap: float
) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + time_cap
    proc, addresses = start_servers(slow_ms)
    ads = AdsServer()
    ads.start()
    mesh: Mesh | None = None
    try:
        publish(ads, list(addresses.values()))
        bootstrap = {
            "xds_servers": [{"server_uri": ads.target, "channel_creds": [{"type": "insecure"}]}],
            "node": {"id": "bench-balancing"},
        }
        mesh = Mesh(bootstrap, rng=random.Random(11))
        calls = {
            v: proxyless.grpc.channel(f"xds:///{v}", mesh=mesh).unary_unary(METHOD)
            for v in VARIANTS
        }
        for call in calls.values():
            call(b"warm-up", timeout=10)
        warm_until = min(deadline, time.monotonic() + warmup)
        while time.monotonic() < warm_until:
            for call in calls.values():
                load(call, 20, threads, warm_until)
        seen: dict[str, Counter[str]] = {v: Counter() for v in VARIANTS}
        samples: dict[str, list[int]] = {v: [] for v in VARIANTS}
        busy: dict[str, float] = dict.fromkeys(VARIANTS, 0.0)
        done = 0
        for r in range(rounds):
            if time.monotonic() > deadline:
                break
            order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
            for variant in order:
                t0 = time.perf_counter()
                got, ns = load(calls[variant], batch, threads, deadline)
                busy[variant] += time.perf_counter() - t0
                seen[variant].update(got)
                samples[variant].extend(ns)
            done += 1
        result: dict[str, Any] = {
            "slow_ms": slow_ms,
            "threads": threads,
            "rounds": done,
            "batch": batch,
            "seconds": round(time.monotonic() - started, 1),
            "variants": {},
        }
        for variant in VARIANTS:
            total = sum(seen[variant].values())
            ordered = sorted(samples[variant])
            result["variants"][variant] = {
                "calls": total,
                "slow_share": seen[variant]["slow"] / total if total else float("nan"),
                "p50_ms": _pct(ordered, 50),
                "p99_ms": _pct(ordered, 99),
                "mean_ms": sum(ordered) / len(ordered) / 1e6 if ordered else float("nan"),
                "calls_per_s": total / busy[variant] if busy[variant] else float("nan"),
                "per_backend": dict(seen[variant]),
            }
        return result
    finally:
        if mesh is not None:
            mesh.close()
        ads.stop()
        stop_servers(proc)


def report(result: dict[str, Any]) -> str:
    lines = [
        f"one endpoint of three {result['slow_ms']:g} ms slower; {result['threads']} client "
        f"threads; {result['rounds']} rounds x {result['batch']} calls per variant "
        f"({result['seconds']} s)",
        f"{'variant':<22} {'calls':>6} {'slow share':>11} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'mean ms':>8} {'calls/s':>8}",
    ]
    for variant, v in result["variants"].items():
        lines.append(
            f"{variant:<22} {v['calls']:>6} {100 * v['slow_share']:>10.1f}% "
            f"{v['p50_ms']:>8.2f} {v['p99_ms']:>8.2f} {v['mean_ms']:>8.2f} {v['calls_per_s']:>8.0f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 20 s)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None, help="calls per variant per round")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up")
    parser.add_argument("--slow-ms", type=float, default=5.0)
    parser.add_argument("--time-cap", type=float, default=None, help="seconds (hard stop)")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = parser.parse_args(argv)
    rounds = args.rounds or (4 if args.quick else 10)
    batch = args.batch or (500 if args.quick else 1000)
    warmup = args.warmup if args.warmup is not None else (3.0 if args.quick else 5.0)
    time_cap = args.time_cap or (60.0 if args.quick else 300.0)
    result = run(rounds, batch, args.threads, warmup, args.slow_ms, time_cap)
    print(report(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
