"""Cost of the resilience layer on the success path of the sync gRPC channel.

Two services of one Mesh route to the same echo backend (a separate process
on 127.0.0.1), measured side by side in one run:

* ``plain``: no retry policy, no outlier detection (the cluster's default
  circuit breaker, ``max_requests`` 1024, is always enforced and is part of
  both variants);
* ``resilient``: a route retry policy (``retry_on`` unavailable,
  ``num_retries`` 3, ``per_try_timeout``, ``retry_back_off``, previous_hosts),
  an explicit retry budget and ``max_requests`` in the cluster's circuit
  breakers, and outlier detection (consecutive 5xx, success rate, failure
  percentage) counting every attempt.

A direct ``grpc.insecure_channel`` to the backend is measured too, as the
anchor. Rounds are interleaved (the order of the variants rotates each
round) so drift on a shared machine hits every variant alike. The result is
the p50 latency of each variant and the ratio resilient / plain; the target
(issue 5) is at most 5 % added p50. Every loop is bounded by a call count
and a time cap, and the backend process is killed on exit.

Run::

    .venv/bin/python bench/resilience_overhead.py --quick       # < 1 minute
    .venv/bin/python bench/resilience_overhead.py               # longer, steadier
    .venv/bin/python bench/resilience_overhead.py --json out.json
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from envoy.config.route.v3 import route_components_pb2
from google.protobuf import wrappers_pb2

import proxyless.grpc
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.resilience.outcome import SUCCESS
from proxyless.routing import RequestInfo
from proxyless.runtime.call import Call
from proxyless.testing.backends import ECHO_METHOD
from proxyless.testing.resources import (
    CLUSTER_URL,
    ENDPOINT_URL,
    LISTENER_URL,
    ROUTE_URL,
    cluster,
    duration,
    endpoints,
    listener,
    route,
    route_config,
)

TARGET_ADDED_P50 = 0.05
PAYLOAD = b"x" * 64

_BACKEND_SCRIPT = """
import sys
from proxyless.testing.backends import EchoServer
server = EchoServer("bench", max_workers=4).start()
print(server.port, flush=True)
sys.stdin.read()  # until the parent closes stdin or dies
server.stop(0)
"""

_children: list[subprocess.Popen[str]] = []


def _kill_children() -> None:
    for proc in _children:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


atexit.register(_kill_children)


def start_backend() -> tuple[subprocess.Popen[str], str]:
    """An EchoServer in its own process (so it does not share our GIL)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _BACKEND_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    _children.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        raise RuntimeError(f"the echo backend did not start (got {line!r})")
    return proc, f"127.0.0.1:{line}"


def stop_backend(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# -- config ---------------------------------------------------------------------------


def _resilient_retry_policy() -> route_components_pb2.RetryPolicy:
    p = route_components_pb2.RetryPolicy(retry_on="unavailable,deadline-exceeded")
    p.num_retries.value = 3
    p.per_try_timeout.CopyFrom(duration(2.0))
    p.retry_back_off.base_interval.CopyFrom(duration(0.025))
    p.retry_back_off.max_interval.CopyFrom(duration(0.25))
    p.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts")
    return p


def _resilient_cluster(name: str) -> Any:
    c = cluster(name)
    t = c.circuit_breakers.thresholds.add(priority=0)
    t.max_requests.value = 1000
    t.retry_budget.budget_percent.value = 20.0
    t.retry_budget.min_retry_concurrency.value = 3
    od = c.outlier_detection
    od.consecutive_5xx.value = 5
    od.enforcing_consecutive_5xx.value = 100
    od.interval.CopyFrom(duration(10.0))
    od.base_ejection_time.CopyFrom(duration(30.0))
    od.max_ejection_percent.value = 50
    od.enforcing_success_rate.value = 100
    od.failure_percentage_threshold.value = 85
    od.enforcing_failure_percentage.CopyFrom(wrappers_pb2.UInt32Value(value=100))
    return c


def publish(ads: AdsServer, address: str) -> None:
    """``plain:80`` and ``resilient:80``, one cluster each, same backend."""
    ads.set_resources(
        ENDPOINT_URL,
        {"plain": endpoints("plain", [address]), "resilient": endpoints("resilient", [address])},
    )
    ads.set_resources(
        CLUSTER_URL, {"plain": cluster("plain"), "resilient": _resilient_cluster("resilient")}
    )
    ads.set_resources(
        ROUTE_URL,
        {
            "plain-routes": route_config(
                "plain-routes", "plain:80", [route(prefix="/", cluster="plain")]
            ),
            "resilient-routes": route_config(
                "resilient-routes",
                "resilient:80",
                [route(prefix="/", cluster="resilient", retry_policy=_resilient_retry_policy())],
            ),
        },
    )
    ads.set_resources(
        LISTENER_URL,
        {
            "plain:80": listener("plain:80", "plain-routes"),
            "resilient:80": listener("resilient:80", "resilient-routes"),
        },
    )


def check_config(mesh: Mesh, resilient: Callable[..., bytes]) -> dict[str, Any]:
    """Prove the resilient variant really runs with the layer on (and plain without)."""
    rt = mesh.clusters.get("resilient")
    plain_rt = mesh.clusters.get("plain")
    if rt is None or plain_rt is None:
        raise RuntimeError("cluster runtimes missing after warm-up")
    if rt.outlier is None or plain_rt.outlier is not None:
        raise RuntimeError("outlier detection is not configured as expected")
    budget = rt.breakers.default.retry_budget
    if not budget.uses_budget or rt.breakers.default.max_requests != 1000:
        raise RuntimeError(f"breaker not configured as expected: {rt.breakers.default!r}")
    snap = mesh.config("resilient:80").snapshot
    policy = None
    if snap is not None and snap.route_config is not None:
        policy = snap.route_config.virtual_hosts[0].routes[0].action.retry_policy  # type: ignore[union-attr]
    if policy is None:
        raise RuntimeError("the resilient route has no retry policy")
    before = sum(es.outlier.active.ext_ok for es in rt.endpoints() if es.outlier is not None)
    resilient(PAYLOAD, timeout=5)
    after = sum(es.outlier.active.ext_ok for es in rt.endpoints() if es.outlier is not None)
    return {
        "retry_policy": f"retry_on={sorted(policy.retry_on)} num_retries={policy.num_retries} "
        f"per_try_timeout={policy.per_try_timeout}s",
        "breaker": repr(rt.breakers.default),
        "outlier_detection": repr(rt.outlier),
        "outlier_counts_successes": after > before,
    }


# -- measurement ----------------------------------------------------------------------


def request_path(mesh: Mesh, target: str) -> Callable[[], None]:
    """One call's work on the transport-agnostic request path, without the
    network: route, breaker, pick, attempt bookkeeping, success outcome
    (retry policy and outlier counting when configured), release."""
    rt = mesh.target(target)
    request = RequestInfo(rt.authority, ECHO_METHOD)

    def no_connection(_endpoint: Any) -> None:
        return None

    def one() -> None:
        call = Call(
            rt, request, timeout=5.0, wait_for_ready=False, channel_id=1, pool_get=no_connection
        )
        try:
            attempt = call.attempt()
            call.attempt_done(attempt, SUCCESS)
        finally:
            call.end()

    return one


def timed_loop(fn: Callable[[], None], count: int) -> float:
    """Mean ns per call of ``count`` back-to-back calls (no per-call timer overhead)."""
    t0 = time.perf_counter_ns()
    for _ in range(count):
        fn()
    return (time.perf_counter_ns() - t0) / count


def timed_batch(call: Callable[[], Any], count: int, deadline: float) -> list[int]:
    """Up to ``count`` calls (stopping at ``deadline``), each timed in ns."""
    out: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(count):
        t0 = clock()
        call()
        out.append(clock() - t0)
        if time.monotonic() > deadline:
            break
    return out


def pct(sorted_ns: Sequence[int], q: float) -> float:
    """The q-th percentile in microseconds (nearest rank)."""
    if not sorted_ns:
        return float("nan")
    k = min(len(sorted_ns) - 1, max(0, round(q / 100.0 * (len(sorted_ns) - 1))))
    return sorted_ns[k] / 1000.0


def run(rounds: int, batch: int, warmup: int, time_cap: float, path_rounds: int) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + time_cap
    proc, address = start_backend()
    ads = AdsServer()
    ads.start()
    mesh: Mesh | None = None
    try:
        publish(ads, address)
        bootstrap = {
            "xds_servers": [{"server_uri": ads.target, "channel_creds": [{"type": "insecure"}]}],
            "node": {"id": "bench-resilience"},
        }
        mesh = Mesh(bootstrap, rng=random.Random(7))
        plain_fn = proxyless.grpc.channel("xds:///plain:80", mesh=mesh).unary_unary(ECHO_METHOD)
        resilient_fn = proxyless.grpc.channel("xds:///resilient:80", mesh=mesh).unary_unary(
            ECHO_METHOD
        )
        direct_channel = grpc.insecure_channel(address)
        direct_fn = direct_channel.unary_unary(
            ECHO_METHOD, request_serializer=None, response_deserializer=None
        )
        variants: dict[str, Callable[[], Any]] = {
            "direct": lambda: direct_fn(PAYLOAD, timeout=5),
            "plain": lambda: plain_fn(PAYLOAD, timeout=5),
            "resilient": lambda: resilient_fn(PAYLOAD, timeout=5),
        }
        for fn in variants.values():
            timed_batch(fn, warmup, deadline)
        config = check_config(mesh, resilient_fn)

        samples: dict[str, list[int]] = {name: [] for name in variants}
        round_ratios: list[float] = []
        names = list(variants)
        done_rounds = 0
        for r in range(rounds):
            if time.monotonic() > deadline:
                break
            order = names[r % len(names) :] + names[: r % len(names)]
            per_round: dict[str, list[int]] = {}
            gc.collect()
            gc.disable()
            try:
                for name in order:
                    per_round[name] = timed_batch(variants[name], batch, deadline)
            finally:
                gc.enable()
            for name, values in per_round.items():
                samples[name].extend(values)
            if per_round["plain"] and per_round["resilient"]:
                round_ratios.append(
                    statistics.median(per_round["resilient"])
                    / statistics.median(per_round["plain"])
                )
            done_rounds += 1
        path_ns: dict[str, list[float]] = {"plain": [], "resilient": []}
        paths = {
            "plain": request_path(mesh, "xds:///plain:80"),
            "resilient": request_path(mesh, "xds:///resilient:80"),
        }
        for fn in paths.values():
            timed_loop(fn, 2000)
        for r in range(path_rounds):
            if time.monotonic() > deadline:
                break
            order = ["plain", "resilient"] if r % 2 == 0 else ["resilient", "plain"]
            gc.collect()
            gc.disable()
            try:
                for name in order:
                    path_ns[name].append(timed_loop(paths[name], 2000))
            finally:
                gc.enable()
        direct_channel.close()
    finally:
        if mesh is not None:
            mesh.close()
        from proxyless.grpc._pool import POOL

        POOL.close_all()
        ads.stop()
        stop_backend(proc)

    result: dict[str, Any] = {
        "rounds": done_rounds,
        "batch": batch,
        "elapsed_s": round(time.monotonic() - started, 1),
        "config": config,
        "variants": {},
        "machine": {
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    }
    for name, values in samples.items():
        ordered = sorted(values)
        result["variants"][name] = {
            "calls": len(ordered),
            "p50_us": round(pct(ordered, 50), 1),
            "p90_us": round(pct(ordered, 90), 1),
            "p99_us": round(pct(ordered, 99), 1),
        }
    plain_p50 = result["variants"]["plain"]["p50_us"]
    res_p50 = result["variants"]["resilient"]["p50_us"]
    result["p50_ratio_resilient_over_plain"] = round(res_p50 / plain_p50, 4)
    result["added_p50_us"] = round(res_p50 - plain_p50, 1)
    result["median_round_ratio"] = (
        round(statistics.median(round_ratios), 4) if round_ratios else float("nan")
    )
    result["round_ratio_range"] = (
        [round(min(round_ratios), 4), round(max(round_ratios), 4)] if round_ratios else []
    )
    plain_path = statistics.median(path_ns["plain"]) / 1000.0 if path_ns["plain"] else float("nan")
    res_path = (
        statistics.median(path_ns["resilient"]) / 1000.0 if path_ns["resilient"] else float("nan")
    )
    result["request_path_us"] = {
        "plain": round(plain_path, 2),
        "resilient": round(res_path, 2),
        "added": round(res_path - plain_path, 2),
        "added_share_of_plain_p50": round((res_path - plain_path) / plain_p50, 4),
    }
    result["target_met"] = result["p50_ratio_resilient_over_plain"] <= 1 + TARGET_ADDED_P50
    return result


def report(result: dict[str, Any]) -> str:
    lines = [
        "Resilience layer on the success path (sync gRPC unary, one backend process, 127.0.0.1)",
        f"  {result['rounds']} interleaved rounds x {result['batch']} calls per variant, "
        f"{result['elapsed_s']}s; Python {result['machine']['python']}, "
        f"grpcio {result['machine']['grpcio']}, {result['machine']['cpus']} CPUs",
        f"  resilient config: {result['config']['retry_policy']}",
        f"                    {result['config']['breaker']}",
        f"                    {result['config']['outlier_detection']}, counting successes: "
        f"{result['config']['outlier_counts_successes']}",
        "",
        f"  {'variant':<10} {'calls':>7} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9}",
    ]
    for name, v in result["variants"].items():
        lines.append(
            f"  {name:<10} {v['calls']:>7} {v['p50_us']:>9.1f} {v['p90_us']:>9.1f} "
            f"{v['p99_us']:>9.1f}"
        )
    ratio = result["p50_ratio_resilient_over_plain"]
    path = result["request_path_us"]
    lines += [
        "",
        f"  p50 resilient / plain = {ratio:.3f} ({(ratio - 1) * 100:+.1f} %, "
        f"{result['added_p50_us']:+.1f} us); per-round median ratio "
        f"{result['median_round_ratio']:.3f} (range {result['round_ratio_range']})",
        f"  target <= {1 + TARGET_ADDED_P50:.2f}: {'met' if result['target_met'] else 'NOT met'}",
        "",
        "  request path alone (route, breaker, pick, outcome bookkeeping; no network), "
        "median of rounds x 2000 calls:",
        f"    plain {path['plain']:.2f} us, resilient {path['resilient']:.2f} us, "
        f"added {path['added']:+.2f} us = {path['added_share_of_plain_p50'] * 100:+.2f} % "
        "of the plain end-to-end p50",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None, help="calls per variant per round")
    parser.add_argument("--time-cap", type=float, default=None, help="seconds (hard stop)")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = parser.parse_args(argv)
    rounds = args.rounds or (20 if args.quick else 40)
    batch = args.batch or (400 if args.quick else 1000)
    time_cap = args.time_cap or (40.0 if args.quick else 300.0)
    warmup = 200 if args.quick else 1000
    path_rounds = 10 if args.quick else 30
    result = run(rounds, batch, warmup, time_cap, path_rounds)
    print(report(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
