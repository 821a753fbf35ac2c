"""``proxyless status HOST:PORT``: ask a running process for its xDS client
status over CSDS (gRFC A40) and print one line per resource.

The process serves CSDS with ``proxyless.admin.serve(port)`` (or
``add_admin_services`` on its own gRPC server); gRPC's ``grpcdebug`` reads
the same service. Exit status: 0 when every resource is ACKED, 1 when some
resource is NACKED, DOES_NOT_EXIST or still REQUESTED, 2 when the process
cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from proxyless.observability.csds import status_rows

__all__ = ["register", "status"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="print a running process's xDS resources over CSDS",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("address", help="HOST:PORT of the process's admin server")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=status)


def status(args: argparse.Namespace) -> int:
    with grpc.insecure_channel(args.address) as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        try:
            response = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=args.timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "ERROR"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            print(f"cannot read CSDS from {args.address}: {code}: {details}", file=sys.stderr)
            return 2
    rows = status_rows(response)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        nodes = sorted({(r["scope"], r["node"]) for r in rows})
        for scope, node in nodes:
            print(f"node {node!r}" + (f" (scope {scope})" if scope else ""))
        width = max((len(r["name"]) for r in rows), default=4)
        for r in rows:
            line = f"  {r['type']:<22} {r['name']:<{width}}  {r['status']:<14} {r['version']}"
            if r["error"]:
                line += f"  error: {r['error']}"
            print(line)
        if not rows:
            print("  (no resources subscribed)")
    bad = [r for r in rows if r["status"] != "ACKED"]
    return 1 if bad else 0
