"""How the generic xDS client learns about a resource type.

The client speaks type URLs and opaque bytes; it never knows what a Cluster
means. Each resource type plugs in from outside (``proxyless.resources.types``)
as a :class:`ResourceType`: its type URL, a short name for logs, whether State
of the World responses must carry every subscribed resource (LDS and CDS,
gRFC A27), and a decoder from serialized proto bytes to a validated model.

A decoder never raises: it returns a :class:`DecodeResult` with the resource
name whenever it can be read, even when the resource is invalid, so the client
can NACK it by name and keep its valid siblings (gRFC A46).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DecodeResult", "ResourceType"]


@dataclass(frozen=True, slots=True)
class DecodeResult:
    """The outcome of decoding one resource.

    ``errors`` non-empty means the resource is invalid; ``value`` is then None.
    ``name`` is None only when the bytes could not be decoded at all.
    """

    name: str | None
    value: Any | None
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True, slots=True)
class ResourceType:
    type_url: str
    #: "LDS", "RDS", "CDS", "EDS", "SDS": used in logs, errors and status dumps.
    short_name: str
    #: In SotW, a subscribed resource missing from a response was deleted.
    all_required_in_sotw: bool
    decode: Callable[[bytes], DecodeResult]

    def __repr__(self) -> str:
        return f"ResourceType({self.short_name})"
