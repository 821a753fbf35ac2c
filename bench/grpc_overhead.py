"""What a gRPC call costs through proxyless, side by side with the alternatives.

One process run measures sync unary echo calls (raw bytes,
:class:`proxyless.testing.backends.EchoServer` in its own process) through:

1. ``direct``      — ``grpc.insecure_channel(backend)``: the floor;
2. ``grpcio-xds``  — grpcio's native C-core xDS channel ``xds:///svc:80``
   (``GRPC_XDS_BOOTSTRAP`` set in this process before its first xDS channel);
3. ``envoy-mtls``  — app -> Envoy A -> SPIFFE mTLS -> Envoy B -> backend, the
   Istio sidecar path, with static Envoy configs and ``--concurrency 1``;
4. ``proxyless``   — ``proxyless.grpc.channel("xds:///svc:80", mesh=mesh)``;

and, in an asyncio loop, ``aio-direct`` (``grpc.aio.insecure_channel``) against
``proxyless-aio`` (``proxyless.grpc.aio.channel``). All xDS contenders read the
same in-process ADS server (:class:`proxyless.controlplane.server.AdsServer`):
listener -> route config -> one cluster -> one endpoint.

Contenders run interleaved: after a warm-up, ``--rounds`` rounds in which
the contenders take turns in blocks of ``--block`` calls (the order rotated
every block and every round) until each made ``--calls`` calls, so load that
comes and goes on a shared machine hits everyone alike. Reported figures are
medians across rounds; ratios are medians of the per-round ratios to
``direct`` (``aio-direct`` for aio).

Config scale: the time to apply a 10,000-endpoint EDS update while calls
flow (and the worst call latency during it), and the RSS a client process
adds for a 100-service config and for 1,000 clusters / 10,000 endpoints
(each measured in a fresh child process).

Run ``python bench/grpc_overhead.py [--calls N] [--rounds R] [--quick] [--json out.json]``;
``--no-envoy --no-native-xds --eds-only`` runs the EDS update part alone.
Results and the machine they came from: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import grpc.aio

from bench import _common as c

REQUEST = b"ping"
SERVICE = "svc:80"
TARGET = f"xds:///{SERVICE}"
BIG = "big:80"
MB = c.MB

# Targets of issue 4.
TARGET_P50 = 1.05
TARGET_P99 = 1.10
TARGET_SERVICES_MB = 10.0
TARGET_EDS_MS = 100.0


@dataclasses.dataclass
class Options:
    calls: int = 2000
    rounds: int = 7
    block: int = 50
    warmup: int = 300
    time_cap: float = 60.0
    envoy: bool = True
    native_xds: bool = True
    aio: bool = True
    latency: bool = True
    eds_endpoints: int = 10_000
    eds_updates: int = 5
    eds_idle_updates: int = 3
    scale_clusters: int = 1000
    scale_endpoints_per_cluster: int = 10
    services: int = 100
    memory_probes: bool = True
    memory_repeats: int = 3
    quiet: bool = False


# --- latency rounds -------------------------------------------------------------------------


def _orders(names: Sequence[str], rounds: int) -> list[list[str]]:
    """The order of contenders in each round: rotated by one every round."""
    out = []
    for r in range(rounds):
        k = r % len(names)
        out.append([*names[k:], *names[:k]])
    return out


def _blocks(calls: int, block: int) -> list[int]:
    """``calls`` split into blocks of ``block`` calls (the last one shorter)."""
    sizes = [block] * (calls // block)
    if calls % block:
        sizes.append(calls % block)
    return sizes


def _block_orders(order: list[str], blocks: int) -> Iterator[list[str]]:
    """Within a round, each block rotates the round's order by one more place."""
    for b in range(blocks):
        k = b % len(order)
        yield [*order[k:], *order[:k]]


def run_rounds(contenders: dict[str, Callable[[], Any]], opts: Options) -> dict[str, list[c.Stats]]:
    """Warm every contender up, then ``opts.rounds`` rounds; in each round the
    contenders take turns in blocks of ``opts.block`` calls until each made
    ``opts.calls``, so load that comes and goes hits them alike."""
    for fn in contenders.values():
        c.timed_calls(fn, opts.warmup, opts.time_cap)
    per_round: dict[str, list[c.Stats]] = {name: [] for name in contenders}
    sizes = _blocks(opts.calls, opts.block)
    for order in _orders(list(contenders), opts.rounds):
        gc.collect()
        samples: dict[str, list[int]] = {name: [] for name in contenders}
        stop_at = time.monotonic() + opts.time_cap
        for size, block_order in zip(sizes, _block_orders(order, len(sizes)), strict=True):
            for name in block_order:
                samples[name].extend(c.timed_calls(contenders[name], size, opts.time_cap))
            if time.monotonic() > stop_at:
                break
        for name, got in samples.items():
            per_round[name].append(c.summarize(got))
    return per_round


async def _timed_calls_async(
    call: Callable[[], Awaitable[Any]], count: int, time_cap: float
) -> list[int]:
    out: list[int] = []
    clock = time.perf_counter_ns
    stop_at = clock() + int(time_cap * 1e9)
    for _ in range(count):
        t0 = clock()
        await call()
        t1 = clock()
        out.append(t1 - t0)
        if t1 > stop_at:
            break
    return out


async def run_rounds_async(
    contenders: dict[str, Callable[[], Awaitable[Any]]], opts: Options
) -> dict[str, list[c.Stats]]:
    """:func:`run_rounds` for ``grpc.aio`` calls, awaited one at a time on the running loop."""
    for fn in contenders.values():
        await _timed_calls_async(fn, opts.warmup, opts.time_cap)
    per_round: dict[str, list[c.Stats]] = {name: [] for name in contenders}
    sizes = _blocks(opts.calls, opts.block)
    for order in _orders(list(contenders), opts.rounds):
        gc.collect()
        samples: dict[str, list[int]] = {name: [] for name in contenders}
        stop_at = time.monotonic() + opts.time_cap
        for size, block_order in zip(sizes, _block_orders(order, len(sizes)), strict=True):
            for name in block_order:
                samples[name].extend(
                    await _timed_calls_async(contenders[name], size, opts.time_cap)
                )
            if time.monotonic() > stop_at:
                break
        for name, got in samples.items():
            per_round[name].append(c.summarize(got))
    return per_round


def summarize_rounds(
    per_round: dict[str, list[c.Stats]], floor: str, *, sync_floor: list[c.Stats] | None = None
) -> dict[str, dict[str, Any]]:
    """Medians across rounds, and medians of per-round ratios to ``floor``."""
    base = per_round[floor]
    out: dict[str, dict[str, Any]] = {}
    for name, rounds in per_round.items():
        row: dict[str, Any] = {
            "p50_us": round(c.median(s.p50 for s in rounds), 1),
            "p90_us": round(c.median(s.p90 for s in rounds), 1),
            "p99_us": round(c.median(s.p99 for s in rounds), 1),
            "max_us": round(max(s.max for s in rounds), 1),
            "calls": sum(s.n for s in rounds),
            "floor": floor,
            "p50_ratio": round(
                c.median(s.p50 / b.p50 for s, b in zip(rounds, base, strict=True)), 3
            ),
            "p99_ratio": round(
                c.median(s.p99 / b.p99 for s, b in zip(rounds, base, strict=True)), 3
            ),
            "rounds": [s.as_dict() for s in rounds],
        }
        if sync_floor is not None:
            row["p50_vs_sync_direct"] = round(
                row["p50_us"] / c.median(s.p50 for s in sync_floor), 3
            )
        out[name] = row
    return out


# --- config scale: a 10k-endpoint EDS update while calls flow --------------------------------


def _big_endpoints(n: int, base_port: int) -> list[str]:
    """``n`` distinct loopback addresses (never connected to: nothing calls them)."""
    return [f"127.0.0.1:{base_port + i}" for i in range(n)]


class _CallRecorder:
    """Calls on one thread until stopped (bounded by count and time), each recorded
    as (start ns, duration ns)."""

    def __init__(self, call: Callable[[], Any], max_calls: int, time_cap: float) -> None:
        self.samples: list[tuple[int, int]] = []
        self.errors = 0
        self._call = call
        self._max_calls = max_calls
        self._time_cap = time_cap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-calls", daemon=True)

    def _run(self) -> None:
        clock = time.perf_counter_ns
        stop_at = clock() + int(self._time_cap * 1e9)
        append = self.samples.append
        for _ in range(self._max_calls):
            if self._stop.is_set():
                break
            t0 = clock()
            try:
                self._call()
            except grpc.RpcError:
                self.errors += 1
            t1 = clock()
            append((t0, t1 - t0))
            if t1 > stop_at:
                break

    def __enter__(self) -> _CallRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self._time_cap + 30)


def eds_update(
    mesh: Any, ads: Any, call: Callable[[], Any], base_resources: dict[str, Any], opts: Options
) -> dict[str, Any]:
    """Apply ``opts.eds_updates`` EDS updates of ``opts.eds_endpoints`` endpoints (every
    address changes each time) to cluster ``big`` of the running ``mesh`` while another
    thread makes calls to ``svc:80`` on the same mesh."""
    from proxyless.resources.types import CLUSTER_LOAD_ASSIGNMENT
    from proxyless.testing.resources import ENDPOINT_URL, endpoints

    n = opts.eds_endpoints
    bases = [20000, 30000, 40000, 50000]
    svc_cla = base_resources[ENDPOINT_URL]["svc"]
    # Build every version before timing anything.
    idle = opts.eds_idle_updates
    versions = [
        endpoints("big", _big_endpoints(n, bases[k % 4]))
        for k in range(idle + opts.eds_updates + 1)
    ]
    serve = base_resources.copy()
    big = c.serve_service(None, BIG, [], cluster_name="big")
    for type_url, named in big.items():
        merged = {**serve.get(type_url, {}), **named}
        if type_url == ENDPOINT_URL:
            merged = {"svc": svc_cla, "big": versions[0]}
        ads.set_resources(type_url, merged)

    t_load = time.perf_counter_ns()
    runtime = mesh.target(f"xds:///{BIG}")
    runtime.state(60.0)
    first_load_ms = (time.perf_counter_ns() - t_load) / 1e6
    arrived = threading.Event()
    expect: dict[str, Any] = {"port": bases[0], "last": bases[0] + n - 1, "at": 0}

    def on_snapshot(snap: Any) -> None:
        cc = snap.clusters.get("big")
        if cc is None or cc.endpoints is None:
            return
        eps = cc.endpoints.priorities[0][0].endpoints
        if (
            eps
            and eps[0].port == expect["port"]
            and eps[-1].port == expect["last"]
            and len(eps) == n
        ):
            rt = mesh.clusters.get("big")
            if rt is not None and len(rt.endpoints()) == n:
                expect["at"] = time.perf_counter_ns()
                arrived.set()

    mesh.config(BIG).add_listener(on_snapshot)

    def apply(k: int, cla: Any = None, last: int | None = None) -> tuple[int, int, int]:
        """Serve version ``k`` (or ``cla``, whose last endpoint's port is
        ``last``); (sent at, server returned at, visible at) in ns."""
        arrived.clear()
        expect["port"] = bases[k % 4]
        expect["last"] = bases[k % 4] + n - 1 if last is None else last
        t0 = time.perf_counter_ns()
        ads.set_resources(
            ENDPOINT_URL, {"svc": svc_cla, "big": versions[k] if cla is None else cla}
        )
        t_sent = time.perf_counter_ns()
        if not arrived.wait(60.0):
            raise RuntimeError(f"EDS update {k} of {n} endpoints not applied within 60 s")
        return t0, t_sent, expect["at"]

    # First without calls: the update alone.
    idle_ms = []
    for k in range(1, idle + 1):
        gc.collect()
        t0, _, t1 = apply(k)
        idle_ms.append(round((t1 - t0) / 1e6, 2))
        time.sleep(0.1)
    # Then while another thread makes calls on the same Mesh.
    updates = []
    for k in range(idle + 1, idle + opts.eds_updates + 1):
        gc.collect()
        with _CallRecorder(call, max_calls=200_000, time_cap=60.0) as rec:
            time.sleep(0.3)  # a quiet window first
            t0, t_sent, t1 = apply(k)
            time.sleep(0.3)
        quiet = [d for s, d in rec.samples if s + d < t0]
        during = [d for s, d in rec.samples if s < t1 and s + d > t0]
        quiet_stats = c.summarize(quiet) if quiet else None
        during_stats = c.summarize(during) if during else None
        first = rec.samples[0][0] if rec.samples else t0
        quiet_rate = len(quiet) / max(1e-9, (t0 - first) / 1e9)
        during_rate = len(during) / max(1e-9, (t1 - t0) / 1e9)
        updates.append(
            {
                "applied_ms": round((t1 - t0) / 1e6, 2),
                "server_set_resources_ms": round((t_sent - t0) / 1e6, 2),
                "calls_during": len(during),
                "max_call_during_us": round(max(during) / 1e3, 1) if during else None,
                "p50_call_during_us": round(during_stats.p50, 1) if during_stats else None,
                "quiet_p50_us": round(quiet_stats.p50, 1) if quiet_stats else None,
                "quiet_p99_us": round(quiet_stats.p99, 1) if quiet_stats else None,
                "quiet_max_us": round(quiet_stats.max, 1) if quiet_stats else None,
                "calls_per_s_quiet": round(quiet_rate),
                "calls_per_s_during": round(during_rate),
                "call_errors": rec.errors,
            }
        )
    # The common push: the same assignment with one endpoint changed (a pod
    # replaced), back and forth, nothing else running.
    k_last = idle + opts.eds_updates
    changed = type(versions[k_last])()
    changed.CopyFrom(versions[k_last])
    moved_port = bases[k_last % 4] + n + 7
    last_sock = changed.endpoints[0].lb_endpoints[n - 1].endpoint.address.socket_address
    last_sock.port_value = moved_port
    one_ms = []
    for r in range(4):
        gc.collect()
        if r % 2 == 0:
            t0, _, t1 = apply(k_last, changed, moved_port)
        else:
            t0, _, t1 = apply(k_last)
        one_ms.append(round((t1 - t0) / 1e6, 2))
        time.sleep(0.1)
    # Where the time goes, measured on this thread: decode (parse + validate) of the
    # ClusterLoadAssignment, then the cluster registry applying it.
    pools = 2 if opts.aio else 1  # the sync and the aio endpoint pools follow the registry
    breakdown = _eds_breakdown(versions[:2], CLUSTER_LOAD_ASSIGNMENT, big, pools)
    return {
        "endpoints": n,
        "first_load_ms": round(first_load_ms, 1),
        "idle_applied_ms": idle_ms,
        "idle_applied_ms_median": round(c.median(idle_ms), 2) if idle_ms else None,
        "one_changed_applied_ms": one_ms,
        "one_changed_applied_ms_median": round(c.median(one_ms), 2),
        "updates": updates,
        "applied_ms_median": round(c.median(u["applied_ms"] for u in updates), 2),
        "applied_ms_max": max(u["applied_ms"] for u in updates),
        "max_call_during_us": max(
            (u["max_call_during_us"] for u in updates if u["max_call_during_us"]), default=None
        ),
        "calls_during_total": sum(u["calls_during"] for u in updates),
        "p50_call_during_us": c.median(
            u["p50_call_during_us"] for u in updates if u["p50_call_during_us"]
        )
        if any(u["p50_call_during_us"] for u in updates)
        else None,
        "calls_per_s_quiet": round(c.median(u["calls_per_s_quiet"] for u in updates)),
        "calls_per_s_during": round(c.median(u["calls_per_s_during"] for u in updates)),
        "call_errors": sum(u["call_errors"] for u in updates),
        **breakdown,
    }


def _eds_breakdown(
    versions: list[Any], cla_type: Any, big: dict[str, Any], pools: int
) -> dict[str, Any]:
    from proxyless.config.snapshot import ClusterConfig, XdsConfig
    from proxyless.grpc._pool import ChannelPool
    from proxyless.resources.types import CLUSTER, LISTENER, ROUTE_CONFIGURATION
    from proxyless.runtime.cluster import ClusterRegistry
    from proxyless.testing.resources import CLUSTER_URL, LISTENER_URL, ROUTE_URL

    def decoded(rtype: Any, proto: Any) -> Any:
        result = rtype.decode(proto.SerializeToString())
        if not result.ok:
            raise RuntimeError(f"{rtype.short_name} did not decode: {result.errors}")
        return result.value

    listener = decoded(LISTENER, big[LISTENER_URL][BIG])
    rc = decoded(ROUTE_CONFIGURATION, next(iter(big[ROUTE_URL].values())))
    cluster = decoded(CLUSTER, big[CLUSTER_URL]["big"])
    raw = [v.SerializeToString() for v in versions]
    parse_ms = []
    models = []
    for data in raw * 2:
        t0 = time.perf_counter_ns()
        result = cla_type.decode(data)
        parse_ms.append((time.perf_counter_ns() - t0) / 1e6)
        models.append(result.value)
    registry = ClusterRegistry(random.Random(1))
    for _ in range(pools):
        registry.add_pool(ChannelPool())
    apply_ms = []
    for i, model in enumerate(models):
        snap = XdsConfig(BIG, listener, rc, {"big": ClusterConfig("big", cluster, model)}, None, i)
        t0 = time.perf_counter_ns()
        registry.apply(snap)
        apply_ms.append((time.perf_counter_ns() - t0) / 1e6)
    return {
        "bytes": len(raw[0]),
        "parse_ms": round(c.median(parse_ms), 2),
        "apply_first_ms": round(apply_ms[0], 2),
        "apply_update_ms": round(c.median(apply_ms[1:]), 2),
    }


# --- config scale: memory, each in a fresh child process --------------------------------------


def _service_config(n: int) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``n`` services, each: listener -> route config (a header route to v2, else a
    90/10 split) -> clusters v1 and v2 -> 3 endpoints each."""
    from proxyless.testing.resources import (
        CLUSTER_URL,
        ENDPOINT_URL,
        LISTENER_URL,
        ROUTE_URL,
        cluster,
        endpoints,
        header_match,
        listener,
        route,
        route_config,
    )

    res: dict[str, dict[str, Any]] = {
        LISTENER_URL: {},
        ROUTE_URL: {},
        CLUSTER_URL: {},
        ENDPOINT_URL: {},
    }
    targets = []
    port = 20000
    for i in range(n):
        host = f"svc-{i:03d}.default.svc.cluster.local"
        name = f"{host}:8080"
        v1, v2 = f"outbound|8080|v1|{host}", f"outbound|8080|v2|{host}"
        rc = f"{name}-routes"
        res[LISTENER_URL][name] = listener(name, rc)
        res[ROUTE_URL][rc] = route_config(
            rc,
            [name, f"svc-{i:03d}:8080"],
            [
                route(prefix="/", headers=[header_match("x-canary", exact="true")], cluster=v2),
                route(prefix="/", weighted={v1: 90, v2: 10}, timeout=5.0),
            ],
        )
        for cname in (v1, v2):
            res[CLUSTER_URL][cname] = cluster(cname)
            res[ENDPOINT_URL][cname] = endpoints(cname, [f"127.0.0.1:{port + j}" for j in range(3)])
            port += 3
        targets.append(f"xds:///{name}")
    return res, targets


def _clusters_config(
    clusters: int, per_cluster: int
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """One listener whose route config has ``clusters`` routes (``/svcN.Service/``),
    each to its own cluster of ``per_cluster`` endpoints."""
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

    name = "mesh-scale:80"
    routes = [route(prefix=f"/svc{i}.Service/", cluster=f"c{i}") for i in range(clusters)]
    res: dict[str, dict[str, Any]] = {
        LISTENER_URL: {name: listener(name, "scale-routes")},
        ROUTE_URL: {"scale-routes": route_config("scale-routes", name, routes)},
        CLUSTER_URL: {f"c{i}": cluster(f"c{i}") for i in range(clusters)},
        ENDPOINT_URL: {},
    }
    port = 10000
    for i in range(clusters):
        res[ENDPOINT_URL][f"c{i}"] = endpoints(
            f"c{i}", [f"127.0.0.1:{port + j}" for j in range(per_cluster)]
        )
        port = 10000 + (port - 10000 + per_cluster) % 50000
    return res, [f"xds:///{name}"]


def memory_probe(
    ads: Any,
    resources: dict[str, dict[str, Any]],
    targets: list[str],
    clusters: int,
    time_cap: float = 300.0,
) -> dict[str, Any]:
    """Serve ``resources`` and measure, in a fresh child process, the RSS a Mesh adds
    once every target's config is loaded (and a proxyless channel exists for each)."""
    for type_url, named in resources.items():
        ads.set_resources(type_url, named)
    spec = {"ads": ads.target, "targets": targets, "clusters": clusters, "time_cap": time_cap}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--probe-memory", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=time_cap + 120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def repeated_probe(repeats: int, *args: Any) -> dict[str, Any]:
    """:func:`memory_probe` in ``repeats`` fresh processes (RSS moves by a few MB
    from run to run with allocator and collector timing); the run with the median
    added RSS, plus every run's figure."""
    runs = [memory_probe(*args) for _ in range(repeats)]
    runs.sort(key=lambda r: float(r["added_mb"]))
    chosen = dict(runs[len(runs) // 2])
    chosen["added_mb_runs"] = [r["added_mb"] for r in runs]
    chosen["complete"] = all(r["complete"] for r in runs)
    return chosen


def _probe_child(spec_json: str) -> int:
    """The child side of :func:`memory_probe`; prints one JSON line.

    The baseline is taken after grpcio is imported and its core started (a plain
    channel to the ADS server, connected), so the figure is what proxyless adds
    to a process that already speaks gRPC."""
    spec = json.loads(spec_json)
    plain = grpc.insecure_channel(spec["ads"])
    grpc.channel_ready_future(plain).result(timeout=30)
    rss_grpc = c.settle_rss()
    import proxyless.grpc
    from proxyless.errors import ProxylessError
    from proxyless.mesh import Mesh

    rss_import = c.settle_rss()
    t0 = time.perf_counter()
    mesh = Mesh(c.xds_bootstrap(spec["ads"], "bench-probe"))
    channels = [proxyless.grpc.channel(t, mesh=mesh) for t in spec["targets"]]
    deadline = time.monotonic() + spec.get("time_cap", 300.0)
    complete = True
    try:
        for t in spec["targets"]:
            mesh.target(t).state(max(0.1, deadline - time.monotonic()))
    except ProxylessError:
        complete = False
    while len(mesh.clusters) < spec["clusters"] and time.monotonic() < deadline:
        time.sleep(0.01)
    complete = complete and len(mesh.clusters) >= spec["clusters"]
    loaded_s = time.perf_counter() - t0
    endpoints = sum(len(rt.endpoints()) for rt in mesh.clusters)
    rss_loaded = c.settle_rss()
    print(
        json.dumps(
            {
                "targets": len(channels),
                "clusters": len(mesh.clusters),
                "endpoints": endpoints,
                "complete": complete,
                "load_s": round(loaded_s, 2),
                "rss_grpc_only_mb": round(rss_grpc / MB, 1),
                "import_proxyless_mb": round((rss_import - rss_grpc) / MB, 1),
                "rss_loaded_mb": round(rss_loaded / MB, 1),
                "added_mb": round((rss_loaded - rss_import) / MB, 1),
            }
        )
    )
    mesh.close()
    plain.close()
    return 0


# --- the whole run ------------------------------------------------------------------------------


def run(opts: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every part of the benchmark; the results as a JSON-able dict."""
    import proxyless.grpc
    import proxyless.grpc.aio
    from proxyless.controlplane.server import AdsServer
    from proxyless.mesh import Mesh
    from proxyless.testing.backends import ECHO_METHOD

    say = (lambda _m: None) if opts.quiet else log
    results: dict[str, Any] = {
        "machine": c.machine_info(envoy_version=opts.envoy),
        "options": dataclasses.asdict(opts),
    }
    say(f"machine: {results['machine']}")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="proxyless-bench-")))
        backend = stack.enter_context(c.Backend())
        ads = AdsServer()
        ads.start()
        stack.callback(ads.stop)
        base_resources = c.serve_service(ads, SERVICE, [backend.address])
        calls: dict[str, Callable[[], Any]] = {}

        direct = grpc.insecure_channel(backend.address)
        stack.callback(direct.close)
        direct_mc = direct.unary_unary(ECHO_METHOD)
        direct_mc(REQUEST, timeout=30, wait_for_ready=True)
        calls["direct"] = lambda: direct_mc(REQUEST)

        if opts.native_xds:
            path = tmp / "grpc-xds-bootstrap.json"
            path.write_text(json.dumps(c.xds_bootstrap(ads.target, "bench-grpcio")))
            previous = os.environ.get("GRPC_XDS_BOOTSTRAP")
            os.environ["GRPC_XDS_BOOTSTRAP"] = str(path)
            stack.callback(
                lambda: (
                    os.environ.pop("GRPC_XDS_BOOTSTRAP", None)
                    if previous is None
                    else os.environ.__setitem__("GRPC_XDS_BOOTSTRAP", previous)
                )
            )
            native = grpc.insecure_channel(TARGET)
            stack.callback(native.close)
            native_mc = native.unary_unary(ECHO_METHOD)
            native_mc(REQUEST, timeout=30, wait_for_ready=True)
            calls["grpcio-xds"] = lambda: native_mc(REQUEST)

        pair = None
        if opts.envoy:
            certs = c.make_spiffe_certs(tmp / "certs")
            pair = stack.enter_context(c.EnvoySidecarPair(certs, backend.address))
            via_envoy = grpc.insecure_channel(pair.address)
            stack.callback(via_envoy.close)
            envoy_mc = via_envoy.unary_unary(ECHO_METHOD)
            envoy_mc(REQUEST, timeout=30, wait_for_ready=True)
            calls["envoy-mtls"] = lambda: envoy_mc(REQUEST)

        rss_before = c.settle_rss()
        mesh = Mesh(c.xds_bootstrap(ads.target, "bench-proxyless"))
        stack.callback(mesh.close)
        px = proxyless.grpc.channel(TARGET, mesh=mesh)
        px_mc = px.unary_unary(ECHO_METHOD)
        px_mc(REQUEST, timeout=30, wait_for_ready=True)
        c.timed_calls(lambda: px_mc(REQUEST), opts.warmup, opts.time_cap)
        rss_after = c.settle_rss()
        calls["proxyless"] = lambda: px_mc(REQUEST)
        results["process_rss"] = {
            "before_mesh_mb": round(rss_before / MB, 1),
            "after_mesh_mb": round(rss_after / MB, 1),
            "added_mb": round((rss_after - rss_before) / MB, 1),
        }

        sync_rounds = None
        if opts.latency:
            say(f"sync unary: {opts.rounds} rounds x {opts.calls} calls of {', '.join(calls)}")
            sync_rounds = run_rounds(calls, opts)
            results["sync"] = summarize_rounds(sync_rounds, "direct")
        if pair is not None:
            results["envoy"] = {
                "rss_mb": {side: round(r / MB, 1) for side, r in pair.rss().items()},
                "start_failures": pair.start_failures,
                "tls_handshakes": sum(
                    v for s in pair.stats() for k, v in s.items() if k.endswith("ssl.handshake")
                ),
            }

        if opts.aio and sync_rounds is not None:
            say(f"aio unary: {opts.rounds} rounds x {opts.calls} calls")
            results["aio"] = asyncio.run(_aio_part(mesh, backend.address, opts, ECHO_METHOD))
            base = sync_rounds["direct"]
            for row in results["aio"].values():
                row["p50_vs_sync_direct"] = round(row["p50_us"] / c.median(s.p50 for s in base), 3)

        if opts.eds_endpoints:
            say(
                f"EDS: {opts.eds_updates} updates of {opts.eds_endpoints} endpoints while calls flow"
            )
            results["eds_update"] = eds_update(mesh, ads, calls["proxyless"], base_resources, opts)

        if opts.memory_probes:
            scale_ads = AdsServer()
            scale_ads.start()
            stack.callback(scale_ads.stop)
            probes: dict[str, Any] = {}
            say(f"memory: one service, {opts.memory_repeats} child processes")
            res, targets = _service_config(1)
            probes["services_1"] = repeated_probe(opts.memory_repeats, scale_ads, res, targets, 2)
            say(f"memory: {opts.services} services, {opts.memory_repeats} child processes")
            res, targets = _service_config(opts.services)
            probes[f"services_{opts.services}"] = repeated_probe(
                opts.memory_repeats, scale_ads, res, targets, 2 * opts.services
            )
            say(f"memory: {opts.scale_clusters} clusters")
            res, targets = _clusters_config(opts.scale_clusters, opts.scale_endpoints_per_cluster)
            probes[f"clusters_{opts.scale_clusters}"] = memory_probe(
                scale_ads, res, targets, opts.scale_clusters
            )
            results["memory"] = probes
    results["targets"] = evaluate(results, opts)
    return results


async def _aio_part(mesh: Any, backend: str, opts: Options, method: str) -> dict[str, Any]:
    import proxyless.grpc.aio

    direct = grpc.aio.insecure_channel(backend)
    px = proxyless.grpc.aio.channel(TARGET, mesh=mesh)
    try:
        direct_mc = direct.unary_unary(method)
        px_mc = px.unary_unary(method)
        await direct_mc(REQUEST, timeout=30, wait_for_ready=True)
        await px_mc(REQUEST, timeout=30, wait_for_ready=True)
        contenders: dict[str, Callable[[], Awaitable[Any]]] = {
            "aio-direct": lambda: direct_mc(REQUEST),
            "proxyless-aio": lambda: px_mc(REQUEST),
        }
        per_round = await run_rounds_async(contenders, opts)
    finally:
        await px.close()
        await direct.close()
    return summarize_rounds(per_round, "aio-direct")


def evaluate(results: dict[str, Any], opts: Options) -> dict[str, Any]:
    """Issue 4's targets, each with the measured value and met/missed."""
    out: dict[str, Any] = {}
    px = results.get("sync", {}).get("proxyless")
    if px:
        out["p50_ratio"] = {
            "target": TARGET_P50,
            "value": px["p50_ratio"],
            "met": px["p50_ratio"] <= TARGET_P50,
        }
        out["p99_ratio"] = {
            "target": TARGET_P99,
            "value": px["p99_ratio"],
            "met": px["p99_ratio"] <= TARGET_P99,
        }
    probe = results.get("memory", {}).get(f"services_{opts.services}")
    if probe:
        out["services_rss_mb"] = {
            "target": TARGET_SERVICES_MB,
            "value": probe["added_mb"],
            "met": probe["added_mb"] <= TARGET_SERVICES_MB,
        }
    eds = results.get("eds_update")
    if eds:
        out["eds_update_ms"] = {
            "target": TARGET_EDS_MS,
            "value": eds["applied_ms_median"],
            "met": eds["applied_ms_median"] <= TARGET_EDS_MS,
        }
    return out


# --- reporting ----------------------------------------------------------------------------------


def format_report(results: dict[str, Any]) -> str:
    lines: list[str] = []
    m = results["machine"]
    lines.append(
        f"{m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, grpcio {m['grpcio']}, "
        f"Envoy {m['envoy']}, load {m['loadavg_1m_at_start']}, revision {m.get('revision', '?')}"
    )
    o = results["options"]

    def table(title: str, rows: dict[str, dict[str, Any]]) -> None:
        lines.append("")
        lines.append(title)
        lines.append(f"{'contender':<15} {'p50 µs':>8} {'p99 µs':>8} {'p50 x':>7} {'p99 x':>7}  vs")
        for name, r in rows.items():
            lines.append(
                f"{name:<15} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f} "
                f"{r['p50_ratio']:>7.3f} {r['p99_ratio']:>7.3f}  {r['floor']}"
            )

    if "sync" in results:
        table(
            f"sync unary echo, {o['rounds']} rounds x {o['calls']} calls, medians across rounds",
            results["sync"],
        )
    if "aio" in results:
        table("grpc.aio unary echo (same loop)", results["aio"])
    if "process_rss" in results:
        r = results["process_rss"]
        lines.append("")
        lines.append(
            f"process RSS: {r['before_mesh_mb']} MB before the Mesh, {r['after_mesh_mb']} MB "
            f"after (+{r['added_mb']} MB: Mesh, config, channel, endpoint connection)"
        )
    if "envoy" in results:
        e = results["envoy"]
        lines.append(
            f"Envoy RSS: A {e['rss_mb']['A']} MB, B {e['rss_mb']['B']} MB; "
            f"TLS handshakes: {e['tls_handshakes']}; Envoy starts retried: "
            f"{len(e['start_failures'])}"
        )
    if "eds_update" in results:
        e = results["eds_update"]
        lines.append("")
        lines.append(
            f"EDS update of {e['endpoints']} endpoints: applied in {e['idle_applied_ms_median']} ms "
            f"median without calls, {e['applied_ms_median']} ms median while calls flow "
            f"(max {e['applied_ms_max']} ms, {len(e['updates'])} updates; first load "
            f"{e['first_load_ms']} ms); parse {e['parse_ms']} ms, apply {e['apply_update_ms']} ms "
            f"({e['bytes'] // 1024} KiB); with one endpoint changed: "
            f"{e['one_changed_applied_ms_median']} ms median"
        )
        quiet_max = max((u["quiet_max_us"] or 0) for u in e["updates"])
        quiet_p99 = c.median(u["quiet_p99_us"] or 0 for u in e["updates"])
        quiet_p50 = c.median(u["quiet_p50_us"] or 0 for u in e["updates"])
        lines.append(
            f"calls during the updates: {e['calls_during_total']}, p50 "
            f"{e['p50_call_during_us']} µs, slowest {e['max_call_during_us']} µs (quiet "
            f"windows: p50 {quiet_p50:.0f} µs, p99 {quiet_p99:.0f} µs, max {quiet_max:.0f} µs); "
            f"{e['calls_per_s_during']} calls/s during an update vs "
            f"{e['calls_per_s_quiet']} quiet; errors {e['call_errors']}"
        )
    if "memory" in results:
        lines.append("")
        for name, p in results["memory"].items():
            runs = p.get("added_mb_runs")
            spread = f" (runs: {', '.join(str(r) for r in runs)})" if runs else ""
            lines.append(
                f"RSS {name}: +{p['added_mb']} MB{spread} for {p['targets']} targets, {p['clusters']} "
                f"clusters, {p['endpoints']} endpoints (loaded in {p['load_s']} s; importing "
                f"proxyless +{p['import_proxyless_mb']} MB)"
            )
    if results.get("targets"):
        lines.append("")
        for name, t in results["targets"].items():
            lines.append(
                f"target {name}: {t['value']} (target {t['target']}) "
                f"{'met' if t['met'] else 'MISSED'}"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--calls", type=int, default=None, help="calls per contender per round (2000)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (7)")
    p.add_argument("--block", type=int, default=None, help="calls per turn within a round (50)")
    p.add_argument("--quick", action="store_true", help="small counts for a fast look")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-envoy", action="store_true", help="skip the Envoy sidecar pair")
    p.add_argument("--no-native-xds", action="store_true", help="skip grpcio's xDS channel")
    p.add_argument("--no-scale", action="store_true", help="skip the EDS and memory parts")
    p.add_argument(
        "--eds-only",
        action="store_true",
        help="only the EDS update part (no latency rounds, no memory probes)",
    )
    p.add_argument("--eds-endpoints", type=int, default=None, help="EDS update size (10000)")
    p.add_argument("--clusters", type=int, default=None, help="clusters of the scale config (1000)")
    p.add_argument("--services", type=int, default=None, help="services of the memory config (100)")
    p.add_argument("--probe-memory", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    opts = Options()
    if args.quick:
        opts = dataclasses.replace(
            opts,
            calls=300,
            rounds=3,
            warmup=100,
            eds_updates=2,
            eds_idle_updates=1,
            memory_repeats=1,
        )
    if args.calls is not None:
        opts.calls = args.calls
    if args.rounds is not None:
        opts.rounds = args.rounds
    if args.block is not None:
        opts.block = args.block
    if args.eds_endpoints is not None:
        opts.eds_endpoints = args.eds_endpoints
    if args.clusters is not None:
        opts.scale_clusters = args.clusters
    if args.services is not None:
        opts.services = args.services
    for name, value in (
        ("calls", opts.calls),
        ("rounds", opts.rounds),
        ("block", opts.block),
        ("eds-endpoints", opts.eds_endpoints),
        ("clusters", opts.scale_clusters),
        ("services", opts.services),
    ):
        if value < 1:
            p.error(f"--{name} must be at least 1, got {value}")
    opts.envoy = not args.no_envoy
    opts.native_xds = not args.no_native_xds
    if args.no_scale:
        opts.eds_endpoints = 0
        opts.memory_probes = False
    if args.eds_only:
        if args.no_scale:
            p.error("--eds-only and --no-scale leave nothing to run")
        opts.latency = False
        opts.memory_probes = False
    return opts, args


def main(argv: Sequence[str] | None = None) -> int:
    opts, args = parse_args(argv)
    if args.probe_memory:
        return _probe_child(args.probe_memory)
    results = run(opts, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
