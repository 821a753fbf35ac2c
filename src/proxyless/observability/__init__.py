"""What proxyless tells operators: client status (CSDS, gRFC A40), metrics
(gRFC A66/A78 and the mesh signals) and the telemetry switches.

A leaf package the other layers record into: this ``__init__`` imports
nothing, so the xDS client, the resilience layer and the security layer can
import :mod:`proxyless.observability.xds_metrics` and
:mod:`proxyless.observability.signals` without pulling in the Mesh. The
modules: :mod:`~proxyless.observability.settings` (switches),
:mod:`~proxyless.observability.instruments` (the OpenTelemetry instruments),
:mod:`~proxyless.observability.csds` (CSDS, served by :mod:`proxyless.admin`).
"""

from typing import Any

__all__ = ["configure", "current_request_id", "incoming"]

#: Public names, loaded on first use (see above: this package imports nothing eagerly).
_LAZY = {
    "configure": "proxyless.observability.settings",
    "current_request_id": "proxyless.observability.settings",
    "incoming": "proxyless.observability.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'proxyless.observability' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
