"""How long proxyless takes to validate a large RouteConfiguration: N virtual
hosts (three domains each) of three routes each (prefix match, one cluster,
a timeout and istiod's default retry policy), decoded from its wire bytes
with ``decode_route_configuration``, the function the xDS client calls.

Four figures, interleaved, median of 5 runs each:

* ``cold``: a configuration none of whose virtual hosts was seen before (the
  route names carry the run number): plain virtual hosts validated ahead,
  their routes built on first use;
* ``update``: the same configuration again with one virtual host changed,
  as a control plane resends it when one service changes: the unchanged
  virtual hosts are those of the last one;
* ``one not plain``: cold, with one virtual host that is not plain (a
  header matcher on its first route): the plain ones are validated ahead as
  a subset, that one the general way;
* ``built whole``: ``screen=False``, every route built at once.

Run: ``.venv/bin/python bench/rds_parse.py 5000``.
Figures in docs/benchmarks.md ("Validating a large RouteConfiguration").
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


def config(hosts: int, tag: int = 0, changed: int = 0, odd: bool = False) -> bytes:
    """The serialized RouteConfiguration (see the module docstring); ``tag``
    goes into every route's name, ``changed`` into the first route's prefix;
    ``odd``: the virtual host in the middle matches a header too."""
    cfg = route_pb2.RouteConfiguration(name="big")
    for i in range(hosts):
        name = f"svc-{i}.ns.svc.cluster.local"
        vh = cfg.virtual_hosts.add(name=f"vh{i}", domains=[name, f"{name}:8080", f"svc-{i}"])
        for j, prefix in enumerate(("/api/v1", "/api/v2", "/")):
            r = vh.routes.add(name=f"r{i}-{j}-{tag}")
            r.match.prefix = f"/changed{changed}" if (i, j) == (0, 0) and changed else prefix
            r.route.cluster = f"outbound|8080|v{j}|{name}"
            r.route.timeout.seconds = 0
            r.route.retry_policy.retry_on = RETRY_ON
            r.route.retry_policy.num_retries.value = 2
            if odd and (i, j) == (hosts // 2, 0):
                r.match.headers.add(name="x-canary", exact_match="1")
    return cfg.SerializeToString()


def _timed(data: bytes, screen: bool = True) -> float:
    started = time.perf_counter()
    result = decode_route_configuration(data, screen=screen)
    elapsed = time.perf_counter() - started
    if result.value is None:
        raise RuntimeError(f"the configuration was NACKed: {result.errors}")
    return elapsed


def measure(hosts: int, runs: int = 5) -> dict[str, float]:
    """Median decode times (see the module docstring), in seconds."""
    times: dict[str, list[float]] = {"cold": [], "update": [], "odd": [], "whole": []}
    for k in range(runs):
        cold = config(hosts, tag=k + 1)
        times["cold"].append(_timed(cold))
        times["update"].append(_timed(config(hosts, tag=k + 1, changed=1)))
        times["odd"].append(_timed(config(hosts, tag=runs + k + 1, odd=True)))
        times["whole"].append(_timed(cold, screen=False))
    return {
        "hosts": hosts,
        "bytes": len(config(hosts)),
        "median_s": round(statistics.median(times["cold"]), 3),
        "update_median_s": round(statistics.median(times["update"]), 3),
        "odd_median_s": round(statistics.median(times["odd"]), 3),
        "general_median_s": round(statistics.median(times["whole"]), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("hosts", nargs="*", type=int, default=[5000])
    args = p.parse_args(argv)
    for n in args.hosts:
        r = measure(n)
        print(
            f"{n} virtual hosts, {r['bytes'] / 1e6:.1f} MB: cold {r['median_s']:.3f} s, "
            f"one virtual host changed {r['update_median_s']:.3f} s, "
            f"one not plain {r['odd_median_s']:.3f} s, "
            f"built whole {r['general_median_s']:.3f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
