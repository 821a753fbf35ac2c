"""Where a sync ``proxyless.grpc.channel`` call spends its time.

Sets up the same world as :mod:`bench.grpc_overhead` (echo backend in its
own process, in-process ADS server, one Mesh, listener -> route -> one
cluster -> one endpoint) and reports:

* ``steps``: each step of the request path timed on its own in a tight loop
  (µs per call, median of 5 runs of ``--loops`` iterations), with the same
  objects a real call uses — routing only, no RPC;
* ``rpc``: interleaved rounds of real calls: the plain channel, the pool's
  own endpoint channel called directly, and the proxyless channel, so the
  difference between them is the per-call overhead in µs;
* ``in situ``: each real proxyless call split into time inside grpcio and
  time in proxyless around it, and proxyless's code alone (grpcio call
  replaced by a no-op) in a hot loop and right after a real grpcio call —
  which shows why the overhead in real calls is a multiple of the
  tight-loop ``steps``;
* ``cprofile`` (``--cprofile``): real calls under cProfile, the top functions
  by own time in µs per call (cProfile inflates small functions; read it
  for the ranking, the ``steps`` table for the size).

``--loop N`` only makes N proxyless calls, for a sampling profiler::

    py-spy record --format raw -r 1000 -o sync.txt -- \\
        python bench/profile_sync.py --loop 20000
    python bench/profile_sync.py --collapsed sync.txt

``--collapsed FILE`` summarizes py-spy's raw (collapsed stack) output: the
share of samples inside each proxyless and grpc function.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gc
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench import _common as c

REQUEST = b"ping"
TARGET = "xds:///svc:80"


@contextmanager
def world() -> Iterator[dict[str, Any]]:
    """Backend, ADS server, Mesh and the channels of one benchmark world."""
    import proxyless.grpc
    from proxyless.controlplane.server import AdsServer
    from proxyless.mesh import Mesh
    from proxyless.testing.backends import ECHO_METHOD

    with ExitStack() as stack:
        backend = stack.enter_context(c.Backend())
        ads = AdsServer()
        ads.start()
        stack.callback(ads.stop)
        c.serve_service(ads, "svc:80", [backend.address])
        mesh = Mesh(c.xds_bootstrap(ads.target, "bench-profile"))
        stack.callback(mesh.close)
        px = proxyless.grpc.channel(TARGET, mesh=mesh)
        px_mc = px.unary_unary(ECHO_METHOD)
        px_mc(REQUEST, timeout=30, wait_for_ready=True)
        direct = grpc.insecure_channel(backend.address)
        stack.callback(direct.close)
        direct_mc = direct.unary_unary(ECHO_METHOD)
        direct_mc(REQUEST, timeout=30, wait_for_ready=True)
        yield {
            "mesh": mesh,
            "channel": px,
            "proxyless": px_mc,
            "direct": direct_mc,
            "method": ECHO_METHOD,
            "backend": backend.address,
        }


def _per_call_us(fn: Callable[[], Any], loops: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of the mean µs per call of ``fn``."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            fn()
        runs.append((time.perf_counter_ns() - t0) / loops / 1000)
    return statistics.median(runs)


def step_times(w: dict[str, Any], loops: int) -> dict[str, float | str]:
    """Each step of the request path on its own, µs per call (no RPC).

    These reach into the channel's internals, which move as the request path
    grows: a step that no longer fits is reported as ``n/a`` with the reason
    instead of failing the run; the RPC rounds and the profiles do not depend
    on them.
    """
    ch = w["channel"]
    method = w["method"]
    out: dict[str, float | str] = {}

    def build() -> dict[str, Callable[[], Any]]:
        from proxyless.resilience.outcome import SUCCESS
        from proxyless.resilience.retry import CompiledRetryPolicy, HedgePlan
        from proxyless.routing import RequestInfo, grpc_deadline

        rt = ch._core.runtime
        state = rt._state
        snap = state[0]
        request = RequestInfo(rt.authority, method)
        route = rt.route(request, state)
        cluster = rt.cluster(snap, route.cluster_name)
        action = route.route_action
        lb = cluster.lb
        breaker = cluster.breakers.default
        rng = ch._core.rng
        endpoint = lb.pick(None, rng, ())
        pooled = _pooled(ch, endpoint.address)

        def whole() -> None:
            call = ch._core.route(method, None, None, None)
            attempt = call.attempt()
            ch._core.pool.call_ended(attempt.conn)
            call.attempt_done(attempt, SUCCESS)
            call.end()

        def routed_call() -> None:
            ch._core.route(method, None, None, None).end()

        def breaker_cycle() -> None:
            breaker.try_acquire_request()
            breaker.release_request()

        return {
            "whole request path (Call, attempt, done, end)": whole,
            "Call(...): route, deadline, cluster, policies, breaker": routed_call,
            "TargetRuntime.route (resolve)": lambda: rt.route(request, state),
            "TargetRuntime.cluster": lambda: rt.cluster(snap, route.cluster_name),
            "TargetRuntime.fault_filters": lambda: rt.fault_filters(snap),
            "grpc_deadline (no caller timeout)": lambda: grpc_deadline(action, None, None),
            "grpc_deadline (caller timeout 5 s)": lambda: grpc_deadline(action, None, 5.0),
            "CompiledRetryPolicy.from_policy": lambda: CompiledRetryPolicy.from_policy(
                route.retry_policy, True
            ),
            "HedgePlan.from_policy": lambda: HedgePlan.from_policy(route.hedge_policy),
            "breaker acquire + release": breaker_cycle,
            "ClusterLoadBalancer.pick": lambda: lb.pick(None, rng, ()),
            "ChannelPool.get": lambda: _pooled(ch, endpoint.address),
            "PooledChannel.callable": lambda: pooled.callable("unary_unary", method, None, None),
            "empty lambda (loop cost)": lambda: None,
        }

    try:
        steps = build()
    except Exception as exc:  # the internals moved: say so, keep going
        return {"steps": f"n/a ({type(exc).__name__}: {exc})"}
    gc.collect()
    for name, fn in steps.items():
        try:
            out[name] = round(_per_call_us(fn, loops), 3)
        except Exception as exc:
            out[name] = f"n/a ({type(exc).__name__}: {exc})"
    return out


def _pooled(ch: Any, address: str) -> Any:
    """The grpcio channel a proxyless channel uses for ``address``."""
    core = ch._core
    return core.pool.get(
        address, core.credentials, core.security_key, authority=core.runtime.authority
    )


def rpc_rounds(
    w: dict[str, Any], calls: int, rounds: int, block: int = 50
) -> dict[str, dict[str, float]]:
    """Real calls, interleaved in blocks as in :mod:`bench.grpc_overhead`: the plain
    channel, proxyless's own grpcio channel to the backend called directly (as
    proxyless calls it, with keyword arguments), and the proxyless channel."""
    from bench.grpc_overhead import Options, run_rounds

    ch = w["channel"]
    # the grpcio channel proxyless keeps for the backend (the same one its calls use)
    pooled = _pooled(ch, w["backend"])
    pooled_mc = pooled.callable("unary_unary", w["method"], None, None)
    direct_mc, px_mc = w["direct"], w["proxyless"]
    contenders: dict[str, Callable[[], Any]] = {
        "direct": lambda: direct_mc(REQUEST),
        "pooled endpoint channel": lambda: pooled_mc(
            REQUEST,
            timeout=None,
            metadata=None,
            credentials=None,
            wait_for_ready=None,
            compression=None,
        ),
        "proxyless": lambda: px_mc(REQUEST),
    }
    opts = Options(calls=calls, rounds=rounds, block=block, warmup=min(300, calls))
    per = run_rounds(contenders, opts)
    out = {}
    for name, stats in per.items():
        out[name] = {
            "p50_us": round(c.median(s.p50 for s in stats), 1),
            "p99_us": round(c.median(s.p99 for s in stats), 1),
            "mean_us": round(c.median(s.mean for s in stats), 1),
            "p50_minus_direct_us": round(
                c.median(s.p50 - d.p50 for s, d in zip(stats, per["direct"], strict=True)), 1
            ),
        }
    return out


def in_situ(w: dict[str, Any], calls: int, block: int = 50) -> dict[str, float | str]:
    """The proxyless overhead measured inside real calls, and why it exceeds the
    tight-loop step timings.

    * ``split``: proxyless's grpcio multicallable is wrapped with a timer, so each
      real proxyless call splits into time inside grpcio and time around it
      (proxyless's own code); direct calls interleave in blocks.
    * ``no-op RPC``: the grpcio call replaced by a function returning at once:
      proxyless's code alone, in a hot loop, right after a real grpcio call
      (caches cooled by the C core), and the Python function calls it makes.
    """
    ch = w["channel"]
    key = ("unary_unary", w["method"], None, None)
    try:
        pooled = _pooled(ch, w["backend"])
        inner = pooled._callables[key]
    except Exception as exc:  # the internals moved
        return {"in situ": f"n/a ({type(exc).__name__}: {exc})"}
    spent: list[int] = []
    clock = time.perf_counter_ns

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return inner(*args, **kwargs)
        finally:
            spent.append(clock() - t0)

    px, direct = w["proxyless"], w["direct"]
    direct_ns: list[int] = []
    px_ns: list[int] = []
    inside: list[int] = []
    out: dict[str, float | str] = {}
    try:
        pooled._callables[key] = timed
        for size in [block] * max(1, calls // block):
            direct_ns.extend(c.timed_calls(lambda: direct(REQUEST), size, 60))
            spent.clear()
            got = c.timed_calls(lambda: px(REQUEST), size, 60)
            px_ns.extend(got)
            inside.extend(spent[-len(got) :])
        around = [t - i for t, i in zip(px_ns, inside, strict=True)]
        out["direct p50"] = c.summarize(direct_ns).p50
        out["proxyless p50"] = c.summarize(px_ns).p50
        out["  of which inside grpcio, p50"] = c.summarize(inside).p50
        out["  of which proxyless around it, p50"] = c.summarize(around).p50
        out["  of which proxyless around it, mean"] = c.summarize(around).mean

        pooled._callables[key] = lambda *_a, **_k: b""
        hot = c.timed_calls(lambda: px(REQUEST), calls, 60)
        cold: list[int] = []
        for _ in range(calls):
            direct(REQUEST)
            cold.extend(c.timed_calls(lambda: px(REQUEST), 1, 60))
        out["no-op RPC: proxyless in a hot loop, p50"] = c.summarize(hot).p50
        out["no-op RPC: proxyless after a real grpcio call, p50"] = c.summarize(cold).p50
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(200):
            px(REQUEST)
        prof.disable()
        total_calls = pstats.Stats(prof).total_calls  # type: ignore[attr-defined]
        out["no-op RPC: Python function calls per proxyless call"] = float(total_calls / 200)
    finally:
        pooled._callables[key] = inner
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}


def cprofile_calls(w: dict[str, Any], calls: int, top: int) -> list[tuple[str, int, float, float]]:
    """Functions by own time under cProfile: (name, calls, own µs per RPC, cumulative µs per RPC)."""
    px_mc = w["proxyless"]
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        px_mc(REQUEST)
    prof.disable()
    stats = pstats.Stats(prof)
    rows = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = "/".join(Path(filename).parts[-2:]) if filename != "~" else ""
        rows.append(
            (
                f"{func} ({short}:{line})" if short else func,
                ncalls,
                tottime / calls * 1e6,
                cumtime / calls * 1e6,
            )
        )
    rows.sort(key=lambda r: r[2], reverse=True)
    return rows[:top]


def summarize_collapsed(
    path: str,
    top: int = 20,
    call_frame: str = "XdsChannel.run_unary",
    rpc_frame: str = "_UnaryUnaryMultiCallable.__call__",
) -> str:
    """Read py-spy raw output (collapsed stacks): of the samples inside
    ``call_frame`` (one proxyless call), the share spent outside grpcio's own
    call (``rpc_frame``) — proxyless's overhead — and the functions it is spent in."""
    total = in_rpc = 0
    incl: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            frames = [_frame_name(fr) for fr in stack.split(";")]
            names = [fr.split(" (")[0] for fr in frames]
            if call_frame not in names:
                continue
            n = int(count)
            total += n
            if rpc_frame in names:
                in_rpc += n
                continue
            below = frames[names.index(call_frame) :]
            own[below[-1]] += n
            for name in set(below):
                incl[name] += n
    if not total:
        return f"no samples inside {call_frame}"
    outside = total - in_rpc
    lines = [
        f"{total} samples inside {call_frame}: {100 * in_rpc / total:.1f}% in grpcio's call, "
        f"{100 * outside / total:.1f}% in proxyless around it",
        "proxyless functions, inclusive share of the call:",
    ]
    lines += [f"  {100 * v / total:5.2f}%  {k}" for k, v in incl.most_common(top)]
    lines.append("own share of the call:")
    lines += [f"  {100 * v / total:5.2f}%  {k}" for k, v in own.most_common(top)]
    return "\n".join(lines)


def _frame_name(frame: str) -> str:
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    return f"{func} ({'/'.join(Path(where.split(':')[0]).parts[-2:])})" if where else func


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Profile the sync proxyless call path.")
    p.add_argument("--loops", type=int, default=20000, help="iterations per step timing")
    p.add_argument("--calls", type=int, default=2000, help="calls per contender per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cprofile", type=int, default=0, metavar="N", help="N calls under cProfile")
    p.add_argument("--loop", type=int, default=0, metavar="N", help="only make N calls")
    p.add_argument("--collapsed", metavar="FILE", help="summarize py-spy raw output")
    args = p.parse_args(argv)
    if args.collapsed:
        print(summarize_collapsed(args.collapsed))
        return 0
    with world() as w:
        if args.loop:
            c.timed_calls(lambda: w["proxyless"](REQUEST), args.loop, 600)
            return 0
        print("request path steps, µs per call (no RPC):")
        for name, us in step_times(w, args.loops).items():
            print(f"  {us:8.2f}  {name}" if isinstance(us, float) else f"  {us}  {name}")
        print(f"real calls, {args.rounds} interleaved rounds x {args.calls} (medians):")
        for name, row in rpc_rounds(w, args.calls, args.rounds).items():
            print(
                f"  {name:<26} p50 {row['p50_us']:7.1f}  p99 {row['p99_us']:7.1f}  "
                f"mean {row['mean_us']:7.1f}  p50 - direct {row['p50_minus_direct_us']:6.1f} µs"
            )
        print(f"in situ, {args.calls} calls each (µs, or a count):")
        for name, value in in_situ(w, args.calls).items():
            print(f"  {value:>8}  {name}")
        if args.cprofile:
            print(f"cProfile, {args.cprofile} calls: own µs/call, cumulative µs/call, calls")
            for name, ncalls, own, cum in cprofile_calls(w, args.cprofile, 25):
                print(f"  {own:7.2f} {cum:8.2f} {ncalls:8d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
