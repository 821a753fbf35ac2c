"""How long a client takes to load a large mesh: one route configuration
referencing N clusters of 10 endpoints each, served over ADS by the embedded
control plane on 127.0.0.1, from ``Mesh(...)`` to every cluster's runtime
being in place (all EDS applied).

Run: ``python bench/config_scale.py 1000 2000 5000`` (each size in a fresh
process, so imports and caches are paid alike). Figures in
docs/benchmarks.md ("Config scale"). The cost should grow linearly with N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(clusters: int, per_cluster: int = 10, cap: float = 120.0) -> dict[str, float]:
    """Load time of one size, in this process."""
    sys.path.insert(0, str(ROOT))
    from bench.grpc_overhead import _clusters_config
    from proxyless.controlplane.server import AdsServer
    from proxyless.mesh import Mesh

    ads = AdsServer()
    ads.start()
    try:
        resources, targets = _clusters_config(clusters, per_cluster)
        for url, named in resources.items():
            ads.set_resources(url, named)
        bootstrap = {
            "xds_servers": [{"server_uri": ads.target, "channel_creds": [{"type": "insecure"}]}],
            "node": {"id": "config-scale"},
        }
        started = time.monotonic()
        mesh = Mesh(bootstrap)
        try:
            mesh.target(targets[0]).state(cap, True)
            while len(mesh.clusters) < clusters and time.monotonic() - started < cap:
                time.sleep(0.005)
            loaded = time.monotonic() - started
            complete = len(mesh.clusters) >= clusters
        finally:
            mesh.close()
    finally:
        ads.stop()
    return {
        "clusters": clusters,
        "endpoints": clusters * per_cluster,
        "load_s": round(loaded, 3),
        "complete": complete,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sizes", nargs="*", type=int, default=[1000, 2000, 5000])
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.child)))
        return 0
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(size)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        per = result["load_s"] / size * 1000
        print(
            f"{size:>6} clusters, {result['endpoints']:>6} endpoints: {result['load_s']:.2f} s "
            f"({per:.2f} ms per cluster){'' if result['complete'] else '  INCOMPLETE'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
