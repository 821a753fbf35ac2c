"""httpx with xDS: ``httpx.Client(transport=proxyless.httpx.Transport())``.

``Transport`` (an ``httpx.BaseTransport``) and ``AsyncTransport`` (an
``httpx.AsyncBaseTransport``) send ``http://reviews:9080/...`` the way an
Envoy sidecar would with the same xDS config: routes, weighted splits,
retries, timeouts, header mutations, rewrites, redirects, direct responses,
mirrors, fault injection, circuit breaking and outlier detection, on the
same request path as :func:`proxyless.grpc.channel`. Hosts the control plane
does not know go to a plain httpx transport (``fallback="passthrough"``, the
default) or are refused (``fallback="refuse"``). See docs/httpx.md and
:mod:`proxyless.interceptors.httpx_transport`.

Failures are httpx exceptions; those proxyless raises itself are the
``Mesh*`` classes below, with ``.stage`` and ``.proxyless_error``.
"""

from proxyless.interceptors.httpx_errors import (
    MeshConnectError,
    MeshConnectTimeout,
    MeshHTTPError,
    MeshReadTimeout,
    MeshRequestError,
    UpstreamTimeout,
)
from proxyless.interceptors.httpx_hosts import MeshHosts
from proxyless.interceptors.httpx_transport import AsyncTransport, Transport

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
