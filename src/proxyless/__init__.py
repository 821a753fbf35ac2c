"""proxyless: a service mesh without the sidecar.

An in-process xDS client subscribes to a control plane and drives gRPC
channels and httpx transports::

    import proxyless, httpx
    channel = proxyless.grpc.channel("xds:///reviews:9080")
    achannel = proxyless.grpc.aio.channel("xds:///reviews:9080")
    client = httpx.Client(transport=proxyless.httpx.Transport())

Configuration comes from the standard xDS bootstrap (``GRPC_XDS_BOOTSTRAP``
or ``GRPC_XDS_BOOTSTRAP_CONFIG``). ``proxyless.explain`` shows where a call
would go and why; ``proxyless check`` on the command line shows the state of
every xDS resource behind a target.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from proxyless import errors
from proxyless.errors import ProxylessError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from proxyless import admin, grpc, httpx
    from proxyless.explain import Explanation, explain
    from proxyless.mesh import Mesh

__all__ = [
    "Explanation",
    "Mesh",
    "ProxylessError",
    "__version__",
    "admin",
    "errors",
    "explain",
    "grpc",
    "httpx",
]

_LAZY = {
    "admin": ("proxyless.admin", None),
    "grpc": ("proxyless.grpc", None),
    "httpx": ("proxyless.httpx", None),
    "Mesh": ("proxyless.mesh", "Mesh"),
    "explain": ("proxyless.explain", "explain"),
    "Explanation": ("proxyless.explain", "Explanation"),
}


def __getattr__(name: str) -> Any:
    """Submodules and heavy names load on first use, so ``import proxyless`` stays cheap."""
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'proxyless' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value
