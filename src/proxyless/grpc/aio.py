"""``grpc.aio`` with xDS: ``proxyless.grpc.aio.channel("xds:///reviews:9080")``."""

from proxyless.grpc._aio_channel import AioXdsChannel, channel

__all__ = ["AioXdsChannel", "channel"]
