"""The two entry points every resource parser offers, written once.

``decode_resource`` turns serialized bytes into a :class:`DecodeResult` and
never raises: bytes that are not the message give a result without a name;
a message that fails validation gives its name and every problem found, so
the xDS client can NACK it by name and keep its valid siblings (gRFC A46).
``parse_resource`` validates an already-built message and raises
:class:`ResourceValidationError` naming the resource kind (the message's
proto name, e.g. ``Cluster``), the resource and every problem.

Both take the resource's validation function, ``(Ctx, message) -> model or
None``, which records problems in the :class:`Ctx` and carries on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from proxyless.errors import ResourceValidationError
from proxyless.resources.parse.common import Ctx
from proxyless.xds_client.resource_type import DecodeResult

__all__ = ["decode_resource", "parse_resource"]

M = TypeVar("M", bound=Message)
T = TypeVar("T")


def decode_resource(
    data: bytes,
    message: type[M],
    validate: Callable[[Ctx, M], Any],
    *,
    name_field: str = "name",
) -> DecodeResult:
    """Decode ``data`` as ``message`` and validate it; never raises."""
    msg = message()
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError, TypeError) as exc:
        full_name = message.DESCRIPTOR.full_name
        return DecodeResult(name=None, value=None, errors=(f"could not decode {full_name}: {exc}",))
    ctx = Ctx()
    value = validate(ctx, msg)
    name: str = getattr(msg, name_field)
    if ctx.errors or value is None:
        return DecodeResult(name=name, value=None, errors=tuple(ctx.errors))
    return DecodeResult(name=name, value=value)


def parse_resource(
    msg: Any,
    validate: Callable[[Ctx, Any], T | None],
    *,
    name_field: str = "name",
) -> T:
    """Validate the message ``msg``; raise ResourceValidationError if it is invalid."""
    ctx = Ctx()
    value = validate(ctx, msg)
    if ctx.errors or value is None:
        raise ResourceValidationError(msg.DESCRIPTOR.name, getattr(msg, name_field), ctx.errors)
    return value
