"""httpx exceptions raised by the proxyless transports.

Every failure leaves :mod:`proxyless.httpx` as an ``httpx.RequestError`` (so
``except httpx.ConnectError`` / ``httpx.TimeoutException`` / ``httpx.HTTPError``
in code written for plain httpx keeps working), with the stage that failed
in the message and, when proxyless itself decided, the typed error of
:mod:`proxyless.errors` as ``.proxyless_error`` and ``__cause__``
(the mapping follows httpx's own boundary translation in
``httpx/_transports/default.py``, done once)::

    httpx.RequestError
    ├── httpx.ConnectError
    │   └── MeshConnectError        config, routing or upstream choice failed:
    │                               stage "config" (listener missing, NACKed,
    │                               control plane unreachable), "routing" (no
    │                               virtual host / route), "upstream" (cluster
    │                               missing, no healthy endpoint, circuit
    │                               open, retry budget, overload drop, a TLS
    │                               cluster's credentials missing, a TLS
    │                               handshake or peer identity refused)
    ├── httpx.UnsupportedProtocol
    │   └── MeshRequestError        stage "url": the request URL cannot be
    │                               used (not http/https, no host)
    └── httpx.TimeoutException
        ├── httpx.ReadTimeout
        │   └── MeshReadTimeout     stage "timeout": the route timeout or a
        │                           per-try timeout expired (Envoy flag UT)
        └── httpx.ConnectTimeout
            └── MeshConnectTimeout  the same, while connecting

Errors from an endpoint (refused connection, reset, protocol error) keep
their httpx type; the message gains the route, cluster, endpoint and number
of attempts, and ``__cause__`` is the original exception.

Messages read ``proxyless: GET http://reviews:9080/path: <stage>: <why> [FLAG]``
where FLAG is Envoy's response flag (``NR`` no route, ``UH`` no healthy
upstream, ``UO`` overflow, ``UT`` timeout, ``URX`` retry limit, ``NC``
cluster or config missing, ``DO`` drop overload).
"""

from __future__ import annotations

from typing import Final

import httpx

from proxyless.errors import (
    ProxylessError,
    RoutingError,
    SecurityError,
    UpstreamError,
    XdsConfigError,
)

__all__ = [
    "MeshConnectError",
    "MeshConnectTimeout",
    "MeshHTTPError",
    "MeshReadTimeout",
    "MeshRequestError",
    "UpstreamTimeout",
    "describe_request",
    "mesh_error",
    "security_cause",
    "security_error",
    "stage_of",
    "timeout_error",
    "upstream_error",
]

#: Envoy response flag for a timeout.
_UT: Final = "UT"


class UpstreamTimeout(UpstreamError):
    """The route timeout or a per-try timeout expired (Envoy flag ``UT``)."""

    flag = _UT


class MeshHTTPError:
    """Mixin of every httpx exception proxyless raises itself.

    ``stage`` is where the request failed (``url``, ``config``, ``routing``,
    ``upstream``, ``timeout``); ``proxyless_error`` the typed error.
    """

    stage: str = ""
    proxyless_error: ProxylessError | None = None


class MeshConnectError(MeshHTTPError, httpx.ConnectError):
    """The request was not sent: no usable config, route or endpoint."""


class MeshRequestError(MeshHTTPError, httpx.UnsupportedProtocol):
    """The request URL cannot be used (not http/https, no host)."""


class MeshReadTimeout(MeshHTTPError, httpx.ReadTimeout):
    """The route or per-try timeout expired while waiting for the response."""


class MeshConnectTimeout(MeshHTTPError, httpx.ConnectTimeout):
    """The route or per-try timeout expired while connecting."""


def describe_request(request: httpx.Request) -> str:
    """``GET http://reviews:9080/path`` (the query left out: it may hold secrets)."""
    url = request.url
    netloc = url.netloc.decode("ascii", "replace")
    return f"{request.method} {url.scheme}://{netloc}{url.path}"


def stage_of(error: ProxylessError) -> str:
    """The stage a typed proxyless error belongs to."""
    if isinstance(error, XdsConfigError):
        return "config"
    if isinstance(error, RoutingError):
        return "routing"
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamError):
        return "upstream"
    return "url"


def _text(request: httpx.Request, stage: str, why: str, flag: str) -> str:
    suffix = f" [{flag}]" if flag else ""
    return f"proxyless: {describe_request(request)}: {stage}: {why}{suffix}"


def mesh_error(
    error: ProxylessError, request: httpx.Request, stage: str | None = None
) -> httpx.TransportError:
    """The httpx exception for a proxyless failure (see the module docstring)."""
    stage = stage or stage_of(error)
    text = _text(request, stage, str(error), error.flag)
    exc: MeshRequestError | MeshReadTimeout | MeshConnectError
    if stage == "url":
        exc = MeshRequestError(text, request=request)
    elif stage == "timeout":
        exc = MeshReadTimeout(text, request=request)
    else:
        exc = MeshConnectError(text, request=request)
    exc.stage = stage
    exc.proxyless_error = error
    exc.__cause__ = error
    return exc


def timeout_error(
    request: httpx.Request,
    why: str,
    cause: BaseException | None,
    *,
    connecting: bool = False,
    flags: str = _UT,
) -> httpx.TimeoutException:
    """The httpx timeout for an expired route or per-try timeout."""
    error = UpstreamTimeout(why)
    text = _text(request, "timeout", why, flags)
    exc: MeshConnectTimeout | MeshReadTimeout = (
        MeshConnectTimeout(text, request=request)
        if connecting
        else MeshReadTimeout(text, request=request)
    )
    exc.stage = "timeout"
    exc.proxyless_error = error
    exc.__cause__ = cause if cause is not None else error
    return exc


def upstream_error(
    exc: httpx.TransportError, request: httpx.Request, where: str, flags: str = ""
) -> httpx.TransportError:
    """``exc`` (raised by an endpoint's connection) again, same type, with ``where``
    (route, cluster, endpoint, attempts) and Envoy's response ``flags``
    added to the message."""
    suffix = f" [{flags}]" if flags else ""
    text = f"proxyless: {describe_request(request)}: upstream: {exc} ({where}){suffix}"
    try:
        out = type(exc)(text, request=request)
    except TypeError:  # an exception type with another signature: keep the original
        return exc
    out.__cause__ = exc
    return out


def security_cause(exc: BaseException) -> SecurityError | None:
    """The :class:`~proxyless.errors.SecurityError` behind an endpoint's
    connect error (a refused TLS handshake or peer identity), if any."""
    # httpcore's pool re-raises a connection's error ``from None``: the
    # refusal travels as that error's ``proxyless_error`` attribute.
    cause: BaseException | None = exc
    for _ in range(4):
        cause = cause.__cause__ if cause is not None else None
        found = getattr(cause, "proxyless_error", cause)
        if isinstance(found, SecurityError):
            return found
    return None


def security_error(
    error: SecurityError, request: httpx.Request, where: str, cause: httpx.TransportError
) -> MeshConnectError:
    """The error of a request whose last attempt failed TLS (``error``);
    ``where`` names the route, cluster, endpoint and attempts."""
    flag = error.flag or "UF"
    exc = MeshConnectError(_text(request, "upstream", f"{error} ({where})", flag), request=request)
    exc.stage = "upstream"
    exc.proxyless_error = error
    exc.__cause__ = error
    if error.__cause__ is None:
        error.__cause__ = cause
    return exc
