"""gRPC with xDS: ``proxyless.grpc.channel("xds:///reviews:9080")``.

A drop-in for ``grpc.insecure_channel(...)``: the returned object works
wherever a ``grpc.Channel`` does. ``proxyless.grpc.aio.channel`` is the same
for ``grpc.aio``. See :mod:`proxyless.interceptors.grpc_channel`.
"""

from proxyless.grpc import aio
from proxyless.interceptors.grpc_channel import XdsChannel, channel
from proxyless.interceptors.grpc_errors import XdsRpcError

__all__ = ["XdsChannel", "XdsRpcError", "aio", "channel"]
