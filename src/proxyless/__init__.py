"""proxyless: a service mesh without the sidecar.

An in-process xDS client subscribes to a control plane and drives gRPC
channels and httpx transports.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
