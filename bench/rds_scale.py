"""A large RouteConfiguration pushed to xDS clients side by side: how long
each takes to validate it, judged by when the control plane receives its
ACK.

One embedded ADS server on 127.0.0.1 serves a listener ``mesh-scale:80``
whose RDS resource ``scale-routes`` is first small (one virtual host); once
the client has ACKed that, the large configuration of ``bench/rds_parse.py``
(N virtual hosts of three domains and three routes each) is pushed
``--pushes`` times *cold* (every virtual host differs from the last push's:
the route names carry the push number), then ``--pushes`` times as an
*update* (only the first virtual host differs, as when a control plane
resends the configuration because one service changed). The clock for
one push runs from just before ``set_resources`` (the server encodes the
resource once, for every client alike) to the server receiving that
client's ACK of the new RDS version: parse, validation and the wire, the
same finish line for every client. Clients, each its own process, started
before the pushes and idle meanwhile:

* ``proxyless``: ``Mesh`` + ``proxyless.grpc.channel("xds:///mesh-scale:80")``;
* ``grpcio``: ``grpc.insecure_channel("xds:///mesh-scale:80")`` with C-core's
  own xDS client (``GRPC_XDS_BOOTSTRAP_CONFIG``).

The in-process figure (``decode_route_configuration`` alone, no wire) is
printed too. Run::

    .venv/bin/python bench/rds_scale.py 5000 --json out.json

Every wait is bounded (``--cap`` seconds); processes are killed on exit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envoy.config.route.v3 import route_components_pb2, route_pb2

from bench.rds_parse import config
from bench.rds_parse import measure as measure_in_process
from bench.xds_scale import _GRPCIO, _PROXYLESS, _bootstrap, _spawn_python
from proxyless.controlplane.server import AdsServer
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

NAME = "mesh-scale:80"
ROUTES = "scale-routes"
CLIENTS = ("proxyless", "grpcio")


def _big(hosts: int, tag: int, variant: int = 0) -> route_pb2.RouteConfiguration:
    """``bench/rds_parse.py``'s configuration named ``scale-routes`` (``tag``
    in every route's name), with a first virtual host for the target (so
    every client resolves it) whose route differs between variants."""
    cfg = route_pb2.RouteConfiguration.FromString(config(hosts, tag=tag))
    cfg.name = ROUTES
    first = route_components_pb2.VirtualHost(name="target", domains=[NAME])
    r = first.routes.add(name="default")
    r.match.prefix = f"/v{variant}/" if variant else "/"
    r.route.cluster = "c0"
    rest = list(cfg.virtual_hosts)
    del cfg.virtual_hosts[:]
    cfg.virtual_hosts.extend([first, *rest])
    return cfg


class _Acks:
    """Finds one node's ACK (or NACK) of the current RDS version in the
    server's request log."""

    def __init__(self, ads: AdsServer, node: str) -> None:
        self.ads = ads
        self.node = node
        self.seen = 0

    def wait(self, version: str, deadline: float) -> bool:
        while time.monotonic() < deadline:
            requests = self.ads.requests
            while self.seen < len(requests):
                req = requests[self.seen]
                self.seen += 1
                if req.node_id != self.node or req.type_url != ROUTE_URL:
                    continue
                if req.error_detail is not None:
                    raise RuntimeError(f"{self.node} NACKed RDS: {req.error_detail.message}")
                if req.version_info == version:
                    return True
            time.sleep(0.0005)
        return False


def measure(
    ads: AdsServer, client: str, colds: list[Any], updates: list[Any], cap: float
) -> dict[str, Any]:
    node = f"rds-{client}-{time.monotonic_ns()}"
    boot = json.dumps(_bootstrap(ads, node))
    acks = _Acks(ads, node)
    script = _PROXYLESS if client == "proxyless" else _GRPCIO
    args = ("load", boot, f"xds:///{NAME}") + ((str(cap),) if client == "proxyless" else ())
    proc: subprocess.Popen[str] = _spawn_python(script, *args)
    try:
        if not acks.wait(str(ads._versions.get(ROUTE_URL, "")), time.monotonic() + cap):
            return {"client": client, "complete": False}
        times: dict[str, list[float]] = {"cold": [], "update": []}
        for kind, configs in (("cold", colds), ("update", updates)):
            for cfg in configs:
                t0 = time.monotonic()
                ads.set_resources(ROUTE_URL, {ROUTES: cfg})
                version = str(ads._versions[ROUTE_URL])
                if not acks.wait(version, t0 + cap):
                    return {"client": client, "complete": False, "times_s": times}
                times[kind].append(round(time.monotonic() - t0, 4))
    finally:
        proc.kill()
        proc.wait(5)
    return {
        "client": client,
        "complete": True,
        "times_s": times,
        "median_s": round(statistics.median(times["cold"]), 4),
        "update_median_s": round(statistics.median(times["update"]), 4),
    }


def run(hosts: int, pushes: int, cap: float, clients: tuple[str, ...]) -> dict[str, Any]:
    # Cold pushes: every virtual host differs from the last push's (the route
    # names carry the push number). Updates: then only the first one does.
    colds = [_big(hosts, tag=k + 1) for k in range(pushes)]
    updates = [_big(hosts, tag=pushes, variant=1 + k % 2) for k in range(pushes)]
    small = route_config(ROUTES, NAME, [route(prefix="/", cluster="c0")])
    rows = []
    for client in clients:
        ads = AdsServer(max_records=None)
        ads.start()
        try:
            ads.set_resources(LISTENER_URL, {NAME: listener(NAME, ROUTES)})
            ads.set_resources(CLUSTER_URL, {"c0": cluster("c0")})
            ads.set_resources(ENDPOINT_URL, {"c0": endpoints("c0", ["127.0.0.1:9"])})
            ads.set_resources(ROUTE_URL, {ROUTES: small})
            rows.append(measure(ads, client, colds, updates, cap))
        finally:
            ads.stop()
    return {
        "hosts": hosts,
        "bytes": colds[0].ByteSize(),
        "in_process": measure_in_process(hosts),
        "rows": rows,
    }


def report(result: dict[str, Any]) -> str:
    by = {r["client"]: r for r in result["rows"] if r.get("complete")}
    ip = result["in_process"]
    lines = [
        f"{result['hosts']} virtual hosts, {result['bytes'] / 1e6:.1f} MB; proxyless decode in "
        f"process: cold {ip['median_s'] * 1e3:.0f} ms, one virtual host changed "
        f"{ip['update_median_s'] * 1e3:.0f} ms",
        "| client | push to ACK, cold (median) | one virtual host changed (median) | pushes |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        if not row.get("complete"):
            lines.append(f"| {row['client']} | incomplete | | |")
            continue
        lines.append(
            f"| {row['client']} | {row['median_s'] * 1e3:.0f} ms "
            f"| {row['update_median_s'] * 1e3:.0f} ms | {len(row['times_s']['cold'])} + "
            f"{len(row['times_s']['update'])} |"
        )
    if "proxyless" in by and "grpcio" in by:
        cold = by["proxyless"]["median_s"] / by["grpcio"]["median_s"]
        update = by["proxyless"]["update_median_s"] / by["grpcio"]["update_median_s"]
        lines.append(f"proxyless / grpcio: cold {cold:.2f}x (target <= 2), update {update:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("hosts", nargs="?", type=int, default=5000)
    p.add_argument("--pushes", type=int, default=7, help="cold pushes, then as many updates")
    p.add_argument("--cap", type=float, default=60.0, help="seconds per wait, at most")
    p.add_argument("--clients", default=",".join(CLIENTS))
    p.add_argument("--json", help="write the result here")
    args = p.parse_args(argv)
    result = run(args.hosts, args.pushes, args.cap, tuple(args.clients.split(",")))
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
