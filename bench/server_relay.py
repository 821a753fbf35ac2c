"""What the xDS-enabled server's public port costs: a call and a new connection
through ``proxyless.grpc.server`` against the same grpcio server bound directly.

Four servers in one process, all on 127.0.0.1, the same unary handler:
plain grpcio with an insecure port and with ``ssl_server_credentials``
(mTLS), and ``proxyless.grpc.server`` under a DISABLE and a STRICT inbound
Listener (served by an in-process ADS server). Calls alternate between the
servers in rounds so that the machine's noise falls on all of them alike.
Prints p50/p90 per call, the ratio to the direct port, and the median cost
of a new connection (channel + first call). Bounded: ``--calls`` per server
(default 2000) and ``--connections`` (default 40).

Run: ``python -m bench.server_relay`` (add ``--separate`` to run the
servers in a child process, so that the client does not share their GIL).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent import futures

import grpc

import proxyless.grpc
from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.resources import LISTENER_URL

METHOD = "/bench.Echo/Echo"
DNS = "bench.local"
TEMPLATE = "xds.istio.io/grpc/lds/inbound/%s"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


HANDLER = grpc.method_handlers_generic_handler(
    "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
)


def _listener(port: int, chains: list[object]) -> object:
    from tests.e2e.grpc_server.conftest import inbound_listener

    return inbound_listener(TEMPLATE % f"127.0.0.1:{port}", "127.0.0.1", port, chains)  # type: ignore[arg-type]


def start_servers() -> tuple[dict[str, int], DevCA, Callable[[], None], bytes, bytes]:
    """Start the four servers; (ports, ca, stop, client chain, client key)."""
    from tests.e2e.grpc_server.conftest import disable, strict

    ca = DevCA()
    server_cert = ca.issue("spiffe://cluster.local/ns/bench/sa/server", dns=(DNS,))
    client_cert = ca.issue("spiffe://cluster.local/ns/bench/sa/client")
    ads = AdsServer()
    ads.start()
    mesh = Mesh(
        {
            "xds_servers": [{"server_uri": ads.target, "channel_creds": [{"type": "insecure"}]}],
            "node": {"id": "bench"},
            "server_listener_resource_name_template": TEMPLATE,
        }
    )
    pool = futures.ThreadPoolExecutor(max_workers=8)
    direct = grpc.server(pool, handlers=[HANDLER])
    plain_port = direct.add_insecure_port("127.0.0.1:0")
    tls_port = direct.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials(
            [(server_cert.key_pem, server_cert.chain_pem)],
            root_certificates=ca.roots_pem,
            require_client_auth=True,
        ),
    )
    direct.start()
    ours_plain = proxyless.grpc.server(pool, mesh=mesh, handlers=[HANDLER])
    xp = ours_plain.add_port("127.0.0.1:0")
    ours_plain.start()
    ours_tls = proxyless.grpc.server(pool, mesh=mesh, handlers=[HANDLER])
    xt = ours_tls.add_port("127.0.0.1:0")
    ours_tls.start()
    ads.set_resource(LISTENER_URL, TEMPLATE % f"127.0.0.1:{xp}", _listener(xp, disable()))
    ads.set_resource(
        LISTENER_URL, TEMPLATE % f"127.0.0.1:{xt}", _listener(xt, strict(ca, server_cert))
    )
    deadline = time.monotonic() + 10
    while not (ours_plain.serving() and ours_tls.serving()):
        if time.monotonic() > deadline:
            raise SystemExit("the xDS-enabled servers did not start serving")
        time.sleep(0.01)

    def stop() -> None:
        ours_plain.stop(0).wait(5)
        ours_tls.stop(0).wait(5)
        direct.stop(0)
        mesh.close()
        ads.stop()

    ports = {"plain": plain_port, "tls": tls_port, "xp": xp, "xt": xt}
    return ports, ca, stop, client_cert.chain_pem, client_cert.key_pem


def serve_forever() -> None:
    """Child mode: start the servers, print what the client needs, wait for EOF."""
    ports, ca, stop, chain, key = start_servers()
    print(
        json.dumps(
            {
                "ports": ports,
                "roots": ca.roots_pem.decode(),
                "chain": chain.decode(),
                "key": key.decode(),
            }
        ),
        flush=True,
    )
    sys.stdin.read()
    stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--separate", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_forever()
        return
    child = None
    if args.separate:
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.server_relay", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        ports, roots = info["ports"], info["roots"].encode()
        chain, key = info["chain"].encode(), info["key"].encode()
        stop: Callable[[], None] = lambda: None  # noqa: E731
    else:
        ports, ca, stop, chain, key = start_servers()
        roots = ca.roots_pem
    try:
        measure(args, ports, roots, chain, key)
    finally:
        stop()
        if child is not None:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(10)


def measure(
    args: argparse.Namespace, ports: dict[str, int], roots: bytes, chain: bytes, key: bytes
) -> None:
    creds = grpc.ssl_channel_credentials(roots, key, chain)
    options = [("grpc.ssl_target_name_override", DNS)]

    def make(port: int, secure: bool) -> grpc.Channel:
        target = f"127.0.0.1:{port}"
        if secure:
            return grpc.secure_channel(target, creds, options=options)
        return grpc.insecure_channel(target)

    cases: dict[str, Callable[[], grpc.Channel]] = {
        "grpcio plaintext port": lambda: make(ports["plain"], False),
        "proxyless DISABLE": lambda: make(ports["xp"], False),
        "grpcio mTLS port": lambda: make(ports["tls"], True),
        "proxyless STRICT": lambda: make(ports["xt"], True),
    }
    channels = {name: fn() for name, fn in cases.items()}
    calls = {name: ch.unary_unary(METHOD) for name, ch in channels.items()}
    for call in calls.values():
        for _ in range(200):
            call(b"x" * 64, timeout=5)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    rounds = 20
    per_round = max(1, args.calls // rounds)
    for _ in range(rounds):
        for name, call in calls.items():
            out = samples[name]
            for _ in range(per_round):
                t0 = time.perf_counter()
                call(b"x" * 64, timeout=5)
                out.append(time.perf_counter() - t0)
    connect: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.connections):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            ch = fn()
            ch.unary_unary(METHOD)(b"x", timeout=5)
            connect[name].append(time.perf_counter() - t0)
            ch.close()

    def q(values: list[float], p: float) -> float:
        return statistics.quantiles(values, n=100)[int(p) - 1] * 1e6

    base = {"proxyless DISABLE": "grpcio plaintext port", "proxyless STRICT": "grpcio mTLS port"}
    print(f"{'server':24} {'p50 us':>8} {'p90 us':>8} {'ratio':>6} {'connect ms':>11}")
    for name in cases:
        p50 = statistics.median(samples[name]) * 1e6
        ratio = ""
        if name in base:
            ratio = f"{p50 / (statistics.median(samples[base[name]]) * 1e6):.3f}"
        print(
            f"{name:24} {p50:8.0f} {q(samples[name], 90):8.0f} {ratio:>6} "
            f"{statistics.median(connect[name]) * 1e3:11.2f}"
        )
    for ch in channels.values():
        ch.close()


if __name__ == "__main__":
    main()
