"""gRPC status codes by name, in code order.

The seventeen canonical codes of gRPC's ``doc/statuscodes.md``: the name at
index ``n`` is the status with code ``n`` (``GRPC_STATUS_NAMES[14]`` is
``"UNAVAILABLE"``). A leaf that imports nothing, so the data path (retry
conditions, attempt outcomes) and the embedded control plane (Istio fault
aborts given as ``grpcStatus``) read one table.
"""

from __future__ import annotations

from typing import Final

__all__ = ["GRPC_STATUS_NAMES"]

#: Canonical gRPC status names by code (``grpc/doc/statuscodes.md``).
GRPC_STATUS_NAMES: Final[tuple[str, ...]] = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
