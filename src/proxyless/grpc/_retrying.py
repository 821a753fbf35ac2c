"""Call objects handed to the caller at once, driven by grpc's completion
callbacks: retried unary ``future()`` calls and server-streaming calls
(:class:`RetryingCall`), and one-attempt streams (:func:`start_single`).

Both carry out the attempt driver's stream steps
(:func:`~proxyless.grpc._driver.stream_steps`) without a thread of their
own: each attempt's completion callback sends its outcome to the driver,
and a backoff waits on a timer.

- For a unary ``future()``, every failed attempt is handed to the route's
  retry policy (gRFC A44, the cluster's retry budget), as blocking calls are.
- A server-streaming call is retried only until it commits: once the first
  response message has been read, a failure ends the call (gRFC A6's commit
  rule). Messages are never replayed to the reader.
- Bidirectional streams and client-stream ``future()`` calls make one
  attempt, whose outcome is recorded (outlier detection) when it ends.

A :class:`RetryingCall` is a ``grpc.Future`` and a ``grpc.Call`` like the
objects grpc returns, delegating to the newest attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from proxyless.grpc._driver import Sleep, Start, Steps, grpc_outcome
from proxyless.grpc._errors import XdsRpcError
from proxyless.grpc._invocation import Invocation
from proxyless.grpc._pool import ChannelPool
from proxyless.grpc._telemetry import ended, ended_call
from proxyless.grpc._tls import explain_failure
from proxyless.resilience.outcome import RESET, SUCCESS, Outcome
from proxyless.runtime.call import Attempt, Call

__all__ = ["RetryingCall", "start_single"]


def _outcome(inner: Any, attempt: Attempt, call: Call) -> tuple[Outcome, Any]:
    """The outcome of an attempt whose call object has ended, and its error."""
    if inner.cancelled():
        return RESET, None
    if inner.code() is grpc.StatusCode.OK:
        return SUCCESS, None
    return grpc_outcome(inner, attempt, call), inner


def start_single(
    steps: Steps, call: Call, inv: Invocation, pool: ChannelPool, attr: str | None
) -> Any:
    """Make a streaming call's one attempt and return the endpoint's call
    object; its outcome is recorded and the call released when it ends."""
    step = next(steps)
    assert isinstance(step, Start)
    attempt = step.attempt
    pooled = attempt.conn
    try:
        inner = inv.start(pooled, attempt.timeout, attr=attr)
    except BaseException:
        pool.call_ended(pooled)
        attempt.endpoint.active_requests -= 1
        raise

    def done(c: Any) -> None:
        pool.call_ended(pooled)
        outcome, err = _outcome(c, attempt, call)
        try:
            steps.send((outcome, err, True))
        except StopIteration:
            pass
        finally:
            call.end()
            ended_call(call.obs, c)

    inner.add_done_callback(done)
    return inner


class RetryingCall(grpc.Call, grpc.Future):  # type: ignore[type-arg]
    """See the module docstring."""

    def __init__(
        self, steps: Steps, call: Call, inv: Invocation, pool: ChannelPool, *, streaming: bool
    ) -> None:
        self._steps = steps
        self._call = call
        self._inv = inv
        self._pool = pool
        self._streaming = streaming
        self._cond = threading.Condition()
        self._inner: Any = None
        self._received = False  # a response message was read: committed
        self._final: BaseException | None = None
        #: the last attempt's failure to connect to a TLS endpoint, explained
        self._tls_failure: grpc.RpcError | None = None
        self._finished = False
        self._cancelled = False
        self._backing_off = False  # waiting on a timer between attempts
        self._callbacks: list[Callable[[Any], None]] = []
        self._advance(None)

    # -- attempts -------------------------------------------------------------------
    def _advance(self, send: Any) -> None:
        """Send ``send`` to the driver and carry out its next step."""
        try:
            step = self._steps.send(send)
        except StopIteration as stop:
            self._finish(_cancelled_error() if self._cancelled else stop.value)
            return
        except grpc.RpcError as err:
            self._finish(err)
            return
        if isinstance(step, Sleep):
            with self._cond:
                self._backing_off = True
            timer = threading.Timer(step.seconds, self._resume)
            timer.daemon = True
            timer.start()
            return
        assert isinstance(step, Start)
        attempt = step.attempt
        try:
            inner = self._inv.start(
                attempt.conn, attempt.timeout, attr=None if self._streaming else "future"
            )
        except BaseException as exc:
            self._pool.call_ended(attempt.conn)
            attempt.endpoint.active_requests -= 1
            self._steps.close()
            self._finish(exc)
            return
        with self._cond:
            self._inner = inner
            cancelled = self._cancelled
            self._cond.notify_all()
        inner.add_done_callback(lambda f: self._attempt_done(attempt, f))
        if cancelled:  # cancelled while this attempt was being started
            inner.cancel()

    def _resume(self) -> None:
        """The backoff is over: the next attempt, unless the call was
        cancelled meanwhile (it has ended then: stop the driver)."""
        with self._cond:
            self._backing_off = False
            cancelled = self._cancelled
        if cancelled:
            self._steps.close()
            self._finish(_cancelled_error())
            return
        self._advance(None)

    def _attempt_done(self, attempt: Attempt, inner: Any) -> None:
        self._pool.call_ended(attempt.conn)
        if self._cancelled:
            self._advance((RESET, None, True))
            return
        outcome, err = _outcome(inner, attempt, self._call)
        explained = explain_failure(attempt.conn, err) if err is not None else None
        self._tls_failure = explained if explained is not err else None
        self._advance((outcome, err, self._received or outcome is RESET))

    def _finish(self, error: BaseException | None) -> None:
        if error is None and self._tls_failure is not None:
            error = self._tls_failure  # the attempt's own error, with its TLS reason
        with self._cond:
            if self._finished:
                return
            self._finished = True
            self._final = error
            callbacks, self._callbacks = self._callbacks, []
            self._cond.notify_all()
        self._call.end()
        obs = self._call.obs
        if obs is not None:
            if error is None and self._inner is not None:
                ended_call(obs, self._inner)
            else:
                ended(obs, error)
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                pass

    def _settled(self, timeout: float | None = None) -> bool:
        """Wait until the call has finished for good."""
        with self._cond:
            return self._cond.wait_for(lambda: self._finished, timeout)

    # -- streaming --------------------------------------------------------------------
    def __iter__(self) -> RetryingCall:
        return self

    def __next__(self) -> Any:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._inner is not None or self._finished)
                inner = self._inner
            if inner is None:
                raise self._final or _cancelled_error()
            try:
                message = next(inner)
            except StopIteration:
                raise
            except grpc.RpcError as err:
                if self._received:
                    raise
                # Wait for the retry decision: a new attempt, or the end.
                with self._cond:
                    self._cond.wait_for(self._moved_on(inner))
                    if self._inner is not inner:
                        continue
                    final = self._final
                raise final if isinstance(final, grpc.RpcError) else err from None
            self._received = True
            return message

    next = __next__

    def _moved_on(self, failed: Any) -> Callable[[], bool]:
        """A predicate: a newer attempt replaced ``failed``, or the call ended."""
        return lambda: self._inner is not failed or self._finished

    # -- grpc.Future ------------------------------------------------------------------
    def result(self, timeout: float | None = None) -> Any:
        if not self._settled(timeout):
            raise grpc.FutureTimeoutError()
        if self._final is not None:
            raise self._final
        return self._inner.result()

    def exception(self, timeout: float | None = None) -> Any:
        if not self._settled(timeout):
            raise grpc.FutureTimeoutError()
        if self._final is not None:
            return self._final
        return self._inner.exception()

    def traceback(self, timeout: float | None = None) -> Any:
        exc = self.exception(timeout)
        return None if exc is None else exc.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        with self._cond:
            if not self._finished:
                self._callbacks.append(fn)
                return
        fn(self)

    def cancel(self) -> bool:
        with self._cond:
            if self._finished:
                return False
            self._cancelled = True
            inner = self._inner
            backing_off = self._backing_off
        if backing_off:
            # No attempt is running: end now; the timer starts none (_resume).
            self._finish(_cancelled_error())
        elif inner is not None:
            inner.cancel()
        return True

    def cancelled(self) -> bool:
        return self._cancelled

    def running(self) -> bool:
        return not self._finished

    def done(self) -> bool:
        return self._finished

    # -- grpc.Call ----------------------------------------------------------------------
    def _current(self) -> Any:
        with self._cond:
            self._cond.wait_for(lambda: self._inner is not None or self._finished)
            return self._inner

    def initial_metadata(self) -> Any:
        inner = self._current()
        return () if inner is None else inner.initial_metadata()

    def trailing_metadata(self) -> Any:
        self._settled()
        inner = self._inner
        return () if inner is None else inner.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        self._settled()
        final = self._final
        if isinstance(final, grpc.RpcError) and hasattr(final, "code"):
            code: grpc.StatusCode = final.code()
            return code
        inner_code: grpc.StatusCode = self._inner.code()
        return inner_code

    def details(self) -> str:
        self._settled()
        final = self._final
        if isinstance(final, grpc.RpcError) and hasattr(final, "details"):
            return str(final.details())
        return str(self._inner.details() or "")

    def is_active(self) -> bool:
        return not self._finished

    def time_remaining(self) -> float:
        remaining = self._call.remaining()
        return float("inf") if remaining is None else max(0.0, remaining)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._cond:
            if self._finished:
                return False
            self._callbacks.append(lambda _c: callback())
            return True

    def __repr__(self) -> str:
        state = "done" if self._finished else "active"
        return f"<proxyless RetryingCall {self._inv.method} {state}>"


def _cancelled_error() -> grpc.RpcError:
    return XdsRpcError(grpc.StatusCode.CANCELLED, "the call was cancelled", None)
