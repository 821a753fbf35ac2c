"""What proxyless reports, and to whom: the process-wide telemetry switches.

proxyless speaks the OpenTelemetry **API** only (``opentelemetry-api``);
the SDK, exporters and propagators are the application's choice:

- spans go to the global tracer provider (``trace.set_tracer_provider``),
  or to the one given to :func:`configure`; with none installed no span is
  made and the cost is one attribute read per call;
- metrics go to the global meter provider (or the one given); likewise;
- context crosses hops through the global propagator
  (``propagate.set_global_textmap``; OpenTelemetry's default is W3C
  ``traceparent``/``tracestate`` plus ``baggage``; B3 when the application
  installs ``opentelemetry-propagator-b3``). Propagation works without an
  SDK: a context a proxyless server received is passed on by the calls its
  handler makes;
- ``x-request-id`` (Envoy's request id): kept when the request has one, and
  passed on by the calls a proxyless server's handler makes; generated (a
  random UUID4, the same on every attempt of a call) when the call is
  traced or logged (``request_id`` ``None``, the default: "auto"), on every
  call with ``request_id=True`` (Envoy's ``generate_request_id``; it costs
  a gRPC call about 3% of its latency: one more header no cache can index),
  never with ``False``;
- access logs (:mod:`proxyless.observability.access_log`): off by default.

Switches, in order of precedence: :func:`configure` arguments, then the
environment (``PROXYLESS_TRACING=0`` turns spans off, ``PROXYLESS_METRICS=0``
metrics, ``PROXYLESS_REQUEST_ID=0`` the request id and ``=1`` generates
one on every call,
``PROXYLESS_PROPAGATION=0`` header propagation, ``PROXYLESS_ACCESS_LOG=1``
turns access logs on and ``PROXYLESS_ACCESS_LOG_SAMPLE=0.1`` samples them).
"""

from __future__ import annotations

import contextvars
import os
import random
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace

__all__ = [
    "REQUEST_ID",
    "Settings",
    "configure",
    "current_request_id",
    "maybe_active",
    "meter_provider",
    "new_request_id",
    "request_id_for",
    "settings",
    "tracer_provider",
]

#: Envoy's request id header.
REQUEST_ID = "x-request-id"

#: The request id of the request a proxyless server is handling (set around
#: its handler); calls made by the handler send it on.
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "proxyless_request_id", default=None
)


def current_request_id() -> str | None:
    """The ``x-request-id`` of the request being handled, if any."""
    return _request_id.get()


def request_id_for(given: str | None, recorded: bool) -> str | None:
    """The ``x-request-id`` of a call or received request: ``given`` (the
    request's own), else the one of the request being served, else a new
    one when ``request_id`` is True, or is "auto" and the call is
    ``recorded`` (traced or logged); None when ``request_id`` is False."""
    if given is not None:
        return given
    mode = settings.request_id
    if mode is False:
        return None
    rid = _request_id.get()
    if rid is None and (mode or recorded):
        rid = new_request_id()
    return rid


def set_request_id(value: str | None) -> contextvars.Token[str | None]:
    return _request_id.set(value)


def reset_request_id(token: contextvars.Token[str | None]) -> None:
    _request_id.reset(token)


_rid = random.Random()


#: the UUID variant digit (8, 9, a or b) for each random hex digit
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def new_request_id() -> str:
    """A random UUID4 in its canonical text form (as Envoy generates)."""
    h = _rid.getrandbits(128).to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def _env_on(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


def _env_tristate(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "" or raw.strip().lower() == "auto":
        return None
    return _env_on(name, True)


def _env_rate(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        rate = float(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r}: expected a sampling rate between 0 and 1") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"${name}={raw!r}: expected a sampling rate between 0 and 1")
    return rate


@dataclass
class Settings:
    """The process-wide switches (see the module docstring)."""

    tracing: bool = True
    metrics: bool = True
    propagation: bool = True
    #: None: generate only for traced or logged calls (see the module docstring)
    request_id: bool | None = None
    access_log: bool = False
    access_log_sample: float = 1.0
    #: explicit providers (None: the global ones)
    tracer_provider: Any = None
    meter_provider: Any = None

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            tracing=_env_on("PROXYLESS_TRACING", True),
            metrics=_env_on("PROXYLESS_METRICS", True),
            propagation=_env_on("PROXYLESS_PROPAGATION", True),
            request_id=_env_tristate("PROXYLESS_REQUEST_ID"),
            access_log=_env_on("PROXYLESS_ACCESS_LOG", False),
            access_log_sample=_env_rate("PROXYLESS_ACCESS_LOG_SAMPLE", 1.0),
        )


settings = Settings.from_env()

# The global providers, read without the API's per-call environment lookup:
# set_tracer_provider / set_meter_provider can be called once, after which
# the module global holds the provider. When the API's layout changes, the
# public getters are used (slower, same answer).
_TRACE_GLOBAL = hasattr(otel_trace, "_TRACER_PROVIDER")
try:
    from opentelemetry.metrics import _internal as _metrics_internal

    _METRICS_GLOBAL = hasattr(_metrics_internal, "_METER_PROVIDER")
except ImportError:  # pragma: no cover - a different API layout
    _metrics_internal = None  # type: ignore[assignment]
    _METRICS_GLOBAL = False


#: Providers named by the environment (the API makes them on first use).
_ENV_PROVIDERS = bool(
    os.environ.get("OTEL_PYTHON_TRACER_PROVIDER") or os.environ.get("OTEL_PYTHON_METER_PROVIDER")
)


def maybe_active() -> bool:
    """Cheap pre-check on every call: False only when no span, metric or
    access-log line can be made (no provider given, none set globally,
    access logs off). True means "ask :func:`tracer_provider` and
    :func:`meter_provider`"."""
    s = settings
    if s.access_log or s.tracer_provider is not None or s.meter_provider is not None:
        return True
    if _ENV_PROVIDERS or not (_TRACE_GLOBAL and _METRICS_GLOBAL):
        return True
    return otel_trace._TRACER_PROVIDER is not None or _metrics_internal._METER_PROVIDER is not None


def tracer_provider() -> Any:
    """The tracer provider spans go to, or None when no SDK is installed
    (or tracing is switched off)."""
    s = settings
    if not s.tracing:
        return None
    if s.tracer_provider is not None:
        return s.tracer_provider
    if _TRACE_GLOBAL:
        p = otel_trace._TRACER_PROVIDER
        if p is None:
            if not _ENV_PROVIDERS:
                return None
            p = otel_trace.get_tracer_provider()
    else:  # pragma: no cover
        p = otel_trace.get_tracer_provider()
    if isinstance(p, (otel_trace.ProxyTracerProvider, otel_trace.NoOpTracerProvider)):
        return None
    return p


def meter_provider() -> Any:
    """The meter provider metrics go to, or None (no SDK, or switched off)."""
    s = settings
    if not s.metrics:
        return None
    if s.meter_provider is not None:
        return s.meter_provider
    if _METRICS_GLOBAL:
        p = _metrics_internal._METER_PROVIDER
        if p is None:
            if not _ENV_PROVIDERS:
                return None
            p = otel_metrics.get_meter_provider()
    else:  # pragma: no cover
        p = otel_metrics.get_meter_provider()
    if isinstance(p, otel_metrics.NoOpMeterProvider) or type(p).__name__ == "_ProxyMeterProvider":
        return None
    return p


_UNSET: Any = object()


def configure(
    *,
    tracing: bool | None = None,
    metrics: bool | None = None,
    propagation: bool | None = None,
    request_id: bool | Literal["auto"] | None = None,
    access_log: bool | None = None,
    access_log_sample: float | None = None,
    tracer_provider: Any = _UNSET,
    meter_provider: Any = _UNSET,
) -> Settings:
    """Change the telemetry switches (arguments left out keep their value);
    returns the settings now in force. ``request_id``: True, False or
    ``"auto"`` (the default; see the module docstring). ``tracer_provider`` /
    ``meter_provider``: use these instead of the global providers (None:
    back to the global ones)."""
    s = settings
    if access_log_sample is not None and not 0.0 <= access_log_sample <= 1.0:
        raise ValueError(
            f"access_log_sample={access_log_sample!r}: expected a rate between 0 and 1"
        )
    for name, value in (
        ("tracing", tracing),
        ("metrics", metrics),
        ("propagation", propagation),
        ("access_log", access_log),
        ("access_log_sample", access_log_sample),
    ):
        if value is not None:
            setattr(s, name, value)
    if request_id is not None:
        if request_id not in (True, False, "auto"):
            raise ValueError(f"request_id={request_id!r}: expected True, False or 'auto'")
        s.request_id = None if request_id == "auto" else bool(request_id)
    if tracer_provider is not _UNSET:
        s.tracer_provider = tracer_provider
    if meter_provider is not _UNSET:
        s.meter_provider = meter_provider
    return s
