"""Effective request timeouts (gRFC A31 for gRPC; Envoy route ``timeout`` for HTTP).

gRPC (gRFC A31): the cap is the route's ``max_stream_duration.grpc_timeout_header_max``
when set, otherwise its ``max_stream_duration``, otherwise the
HttpConnectionManager's ``common_http_protocol_options.max_stream_duration``.
A cap of 0 means "no cap". The effective deadline is the smaller of the
caller's deadline and the cap; the caller's deadline is never extended.

=============  =======================  ===================  ==========
caller         grpc_timeout_header_max  max_stream_duration  effective
=============  =======================  ===================  ==========
unset          unset                    unset or 0           none
unset          unset                    10s                  10s
unset          0s                       any                  none
unset          10s                      any                  10s
20s            unset                    unset or 0           20s
20s            unset                    10s                  10s
20s            0s                       any                  20s
20s            10s                      any                  10s
=============  =======================  ===================  ==========

HTTP (Envoy ``RouteAction.timeout``): 15 s when the route sets none, 0
disables it; the effective timeout is the smaller of that and the caller's.

Both functions return ``(seconds or None, source)`` where ``source`` says in
words where the value came from, e.g. ``"route grpc_timeout_header_max 2s"``,
for ``explain`` output and error messages.
"""

from __future__ import annotations

from proxyless.resources.model import RouteAction

__all__ = [
    "DEFAULT_HTTP_ROUTE_TIMEOUT",
    "apply_cap",
    "format_seconds",
    "grpc_cap",
    "grpc_deadline",
    "http_cap",
    "http_timeout",
]

#: Envoy's default route timeout for HTTP requests.
DEFAULT_HTTP_ROUTE_TIMEOUT = 15.0


def format_seconds(value: float) -> str:
    """``2s``, ``1.5s``, ``0.25s``: a duration for humans."""
    return f"{value:g}s"


def grpc_deadline(
    action: RouteAction,
    listener_max_stream_duration: float | None,
    caller_timeout: float | None,
) -> tuple[float | None, str]:
    """The effective gRPC timeout in seconds (None = none) and its source."""
    if action.grpc_timeout_header_max is not None:
        cap, where = action.grpc_timeout_header_max, "route grpc_timeout_header_max"
    elif action.max_stream_duration is not None:
        cap, where = action.max_stream_duration, "route max_stream_duration"
    elif listener_max_stream_duration is not None:
        cap, where = listener_max_stream_duration, "listener max_stream_duration"
    else:
        cap, where = None, ""
    if cap is not None and cap <= 0:
        note = f"{where} 0s: no cap"
        if caller_timeout is None:
            return None, f"no deadline (caller set none; {note})"
        return caller_timeout, f"caller deadline {format_seconds(caller_timeout)} ({note})"
    if cap is None:
        if caller_timeout is None:
            return None, "no deadline (caller set none; no max_stream_duration configured)"
        return caller_timeout, f"caller deadline {format_seconds(caller_timeout)}"
    if caller_timeout is not None and caller_timeout <= cap:
        return caller_timeout, (
            f"caller deadline {format_seconds(caller_timeout)} "
            f"(within {where} {format_seconds(cap)})"
        )
    return cap, f"{where} {format_seconds(cap)}"


def http_timeout(action: RouteAction, caller_timeout: float | None) -> tuple[float | None, str]:
    """The effective HTTP request timeout in seconds (None = none) and its source."""
    if action.timeout is None:
        route, where = DEFAULT_HTTP_ROUTE_TIMEOUT, "route timeout (default)"
    else:
        route, where = action.timeout, "route timeout"
    if route <= 0:
        if caller_timeout is None:
            return None, "no timeout (caller set none; route timeout 0s disables it)"
        return caller_timeout, f"caller timeout {format_seconds(caller_timeout)}"
    if caller_timeout is not None and caller_timeout <= route:
        return caller_timeout, (
            f"caller timeout {format_seconds(caller_timeout)} "
            f"(within {where} {format_seconds(route)})"
        )
    return route, f"{where} {format_seconds(route)}"


def grpc_cap(action: RouteAction, listener_max_stream_duration: float | None) -> float | None:
    """The route's gRPC deadline cap in seconds, or None for no cap (the value
    half of :func:`grpc_deadline`, for the request path)."""
    if action.grpc_timeout_header_max is not None:
        cap: float | None = action.grpc_timeout_header_max
    elif action.max_stream_duration is not None:
        cap = action.max_stream_duration
    else:
        cap = listener_max_stream_duration
    return cap if cap is not None and cap > 0 else None


def http_cap(action: RouteAction) -> float | None:
    """The route's HTTP timeout in seconds, or None when 0 disables it."""
    route = DEFAULT_HTTP_ROUTE_TIMEOUT if action.timeout is None else action.timeout
    return route if route > 0 else None


def apply_cap(caller_timeout: float | None, cap: float | None) -> float | None:
    """The smaller of the caller's timeout and the cap (None means none)."""
    if cap is None:
        return caller_timeout
    if caller_timeout is None or caller_timeout > cap:
        return cap
    return caller_timeout
