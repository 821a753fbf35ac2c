"""``grpc.aio`` with xDS: ``proxyless.grpc.aio.channel("xds:///reviews:9080")``,
and the xDS-enabled ``proxyless.grpc.aio.server(...)`` (gRFC A36)."""

from proxyless.grpc._aio_channel import AioXdsChannel, channel
from proxyless.grpc._orca import aio_orca_service as orca_service
from proxyless.grpc._peer import peer_identity
from proxyless.grpc._server_aio import AioXdsServer, server

__all__ = ["AioXdsChannel", "AioXdsServer", "channel", "orca_service", "peer_identity", "server"]
