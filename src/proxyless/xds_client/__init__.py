"""Generic xDS client (ADS, State of the World or delta; fallback servers), shared by
the whole process.

See :mod:`proxyless.xds_client.client` for the protocol rules it follows.
"""

from proxyless.xds_client.client import DOES_NOT_EXIST_TIMEOUT, XdsClient
from proxyless.xds_client.resource_type import DecodeResult, ResourceType
from proxyless.xds_client.status import ClientStatus, ResourceStatus
from proxyless.xds_client.watcher import ResourceWatcher

__all__ = [
    "DOES_NOT_EXIST_TIMEOUT",
    "ClientStatus",
    "DecodeResult",
    "ResourceStatus",
    "ResourceType",
    "ResourceWatcher",
    "XdsClient",
]
