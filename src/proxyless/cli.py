"""The ``proxyless`` command.

Each subcommand lives in its own module under ``proxyless.commands`` and
exposes ``register(subparsers)``, which adds its parser and sets ``func`` (a
callable taking the parsed namespace and returning the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

#: Subcommand modules, in the order ``--help`` lists them.
_COMMANDS = ("demo", "control_plane", "analyze", "check", "explain", "status")


def _quiet_grpc() -> None:
    """grpc's C core logs connection churn at INFO on stderr; a command line
    tool shows only errors unless the user asked for more."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxyless",
        description="A service mesh without the sidecar: xDS for gRPC and httpx in-process.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"proxyless.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"proxyless.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_grpc()
    parser = _build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code = int(func(args))
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``proxyless analyze --json | head``): stop
        # quietly, keep Python from complaining again at exit, and report
        # what a shell reports for a command ended by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141


if __name__ == "__main__":
    sys.exit(main())
