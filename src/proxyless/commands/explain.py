"""``proxyless explain TARGET METHOD``: show where a call would go and why."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from proxyless.bootstrap import load_bootstrap
from proxyless.errors import BootstrapError, InvalidTarget
from proxyless.explain import explain
from proxyless.mesh import Mesh
from proxyless.target import parse_target

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="show the virtual host, route, cluster and endpoint a call would use",
        description=__doc__,
    )
    p.add_argument("target", help="xds:///name[:port]")
    p.add_argument("method", help="gRPC method, e.g. /package.Service/Method")
    p.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="call metadata (repeatable)",
    )
    p.add_argument("--timeout", type=float, default=None, help="the caller's deadline in seconds")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the config")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--bootstrap", help="bootstrap file (default: $GRPC_XDS_BOOTSTRAP)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    metadata = []
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"proxyless explain: --header wants NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        metadata.append((name.strip().lower(), value))
    try:
        bootstrap = load_bootstrap(args.bootstrap)
        parse_target(args.target)
    except (BootstrapError, InvalidTarget) as exc:
        print(f"proxyless explain: {exc}", file=sys.stderr)
        return 2
    if not args.method.startswith("/"):
        print(
            f"proxyless explain: method {args.method!r} must look like /package.Service/Method",
            file=sys.stderr,
        )
        return 2
    with Mesh(bootstrap) as mesh:
        result = explain(
            args.target, args.method, metadata, timeout=args.timeout, mesh=mesh, wait=args.wait
        )
    print(json.dumps(result.as_dict(), indent=2) if args.json else str(result))
    return 0 if result.ok else 1
