"""The demo's traffic sections: the weighted split, the Mobile route, a failing backend.

Each sends calls through the client's ``proxyless.grpc.channel`` and counts
which backend answered (every reply names its backend), then prints what
was configured next to what happened; each returns True when the mesh did
what the config says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from proxyless.demo.processes import BackendProcess
from proxyless.mesh import Mesh
from proxyless.testing.backends import decode_reply

__all__ = ["SUBSET", "failure", "mobile", "split"]

#: the channel's unary-unary multicallable for the echo method
Echo = Any
Say = Callable[[str], None]

SUBSET = {"reviews-v1-a": "v1", "reviews-v1-b": "v1", "reviews-v2": "v2"}


def _bar(share: float, width: int = 30) -> str:
    n = round(share * width)
    return "#" * n + "." * (width - n)


def split(say: Say, n: int, echo: Echo, calls: int) -> bool:
    per_endpoint: Counter[str] = Counter()
    failed = 0
    for _ in range(calls):
        try:
            per_endpoint[decode_reply(echo(b"hello", timeout=5))["backend"]] += 1
        except grpc.RpcError:
            failed += 1
    per_subset: Counter[str] = Counter()
    for name, count in per_endpoint.items():
        per_subset[SUBSET.get(name, "?")] += count
    say(f"{n}. {calls} calls without a Mobile user-agent (route 'split': v1 90%, v2 10%)")
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


def mobile(say: Say, n: int, echo: Echo) -> bool:
    seen: Counter[str] = Counter()
    for _ in range(100):
        reply = echo(b"hi", timeout=5, metadata=(("user-agent", "Mozilla/5.0 (iPhone) Mobile"),))
        seen[decode_reply(reply)["backend"]] += 1
    say(f"{n}. 100 calls with user-agent 'Mozilla/5.0 (iPhone) Mobile' (route 'mobile': v2)")
    for name, count in sorted(seen.items()):
        say(f"   {name:<16}{count:>7}  subset {SUBSET.get(name, '?')}")
    say("")
    return set(seen) == {"reviews-v2"}


def failure(
    say: Say,
    n: int,
    echo: Echo,
    mesh: Mesh,
    backends: Mapping[str, BackendProcess],
) -> bool:
    victim = "reviews-v1-a"
    # Told over its standard input: under STRICT mTLS and an ALLOW policy,
    # nobody but productpage may call the backend.
    if backends[victim].command("fail UNAVAILABLE") != "FAILING UNAVAILABLE":
        say(f"   {victim} did not start failing")
        return False
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
    say(f"{n}. {victim} now fails every call with UNAVAILABLE; 300 more calls")
    say("   (VirtualService retries: 2 on unavailable; DestinationRule outlierDetection:")
    say("    eject after 3 consecutive errors for 10s, at most 50% of v1)")
    for name in sorted(SUBSET):
        say(f"   {name:<16}{served[name]:>7} successful calls served")
    say(f"   calls that failed at the caller: {failed} (retries went to healthy endpoints)")
    say(f"   ejected by outlier detection: {', '.join(ejected) or 'none'} ({ejections} ejections)")
    return failed == 0 and ejections >= 1 and served[victim] == 0
