"""``grpc.aio`` with xDS: ``proxyless.grpc.aio.channel("xds:///reviews:9080")``."""

from proxyless.interceptors.grpc_aio import AioXdsChannel, channel

__all__ = ["AioXdsChannel", "channel"]
