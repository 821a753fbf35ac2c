"""One call's telemetry: trace context on the wire, spans, metrics and the
access-log line, from events the request path reports.

Spans (OpenTelemetry API; gRFC A72's call/attempt structure, and
OpenTelemetry's semantic conventions for names and attributes):

- a **call span** per call the application makes, kind CLIENT, a child of
  the context current when the call is made: ``Sent.<service>/<method>``
  for gRPC (A72's name), the HTTP method (``GET``) for httpx;
- an **attempt span** per attempt, a child of the call span, kind
  INTERNAL: ``Attempt.<service>/<method>`` or ``Attempt GET``. Retries and
  hedges each get one, so they are visible; the context sent to the
  backend is the attempt span's, so a backend's server span hangs under
  the attempt that reached it.

Attributes: ``rpc.system``, ``rpc.service``, ``rpc.method``,
``rpc.grpc.status_code`` (gRPC) or ``http.request.method``,
``http.response.status_code``, ``url.full`` (HTTP); ``server.address`` /
``server.port`` (the target on the call span, the endpoint on attempt
spans); ``proxyless.route``, ``proxyless.cluster``, ``proxyless.locality``,
``proxyless.attempt`` (1-based) and A72's ``previous-rpc-attempts``,
``proxyless.retry_reason`` (the previous attempt's outcome),
``proxyless.response_flags`` (:mod:`proxyless.observability.flags`),
``proxyless.request_id``.

Without a tracer provider no span is made: the context current when the
call is made (e.g. the one a proxyless server received) is injected as it
is, and ``x-request-id`` added (:mod:`proxyless.observability.settings`).
Metrics: :mod:`proxyless.observability.instruments`. Access log:
:mod:`proxyless.observability.access_log`.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.propagators.textmap import Setter

from proxyless.observability import access_log, instruments
from proxyless.observability import settings as _settings
from proxyless.observability.flags import join, outcome_flag
from proxyless.observability.settings import REQUEST_ID, request_id_for
from proxyless.resilience.outcome import Outcome

__all__ = [
    "CallTelemetry",
    "base_headers",
    "grpc_code",
    "recorders",
    "start_call",
    "status_name",
    "tracer_of",
]

_CLIENT = otel_trace.SpanKind.CLIENT
_INTERNAL = otel_trace.SpanKind.INTERNAL
_ERROR = otel_trace.StatusCode.ERROR


class _Setter(Setter[list[tuple[str, str]]]):
    """OpenTelemetry setter into a list of ``(name, value)`` pairs."""

    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


_SETTER = _Setter()


def base_headers(request_id: str | None) -> tuple[tuple[str, str], ...]:
    """The headers every attempt of a call sends when no span is made: the
    request id and the current context, injected as it is. ``request_id``
    is the one the request already carries (then it is not added again)."""
    out: list[tuple[str, str]] = []
    if request_id is None:
        # nothing records this call: an id is passed on, or made only when
        # asked for on every call
        rid = request_id_for(None, recorded=False)
        if rid is not None:
            out.append((REQUEST_ID, rid))
    if _settings.settings.propagation:
        ctx = otel_context.get_current()
        if ctx:
            propagate.inject(out, context=ctx, setter=_SETTER)
    return tuple(out)


_tracers: dict[int, tuple[Any, Any]] = {}


def tracer_of(provider: Any) -> Any:
    """proxyless' tracer from ``provider``, made once per provider (making
    one costs the SDK several microseconds)."""
    got = _tracers.get(id(provider))
    if got is not None and got[0] is provider:
        return got[1]
    from proxyless import __version__

    tracer = provider.get_tracer("proxyless", __version__)
    if len(_tracers) > 16:
        _tracers.clear()
    _tracers[id(provider)] = (provider, tracer)
    return tracer


class CallTelemetry:
    """One call's spans, metrics and log line (see the module docstring).

    The transport makes one with :func:`start_call` when a tracer or meter
    provider is in force or access logs are on, then reports each attempt
    (:meth:`attempt_started`, :meth:`attempt_ended`) and the end
    (:meth:`finish`); :attr:`headers` are what the current attempt sends
    besides the request's own.
    """

    __slots__ = (
        "_attempt_spans",
        "_base",
        "_parent_ctx",
        "attempts",
        "authority",
        "cluster",
        "done",
        "endpoint",
        "flags",
        "grpc",
        "headers",
        "hedges",
        "inst",
        "last_outcome",
        "locality",
        "method",
        "path",
        "request_id",
        "response_status",
        "retries",
        "route",
        "span",
        "started",
        "started_wall",
        "target",
        "tracer",
    )

    def __init__(
        self,
        *,
        grpc: bool,
        method: str,
        target: str,
        authority: str,
        path: str,
        request_id: str | None,
        tracer_provider: Any,
        inst: instruments.Instruments | None,
    ) -> None:
        self.grpc = grpc
        self.method = method  # gRPC: "/pkg.Svc/Method"; HTTP: "GET"
        self.target = target
        self.authority = authority
        self.path = path
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.attempts = 0
        self.done = False
        #: HTTP: the status of the response the next reported attempt got
        self.response_status: int | None = None
        self.retries = 0
        self.hedges = 0
        self.flags: set[str] = set()
        self.last_outcome: Outcome | None = None
        self.route = ""
        self.cluster = ""
        self.locality = ""
        self.endpoint = ""
        self.inst = inst
        self._attempt_spans: dict[int, Any] = {}
        s = _settings.settings
        self.request_id = request_id_for(request_id, recorded=True)
        base: list[tuple[str, str]] = []
        if request_id is None and self.request_id is not None:
            base.append((REQUEST_ID, self.request_id))
        self._base = tuple(base)
        parent = otel_context.get_current()
        self._parent_ctx = parent
        if tracer_provider is not None:
            self.tracer = tracer_of(tracer_provider)
            name = f"Sent.{method.lstrip('/')}" if grpc else method
            self.span = self.tracer.start_span(
                name, context=parent, kind=_CLIENT, attributes=self._call_attributes()
            )
            self.headers = self._base
        else:
            self.tracer = None
            self.span = None
            if s.propagation and parent:
                propagate.inject(base, context=parent, setter=_SETTER)
            self.headers = tuple(base)

    # -- attributes -----------------------------------------------------------------------
    def _call_attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if self.grpc:
            service, _, rpc = self.method.lstrip("/").partition("/")
            attrs["rpc.system"] = "grpc"
            attrs["rpc.service"] = service
            attrs["rpc.method"] = rpc
            attrs["server.address"] = self.authority
        else:
            attrs["http.request.method"] = self.method
            attrs["url.full"] = self.target
            host, _, port = self.authority.rpartition(":")
            if host and port.isdigit():
                attrs["server.address"] = host
                attrs["server.port"] = int(port)
            else:
                attrs["server.address"] = self.authority
        if self.request_id is not None:
            attrs["proxyless.request_id"] = self.request_id
        return attrs

    def call_headers(self) -> tuple[tuple[str, str], ...]:
        """The request id and the call span's context (a request that makes
        no attempt of its own, e.g. one sent outside the mesh)."""
        out = list(self._base)
        if self.span is not None and _settings.settings.propagation:
            ctx = otel_trace.set_span_in_context(self.span, self._parent_ctx)
            propagate.inject(out, context=ctx, setter=_SETTER)
        return tuple(out)

    def routed(self, route: str, cluster: str, fault: Any = None) -> None:
        """The call was routed: the route's name, the cluster, and the fault
        filter's decision for it (``DI`` for a delay, ``FI`` for an abort)."""
        self.route = route
        self.cluster = cluster
        if fault is not None:
            if fault.delay is not None:
                self.flags.add("DI")
            if fault.abort_http is not None or fault.abort_grpc is not None:
                self.flags.add("FI")

    # -- attempts ------------------------------------------------------------------------------
    def attempt_started(self, attempt: Any, hedge: bool = False) -> None:
        """An attempt on ``attempt.endpoint`` is about to be sent."""
        self.attempts += 1
        n = self.attempts
        if n > 1:
            if hedge:
                self.hedges += 1
            else:
                self.retries += 1
        es = attempt.endpoint
        self.endpoint = es.address
        loc = es.locality
        self.locality = (
            f"{loc.region}/{loc.zone}/{loc.sub_zone}"
            if loc.region or loc.zone or loc.sub_zone
            else ""
        )
        inst = self.inst
        if inst is not None:
            if self.grpc:
                inst.attempt_started.add(1, self._grpc_labels())
            if n > 1:
                reason = self.last_outcome.kind if self.last_outcome is not None else "hedge"
                labels = {"proxyless.cluster": self.cluster, "proxyless.retry.reason": reason}
                if hedge:
                    inst.hedges.add(1, {"proxyless.cluster": self.cluster})
                else:
                    inst.retries.add(1, labels)
        attempt.started = time.perf_counter()
        if self.span is None:
            return
        host, port = es.key
        attrs: dict[str, Any] = {
            "proxyless.attempt": n,
            "previous-rpc-attempts": n - 1,
            "server.address": host,
            "server.port": port,
            "proxyless.route": self.route,
            "proxyless.cluster": self.cluster,
        }
        if self.locality:
            attrs["proxyless.locality"] = self.locality
        if n > 1:
            attrs["proxyless.retry_reason"] = (
                "hedge"
                if hedge
                else (self.last_outcome.kind if self.last_outcome is not None else "")
            )
        prefix = f"Attempt.{self.method.lstrip('/')}" if self.grpc else f"Attempt {self.method}"
        ctx = otel_trace.set_span_in_context(self.span, self._parent_ctx)
        span = self.tracer.start_span(prefix, context=ctx, kind=_INTERNAL, attributes=attrs)
        self._attempt_spans[id(attempt)] = span
        headers = list(self._base)
        if _settings.settings.propagation:
            propagate.inject(
                headers,
                context=otel_trace.set_span_in_context(span, self._parent_ctx),
                setter=_SETTER,
            )
        self.headers = tuple(headers)

    def attempt_ended(
        self, attempt: Any, outcome: Outcome, status: str | int | None = None
    ) -> None:
        """An attempt ended with ``outcome`` (``status``: the gRPC status name
        or the HTTP status, None when there was no answer)."""
        self.last_outcome = outcome
        if status is None:
            if self.grpc:
                status = status_name(outcome)
            else:
                status = _http_status(outcome)
                if status is None and outcome.kind == "success":
                    status = self.response_status
        self.response_status = None
        flag = outcome_flag(outcome)
        if flag:
            self.flags.add(flag)
        started = getattr(attempt, "started", None)
        inst = self.inst
        if inst is not None and started is not None:
            elapsed = time.perf_counter() - started
            if self.grpc:
                labels = self._grpc_labels()
                labels["grpc.status"] = str(status) if status is not None else status_name(outcome)
                if self.locality:
                    labels["grpc.lb.locality"] = self.locality
                if self.cluster:
                    labels["grpc.lb.backend_service"] = self.cluster
                inst.attempt_duration.record(elapsed, labels)
            else:
                labels = self._http_labels(attempt.endpoint.key)
                if isinstance(status, int):
                    labels["http.response.status_code"] = status
                else:
                    labels["error.type"] = outcome.kind
                inst.http_request_duration.record(elapsed, labels)
        span = self._attempt_spans.pop(id(attempt), None)
        if span is not None:
            if self.grpc:
                span.set_attribute("rpc.grpc.status_code", _grpc_code(status, outcome))
            elif isinstance(status, int):
                span.set_attribute("http.response.status_code", status)
            if flag:
                span.set_attribute("proxyless.response_flags", flag)
            if outcome.kind != "success":
                span.set_status(_ERROR, outcome.kind)
            span.end()

    # -- the end ----------------------------------------------------------------------------------
    def finish(
        self,
        status: str | int | None,
        error: BaseException | None = None,
        flags: str = "",
        *,
        retries_exhausted: bool = False,
    ) -> None:
        """The call ended: ``status`` is its gRPC status name or HTTP status
        (None: no answer, ``error`` says why); ``flags`` are those of a
        proxyless error it ended with. Only the first report counts."""
        if self.done:
            return
        self.done = True
        if flags:
            self.flags.update(flags.split(","))
        if retries_exhausted:
            self.flags.add("URX")
        for span in self._attempt_spans.values():  # attempts cancelled (hedge losers)
            span.set_attribute("proxyless.cancelled", True)
            span.end()
        self._attempt_spans.clear()
        elapsed = time.perf_counter() - self.started
        flag_text = join(self.flags)
        inst = self.inst
        if inst is not None:
            if self.grpc:
                labels = self._grpc_labels()
                labels["grpc.status"] = str(status) if status is not None else "UNAVAILABLE"
                inst.call_duration.record(elapsed, labels)
                if self.retries:
                    inst.call_retries.record(self.retries, self._grpc_labels())
                if self.hedges:
                    inst.call_hedges.record(self.hedges, self._grpc_labels())
            else:
                labels = self._http_labels(None)
                if isinstance(status, int):
                    labels["http.response.status_code"] = status
                elif error is not None:
                    labels["error.type"] = type(error).__name__
                if self.cluster:
                    labels["proxyless.cluster"] = self.cluster
                inst.http_call_duration.record(elapsed, labels)
        span = self.span
        if span is not None:
            if self.grpc:
                span.set_attribute("rpc.grpc.status_code", _grpc_code(status, None))
            elif isinstance(status, int):
                span.set_attribute("http.response.status_code", status)
            if self.route:
                span.set_attribute("proxyless.route", self.route)
            if self.cluster:
                span.set_attribute("proxyless.cluster", self.cluster)
            span.set_attribute("proxyless.attempts", self.attempts)
            if self.flags:
                span.set_attribute("proxyless.response_flags", flag_text)
            failed = (
                (status != "OK")
                if self.grpc
                else (error is not None or (isinstance(status, int) and status >= 500))
            )
            if failed:
                span.set_status(_ERROR, str(error) if error is not None else str(status))
            if error is not None:
                span.record_exception(error)
            span.end()
        if _settings.settings.access_log:
            trace_id = ""
            sc = span.get_span_context() if span is not None else None
            if sc is None or not sc.is_valid:
                sc = otel_trace.get_current_span(self._parent_ctx).get_span_context()
            if sc.is_valid:
                trace_id = f"{sc.trace_id:032x}"
            access_log.emit(self, status, error, flag_text, elapsed, trace_id)

    def _grpc_labels(self) -> dict[str, Any]:
        return {"grpc.method": self.method.lstrip("/"), "grpc.target": self.target}

    def _http_labels(self, endpoint: tuple[str, int] | None) -> dict[str, Any]:
        labels: dict[str, Any] = {"http.request.method": self.method}
        if endpoint is not None:
            labels["server.address"] = endpoint[0]
            labels["server.port"] = endpoint[1]
        else:
            labels["server.address"] = self.authority
        labels["url.scheme"] = self.path.split("://", 1)[0] if "://" in self.path else "http"
        return labels


_GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip


def status_name(outcome: Outcome) -> str:
    if outcome.kind == "success":
        return "OK"
    if outcome.kind == "timeout":
        return "DEADLINE_EXCEEDED"
    if isinstance(outcome.status, str):
        return outcome.status
    return "UNAVAILABLE"


def _http_status(outcome: Outcome) -> int | None:
    status = outcome.status
    return status if isinstance(status, int) else None


def grpc_code(name: str) -> int:
    """The number of the gRPC status named ``name`` (UNKNOWN if unknown)."""
    return _GRPC_CODES.get(name, 2)


def _grpc_code(status: str | int | None, outcome: Outcome | None) -> int:
    if isinstance(status, str):
        return _GRPC_CODES.get(status, 2)
    if outcome is not None:
        return _GRPC_CODES.get(status_name(outcome), 2)
    return 14


def recorders() -> tuple[Any, instruments.Instruments | None] | None:
    """The tracer provider and instruments a call records to, or None when
    nothing records calls (no provider and access logs off: one cheap check)."""
    if not _settings.maybe_active():
        return None
    tp = _settings.tracer_provider()
    inst = instruments.get()
    if tp is None and inst is None and not _settings.settings.access_log:
        return None
    return tp, inst


def start_call(
    *,
    grpc: bool,
    method: str,
    target: str,
    authority: str,
    path: str = "",
    request_id: str | None = None,
) -> CallTelemetry | None:
    """A :class:`CallTelemetry` when spans, metrics or access logs are on;
    None otherwise (the transport then sends :func:`base_headers`)."""
    found = recorders()
    if found is None:
        return None
    tp, inst = found
    return CallTelemetry(
        grpc=grpc,
        method=method,
        target=target,
        authority=authority,
        path=path,
        request_id=request_id,
        tracer_provider=tp,
        inst=inst,
    )
