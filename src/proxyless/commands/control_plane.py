"""``proxyless control-plane --config mesh.yaml``: serve Istio YAML over xDS.

Starts the embedded control plane (:class:`proxyless.controlplane.ControlPlane`)
on ``--address:--port`` (ADS, State of the World and Delta), watches the file
and pushes every valid edit; an invalid edit is reported on stderr and the
last good config keeps serving. Runs until interrupted (SIGINT or SIGTERM).

Every node gets a SPIFFE SVID from the control plane's development CA over
SDS (``--trust-domain``, ``--certificate-ttl``); ``--ca-dir DIR`` also
writes the SVIDs of the mesh's workload identities (the ``serviceAccount``
of its WorkloadEntries and ServiceEntry endpoints, plus each ``--identity
ns/sa``) as ``DIR/<ns>/<sa>/{cert-chain,key,root-cert}.pem`` for
``file_watcher`` clients, rewritten before they expire.
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
from proxyless.controlplane.identity import NodeIdentity
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
    parser.add_argument(
        "--trust-domain",
        default="cluster.local",
        help="SPIFFE trust domain of the issued certificates (default cluster.local)",
    )
    parser.add_argument(
        "--certificate-ttl",
        type=float,
        default=3600.0,
        help="lifetime of issued certificates in seconds, renewed at 80%% (default 3600)",
    )
    parser.add_argument(
        "--ca-dir",
        type=Path,
        help="also write workload certificates as DIR/<ns>/<sa>/{cert-chain,key,root-cert}.pem "
        "for file_watcher clients (development CA: not for production)",
    )
    parser.add_argument(
        "--identity",
        action="append",
        default=[],
        metavar="NS/SA",
        help="with --ca-dir: also write files for this identity (repeatable)",
    )
    parser.set_defaults(func=run)


def _identities(values: list[str]) -> tuple[NodeIdentity, ...]:
    out = []
    for value in values:
        namespace, _, account = value.partition("/")
        if not namespace or not account or "/" in account:
            raise ValueError(f"--identity must be namespace/service-account, got {value!r}")
        out.append(NodeIdentity(namespace, account))
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    try:
        identities = _identities(args.identity)
        if identities and args.ca_dir is None:
            raise ValueError("--identity needs --ca-dir")
        control_plane = ControlPlane(
            args.config,
            address=args.address,
            port=args.port,
            poll_interval=args.poll_interval,
            report_warnings=True,
            max_records=10_000,
            trust_domain=args.trust_domain,
            certificate_ttl=args.certificate_ttl,
            ca_dir=args.ca_dir,
            identities=identities,
        )
    except (MeshConfigError, ValueError) as exc:
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
        files = control_plane.certificate_files
        if files is not None:
            print(
                f"writing workload certificates for {len(files.identities)} "
                f"identit{'y' if len(files.identities) == 1 else 'ies'} under {files.directory} "
                f"(development CA, trust domain {control_plane.trust_domain})"
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
