"""Where a gRPC call meets :mod:`proxyless.observability`: the trace
context and ``x-request-id`` it sends, and its telemetry's start and end.

:func:`begin` is called once per call, before routing. Without a tracer or
meter provider and with access logs off it only sets the headers every
attempt sends (:attr:`Invocation.extra
<proxyless.grpc._invocation.Invocation.extra>`: the request id and the
current context); otherwise the call gets a
:class:`~proxyless.observability.telemetry.CallTelemetry`, whose attempt
spans give each attempt its own ``traceparent``. The executors report the
end (:func:`ended`).
"""

from __future__ import annotations

from typing import Any

import grpc

from proxyless.grpc._invocation import Invocation
from proxyless.observability.settings import REQUEST_ID
from proxyless.observability.telemetry import (
    CallTelemetry,
    base_headers,
    start_call,
    status_name,
)

__all__ = ["begin", "bind", "ended", "ended_call", "ended_outcome"]


def _request_id(metadata: Any) -> str | None:
    if not metadata:
        return None
    for key, value in metadata:
        if key == REQUEST_ID or (len(key) == 12 and key.lower() == REQUEST_ID):
            return value if isinstance(value, str) else None
    return None


def begin(inv: Invocation, target: str, authority: str) -> CallTelemetry | None:
    """Start ``inv``'s telemetry (see the module docstring)."""
    rid = _request_id(inv.metadata)
    tel = start_call(grpc=True, method=inv.method, target=target, authority=authority,
                     request_id=rid)  # fmt: skip
    if tel is None:
        inv.extra = base_headers(rid)
    else:
        inv.tel = tel
    return tel


def bind(tel: CallTelemetry | None, call: Any) -> None:
    """``call`` (a routed :class:`~proxyless.runtime.call.Call`) reports to ``tel``."""
    if tel is None:
        return
    call.obs = tel
    route = call.route
    name = getattr(route.route, "name", "") if route is not None else ""
    cluster = call.cluster.name if call.cluster is not None else ""
    tel.routed(name or "", cluster)


def ended(tel: CallTelemetry | None, error: BaseException | None) -> None:
    """The call ended: OK when ``error`` is None, else with ``error``'s status."""
    if tel is None:
        return
    if error is None:
        tel.finish("OK")
        return
    flags = ""
    status = "UNKNOWN"
    code = getattr(error, "code", None)
    if callable(code):
        try:
            c = code()
            status = c.name if isinstance(c, grpc.StatusCode) else "UNKNOWN"
        except Exception:
            pass
        flags = getattr(error, "flags", None) or ""
        if not flags:
            pe = getattr(error, "proxyless_error", None)
            flags = getattr(pe, "flag", "") or ""
    elif isinstance(error, (KeyboardInterrupt, SystemExit)):
        status = "CANCELLED"
    if status == "CANCELLED":
        flags = f"{flags},DC" if flags else "DC"
    tel.finish(status, error, flags)


def ended_outcome(tel: CallTelemetry | None, outcome: Any, cancelled: bool) -> None:
    """The call ended with its last attempt's ``outcome`` (``grpc.aio``
    streams, whose call objects answer asynchronously)."""
    if tel is None:
        return
    if cancelled:
        tel.finish("CANCELLED", None, "DC")
    elif outcome.kind == "success":
        tel.finish("OK")
    else:
        tel.finish(status_name(outcome))


def ended_call(tel: CallTelemetry | None, inner: Any) -> None:
    """The call ended as grpc's call object ``inner`` (a stream) says."""
    if tel is None:
        return
    try:
        if inner.cancelled():
            tel.finish("CANCELLED", None, "DC")
            return
        code = inner.code()
    except Exception as exc:
        tel.finish("UNKNOWN", exc)
        return
    if code is grpc.StatusCode.OK:
        tel.finish("OK")
    else:
        tel.finish(code.name, inner if isinstance(inner, BaseException) else None)
