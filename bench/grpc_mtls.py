"""What mTLS to a SPIFFE workload costs a gRPC call, by design candidate,
side by side in one process run.

One TLS echo backend (grpcio, ``ssl_server_credentials`` with
``require_client_auth=True``) runs in its own process; its certificate (from
:class:`proxyless.controlplane.ca.DevCA`) carries the SPIFFE ID
``spiffe://cluster.local/ns/default/sa/reviews`` and, so that grpcio's own
TLS can verify it at all, the DNS SAN ``reviews.default.svc``. The
contenders, all sync unary calls presenting the same client SVID:

1. ``direct-tls``     — ``grpc.secure_channel`` with ``ssl_channel_credentials``
   (client certificate) and ``grpc.ssl_target_name_override`` =
   ``reviews.default.svc``: the floor. It is also candidate (c), grpcio's
   own TLS pinned to a DNS SAN: it verifies that DNS name only (exact or
   wildcard), never the URI SAN, so it is possible only where the issuer
   adds a DNS SAN and the SAN matchers pin exactly that name;
2. ``fwd-hub``        — candidate (b): grpcio plaintext HTTP/2 to a local
   forwarder (unix socket, private directory, peer-credential check) whose
   one selector thread relays every connection through ``SSLObject`` memory
   BIOs, having checked the SPIFFE ID before the first byte;
3. ``fwd-thread``     — candidate (b) with one relay thread per connection;
4. ``proxyless-mtls`` — ``proxyless.grpc.channel("xds:///reviews:9080")``
   over an ADS-delivered TLS cluster pinning the SPIFFE ID: the chosen
   design, routing included;
5. ``direct-plain``   — ``grpc.insecure_channel`` to the backend's plaintext
   port, for what TLS itself costs.

Measured: unary p50/p99 of a small message (interleaved rounds as in
``bench/grpc_overhead.py``: the contenders take turns in blocks, medians of
per-round ratios to ``direct-tls``), the time of a new connection's first
call (a fresh channel, and for the forwarders a fresh socket, each time),
the time of a 1 MiB echo, and the client process's CPU time per small call
(all its threads: grpcio's and the relay's).

Run ``python bench/grpc_mtls.py [--calls N] [--rounds R] [--quick] [--json out.json]``.
Results: docs/benchmarks.md and docs/security.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench import _common as c
from bench.grpc_overhead import Options, run_rounds, run_rounds_async, summarize_rounds

REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"
CLIENT = "spiffe://cluster.local/ns/default/sa/productpage"
DNS_NAME = "reviews.default.svc"
METHOD = "/bench.Echo/Echo"
SERVICE = "reviews:9080"
CLUSTER = "outbound|9080||reviews"
MIB = 1024 * 1024

_BACKEND = """
import sys, grpc
from concurrent import futures
d = sys.argv[1]
read = lambda n: open(f"{d}/{n}", "rb").read()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[
    ("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)])
h = grpc.method_handlers_generic_handler(
    "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)})
server.add_generic_rpc_handlers((h,))
creds = grpc.ssl_server_credentials(
    [(read("key.pem"), read("chain.pem"))], root_certificates=read("roots.pem"),
    require_client_auth=True)
tls = server.add_secure_port("127.0.0.1:0", creds)
plain = server.add_insecure_port("127.0.0.1:0")
server.start()
print(tls, plain, flush=True)
sys.stdin.read()
server.stop(0)
"""


class TlsBackend:
    """The echo backend in its own process (TLS port and plaintext port)."""

    def __init__(self, directory: Path, timeout: float = 30.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BACKEND, str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        c._children.append(self.process)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode().split() if ready else []
        if len(line) != 2:
            self.stop()
            raise RuntimeError("TLS echo backend did not start")
        self.tls_address = f"127.0.0.1:{line[0]}"
        self.plain_address = f"127.0.0.1:{line[1]}"

    def stop(self) -> None:
        if self.process.poll() is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _tls_cluster(client: Any, roots: bytes) -> Any:
    from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
    from envoy.type.matcher.v3 import string_pb2

    from proxyless.testing.resources import cluster

    common = tls_pb2.CommonTlsContext(alpn_protocols=["h2"])
    cert = common.tls_certificates.add()
    cert.certificate_chain.inline_bytes = client.chain_pem
    cert.private_key.inline_bytes = client.key_pem
    common.validation_context.trusted_ca.inline_bytes = roots
    common.validation_context.match_typed_subject_alt_names.add(
        san_type=common_pb2.SubjectAltNameMatcher.URI,
        matcher=string_pb2.StringMatcher(exact=REVIEWS),
    )
    proto = cluster(CLUSTER)
    proto.transport_socket.name = "envoy.transport_sockets.tls"
    proto.transport_socket.typed_config.Pack(tls_pb2.UpstreamTlsContext(common_tls_context=common))
    return proto


def _client_tls(client: Any, roots: bytes) -> Any:
    from proxyless.resources.model.matchers import StringMatcher
    from proxyless.resources.model.security import (
        CertificateValidationContext,
        DataSource,
        SanMatcher,
        TlsCertificate,
        UpstreamTlsContext,
    )
    from proxyless.security.credentials import ClusterCredentials, SecretSources

    ctx = UpstreamTlsContext(
        identity=TlsCertificate(
            DataSource(inline=client.chain_pem), DataSource(inline=client.key_pem)
        ),
        validation=CertificateValidationContext(
            trusted_ca=DataSource(inline=roots),
            match_subject_alt_names=(SanMatcher("URI", StringMatcher("exact", REVIEWS)),),
        ),
        alpn_protocols=("h2",),
    )
    return ClusterCredentials(CLUSTER, ctx, SecretSources()).current()


_BIG_OPTS = [
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
]


def _unary(channel: Any, request: bytes) -> Callable[[], Any]:
    mc = channel.unary_unary(METHOD)
    return lambda: mc(request, timeout=10)


def _median_ms(samples_ns: Sequence[int]) -> float:
    return round(statistics.median(samples_ns) / 1e6, 3)


def run(
    opts: Options, *, handshakes: int, big_calls: int, cpu_calls: int, log: Callable[[str], None]
) -> dict[str, Any]:
    import proxyless.grpc
    from proxyless.controlplane.ca import DevCA
    from proxyless.controlplane.server import AdsServer
    from proxyless.grpc._tls_forward import ForwarderHub
    from proxyless.mesh import Mesh
    from proxyless.testing.resources import (
        CLUSTER_URL,
        ENDPOINT_URL,
        LISTENER_URL,
        ROUTE_URL,
        endpoints,
        listener,
        route,
        route_config,
    )

    ca = DevCA("cluster.local")
    server_cert = ca.issue(REVIEWS, dns=(DNS_NAME,))
    client = ca.issue(CLIENT)
    results: dict[str, Any] = {"machine": c.machine_info(envoy_version=False)}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "key.pem").write_bytes(server_cert.key_pem)
        (d / "chain.pem").write_bytes(server_cert.chain_pem)
        (d / "roots.pem").write_bytes(ca.roots_pem)
        backend = TlsBackend(d)
    ads = AdsServer()
    ads.start()
    hub_a, hub_t = ForwarderHub("hub"), ForwarderHub("thread")
    mesh: Any = None
    try:
        addr = backend.tls_address
        ads.set_resources(ENDPOINT_URL, {CLUSTER: endpoints(CLUSTER, [addr])})
        ads.set_resources(CLUSTER_URL, {CLUSTER: _tls_cluster(client, ca.roots_pem)})
        ads.set_resources(
            ROUTE_URL, {"r": route_config("r", [SERVICE], [route(prefix="/", cluster=CLUSTER)])}
        )
        ads.set_resources(LISTENER_URL, {SERVICE: listener(SERVICE, "r")})
        mesh = Mesh(c.xds_bootstrap(ads.target))
        tls = _client_tls(client, ca.roots_pem)
        creds = grpc.ssl_channel_credentials(ca.roots_pem, client.key_pem, client.chain_pem)
        override = [("grpc.ssl_target_name_override", DNS_NAME)]

        def direct_tls(extra: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
            return grpc.secure_channel(addr, creds, options=[*override, *extra])

        def fwd(hub: ForwarderHub, extra: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
            return grpc.insecure_channel(hub.open(tls, addr).target, options=list(extra))

        channels: dict[str, Callable[[Sequence[tuple[str, Any]]], Any]] = {
            "direct-tls": direct_tls,
            "fwd-hub": lambda extra=(): fwd(hub_a, extra),
            "fwd-thread": lambda extra=(): fwd(hub_t, extra),
            "proxyless-mtls": lambda extra=(): proxyless.grpc.channel(
                f"xds:///{SERVICE}", mesh=mesh, options=list(extra)
            ),
            "direct-plain": lambda extra=(): grpc.insecure_channel(
                backend.plain_address, options=list(extra)
            ),
        }
        small = b"x" * 100
        calls = {name: _unary(make([]), small) for name, make in channels.items()}
        for name, fn in calls.items():
            fn()  # connect (and for proxyless, wait for the config)
            log(f"  {name}: connected")

        log(f"unary: {opts.rounds} rounds x {opts.calls} calls")
        results["unary"] = summarize_rounds(run_rounds(calls, opts), "direct-tls")

        log(f"aio unary: {opts.rounds} rounds x {opts.calls} calls")
        results["aio_unary"] = asyncio.run(_aio_part(mesh, addr, creds, opts))

        log(f"new connection: {handshakes} fresh channels each")
        fresh: dict[str, list[int]] = {n: [] for n in channels if n != "proxyless-mtls"}
        local_pool = [("grpc.use_local_subchannel_pool", 1)]
        for _ in range(handshakes):
            for name in fresh:
                t0 = time.perf_counter_ns()
                ch = channels[name](local_pool)
                ch.unary_unary(METHOD)(small, timeout=10)
                fresh[name].append(time.perf_counter_ns() - t0)
                ch.close()
        results["new_connection_ms"] = {n: _median_ms(s) for n, s in fresh.items()}

        log(f"1 MiB echo: {big_calls} calls each, interleaved")
        big = os.urandom(MIB)
        big_fns = {
            name: make(_BIG_OPTS).unary_unary(METHOD)
            for name, make in channels.items()
            if name != "proxyless-mtls"
        }
        for fn in big_fns.values():
            fn(big, timeout=30)
        big_ns: dict[str, list[int]] = {n: [] for n in big_fns}
        for _ in range(big_calls):
            for name, fn in big_fns.items():
                t0 = time.perf_counter_ns()
                fn(big, timeout=30)
                big_ns[name].append(time.perf_counter_ns() - t0)
        results["echo_1mib"] = {
            n: {"ms": _median_ms(s), "MiB_per_s_each_way": round(1e9 / statistics.median(s), 1)}
            for n, s in big_ns.items()
        }

        log(f"CPU: {cpu_calls} calls each, interleaved blocks")
        cpu: dict[str, list[float]] = {n: [] for n in calls}
        block = max(1, cpu_calls // 10)
        for _ in range(10):
            for name, fn in calls.items():
                t0 = time.process_time()
                for _ in range(block):
                    fn()
                cpu[name].append((time.process_time() - t0) / block * 1e6)
        results["cpu_us_per_call"] = {n: round(statistics.median(v), 1) for n, v in cpu.items()}
    finally:
        if mesh is not None:
            mesh.close()
        hub_a.close()
        hub_t.close()
        ads.stop()
        backend.stop()
    return results


async def _aio_part(mesh: Any, addr: str, creds: Any, opts: Options) -> dict[str, Any]:
    import grpc.aio

    import proxyless.grpc.aio

    small = b"x" * 100
    direct = grpc.aio.secure_channel(
        addr, creds, options=[("grpc.ssl_target_name_override", DNS_NAME)]
    )
    px = proxyless.grpc.aio.channel(f"xds:///{SERVICE}", mesh=mesh)
    try:
        direct_mc = direct.unary_unary(METHOD)
        px_mc = px.unary_unary(METHOD)
        await direct_mc(small, timeout=30)
        await px_mc(small, timeout=30)
        contenders: dict[str, Callable[[], Awaitable[Any]]] = {
            "aio-direct-tls": lambda: direct_mc(small),
            "proxyless-aio-mtls": lambda: px_mc(small),
        }
        per_round = await run_rounds_async(contenders, opts)
    finally:
        await px.close()
        await direct.close()
    return summarize_rounds(per_round, "aio-direct-tls")


def format_report(results: dict[str, Any]) -> str:
    lines = ["sync unary, 100-byte echo, medians across rounds (ratios: to direct-tls)"]
    lines.append(f"{'contender':<20}{'p50 µs':>9}{'p99 µs':>9}{'p50 x':>8}{'p99 x':>8}")
    for name, row in results["unary"].items():
        lines.append(
            f"{name:<20}{row['p50_us']:>9}{row['p99_us']:>9}"
            f"{row.get('p50_ratio', 1.0):>8}{row.get('p99_ratio', 1.0):>8}"
        )
    aio = results.get("aio_unary", {})
    if aio:
        lines.append("grpc.aio unary, same loop (ratios: to aio-direct-tls)")
    for name, row in aio.items():
        lines.append(
            f"{name:<20}{row['p50_us']:>9}{row['p99_us']:>9}"
            f"{row.get('p50_ratio', 1.0):>8}{row.get('p99_ratio', 1.0):>8}"
        )
    lines.append(
        "new connection (fresh channel + first call), median ms: "
        + ", ".join(f"{n} {v}" for n, v in results["new_connection_ms"].items())
    )
    lines.append(
        "1 MiB echo, median ms: "
        + ", ".join(f"{n} {v['ms']}" for n, v in results["echo_1mib"].items())
    )
    lines.append(
        "client CPU per call, µs: "
        + ", ".join(f"{n} {v}" for n, v in results["cpu_us_per_call"].items())
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--block", type=int, default=50)
    p.add_argument("--handshakes", type=int, default=30)
    p.add_argument("--big", type=int, default=20)
    p.add_argument("--cpu", type=int, default=2000)
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    opts = Options(calls=args.calls, rounds=args.rounds, block=args.block)
    if args.quick:
        opts.calls, opts.rounds, opts.warmup = 200, 2, 50
        args.handshakes, args.big, args.cpu = 5, 3, 200
    results = run(
        opts, handshakes=args.handshakes, big_calls=args.big, cpu_calls=args.cpu, log=print
    )
    print(format_report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
