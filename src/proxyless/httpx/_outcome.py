"""An attempt's outcome, classified once, and the replies a transport makes itself.

Every attempt ends as one :class:`~proxyless.resilience.outcome.Outcome`
that feeds outlier detection, the retry policy and the retry budget:

- a response: its status and headers, with ``Retry-After`` read as Envoy's
  ``rate_limited_retry_back_off`` would when the policy sets none (a
  longer wait than ``max_retry_after`` ends the retries); a success the
  policy still retries (``retriable-status-codes`` below 400,
  ``retriable-headers``) is reported as an error status to the retry
  decision and as a success to outlier detection;
- an httpx error: a proxyless timeout (route ``timeout`` or
  ``per_try_timeout``), a connect failure (``connect-failure``, httpx's
  connect timeout included, and a TLS cluster's failed handshake or peer
  identity check) or a reset (``reset``).

Envoy's router docs (``x-envoy-retry-on``, "Retry semantics") are the
reference. A retry needs a replayable body and, when the policy sets
``retriable_request_headers``, a request they match (the pseudo-headers
``:method``, ``:path``, ``:authority``, ``:scheme`` included).

Local replies (:func:`local_reply`) carry the extension
``proxyless_local_reply``: redirects, direct responses, the fault filter's
aborts (Envoy's HTTP fault filter: ``fault filter abort``) and its delays
(:func:`fault_delay`).
"""

from __future__ import annotations

import time
from typing import Final

import httpx

from proxyless.errors import ProxylessError
from proxyless.httpx._errors import (
    mesh_error,
    security_cause,
    security_error,
    timeout_error,
    upstream_error,
)
from proxyless.httpx._upstream import Routed, lower_headers
from proxyless.resilience.outcome import (
    CONNECT_FAILURE,
    OVERALL_TIMEOUT,
    PER_TRY_TIMEOUT,
    RESET,
    SUCCESS,
    Outcome,
    parse_retry_after,
)
from proxyless.runtime.call import Attempt

__all__ = [
    "allows_retry",
    "error_outcome",
    "failure",
    "fault_delay",
    "fault_response",
    "local_reply",
    "response_outcome",
]

_FAULT_BODY: Final = b"fault filter abort"


def local_reply(
    request: httpx.Request, status: int, headers: list[tuple[str, str]], body: bytes
) -> httpx.Response:
    """A response the transport makes without an upstream (a ``HEAD``
    request gets the status and headers without the body, as from Envoy)."""
    return httpx.Response(
        status,
        headers=headers,
        stream=httpx.ByteStream(b"" if request.method == "HEAD" else body),
        request=request,
        extensions={"proxyless_local_reply": True},
    )


#: Envoy's HTTP connection manager limits on request headers (its defaults:
#: ``max_request_headers_kb`` 60, ``common_http_protocol_options.max_headers_count`` 100).
MAX_REQUEST_HEADERS_BYTES = 60 * 1024
MAX_REQUEST_HEADERS = 100


def oversized_headers(request: httpx.Request) -> httpx.Response | None:
    """The local 431 answer Envoy gives a request whose headers pass its
    limits (more than :data:`MAX_REQUEST_HEADERS` headers, or more than
    :data:`MAX_REQUEST_HEADERS_BYTES` of names and values); None otherwise."""
    raw = request.headers.raw
    count = len(raw)
    size = 0
    for key, value in raw:
        size += len(key) + len(value)
    if count <= MAX_REQUEST_HEADERS and size <= MAX_REQUEST_HEADERS_BYTES:
        return None
    why = (
        f"{count} request headers, over the limit of {MAX_REQUEST_HEADERS}"
        if count > MAX_REQUEST_HEADERS
        else f"request headers of {size} bytes, over the limit of {MAX_REQUEST_HEADERS_BYTES}"
    )
    body = f"proxyless: {why} (Envoy's defaults)\n".encode()
    headers = [("content-length", str(len(body))), ("content-type", "text/plain")]
    return local_reply(request, 431, headers, body)


def fault_response(r: Routed) -> httpx.Response | None:
    """The fault filter's abort for ``r``, if it aborts."""
    fault = r.call.fault
    if fault.abort_http is not None:
        return local_reply(
            r.request,
            fault.abort_http,
            [("content-length", str(len(_FAULT_BODY))), ("content-type", "text/plain")],
            _FAULT_BODY,
        )
    if fault.abort_grpc is not None:
        return local_reply(
            r.request,
            200,
            [
                ("content-type", "application/grpc"),
                ("grpc-status", str(fault.abort_grpc)),
                ("grpc-message", "fault filter abort"),
                ("content-length", "0"),
            ],
            b"",
        )
    return None


def fault_delay(r: Routed) -> tuple[float, Exception | None]:
    """The fault filter's delay (Envoy HTTP fault filter): seconds to wait,
    then the error to end the request with when the delay outlasts the
    request's timeout."""
    delay = r.call.fault.delay
    if delay is None:
        return 0.0, None
    remaining = r.call.remaining()
    if remaining is not None and remaining < delay:
        why = f"{r.why_timeout} expired during an injected delay of {delay:g}s"
        return max(0.0, remaining), timeout_error(r.request, why, None)
    return delay, None


def response_outcome(r: Routed, response: httpx.Response, max_retry_after: float) -> Outcome:
    """The outcome of an attempt that got ``response``."""
    status = response.status_code
    policy = r.call.retry_policy
    if status < 400 and not policy.inspects_success:
        return SUCCESS
    headers = lower_headers(response.headers)
    pushback: float | str | None = None
    if policy.rate_limited is None:
        after = parse_retry_after(headers.get("retry-after"), time.time())
        if after is not None:
            pushback = after if after <= max_retry_after else "stop"
    outcome = Outcome.http(status, headers, pushback=pushback)  # type: ignore[arg-type]
    if outcome.kind == "success" and policy.enabled and policy.retryable(outcome):
        # A success the policy still retries (retriable-status-codes below
        # 400, retriable-headers): report it as a status the retry
        # decision acts on; outlier detection counts it as a success.
        outcome = Outcome("error_status", status, outcome.pushback, headers)
    return outcome


def error_outcome(attempt: Attempt, exc: httpx.TransportError) -> tuple[Outcome, bool]:
    """(outcome, ours): ``ours`` is True when a proxyless timeout fired."""
    if isinstance(exc, httpx.TimeoutException):
        if attempt.timed_out():
            return (PER_TRY_TIMEOUT if attempt.per_try else OVERALL_TIMEOUT), True
        if isinstance(exc, httpx.ConnectTimeout):
            return CONNECT_FAILURE, False
        return OVERALL_TIMEOUT, False
    if isinstance(exc, httpx.ConnectError):
        return CONNECT_FAILURE, False
    return RESET, False


def allows_retry(r: Routed) -> bool:
    """Whether ``r`` may be sent again: a replayable body, and a request the
    policy's ``retriable_request_headers`` match (when it has any)."""
    if not r.can_replay():
        return False
    policy = r.call.retry_policy
    if not policy.retriable_request_headers:
        return True
    request = r.request
    headers = dict(lower_headers(request.headers))
    headers.pop("host", None)
    headers[":method"] = request.method
    headers[":path"] = r.raw_path
    headers[":authority"] = r.authority
    headers[":scheme"] = r.scheme
    return policy.request_allows_retry(headers)


def _where(r: Routed, attempt: Attempt | None) -> str:
    text = r.call.describe()
    if attempt is not None:
        text = f"{text}, last endpoint {attempt.endpoint.address}"
    return text


def failure(r: Routed, attempt: Attempt, exc: httpx.TransportError, ours: bool) -> Exception:
    """The error a request ends with after its last attempt failed with ``exc``."""
    call = r.call
    if isinstance(call.last_error, ProxylessError):  # the retry budget refused a retry
        out = mesh_error(call.last_error, r.request, "upstream")
        out.__cause__ = exc
        return out
    security = security_cause(exc)
    if security is not None:  # TLS handshake or peer identity (proxyless.httpx._tls)
        return security_error(security, r.request, _where(r, attempt), exc)
    urx = ",URX" if call.exhausted else ""
    if ours:
        why = "per-try timeout" if attempt.per_try else r.why_timeout
        connecting = isinstance(exc, httpx.ConnectTimeout)
        return timeout_error(
            r.request,
            f"{why} expired ({_where(r, attempt)})",
            exc,
            connecting=connecting,
            flags=f"UT{urx}",
        )
    flag = "UF" if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) else "UC"
    return upstream_error(exc, r.request, _where(r, attempt), f"{flag}{urx}")
