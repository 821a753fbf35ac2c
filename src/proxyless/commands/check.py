"""``proxyless check TARGET``: is the xDS chain for a target there, and if not, why.

Reads the bootstrap the way every channel does, connects to the xDS server,
subscribes along LDS -> RDS -> CDS -> EDS for the target, and prints each
resource with its status, version and error. It says which bootstrap source
was used, the node id and the server, and whether the server was reachable
("not connected" is never reported as "does not exist"). Exit status: 0 when
the whole chain resolved and every cluster has endpoints, 1 when it did not,
2 for bad input (bootstrap or target).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from proxyless.bootstrap import Bootstrap, load_bootstrap
from proxyless.config import XdsConfig
from proxyless.errors import BootstrapError, ControlPlaneUnreachable, InvalidTarget
from proxyless.mesh import Mesh
from proxyless.target import parse_target
from proxyless.xds_client import ResourceStatus

__all__ = ["check", "register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="resolve a target through the xDS server and report every resource",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", help="xds:///name[:port] or xds://authority/name")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--bootstrap",
        help="bootstrap file (default: $GRPC_XDS_BOOTSTRAP, then $GRPC_XDS_BOOTSTRAP_CONFIG)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        bootstrap = load_bootstrap(args.bootstrap)
        target = parse_target(args.target)
        listener = target.listener_name(bootstrap)
    except (BootstrapError, InvalidTarget) as exc:
        print(f"proxyless check: {exc}", file=sys.stderr)
        return 2
    if args.timeout <= 0:
        print("proxyless check: --timeout must be > 0", file=sys.stderr)
        return 2
    report = check(bootstrap, args.target, listener, args.timeout)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(_format(report))
    return 0 if report["ok"] else 1


def _definitive(snap: XdsConfig | None) -> bool:
    """A result that waiting longer will not change."""
    if snap is None:
        return False
    errors = [snap.error] if snap.error is not None else []
    errors += [c.error for c in snap.clusters.values() if c.error is not None]
    return not any(
        isinstance(e, ControlPlaneUnreachable) or isinstance(e.__cause__, ControlPlaneUnreachable)
        for e in errors
    )


def check(bootstrap: Bootstrap, target: str, listener: str, timeout: float) -> dict[str, Any]:
    """Resolve ``listener`` and return the report as a JSON-able dict."""
    with Mesh(bootstrap) as mesh:
        watcher = mesh.config(listener)
        deadline = time.monotonic() + timeout
        snap = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            snap = watcher.wait(min(remaining, 0.1))
            if snap is not None and (_chain_ok(snap) or _definitive(snap)):
                break
        statuses = mesh.xds_client.dump()
        servers = mesh.xds_client.server_states()
    ok = snap is not None and _chain_ok(snap)
    return {
        "ok": ok,
        "target": target,
        "listener": listener,
        "bootstrap": bootstrap.source,
        "node_id": bootstrap.node.id,
        "servers": servers,
        "resources": [_row(s, snap) for s in statuses],
        "error": None if ok else _problem(snap, servers, timeout),
    }


def _chain_ok(snap: XdsConfig) -> bool:
    return snap.usable and all(c.usable for c in snap.clusters.values())


def _problem(snap: XdsConfig | None, servers: list[dict[str, Any]], timeout: float) -> str:
    down = [s for s in servers if not s["connected"]]
    if down and not any(s["ever_connected"] for s in servers):
        s = down[0]
        return f"not connected to xDS server {s['server_uri']}: {s['last_error'] or 'no answer'}"
    if snap is None:
        return f"the chain did not resolve within {timeout:g}s"
    if snap.error is not None:
        return str(snap.error)
    bad = [f"{c.name}: {c.error}" for c in snap.clusters.values() if c.error is not None]
    return "; ".join(bad) or "unknown"


def _row(status: ResourceStatus, snap: XdsConfig | None) -> dict[str, Any]:
    row: dict[str, Any] = status.as_dict()
    row["detail"] = _detail(status, snap)
    return row


def _detail(status: ResourceStatus, snap: XdsConfig | None) -> str:
    if status.error and status.status.value != "ACKED":
        return status.error
    if snap is None:
        return ""
    if status.type_name == "CDS":
        cc = snap.clusters.get(status.name)
        if cc is not None and cc.cluster is not None:
            policy = type(cc.cluster.lb_policy).__name__
            return f"{cc.cluster.type}, {policy}"
    if status.type_name == "EDS":
        for cc in snap.clusters.values():
            cla = cc.endpoints
            if cla is None or cc.cluster is None:
                continue
            if (cc.cluster.eds_service_name or cc.name) != status.name:
                continue
            eps = [e for prio in cla.priorities for loc in prio for e in loc.endpoints]
            usable = sum(1 for e in eps if e.health in ("HEALTHY", "UNKNOWN"))
            return f"{len(eps)} endpoints ({usable} usable) in {len(cla.priorities)} priorities"
    if status.type_name == "RDS" and snap.route_config is not None:
        return f"{len(snap.route_config.virtual_hosts)} virtual hosts"
    return ""


def _format(report: dict[str, Any]) -> str:
    lines = [
        f"bootstrap:  {report['bootstrap']}",
        f"node id:    {report['node_id']!r}",
    ]
    for s in report["servers"]:
        state = (
            "connected"
            if s["connected"]
            else f"NOT CONNECTED ({s['last_error'] or 'no answer yet'})"
        )
        lines.append(f"xDS server: {s['server_uri']} - {state}")
    lines.append(f"target:     {report['target']} -> listener {report['listener']!r}")
    lines.append("")
    rows = [("TYPE", "NAME", "STATUS", "VERSION", "DETAIL")]
    for r in report["resources"]:
        status = r["status"] + (" (cached)" if r["cached"] and r["status"] == "NACKED" else "")
        rows.append((r["type"], r["name"], status, r["version"] or "-", r["detail"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row[:4])) + "  " + row[4])
    lines.append("")
    if report["ok"]:
        lines.append("OK: the chain resolved")
    else:
        lines.append(f"FAILED: {report['error']}")
    return "\n".join(lines)
