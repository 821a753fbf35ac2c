"""grpcio's own xDS-enabled server (gRFC A36), configured by the embedded control plane.

Run as a script with GRPC_XDS_BOOTSTRAP set (grpcio reads it once per
process). It binds ``127.0.0.1:PORT`` with ``xds_server_credentials``
(fallback plaintext), serves ``/proxyless.test.Echo/Echo`` answering the
caller's URI SAN (or ``-`` for a plaintext caller), prints ``started`` and
serves until stdin closes.
"""

from __future__ import annotations

import sys
from concurrent import futures

import grpc

ECHO = "/proxyless.test.Echo/Echo"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    auth = context.auth_context()
    uris = [v.decode() for v in auth.get("x509_subject_alternative_name", [])]
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    return (spiffe[0] if spiffe else "-").encode()


def main() -> int:
    port = int(sys.argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), xds=True)
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("proxyless.test.Echo", {"Echo": handler}),)
    )
    credentials = grpc.xds_server_credentials(grpc.insecure_server_credentials())
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    server.start()
    print("started", flush=True)
    sys.stdin.read()
    server.stop(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
