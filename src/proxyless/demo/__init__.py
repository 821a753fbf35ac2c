"""``proxyless demo``: a working mesh on one machine, in seconds.

What it does, all on 127.0.0.1:

1. starts three gRPC backends of a ``reviews`` service as real processes —
   ``reviews-v1-a`` and ``reviews-v1-b`` (version v1) and ``reviews-v2``;
2. starts the embedded control plane with the bundled Istio config
   (``proxyless/examples/reviews.yaml``): a ServiceEntry, a VirtualService
   sending ``user-agent: .*Mobile.*`` to v2 and everyone else 90/10 to
   v1/v2 with retries, a DestinationRule with subsets and outlier detection;
3. sends calls through ``proxyless.grpc.channel("xds:///reviews...:9080")``
   and prints what happened: calls per subset and endpoint against the
   configured weights, the Mobile route, and what happened when one backend
   was made to fail (retries hid the failures from the caller, outlier
   detection ejected the backend).

Exit status 0 when the mesh behaved as configured.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import grpc

from proxyless.controlplane.embedded import ControlPlane
from proxyless.controlplane.examples import example_endpoints, render_example
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, SET_FAILURE_METHOD, decode_reply

__all__ = ["run_demo"]

TARGET = "xds:///reviews.default.svc.cluster.local:9080"
#: the channel's unary-unary multicallable for the echo method
Echo = Any

SUBSET = {"reviews-v1-a": "v1", "reviews-v1-b": "v1", "reviews-v2": "v2"}


@contextlib.contextmanager
def _backends(names: list[str]) -> Iterator[dict[str, int]]:
    """Start one backend process per name; yield name -> port."""
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for name in names:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "proxyless.testing.backends", name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        ports: dict[str, int] = {}
        for name, proc in procs.items():
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            if len(line) != 2 or line[0] != "READY":
                raise RuntimeError(f"backend {name} did not start (exit status {proc.poll()})")
            ports[name] = int(line[1])
        yield ports
    finally:
        for proc in procs.values():
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.close()
        for proc in procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def _bar(share: float, width: int = 30) -> str:
    n = round(share * width)
    return "#" * n + "." * (width - n)


def run_demo(out: TextIO = sys.stdout, *, calls: int = 1000) -> int:
    """Run the demo, printing to ``out``; returns the exit status."""
    started = time.monotonic()

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    names = example_endpoints("reviews")
    say("proxyless demo: a reviews service with v1 x2 and v2 x1, routed by Istio YAML")
    say("")
    ok = True
    with _backends(names) as ports:
        for name in names:
            say(f"  backend {name:<13} subset {SUBSET.get(name, '?')}  127.0.0.1:{ports[name]}")
        yaml_text = render_example("reviews", {n: ("127.0.0.1", p) for n, p in ports.items()})
        cp = ControlPlane(yaml_text).start()
        try:
            say(f"  control plane (xDS)    {cp.target}")
            say(f"  target                 {TARGET}")
            say("")
            with Mesh(cp.bootstrap(node_id="demo-client")) as mesh:
                import proxyless.grpc

                channel = proxyless.grpc.channel(TARGET, mesh=mesh)
                echo = channel.unary_unary(ECHO_METHOD)
                ok &= _split(say, echo, calls)
                ok &= _mobile(say, echo)
                ok &= _failure(say, echo, mesh, ports)
                channel.close()
        finally:
            cp.stop()
    took = time.monotonic() - started
    say("")
    say(f"{'OK' if ok else 'FAILED'}: demo finished in {took:.1f}s")
    say("Next: examples/reviews_client.py is this demo as code to copy; `proxyless analyze`,")
    say("`proxyless check` and `proxyless explain` show what a mesh config does and why.")
    return 0 if ok else 1


def _split(say: Callable[[str], None], echo: Echo, calls: int) -> bool:
    per_endpoint: Counter[str] = Counter()
    failed = 0
    for _ in range(calls):
        try:
            per_endpoint[decode_reply(echo(b"hello", timeout=5))["backend"]] += 1
        except grpc.RpcError:
            failed += 1
    per_subset: Counter[str] = Counter()
    for name, n in per_endpoint.items():
        per_subset[SUBSET.get(name, "?")] += n
    say(f"1. {calls} calls without a Mobile user-agent (route 'split': v1 90%, v2 10%)")
    say(f"   {'subset':<8}{'configured':>11}{'observed':>10}")
    for subset, weight in (("v1", 90), ("v2", 10)):
        share = per_subset[subset] / calls
        say(f"   {subset:<8}{weight:>10}%{100 * share:>9.1f}%  {_bar(share)}")
    say(f"   {'endpoint':<16}{'calls':>7}")
    for name in sorted(SUBSET):
        say(f"   {name:<16}{per_endpoint[name]:>7}")
    say(f"   failed calls: {failed}")
    say("")
    v2 = per_subset["v2"] / calls
    return failed == 0 and 0.05 <= v2 <= 0.15


def _mobile(say: Callable[[str], None], echo: Echo) -> bool:
    seen: Counter[str] = Counter()
    for _ in range(100):
        reply = echo(b"hi", timeout=5, metadata=(("user-agent", "Mozilla/5.0 (iPhone) Mobile"),))
        seen[decode_reply(reply)["backend"]] += 1
    say("2. 100 calls with user-agent 'Mozilla/5.0 (iPhone) Mobile' (route 'mobile': v2)")
    for name, n in sorted(seen.items()):
        say(f"   {name:<16}{n:>7}  subset {SUBSET.get(name, '?')}")
    say("")
    return set(seen) == {"reviews-v2"}


def _failure(
    say: Callable[[str], None],
    echo: Echo,
    mesh: Mesh,
    ports: dict[str, int],
) -> bool:
    victim = "reviews-v1-a"
    with grpc.insecure_channel(f"127.0.0.1:{ports[victim]}") as direct:
        direct.unary_unary(SET_FAILURE_METHOD, None, None)(b"UNAVAILABLE", timeout=5)
    served: Counter[str] = Counter()
    failed = 0
    for _ in range(300):
        try:
            served[decode_reply(echo(b"hello", timeout=5))["backend"]] += 1
        except grpc.RpcError:
            failed += 1
    cluster = mesh.clusters.get("outbound|9080|v1|reviews.default.svc.cluster.local")
    ejected = []
    ejections = 0
    if cluster is not None:
        ejected = [es.address for es in cluster.lb.endpoints if es.ejected]
        if cluster.outlier is not None:
            ejections = cluster.outlier.stats.get("ejections_enforced_total", 0)
    say(f"3. {victim} now fails every call with UNAVAILABLE; 300 more calls")
    say("   (VirtualService retries: 2 on unavailable; DestinationRule outlierDetection:")
    say("    eject after 3 consecutive errors for 10s, at most 50% of v1)")
    for name in sorted(SUBSET):
        say(f"   {name:<16}{served[name]:>7} successful calls served")
    say(f"   calls that failed at the caller: {failed} (retries went to healthy endpoints)")
    say(f"   ejected by outlier detection: {', '.join(ejected) or 'none'} ({ejections} ejections)")
    return failed == 0 and ejections >= 1 and served[victim] == 0
