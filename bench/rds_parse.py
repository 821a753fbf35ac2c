"""How long proxyless takes to validate a large RouteConfiguration: N virtual
hosts (three domains each) of three routes each (prefix match, one cluster,
a timeout and istiod's default retry policy), decoded from its wire bytes
with ``decode_route_configuration``, the function the xDS client calls
(plain virtual hosts validated ahead, their routes built on first use), and
built whole (``screen=False``) for comparison.

Run: ``.venv/bin/python bench/rds_parse.py 5000`` (median of 5 runs).
Figures in docs/benchmarks.md ("A large mesh, three xDS clients side by side").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envoy.config.route.v3 import route_pb2

from proxyless.resources.parse import decode_route_configuration

RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"


def config(hosts: int) -> bytes:
    """The serialized RouteConfiguration (see the module docstring)."""
    cfg = route_pb2.RouteConfiguration(name="big")
    for i in range(hosts):
        name = f"svc-{i}.ns.svc.cluster.local"
        vh = cfg.virtual_hosts.add(name=f"vh{i}", domains=[name, f"{name}:8080", f"svc-{i}"])
        for j, prefix in enumerate(("/api/v1", "/api/v2", "/")):
            r = vh.routes.add(name=f"r{i}-{j}")
            r.match.prefix = prefix
            r.route.cluster = f"outbound|8080|v{j}|{name}"
            r.route.timeout.seconds = 0
            r.route.retry_policy.retry_on = RETRY_ON
            r.route.retry_policy.num_retries.value = 2
    return cfg.SerializeToString()


def measure(hosts: int, runs: int = 5) -> dict[str, float]:
    """Median decode time with plain virtual hosts validated ahead (what the
    xDS client does, ``median_s``) and with everything built whole
    (``general_median_s``), interleaved."""
    data = config(hosts)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(runs):
        for screen in (True, False):
            started = time.perf_counter()
            result = decode_route_configuration(data, screen=screen)
            times[screen].append(time.perf_counter() - started)
            if result.value is None:
                raise RuntimeError(f"the configuration was NACKed: {result.errors}")
    return {
        "hosts": hosts,
        "bytes": len(data),
        "median_s": round(statistics.median(times[True]), 3),
        "general_median_s": round(statistics.median(times[False]), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("hosts", nargs="*", type=int, default=[5000])
    args = p.parse_args(argv)
    for n in args.hosts:
        r = measure(n)
        print(
            f"{n} virtual hosts, {r['bytes'] / 1e6:.1f} MB: {r['median_s']:.3f} s "
            f"(built whole: {r['general_median_s']:.3f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
