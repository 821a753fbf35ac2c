"""``proxyless demo``: start a small mesh on this machine and show it working."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run a reviews service mesh over mTLS on 127.0.0.1: identities, routing, failover",
        description=__doc__,
    )
    p.add_argument(
        "--calls", type=int, default=1000, help="calls for the weighted split (default 1000)"
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from proxyless.demo import run_demo

    if args.calls < 100:
        print("proxyless demo: --calls must be at least 100")
        return 2
    return run_demo(calls=args.calls)
