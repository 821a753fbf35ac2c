"""Cost of the telemetry on the request path: trace propagation, request
ids, spans, metrics.

One Mesh, one gRPC echo backend and one HTTP backend (each its own process
on 127.0.0.1), and three telemetry modes measured side by side in one run,
for the sync gRPC channel and the sync httpx transport:

* ``off``: every switch off (no propagation, no request id, no spans, no
  metrics) — the baseline;
* ``default``: what a process without the OpenTelemetry SDK gets: the
  current context propagated and ``x-request-id`` passed on (none is
  generated without telemetry: ``request_id`` "auto"); no span, no metric;
* ``request-id``: the same with ``request_id=True``, a generated
  ``x-request-id`` on every call (Envoy's ``generate_request_id``);
* ``sdk``: the SDK installed with a span processor whose exporter drops
  everything and a metric reader that is never collected: every span and
  metric is made and thrown away.

The target (observability issue): ``default`` adds at most 3 % to the p50
of ``off``; ``sdk`` is reported. Rounds are interleaved in slices (the
mode order rotates each round) so drift on a shared machine hits every
mode alike; each ratio is the median of the per-round p50 ratios. Every
loop is bounded by a call count and a time cap; backends are killed on
exit.

Run::

    .venv/bin/python bench/telemetry_overhead.py --quick
    .venv/bin/python bench/telemetry_overhead.py --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import proxyless.grpc
import proxyless.httpx
from bench.httpx_overhead import Backend as HttpBackend
from bench.resilience_overhead import pct, start_backend, stop_backend, timed_batch
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.observability import settings
from proxyless.testing.backends import ECHO_METHOD
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

MODES = ("off", "default", "request-id", "sdk")
TARGET_DEFAULT = 1.03


class _DropExporter(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _publish(ads: AdsServer, name: str, address: str) -> None:
    rc, cl = f"{name}-routes", f"{name}-c"
    host = name.split(":")[0]
    ads.set_resource(ENDPOINT_URL, cl, endpoints(cl, [address]))
    ads.set_resource(CLUSTER_URL, cl, cluster(cl))
    ads.set_resource(
        ROUTE_URL, rc, route_config(rc, sorted({name, host}), [route(prefix="/", cluster=cl)])
    )
    ads.set_resource(LISTENER_URL, name, listener(name, rc))


def _mode(name: str, tp: TracerProvider, mp: MeterProvider) -> None:
    if name == "off":
        settings.configure(
            tracing=False, metrics=False, propagation=False, request_id=False,
            tracer_provider=None, meter_provider=None,
        )  # fmt: skip
    elif name in ("default", "request-id"):
        settings.configure(
            tracing=True, metrics=True, propagation=True,
            request_id=True if name == "request-id" else "auto",
            tracer_provider=None, meter_provider=None,
        )  # fmt: skip
    else:
        settings.configure(
            tracing=True, metrics=True, propagation=True, request_id="auto",
            tracer_provider=tp, meter_provider=mp,
        )  # fmt: skip


def run(calls: int, rounds: int, warmup: int, cap: float) -> dict[str, Any]:
    """Measure (see the module docstring); ``calls`` per mode and round."""
    saved = settings.Settings(**vars(settings.settings))
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(_DropExporter()))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    proc, grpc_address = start_backend()
    http_backend = HttpBackend()
    ads = AdsServer()
    ads.start()
    mesh = Mesh(
        {
            "xds_servers": [{"server_uri": ads.target, "channel_creds": [{"type": "insecure"}]}],
            "node": {"id": "bench-telemetry"},
        }
    )
    try:
        _publish(ads, "svc:80", grpc_address)
        _publish(ads, "web", http_backend.address)
        ch = proxyless.grpc.channel("xds:///svc:80", mesh=mesh)
        echo = ch.unary_unary(ECHO_METHOD)
        client = httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh, hosts=["web"]))
        contenders: dict[str, Callable[[], Any]] = {
            "grpc": lambda: echo(b"ping", timeout=5),
            "httpx": lambda: client.get("http://web/"),
        }
        deadline = time.monotonic() + cap
        for fn in contenders.values():
            for mode in MODES:
                _mode(mode, tp, mp)
                timed_batch(fn, warmup, deadline)
        samples: dict[str, dict[str, list[list[int]]]] = {
            k: {m: [] for m in MODES} for k in contenders
        }
        for r in range(rounds):
            k = r % len(MODES)
            order = list(MODES[k:] + MODES[:k])
            for kind, fn in contenders.items():
                for mode in order:
                    _mode(mode, tp, mp)
                    gc.collect()
                    samples[kind][mode].append(sorted(timed_batch(fn, calls, deadline)))
            if time.monotonic() > deadline:
                break
        client.close()
        ch.close()
    finally:
        settings.settings = saved
        settings.configure()
        mesh.close()
        ads.stop()
        stop_backend(proc)
        http_backend.stop()
        tp.shutdown()
        mp.shutdown()
    out: dict[str, Any] = {"calls": calls, "rounds": rounds, "contenders": {}}
    for kind, by_mode in samples.items():
        rows: dict[str, Any] = {}
        for mode in MODES:
            per_round = by_mode[mode]
            rows[mode] = {
                "requests": sum(len(x) for x in per_round),
                "p50_us": statistics.median(pct(x, 50) for x in per_round),
                "p99_us": statistics.median(pct(x, 99) for x in per_round),
                "p50_ratio": statistics.median(
                    pct(x, 50) / pct(base, 50)
                    for x, base in zip(per_round, by_mode["off"], strict=True)
                ),
            }
        out["contenders"][kind] = rows
    return out


def report(result: dict[str, Any]) -> str:
    lines = [
        "| path | mode | p50 µs | p99 µs | p50 x off |",
        "|---|---|---|---|---|",
    ]
    for kind, rows in result["contenders"].items():
        for mode, row in rows.items():
            lines.append(
                f"| {kind} | {mode} | {row['p50_us']:.0f} | {row['p99_us']:.0f} "
                f"| {row['p50_ratio']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (< 1 minute)")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    calls, rounds = (200, 6) if args.quick else (500, 15)
    result = run(calls=calls, rounds=rounds, warmup=200, cap=300.0)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    default = max(r["default"]["p50_ratio"] for r in result["contenders"].values())
    print(f"default mode p50 x off (worst path): {default:.3f} (target ≤ {TARGET_DEFAULT})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
