"""The server side of trace propagation, for proxyless' xDS-enabled gRPC
servers (:func:`proxyless.grpc.server`): the incoming context becomes the
parent of the handler's work.

Around each handler, :class:`ServerCall`:

- extracts the caller's context with the global propagator (W3C by
  default, B3 when the application configures it) and makes it current,
  so spans the handler starts, and calls it makes through proxyless
  channels and transports, join the caller's trace;
- keeps the caller's ``x-request-id`` (or, as Envoy's inbound side does,
  generates one) for the calls the handler makes
  (:func:`~proxyless.observability.settings.current_request_id`);
- with a tracer provider, starts a SERVER span ``Recv.<service>/<method>``
  (gRFC A72's name) with ``rpc.*`` attributes and the final status; with a
  meter provider, records ``grpc.server.call.started`` and
  ``grpc.server.call.duration`` (gRFC A66).

:func:`incoming` does the same for any other server, from its request
headers (e.g. an ASGI app calling out through the httpx transport).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace

from proxyless.observability import instruments
from proxyless.observability import settings as _settings
from proxyless.observability.settings import (
    REQUEST_ID,
    request_id_for,
    reset_request_id,
    set_request_id,
)
from proxyless.observability.telemetry import grpc_code, tracer_of

__all__ = ["ServerCall", "incoming", "status_of"]

_SERVER = otel_trace.SpanKind.SERVER
_ERROR = otel_trace.StatusCode.ERROR


def _carrier(metadata: Any) -> dict[str, str]:
    if not metadata:
        return {}
    if isinstance(metadata, Mapping):
        items: Any = metadata.items()
    else:
        items = metadata
    return {k.lower(): v for k, v in items if isinstance(v, str)}


def _received(carrier: Mapping[str, str], recorded: bool) -> tuple[Any, str | None]:
    """The caller's context (None when the request carries none) and the
    request id to serve it under (:func:`~proxyless.observability.settings.request_id_for`)."""
    ctx = None
    if _settings.settings.propagation and carrier:
        fields = propagate.get_global_textmap().fields
        if any(f in carrier for f in fields):
            ctx = propagate.extract(carrier)
    return ctx, request_id_for(carrier.get(REQUEST_ID), recorded)


class ServerCall:
    """One call a server handles (see the module docstring); :meth:`close`
    once, on the thread or task that made it."""

    __slots__ = ("_rid_token", "_token", "inst", "method", "span", "started")

    def __init__(self, method: str, metadata: Any) -> None:
        self.method = method.lstrip("/")
        self.started = time.perf_counter()
        ctx, rid = _received(_carrier(metadata), _settings.maybe_active())
        self._rid_token = set_request_id(rid)
        tp = _settings.tracer_provider()
        self.span: Any = None
        if tp is not None:
            service, _, rpc = self.method.partition("/")
            attrs: dict[str, Any] = {
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": rpc,
            }
            if rid is not None:
                attrs["proxyless.request_id"] = rid
            tracer = tracer_of(tp)
            self.span = tracer.start_span(
                f"Recv.{self.method}", context=ctx, kind=_SERVER, attributes=attrs
            )
            ctx = otel_trace.set_span_in_context(self.span, ctx)
        self._token = otel_context.attach(ctx) if ctx is not None else None
        inst = self.inst = instruments.get()
        if inst is not None:
            inst.server_started.add(1, {"grpc.method": self.method})

    def close(self, status: str, error: BaseException | None = None) -> None:
        """The handler finished with ``status`` (a gRPC status name)."""
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None
        reset_request_id(self._rid_token)
        if self.inst is not None:
            self.inst.server_duration.record(
                time.perf_counter() - self.started,
                {"grpc.method": self.method, "grpc.status": status},
            )
        span = self.span
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", grpc_code(status))
            if status not in ("OK", "NOT_FOUND", "ALREADY_EXISTS", "INVALID_ARGUMENT",
                              "FAILED_PRECONDITION", "OUT_OF_RANGE", "UNAUTHENTICATED",
                              "PERMISSION_DENIED", "CANCELLED", "ABORTED",
                              "RESOURCE_EXHAUSTED"):  # fmt: skip
                # OpenTelemetry's RPC conventions: server spans are errors
                # for the statuses that say the server failed.
                span.set_status(_ERROR, status)
            if error is not None:
                span.record_exception(error)
            span.end()


def status_of(context: Any, error: BaseException | None) -> str:
    """The status a handler ended with, from its servicer context."""
    try:
        code = context.code()
    except Exception:
        code = None
    if code is not None and hasattr(code, "name"):
        return str(code.name)
    if isinstance(code, int):
        from proxyless.status_codes import GRPC_STATUS_NAMES

        return GRPC_STATUS_NAMES[code] if 0 <= code < len(GRPC_STATUS_NAMES) else "UNKNOWN"
    return "OK" if error is None else "UNKNOWN"


@contextlib.contextmanager
def incoming(headers: Any, name: str = "") -> Iterator[None]:
    """Make a received request's trace context and ``x-request-id``
    current while the block runs (for servers that are not proxyless',
    e.g. ``with incoming(request.headers): ...`` in a web handler). With
    ``name`` and a tracer provider, a SERVER span of that name covers the
    block."""
    ctx, rid = _received(_carrier(headers), _settings.maybe_active())
    rid_token = set_request_id(rid)
    span = None
    tp = _settings.tracer_provider() if name else None
    if tp is not None:
        span = tracer_of(tp).start_span(name, context=ctx, kind=_SERVER)
        ctx = otel_trace.set_span_in_context(span, ctx)
    token = otel_context.attach(ctx) if ctx is not None else None
    try:
        yield
    finally:
        if token is not None:
            otel_context.detach(token)
        reset_request_id(rid_token)
        if span is not None:
            span.end()
