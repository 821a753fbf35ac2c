"""Where an httpx request meets :mod:`proxyless.observability`: the trace
context and ``x-request-id`` it sends, and its telemetry's start and end.

Without a tracer or meter provider and with access logs off, :func:`begin`
only adds the request id (unless the request has one) and the current
context to the request's headers, once; every attempt sends them.
Otherwise the request gets a
:class:`~proxyless.observability.telemetry.CallTelemetry`: each attempt
sends the context of its own attempt span (:func:`attempt_headers`, which
replaces trace headers the request already carries, e.g. from another
instrumentation), and :func:`end` records the outcome when the transport
returns the response or raises; the recorded duration is the time to the
response headers (Envoy's ``%RESPONSE_DURATION%``).
"""

from __future__ import annotations

import httpx

from proxyless.observability.settings import REQUEST_ID, maybe_active
from proxyless.observability.telemetry import CallTelemetry, base_headers, start_call

__all__ = ["attempt_headers", "begin", "end"]

_RID = REQUEST_ID.encode("ascii")


def _request_id(raw: list[tuple[bytes, bytes]]) -> str | None:
    for key, value in raw:
        if len(key) == 12 and key.lower() == _RID:
            return value.decode("latin-1")
    return None


def begin(request: httpx.Request) -> CallTelemetry | None:
    """Start ``request``'s telemetry (see the module docstring)."""
    raw = request.headers.raw
    rid = _request_id(raw)
    if not maybe_active():
        _add_base(request, rid)
        return None
    url = request.url
    tel = start_call(
        grpc=False,
        method=request.method,
        target=str(url),
        authority=f"{url.host}:{url.port}" if url.port else url.host,
        path=url.path,
        request_id=rid,
    )
    if tel is None:
        _add_base(request, rid)
    return tel


def _add_base(request: httpx.Request, rid: str | None) -> None:
    extra = base_headers(rid)
    if extra:
        headers = request.headers
        for key, value in extra:
            headers[key] = value


def attempt_headers(
    tel: CallTelemetry, headers: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """``headers`` with the current attempt's trace context and request id."""
    extra = tel.headers
    if not extra:
        return headers
    names = {k.encode("ascii") for k, _ in extra}
    out = [(k, v) for k, v in headers if k.lower() not in names]
    out.extend((k.encode("ascii"), v.encode("latin-1")) for k, v in extra)
    return out


def passthrough(tel: CallTelemetry | None, request: httpx.Request) -> None:
    """A request sent outside the mesh carries the call span's context."""
    if tel is None:
        return
    for key, value in tel.call_headers():
        request.headers[key] = value


def end(tel: CallTelemetry, response: httpx.Response | None, error: BaseException | None) -> None:
    """The request ended with ``response`` or ``error``."""
    if response is not None:
        tel.finish(response.status_code)
        return
    flag = ""
    if error is not None:
        cause = getattr(error, "proxyless_error", None) or error.__cause__
        flag = getattr(cause, "flag", "") or getattr(error, "flag", "") or ""
    tel.finish(None, error, flag)
