"""httpx with xDS: ``httpx.Client(transport=proxyless.httpx.Transport())``.

``Transport`` (an ``httpx.BaseTransport``) and ``AsyncTransport`` (an
``httpx.AsyncBaseTransport``) send ``http://reviews:9080/...`` the way an
Envoy sidecar would with the same xDS config: routes, weighted splits,
retries, timeouts, header mutations, rewrites, redirects, direct responses,
mirrors, fault injection, circuit breaking and outlier detection, on the
same request path as :func:`proxyless.grpc.channel`. Hosts the control plane
does not know go to a plain httpx transport (``fallback="passthrough"``, the
default) or are refused (``fallback="refuse"``). See docs/httpx.md and
docs/architecture.md.

Failures are httpx exceptions; those proxyless raises itself are the
``Mesh*`` classes below, with ``.stage`` and ``.proxyless_error``.
"""

from proxyless.httpx._async_transport import AsyncTransport
from proxyless.httpx._errors import (
    MeshConnectError,
    MeshConnectTimeout,
    MeshHTTPError,
    MeshReadTimeout,
    MeshRequestError,
    UpstreamTimeout,
)
from proxyless.httpx._hosts import MeshHosts
from proxyless.httpx._sync_transport import Transport

__all__ = [
    "AsyncTransport",
    "MeshConnectError",
    "MeshConnectTimeout",
    "MeshHTTPError",
    "MeshHosts",
    "MeshReadTimeout",
    "MeshRequestError",
    "Transport",
    "UpstreamTimeout",
]
