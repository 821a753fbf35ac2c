"""Where an httpx request meets :mod:`proxyless.observability`: the trace
context and ``x-request-id`` it sends, and its telemetry's start and end.

Without a tracer or meter provider and with access logs off, :func:`begin`
only gives the headers every attempt adds to what it sends: the request id
(unless the request has one) and the current context, as raw header pairs
appended to the upstream request (not set on the application's
``httpx.Request``: httpx's header handling costs more than the call
otherwise adds).
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

from proxyless.observability.settings import REQUEST_ID
from proxyless.observability.telemetry import CallTelemetry, base_headers, recorders

__all__ = ["RawHeaders", "attempt_headers", "begin", "end", "passthrough"]

_RID = REQUEST_ID.encode("ascii")


def _request_id(raw: list[tuple[bytes, bytes]]) -> str | None:
    for key, value in raw:
        if len(key) == 12 and key.lower() == _RID:
            return value.decode("latin-1")
    return None


RawHeaders = list[tuple[bytes, bytes]]


def begin(request: httpx.Request) -> tuple[CallTelemetry | None, RawHeaders | None]:
    """Start ``request``'s telemetry: its CallTelemetry, or (without one) the
    headers every attempt adds (see the module docstring)."""
    rid = _request_id(request.headers.raw)
    found = recorders()
    if found is None:
        return None, _base(rid)
    url = request.url
    tel = CallTelemetry(
        grpc=False,
        method=request.method,
        target=str(url),
        authority=f"{url.host}:{url.port}" if url.port else url.host,
        path=url.path,
        request_id=rid,
        tracer_provider=found[0],
        inst=found[1],
    )
    return tel, None


def _base(rid: str | None) -> RawHeaders | None:
    extra = base_headers(rid)
    if not extra:
        return None
    return [(k.encode("ascii"), v.encode("latin-1")) for k, v in extra]


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


def passthrough(
    tel: CallTelemetry | None, request: httpx.Request, extra: RawHeaders | None
) -> None:
    """A request sent outside the mesh carries the request id and the call
    span's context (or the current context)."""
    if tel is not None:
        for key, value in tel.call_headers():
            request.headers[key] = value
    elif extra:
        for k, v in extra:
            request.headers[k.decode("ascii")] = v.decode("latin-1")


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
