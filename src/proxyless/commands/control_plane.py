"""``proxyless control-plane --config mesh.yaml``: serve Istio YAML over xDS.

Starts the embedded control plane (:class:`proxyless.controlplane.ControlPlane`)
on ``--address:--port`` (ADS, State of the World and Delta), watches the file
and pushes every valid edit; an invalid edit is reported on stderr and the
last good config keeps serving. Runs until interrupted (SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from proxyless.controlplane.embedded import ControlPlane
from proxyless.controlplane.istio.load import MeshConfigError

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "control-plane",
        help="serve Istio mesh YAML to xDS clients (gRPC, proxyless, Envoy)",
        description=(
            "Serve an Istio YAML mesh config over xDS (ADS, SotW and Delta) and hot-reload it. "
            "Point clients at it with an xDS bootstrap (see --bootstrap-out)."
        ),
    )
    parser.add_argument("--config", required=True, type=Path, help="Istio YAML file (watched)")
    parser.add_argument("--port", type=int, default=15010, help="port to serve on (default 15010)")
    parser.add_argument(
        "--address", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
    )
    parser.add_argument(
        "--bootstrap-out",
        type=Path,
        help="write an xDS bootstrap for proxyless/gRPC clients to this file",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=0.2, help="seconds between file checks (default 0.2)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        control_plane = ControlPlane(
            args.config,
            address=args.address,
            port=args.port,
            poll_interval=args.poll_interval,
            report_warnings=True,
            max_records=10_000,
        )
    except MeshConfigError as exc:
        print(f"proxyless control-plane: {exc}", file=sys.stderr)
        return 1
    try:
        control_plane.start()
    except OSError as exc:
        print(f"proxyless control-plane: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.bootstrap_out is not None:
            args.bootstrap_out.write_text(json.dumps(control_plane.bootstrap(), indent=2) + "\n")
            print(
                f"wrote xDS bootstrap {args.bootstrap_out} (GRPC_XDS_BOOTSTRAP={args.bootstrap_out})"
            )
        print(
            f"proxyless control plane serving {args.config} on {control_plane.target} "
            "(xDS v3 ADS, SotW and Delta); Ctrl-C to stop",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        control_plane.stop()
    return 0
