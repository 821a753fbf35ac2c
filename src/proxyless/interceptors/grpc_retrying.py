"""Retried calls that hand the caller an object at once: unary ``future()``
calls and server-streaming calls.

A :class:`RetryingCall` runs attempts one after another, driven by their
completion callbacks (no thread of its own; a backoff waits on a timer).
It is a ``grpc.Future`` and a ``grpc.Call`` like the objects grpc returns,
delegating to the newest attempt.

- For a unary ``future()``, every failed attempt is handed to the route's
  retry policy (gRFC A44, the cluster's retry budget), as blocking calls are.
- A server-streaming call is retried only until it commits: once the first
  response message has been read, a failure ends the call (gRFC A6's commit
  rule). Messages are never replayed to the reader.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from proxyless.errors import ProxylessError
from proxyless.resilience.outcome import RESET, SUCCESS, Outcome
from proxyless.runtime.call import Attempt, Call

if TYPE_CHECKING:
    from proxyless.interceptors.grpc_channel import Invocation, XdsChannel

__all__ = ["RetryingCall"]


class RetryingCall(grpc.Call, grpc.Future):  # type: ignore[type-arg]
    """See the module docstring."""

    def __init__(self, ch: XdsChannel, call: Call, inv: Invocation, streaming: bool) -> None:
        self._ch = ch
        self._call = call
        self._inv = inv
        self._streaming = streaming
        self._cond = threading.Condition()
        self._inner: Any = None
        self._received = False  # a response message was read: committed
        self._final: BaseException | None = None
        self._finished = False
        self._cancelled = False
        self._callbacks: list[Callable[[Any], None]] = []
        self._launch()

    # -- attempts -------------------------------------------------------------------
    def _launch(self) -> None:
        call = self._call
        try:
            attempt = call.attempt()
        except ProxylessError as exc:
            self._finish(self._ch._fail(exc))
            return
        try:
            inner = self._inv.start(
                attempt.conn, attempt.timeout, attr=None if self._streaming else "future"
            )
        except BaseException as exc:
            self._ch._pool.call_ended(attempt.conn)
            attempt.endpoint.active_requests -= 1
            self._finish(exc)
            return
        with self._cond:
            self._inner = inner
            self._cond.notify_all()
        inner.add_done_callback(lambda f: self._attempt_done(attempt, f))

    def _attempt_done(self, attempt: Attempt, inner: Any) -> None:
        from proxyless.interceptors.grpc_channel import budget_error, grpc_outcome

        self._ch._pool.call_ended(attempt.conn)
        call = self._call
        if inner.cancelled() or self._cancelled:
            call.attempt_done(attempt, RESET, may_retry=False)
            self._finish(None if not self._cancelled else _cancelled_error())
            return
        code = inner.code()
        if code is grpc.StatusCode.OK:
            call.attempt_done(attempt, SUCCESS)
            self._finish(None)
            return
        outcome: Outcome = grpc_outcome(inner, attempt, call)
        delay = call.attempt_done(attempt, outcome, may_retry=not self._received)
        if delay is None:
            self._finish(budget_error(call, inner) if call.last_error is not None else None)
            return
        if delay > 0:
            timer = threading.Timer(delay, self._launch)
            timer.daemon = True
            timer.start()
        else:
            self._launch()

    def _finish(self, error: BaseException | None) -> None:
        with self._cond:
            if self._finished:
                return
            self._finished = True
            self._final = error
            callbacks, self._callbacks = self._callbacks, []
            self._cond.notify_all()
        self._call.end()
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
        if inner is not None:
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
    from proxyless.interceptors.grpc_errors import XdsRpcError

    return XdsRpcError(grpc.StatusCode.CANCELLED, "the call was cancelled", None)
