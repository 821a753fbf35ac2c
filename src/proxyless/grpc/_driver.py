"""The attempt driver: retries, hedging, per-try timeouts and stream retries
of a gRPC call, written once and free of I/O.

A driver is a generator over a routed :class:`~proxyless.runtime.call.Call`.
It decides and *yields steps*; an executor carries each step out and sends
back what happened. The sync channel's executor blocks (:mod:`._sync`), the
``grpc.aio`` channel's awaits (:mod:`._aio_call`), and the callback-driven
:class:`~proxyless.grpc._retrying.RetryingCall` sends from grpc's completion
callbacks; all three share every decision here (the way h11 and httpcore
keep protocol apart from I/O). The steps:

``Run(attempt)``
    make the attempt on ``attempt.conn`` (replaying a buffered client stream
    if the call has one) and wait for its end; the executor sends back
    ``(result, None)`` or ``(None, rpc_error)``.
``Launch(attempt)``
    start the attempt without waiting (hedging); sends back nothing.
``WaitAny(timeout)``
    wait until a launched attempt has ended, or ``timeout`` seconds; sends
    back ``(attempt, result, rpc_error)`` for one ended attempt, or None on
    timeout. When a driver stops, the executor cancels the attempts it has
    not reported (running or ended) and gives back what they hold.
``Start(attempt)``
    start a streaming attempt and hand it to the reader; sends back
    ``(outcome, rpc_error, committed)`` when the attempt has ended.
``Sleep(seconds)``
    back off before the next attempt.

Drivers return the call's result or raise the ``grpc.RpcError`` it ends
with. The rules they follow:

- Retries (gRFC A44; Envoy ``retry_policy``): every failed attempt is
  classified once (:func:`classify_status`: a per-try timeout, the call's
  own deadline, a connect failure, or the status with its
  ``grpc-retry-pushback-ms``) and handed to
  :meth:`~proxyless.runtime.call.Call.attempt_done`, which applies outlier
  detection, the retry policy and the cluster's retry budget. A request
  that cannot be replayed (a client stream past :data:`REPLAY_LIMIT
  <proxyless.grpc._invocation.REPLAY_LIMIT>`, a server stream that has
  delivered a message: gRFC A6's commit rule) is recorded but not retried.
- Hedging (Envoy ``hedge_policy``): ``initial_requests`` attempts race, the
  first response wins and the others are cancelled; extra attempts draw on
  the retry budget; with ``hedge_on_per_try_timeout`` a per-try timeout
  starts another attempt without cancelling the slow one.
- A call that stops because the retry budget refused a retry ends with the
  last error's status and the budget's reason in its details.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import grpc

from proxyless.errors import ProxylessError
from proxyless.grpc._errors import XdsRpcError, rpc_error
from proxyless.observability.flags import outcome_flag
from proxyless.resilience.outcome import (
    CONNECT_FAILURE,
    OVERALL_TIMEOUT,
    PER_TRY_TIMEOUT,
    SUCCESS,
    Outcome,
    http_status_to_grpc,
    parse_grpc_pushback,
)
from proxyless.resilience.retry import HedgePlan
from proxyless.runtime.call import Attempt, Call

__all__ = [
    "Launch",
    "Run",
    "Sleep",
    "Start",
    "Steps",
    "WaitAny",
    "classify_status",
    "end_error",
    "fault_steps",
    "grpc_outcome",
    "hedge_steps",
    "retry_steps",
    "status_of",
    "stream_steps",
]


class Run:
    """Make ``attempt`` and wait for its end (sends back ``(result, error)``)."""

    __slots__ = ("attempt",)

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt

    def __repr__(self) -> str:
        return f"Run({self.attempt.endpoint.key})"


class Launch:
    """Start ``attempt`` without waiting for it (hedging)."""

    __slots__ = ("attempt",)

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt

    def __repr__(self) -> str:
        return f"Launch({self.attempt.endpoint.key})"


class WaitAny:
    """Wait for launched attempts to end, at most ``timeout`` seconds."""

    __slots__ = ("timeout",)

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"WaitAny({self.timeout})"


class Start:
    """Start a streaming attempt (sends back ``(outcome, error, committed)``)."""

    __slots__ = ("attempt",)

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt

    def __repr__(self) -> str:
        return f"Start({self.attempt.endpoint.key})"


class Sleep:
    """Back off ``seconds`` before the next attempt."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"Sleep({self.seconds:g})"


Step = Run | Launch | WaitAny | Start | Sleep
Steps = Generator[Step, Any, Any]

_CODES = {c.value[0]: c for c in grpc.StatusCode}


# -- classifying an attempt's end --------------------------------------------------
def status_of(err: grpc.RpcError) -> tuple[grpc.StatusCode, str, Any]:
    """Code, details and trailing metadata of a sync or aio RPC error."""
    code = getattr(err, "code", None)
    if not callable(code):
        return grpc.StatusCode.UNKNOWN, str(err), ()
    details = err.details() or ""
    trailing = err.trailing_metadata() or ()
    return code(), details, trailing


def classify_status(
    code: grpc.StatusCode, details: str, trailing: Any, attempt: Attempt, call: Call
) -> Outcome:
    """The outcome of an attempt that ended with ``code`` (see the module docstring)."""
    if code is grpc.StatusCode.OK:
        return SUCCESS
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        if attempt.per_try and attempt.timed_out():
            return PER_TRY_TIMEOUT
        remaining = call.remaining()
        if remaining is not None and remaining <= 0.001:
            return OVERALL_TIMEOUT
    elif code is grpc.StatusCode.UNAVAILABLE and details.startswith("failed to connect"):
        return CONNECT_FAILURE
    pushback = None
    for key, value in trailing:
        if key == "grpc-retry-pushback-ms":
            pushback = parse_grpc_pushback(value)
    return Outcome.grpc(code.name, pushback=pushback)


def grpc_outcome(err: grpc.RpcError, attempt: Attempt, call: Call) -> Outcome:
    """:func:`classify_status` of a failed attempt's sync or aio error."""
    code, details, trailing = status_of(err)
    return classify_status(code, details, trailing, attempt, call)


#: What an attempt that got no answer from its endpoint ran into, by outcome
#: kind (its response flag is :func:`~proxyless.observability.flags.outcome_flag`'s).
_LOCAL_ORIGIN = {
    "connect_failure": "upstream connect failure",
    "timeout": "upstream request timeout",
    "reset": "upstream connection reset",
}


def end_error(
    call: Call,
    err: grpc.RpcError,
    outcome: Outcome | None = None,
    target: str = "",
    attempt: Attempt | None = None,
) -> grpc.RpcError:
    """What a call ends with when it stops after ``err``: the retry budget's
    refusal when that is what stopped it; for a failure that did not come
    from the backend (``outcome`` a connect failure, a timeout or a reset),
    an error saying so, where, and with Envoy's response flag (``UF``,
    ``UT``, ``UC``; ``URX`` too when retries ran out); else ``err`` itself,
    the backend's own status and trailers."""
    what = _LOCAL_ORIGIN.get(outcome.kind) if outcome is not None else None
    if call.last_error is None and what is None:
        return err
    code, details, _ = status_of(err)
    if what is not None:
        assert outcome is not None
        flag = outcome_flag(outcome)
        if (
            flag == "UT"
            and (attempt is None or not attempt.per_try)
            and call.timeout is not None
            and (call._caller_timeout is None or call.timeout < call._caller_timeout)
        ):
            # the deadline that fired is the route's max_stream_duration cap
            what, flag = "max stream duration reached", "UMSDR"
        flags = f"{flag},URX" if call.exhausted else flag
        prefix = f"{target}: " if target else ""
        at = f" at {attempt.endpoint.address}" if attempt is not None else ""
        text = f"{prefix}{what}{at} ({call.describe()}): {details}"
        if call.last_error is not None:
            text = f"{text} ({call.last_error})"
        out = XdsRpcError(code, f"{text} [{flags}]", call.last_error)  # type: ignore[arg-type]
        out.flags = flags
    else:
        out = XdsRpcError(code, f"{details} ({call.last_error})", call.last_error)  # type: ignore[arg-type]
    out.__cause__ = err
    return out


# -- the fault filter ------------------------------------------------------------------
def fault_steps(call: Call, target: str) -> tuple[float, XdsRpcError | None]:
    """What the fault filter does to a call (gRFC A33): seconds to wait, then
    the error to end it with, if any. A delay longer than the call's deadline
    waits out the deadline and ends the call with DEADLINE_EXCEEDED."""
    delay = call.fault.delay
    if delay is not None:
        remaining = call.remaining()
        if remaining is not None and remaining < delay:
            late = XdsRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{target}: deadline exceeded during an injected delay of {delay:g}s [DI,UT]",
                None,
            )
            late.flags = "DI,UT"
            return max(0.0, remaining), late
    fault = call.fault
    if fault.abort_grpc is not None:
        code = _CODES.get(fault.abort_grpc, grpc.StatusCode.UNKNOWN)
    elif fault.abort_http is not None:
        code = _CODES.get(http_status_to_grpc(fault.abort_http), grpc.StatusCode.UNKNOWN)
    else:
        return delay or 0.0, None
    flags = "DI,FI" if delay else "FI"
    err = XdsRpcError(
        code,
        f"{target}: fault injected by the HTTP fault filter ({call.route.describe()}) [{flags}]",
        None,
    )
    err.flags = flags
    return delay or 0.0, err


# -- drivers -----------------------------------------------------------------------------
def _attempt(call: Call, target: str, hedge: bool = False) -> Attempt:
    try:
        return call.attempt(hedge)
    except ProxylessError as exc:
        raise rpc_error(exc, target) from None


def retry_steps(
    call: Call,
    target: str,
    committed: Callable[[], bool] | None = None,
    first: tuple[Attempt, grpc.RpcError] | None = None,
) -> Steps:
    """Attempts one after another until one succeeds or the retry policy
    stops. ``committed`` tells whether the request can no longer be
    replayed (a client stream past its replay buffer); ``first`` is an
    attempt the fast path already made and its error."""
    while True:
        if first is not None:
            attempt, err = first
            first = None
        else:
            attempt = _attempt(call, target)
            result, err = yield Run(attempt)
            if err is None:
                call.attempt_done(attempt, SUCCESS)
                return result
        may_retry = committed is None or not committed()
        outcome = grpc_outcome(err, attempt, call)
        delay = call.attempt_done(attempt, outcome, may_retry=may_retry)
        if delay is None:
            raise end_error(call, err, outcome, target, attempt) from None
        if delay > 0:
            yield Sleep(delay)


def hedge_steps(call: Call, hedge: HedgePlan, rng: Any, target: str) -> Steps:
    """A hedged unary call (see the module docstring)."""
    budget = call.breaker.retry_budget
    per_try = call.retry_policy.per_try_timeout if hedge.hedge_on_per_try_timeout else None
    running: list[Attempt] = []
    extra_held = 0

    def attempt() -> Attempt:
        a = _attempt(call, target, hedge=bool(running))
        if per_try is not None:
            # The slow attempt keeps running; only the call's deadline ends it.
            a.timeout = call.remaining()
            a.per_try = False
        running.append(a)
        return a

    try:
        try:
            yield Launch(attempt())
            for _ in range(hedge.initial_attempts(rng) - 1):
                if not budget.try_acquire_retry():
                    break
                extra_held += 1
                yield Launch(attempt())
        except grpc.RpcError:
            if not running:
                raise
        while True:
            wait = per_try
            remaining = call.remaining()
            if remaining is not None:
                wait = remaining if wait is None else min(wait, remaining)
            ended: tuple[Attempt, Any, grpc.RpcError | None] | None = yield WaitAny(wait)
            if ended is None:
                if (
                    per_try is not None
                    and (remaining is None or remaining > 0)
                    and budget.try_acquire_retry()
                ):
                    extra_held += 1
                    try:
                        yield Launch(attempt())
                    except grpc.RpcError:
                        pass
                continue
            a, result, err = ended
            running.remove(a)
            if err is None:
                call.attempt_done(a, SUCCESS)
                return result
            outcome = grpc_outcome(err, a, call)
            delay = call.attempt_done(a, outcome, may_retry=not running)
            if running:
                continue
            if delay is None:
                raise end_error(call, err, outcome, target, a) from None
            if delay > 0:
                yield Sleep(delay)
            yield Launch(attempt())
    finally:
        for _ in range(extra_held):
            budget.release_retry()


def stream_steps(call: Call, target: str) -> Steps:
    """Attempts of a call whose response the caller reads as it comes (a
    unary ``future()``, a server stream): each attempt is handed to the
    reader; one that fails before the call commits is retried like a unary
    call, one that fails after is recorded only. Returns the error the call
    ends with, or None when the last attempt's own result stands."""
    while True:
        attempt = _attempt(call, target)
        outcome, err, committed = yield Start(attempt)
        delay = call.attempt_done(attempt, outcome, may_retry=not committed)
        if delay is None:
            if err is None or call.last_error is None:
                return None
            return end_error(call, err, None, target)
        if delay > 0:
            yield Sleep(delay)
