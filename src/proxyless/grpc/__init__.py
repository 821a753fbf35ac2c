"""gRPC with xDS: ``proxyless.grpc.channel("xds:///reviews:9080")``.

A drop-in for ``grpc.insecure_channel(...)``: the returned object works
wherever a ``grpc.Channel`` does (generated stubs, ``grpc.intercept_channel``).
``proxyless.grpc.aio.channel`` is the same for ``grpc.aio``. How a call is
routed, retried and reported: docs/grpc.md; where the pieces sit:
docs/architecture.md.

Inside the package: ``_core`` (what a channel keeps: runtime, endpoint
connections, fast-path lanes), ``_driver`` (retries, hedging, per-try
timeouts and stream retries, free of I/O), ``_sync`` and ``_aio_exec`` (its
blocking and ``grpc.aio`` executors), ``_retrying`` (call objects driven by
grpc's callbacks), ``_channel``/``_multicallables`` (the sync channel),
``_aio_channel``/``_aio_call`` (the aio channel), ``_pool`` (per-endpoint
grpcio channels), ``_invocation`` (a call's arguments and replay buffer),
``_errors``. The xDS-enabled server (gRFC A36/A41, docs/security.md):
``_server`` and ``_server_aio`` (the sync and aio servers), ``_server_core``
(what they share), ``_relay`` (the public port), ``_serving`` (the inbound
Listener of a port), ``_chain_match``, ``_rbac`` and ``_peer``
(``peer_identity``). ``_orca``: ORCA load reports (gRFC A51) on the server, the per-call
``backend_metrics`` recorder and the out-of-band ``orca_service``;
``_orca_client``: reading them into weighted round robin's weights (gRFC
A58).
"""

from proxyless.grpc import aio
from proxyless.grpc._channel import XdsChannel, channel
from proxyless.grpc._errors import XdsRpcError
from proxyless.grpc._orca import BackendMetrics, ServerMetrics, backend_metrics, orca_service
from proxyless.grpc._peer import peer_identity
from proxyless.grpc._server import XdsServer, server

__all__ = [
    "BackendMetrics",
    "ServerMetrics",
    "XdsChannel",
    "XdsRpcError",
    "XdsServer",
    "aio",
    "backend_metrics",
    "channel",
    "orca_service",
    "peer_identity",
    "server",
]
