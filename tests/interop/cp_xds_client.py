"""grpcio's native xDS client calling the EchoServer through an xDS target.

Run as a script with GRPC_XDS_BOOTSTRAP set (grpcio reads it once per
process, so each run is its own process):

    python cp_xds_client.py xds:///reviews.default.svc.cluster.local:9080 --count 2000
    python cp_xds_client.py TARGET --stream --until-file STOP --max-seconds 30

Without --stream it prints one JSON summary {"counts": {backend: n}, "errors": [...]};
with --stream one JSON line per call ({"backend": ...} or {"error": ...}) until the
file exists, --count calls were made or --max-seconds passed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import grpc

ECHO = "/proxyless.test.Echo/Echo"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--metadata", action="append", default=[], help="key=value")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--until-file")
    parser.add_argument("--max-seconds", type=float, default=30.0)
    args = parser.parse_args()
    metadata = [tuple(kv.split("=", 1)) for kv in args.metadata]
    channel = grpc.insecure_channel(args.target)
    echo = channel.unary_unary(ECHO)
    # The first call waits for the xDS resources to arrive.
    echo(b"warmup", timeout=20, wait_for_ready=True, metadata=metadata)
    counts: collections.Counter[str] = collections.Counter()
    errors: list[str] = []
    deadline = time.monotonic() + args.max_seconds
    for _ in range(args.count):
        if time.monotonic() > deadline:
            break
        if args.until_file and os.path.exists(args.until_file):
            break
        try:
            reply = json.loads(echo(b"x", timeout=10, metadata=metadata))
            counts[reply["backend"]] += 1
            if args.stream:
                print(json.dumps({"backend": reply["backend"]}), flush=True)
        except grpc.RpcError as exc:
            message = f"{exc.code().name}: {exc.details()}"
            errors.append(message)
            if args.stream:
                print(json.dumps({"error": message}), flush=True)
    channel.close()
    if not args.stream:
        print(json.dumps({"counts": counts, "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
