"""Envoy's response flags: the short codes that say why a request did not
get a plain upstream answer, the same words in errors, spans and access logs.

Envoy documents the vocabulary under "Access logging → Format rules →
%RESPONSE_FLAGS%". proxyless sets the flags whose cause it can know:

====  ==========================================  ================================
flag  stage                                       typical cause
====  ==========================================  ================================
NR    routing                                     no virtual host or route matched;
                                                  a non-forwarding route on gRPC
NC    routing (cluster)                           the cluster is missing, NACKed or
                                                  not yet received
UH    upstream (picking)                          no healthy endpoint; the control
                                                  plane unreachable with nothing
                                                  cached
UO    upstream (circuit breaker)                  a breaker limit was reached
                                                  (``max_requests``,
                                                  ``max_pending_requests``, ...)
DO    upstream (EDS ``drop_overloads``)           the control plane asked for drops
UF    upstream (connecting)                       connection refused, connect
                                                  timeout, TLS handshake or peer
                                                  identity rejected
UC    upstream (connection)                       the connection broke after the
                                                  request was sent
UR    upstream (stream)                           the server refused the stream
                                                  (HTTP/2 REFUSED_STREAM)
UT    upstream (timeouts)                         the route timeout or a per-try
                                                  timeout expired
UMSDR upstream (timeouts)                         a gRPC call's deadline came from
                                                  the route's max_stream_duration
                                                  and expired
URX   retries                                     retries ran out (attempts or the
                                                  retry budget) on a retriable
                                                  failure
FI    fault filter                                an injected abort
DI    fault filter                                an injected delay
DC    caller                                      the caller cancelled the call
====  ==========================================  ================================

A call that ends with the backend's own answer (any gRPC status or HTTP
response it sent) carries no flag unless one of the above also happened
(e.g. ``URX`` after the last retriable 503, ``DI`` after an injected delay).
Several flags are joined with ``,`` in Envoy's order.
"""

from __future__ import annotations

from proxyless.resilience.outcome import Outcome

__all__ = ["FLAG_ORDER", "join", "outcome_flag"]

#: Envoy's order of the flags when several apply.
FLAG_ORDER = (
    "UH", "UF", "UO", "NR", "UT", "UC", "UR", "DC", "DI", "FI", "URX", "NC", "DO", "UMSDR",
)  # fmt: skip

_BY_KIND = {
    "connect_failure": "UF",
    "reset": "UC",
    "refused_stream": "UR",
    "timeout": "UT",
    "local_circuit_open": "UO",
}


def outcome_flag(outcome: Outcome) -> str:
    """The flag of an attempt's outcome ("" for answers from the backend)."""
    return _BY_KIND.get(outcome.kind, "")


def join(flags: set[str]) -> str:
    """``flags`` in Envoy's order, comma-separated ("-" for none, as Envoy prints)."""
    if not flags:
        return "-"
    known = [f for f in FLAG_ORDER if f in flags]
    extra = sorted(flags.difference(FLAG_ORDER))
    return ",".join(known + extra)
