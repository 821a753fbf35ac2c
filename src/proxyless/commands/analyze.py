"""``proxyless analyze FILE...``: check Istio YAML like ``istioctl analyze``.

Prints one line per finding, ``Error: file:docN kind/name: field.path: message``,
``Warning: ...`` or ``Info: ...``, then a summary; a message istioctl has a
code for starts with it (``[IST0101] ReferencedResourceNotFound: ...``), and
``--json`` also gives it as ``code``. Exit status 1 when there is any error,
0 otherwise (warnings and info alone do not fail). See
:mod:`proxyless.controlplane.istio.analyze` for what is checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from proxyless.controlplane.istio.analyze import analyze_files

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="check Istio mesh YAML for errors and pitfalls",
        description=(
            "Check Istio YAML (ServiceEntry, WorkloadEntry, VirtualService, DestinationRule, "
            "PeerAuthentication, AuthorizationPolicy) as the embedded control plane reads it. "
            "Several files are analysed as one mesh. Exit status 1 on errors."
        ),
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="YAML files")
    parser.add_argument("--json", action="store_true", help="print findings as a JSON list")
    parser.add_argument("--errors-only", action="store_true", help="do not print warnings and info")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    issues = analyze_files(args.files)
    if args.errors_only:
        issues = [i for i in issues if i.is_error]
    errors = sum(1 for i in issues if i.is_error)
    infos = sum(1 for i in issues if i.severity == "info")
    warnings = len(issues) - errors - infos
    if args.json:
        payload = [
            {
                "severity": i.severity,
                "file": i.file,
                "document": i.doc,
                "kind": i.kind,
                "name": i.name,
                "field": i.path,
                "message": i.message,
                "code": i.code,
                "text": str(i),
            }
            for i in issues
        ]
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for issue in issues:
            print(f"{issue.severity.capitalize()}: {issue}")
        names = ", ".join(str(f) for f in args.files)
        if issues:
            summary = (
                f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
            )
            if infos:
                summary += f", {infos} info"
            print(f"{summary} in {names}")
        else:
            print(f"no problems found in {names}")
    return 1 if errors else 0
