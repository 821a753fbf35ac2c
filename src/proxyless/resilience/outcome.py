"""Attempt outcomes: what one upstream attempt ended with, classified once.

The transport adapters (gRPC channel, httpx transport) build one
:class:`Outcome` per attempt and hand it to the retry decision
(:mod:`proxyless.resilience.retry`), outlier detection
(:mod:`proxyless.resilience.outlier`) and metrics. Shared singletons
(:data:`SUCCESS`, :data:`CONNECT_FAILURE` ...) keep the common cases free of
allocation.

Kinds
-----
``success``
    gRPC status OK; an HTTP response with status below 400 (``status`` may
    carry the code so ``retriable-status-codes`` can see it).
``error_status``
    gRPC: a non-OK status, ``status`` is its canonical name
    (``"UNAVAILABLE"``); HTTP: a response with status >= 400, ``status`` is
    the int.
``reset``
    the stream or connection broke after the request was sent (HTTP/2
    RST_STREAM other than REFUSED_STREAM, GOAWAY, connection closed; gRPC
    UNAVAILABLE raised by the transport after the connection was up).
``connect_failure``
    no connection could be made (refused, TLS handshake failure, connect
    timeout); gRPC "UNAVAILABLE on connect".
``refused_stream``
    the server refused the stream before processing it (HTTP/2
    REFUSED_STREAM); the request is known not to have been processed.
``timeout``
    a per-try timeout (``per_try_timeout=True``) or the overall deadline /
    route timeout fired locally.
``local_circuit_open``
    the attempt never left the process because a circuit breaker refused
    it (gRFC A32); never retried, never counted against the endpoint.

Server pushback (gRFC A6 ``grpc-retry-pushback-ms``, HTTP ``Retry-After``)
is parsed by :func:`parse_grpc_pushback` / :func:`parse_retry_after` and
stored in ``pushback``: seconds, ``"stop"`` (do not retry), or None.

Outlier-detection mapping (documented in ``docs/resilience.md``), following
Envoy's ``outlier_detection`` architecture doc and its gRPC-to-HTTP status
mapping (``Grpc::Utility::grpcToHttpStatus``):

=============================  ======================  =====================
outcome                        counts as (no split)    with split
=============================  ======================  =====================
success, 4xx, other gRPC       success                 success (both)
HTTP 500/501/505+, gRPC        5xx                     external 5xx
INTERNAL/UNKNOWN/DATA_LOSS
HTTP 502/503/504, gRPC         5xx + gateway           external 5xx + gateway
UNAVAILABLE/DEADLINE_EXCEEDED
reset (transport failure)      5xx + gateway (503)     external 5xx + gateway
connect_failure                5xx + gateway (503)     local-origin failure
refused_stream                 5xx + gateway (503)     local-origin failure
timeout                        5xx + gateway (504)     local-origin failure
local_circuit_open             not counted             not counted
=============================  ======================  =====================

gRPC UNIMPLEMENTED (HTTP 501 in Envoy's table) is deliberately *not* a
failure: a method missing on every backend would otherwise eject them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

from proxyless.status_codes import GRPC_STATUS_NAMES

__all__ = [
    "CONNECT_FAILURE",
    "GRPC_STATUS_CODES",
    "GRPC_STATUS_NAMES",
    "LOCAL_CIRCUIT_OPEN",
    "OVERALL_TIMEOUT",
    "PER_TRY_TIMEOUT",
    "REFUSED_STREAM",
    "RESET",
    "SUCCESS",
    "Outcome",
    "OutcomeKind",
    "Pushback",
    "grpc_status_name",
    "http_status_to_grpc",
    "parse_grpc_pushback",
    "parse_retry_after",
]

OutcomeKind: TypeAlias = Literal[
    "success",
    "error_status",
    "reset",
    "connect_failure",
    "timeout",
    "refused_stream",
    "local_circuit_open",
]

#: Seconds to wait before the next attempt, ``"stop"`` (the server asked for
#: no retry), or None (no pushback: use the policy's backoff).
Pushback: TypeAlias = float | Literal["stop"] | None

#: gRPC status codes by canonical name.
GRPC_STATUS_CODES: Final[Mapping[str, int]] = MappingProxyType(
    {name: code for code, name in enumerate(GRPC_STATUS_NAMES)}
)

_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


def _no_headers() -> Mapping[str, str]:
    return _NO_HEADERS


def grpc_status_name(code: int) -> str:
    """The canonical name of a gRPC status code; unknown codes map to ``UNKNOWN``
    (as gRPC does for codes outside 0-16)."""
    if 0 <= code < len(GRPC_STATUS_NAMES):
        return GRPC_STATUS_NAMES[code]
    return "UNKNOWN"


def http_status_to_grpc(status: int) -> int:
    """gRPC status code for an HTTP status, per gRPC's
    ``doc/http-grpc-status-mapping.md`` (used for fault aborts given as HTTP
    status on gRPC calls, gRFC A33)."""
    if status == 400:
        return 13  # INTERNAL
    if status == 401:
        return 16  # UNAUTHENTICATED
    if status == 403:
        return 7  # PERMISSION_DENIED
    if status == 404:
        return 12  # UNIMPLEMENTED
    if status in (429, 502, 503, 504):
        return 14  # UNAVAILABLE
    return 2  # UNKNOWN


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended (see the module docstring for the kinds).

    ``headers`` are the response headers (lower-case names, repeated values
    joined with ``","``) when a response was received; ``retriable-headers``
    and rate-limited backoff read them. ``per_try_timeout`` tells a per-try
    timeout from the overall deadline for kind ``timeout``.
    """

    kind: OutcomeKind
    status: str | int | None = None
    pushback: Pushback = None
    headers: Mapping[str, str] = field(default_factory=_no_headers, compare=False)
    per_try_timeout: bool = False

    @classmethod
    def grpc(cls, code: int | str, *, pushback: Pushback = None) -> Outcome:
        """Outcome for a gRPC status (code or canonical name) received on the call."""
        name = grpc_status_name(code) if isinstance(code, int) else code.upper()
        if name == "OK":
            return SUCCESS if pushback is None else cls("success", "OK", pushback)
        return cls("error_status", name, pushback)

    @classmethod
    def http(
        cls,
        status: int,
        headers: Mapping[str, str] = _NO_HEADERS,
        *,
        pushback: Pushback = None,
    ) -> Outcome:
        """Outcome for an HTTP response: ``success`` below 400, else ``error_status``."""
        kind: OutcomeKind = "success" if status < 400 else "error_status"
        return cls(kind, status, pushback, headers)

    def describe(self) -> str:
        """Short text for error messages, e.g. ``UNAVAILABLE`` or ``HTTP 503``."""
        if self.kind == "error_status":
            return f"HTTP {self.status}" if isinstance(self.status, int) else str(self.status)
        if self.kind == "timeout":
            return "per-try timeout" if self.per_try_timeout else "timeout"
        return self.kind.replace("_", " ")


SUCCESS: Final = Outcome("success")
RESET: Final = Outcome("reset")
CONNECT_FAILURE: Final = Outcome("connect_failure")
REFUSED_STREAM: Final = Outcome("refused_stream")
PER_TRY_TIMEOUT: Final = Outcome("timeout", per_try_timeout=True)
OVERALL_TIMEOUT: Final = Outcome("timeout")
LOCAL_CIRCUIT_OPEN: Final = Outcome("local_circuit_open")


def parse_grpc_pushback(value: str | bytes | None) -> Pushback:
    """Parse ``grpc-retry-pushback-ms`` (gRFC A6).

    Absent (None) gives None: no pushback, use the policy's backoff. A
    non-negative decimal integer gives that many milliseconds, in seconds.
    Anything else (negative, empty, not an integer) gives ``"stop"``: the
    server asked the client not to retry.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return "stop"
    text = value.strip()
    if not text or not text.isascii() or not text.isdigit():
        return "stop"
    return int(text) / 1000.0


def parse_retry_after(value: str | bytes | None, now_wall: float) -> float | None:
    """Parse an HTTP ``Retry-After`` value (RFC 9110 section 10.2.3) to seconds.

    Accepts delta-seconds (a non-negative integer) or an HTTP-date, compared
    with ``now_wall`` (seconds since the epoch; a date in the past gives 0).
    Returns None when absent or not understood (the header is then ignored).
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # the asctime form carries no zone; HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now_wall)
