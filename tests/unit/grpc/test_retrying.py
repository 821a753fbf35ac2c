"""RetryingCall and start_single, driven by hand.

The endpoint's call objects are fakes the test finishes when it likes (as
grpc's completion callbacks would fire); the routed call is
:class:`tests.unit.grpc.fakes.FakeCall` with scripted retry decisions; the
driver is the real :func:`~proxyless.grpc._driver.stream_steps`. Backoffs
wait on a fake ``threading.Timer`` the test fires, so nothing sleeps and no
thread is started.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from tests.unit.grpc.fakes import FakeCall

from proxyless.grpc import _retrying
from proxyless.grpc._driver import stream_steps
from proxyless.grpc._errors import XdsRpcError
from proxyless.grpc._retrying import RetryingCall, start_single

TARGET = "xds:///svc"
OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


class FakeInner(grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[misc]
    """An endpoint's call object (a ``_MultiThreadedRendezvous`` stand-in):
    running until the test calls :meth:`finish`, then done with a status;
    iterating yields ``messages`` and then ends or raises itself."""

    def __init__(self, conn: Any, timeout: float | None, attr: str | None) -> None:
        self.conn, self.timeout, self.attr = conn, timeout, attr
        self.messages: list[Any] = []
        self.value: Any = None
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple[tuple[str, str], ...] = ()
        self._cancelled = False
        self._callbacks: list[Callable[[Any], None]] = []

    # -- the test's side ---------------------------------------------------------------
    def finish(
        self,
        code: grpc.StatusCode = OK,
        details: str = "",
        *,
        value: Any = None,
        trailing: tuple[tuple[str, str], ...] = (),
    ) -> None:
        assert self._code is None, "finished twice"
        self._code, self._details, self._trailing, self.value = code, details, trailing, value
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    # -- grpc.Future / grpc.Call ------------------------------------------------------------
    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        if self._code is None:
            self._callbacks.append(fn)
        else:
            fn(self)

    def cancel(self) -> bool:
        if self._code is not None:
            return False
        self._cancelled = True
        self.finish(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        return True

    def cancelled(self) -> bool:
        return self._cancelled

    def running(self) -> bool:
        return self._code is None

    def done(self) -> bool:
        return self._code is not None

    def result(self, timeout: float | None = None) -> Any:
        assert self._code is not None, "the fake would block"
        if self._code is not OK:
            raise self
        return self.value

    def exception(self, timeout: float | None = None) -> Any:
        assert self._code is not None, "the fake would block"
        return None if self._code is OK else self

    def traceback(self, timeout: float | None = None) -> Any:
        return None

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> Any:
        return ()

    def trailing_metadata(self) -> Any:
        return self._trailing

    def is_active(self) -> bool:
        return self._code is None

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, callback: Any) -> bool:
        return False

    def __iter__(self) -> FakeInner:
        return self

    def __next__(self) -> Any:
        if self.messages:
            return self.messages.pop(0)
        assert self._code is not None, "the fake would block"
        if self._code is OK:
            raise StopIteration
        raise self


class FakeInvocation:
    """Starts a FakeInner per attempt; ``fail_start`` makes starting raise."""

    method = "/pkg.Svc/Watch"

    def __init__(self, fail_start: BaseException | None = None) -> None:
        self.started: list[FakeInner] = []
        self.fail_start = fail_start

    def start(self, pooled: Any, timeout: float | None, *, attr: str | None = None) -> FakeInner:
        if self.fail_start is not None:
            raise self.fail_start
        inner = FakeInner(pooled, timeout, attr)
        self.started.append(inner)
        return inner

    @property
    def last(self) -> FakeInner:
        return self.started[-1]


class FakePool:
    def __init__(self) -> None:
        self.ended: list[Any] = []

    def call_ended(self, entry: Any) -> None:
        self.ended.append(entry)


class Timers:
    """``threading.Timer`` as RetryingCall uses it, fired by the test."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[..., None], tuple[Any, ...]]] = []

    def __call__(self, seconds: float, fn: Callable[..., None], args: tuple[Any, ...] = ()) -> Any:
        timers = self

        class _Timer:
            daemon = False

            def start(self) -> None:
                assert self.daemon, "a backoff timer must not keep the process alive"
                timers.pending.append((seconds, fn, args))

        return _Timer()

    def fire(self) -> float:
        seconds, fn, args = self.pending.pop(0)
        fn(*args)
        return seconds


@pytest.fixture
def timers(monkeypatch: pytest.MonkeyPatch) -> Timers:
    fake = Timers()
    monkeypatch.setattr(
        _retrying, "threading", types.SimpleNamespace(Condition=threading.Condition, Timer=fake)
    )
    return fake


def _retrying_call(
    call: FakeCall, *, streaming: bool = False, inv: FakeInvocation | None = None
) -> tuple[RetryingCall, FakeInvocation, FakePool]:
    inv = inv or FakeInvocation()
    pool = FakePool()
    rc = RetryingCall(stream_steps(call, TARGET), call, inv, pool, streaming=streaming)  # type: ignore[arg-type]
    return rc, inv, pool


# -- unary future() ------------------------------------------------------------------------------
def test_success_on_the_first_attempt(timers: Timers) -> None:
    call = FakeCall()
    rc, inv, pool = _retrying_call(call)
    done: list[Any] = []
    rc.add_done_callback(done.append)
    assert len(inv.started) == 1 and inv.last.attr == "future"
    assert rc.running() and not rc.done() and rc.is_active()
    assert call.ended == 0

    inv.last.finish(OK, value="reply")
    assert rc.done() and not rc.running() and not rc.cancelled()
    assert rc.result(timeout=0) == "reply" and rc.exception(timeout=0) is None
    assert rc.code() is OK and rc.details() == ""
    assert done == [rc]
    assert call.recorded == [("e1", "success", True)]
    assert call.ended == 1 and pool.ended == [None]
    late: list[Any] = []
    rc.add_done_callback(late.append)  # after the end: called at once
    assert late == [rc]
    assert rc.add_callback(lambda: None) is False
    assert timers.pending == []


@pytest.mark.parametrize(
    ("delays", "timer_seconds"),
    [
        pytest.param([0.25], [0.25], id="after-a-backoff"),
        pytest.param([0.0], [], id="at-once"),
    ],
)
def test_a_failure_is_retried_after_the_backoff(
    timers: Timers, delays: list[float], timer_seconds: list[float]
) -> None:
    call = FakeCall(delays=list(delays))
    rc, inv, pool = _retrying_call(call)
    inv.last.finish(UNAVAILABLE, "connection reset")
    assert [s for s, _, _ in timers.pending] == timer_seconds
    assert not rc.done()
    if timer_seconds:
        assert len(inv.started) == 1  # waiting out the backoff
        assert timers.fire() == 0.25
    assert len(inv.started) == 2
    inv.last.finish(OK, value="reply")
    assert rc.result(timeout=0) == "reply"
    assert call.recorded == [("e1", "error_status", True), ("e2", "success", True)]
    assert call.ended == 1 and len(pool.ended) == 2


def test_the_last_failure_stands_when_the_policy_stops(timers: Timers) -> None:
    call = FakeCall(delays=[0.1])
    rc, inv, _ = _retrying_call(call)
    inv.last.finish(UNAVAILABLE, "first")
    timers.fire()
    last = inv.last
    last.finish(grpc.StatusCode.INTERNAL, "second", trailing=(("k", "v"),))
    assert rc.done() and call.ended == 1
    assert rc.exception(timeout=0) is last
    with pytest.raises(grpc.RpcError) as info:
        rc.result(timeout=0)
    assert info.value is last
    assert (rc.code(), rc.details(), rc.trailing_metadata()) == (
        grpc.StatusCode.INTERNAL,
        "second",
        (("k", "v"),),
    )


def test_the_budgets_refusal_is_in_the_details(timers: Timers) -> None:
    call = FakeCall(budget_stops=True)
    rc, inv, _ = _retrying_call(call)
    inner = inv.last
    inner.finish(UNAVAILABLE, "upstream went away")
    error = rc.exception(timeout=0)
    assert isinstance(error, XdsRpcError) and error.__cause__ is inner
    assert rc.code() is UNAVAILABLE
    assert rc.details() == "upstream went away (retry budget exhausted)"
    assert call.ended == 1 and timers.pending == []


def test_cancel_gives_cancelled_and_releases_the_call(timers: Timers) -> None:
    call = FakeCall(delays=[0.1])
    rc, inv, pool = _retrying_call(call)
    inner = inv.last
    assert rc.cancel() is True
    assert inner.cancelled()
    assert rc.done() and rc.cancelled()
    assert rc.code() is grpc.StatusCode.CANCELLED
    assert rc.details() == "the call was cancelled"
    with pytest.raises(grpc.RpcError):
        rc.result(timeout=0)
    # The cancelled attempt is recorded as a reset and not retried.
    assert call.recorded == [("e1", "reset", False)]
    assert call.ended == 1 and pool.ended == [None]
    assert len(inv.started) == 1 and timers.pending == []
    assert rc.cancel() is False  # already over


def test_a_failure_to_start_ends_the_call(timers: Timers) -> None:
    call = FakeCall()
    boom = RuntimeError("channel closed")
    rc, _, pool = _retrying_call(call, inv=FakeInvocation(fail_start=boom))
    assert rc.done() and rc.exception(timeout=0) is boom
    assert call.ended == 1 and pool.ended == [None]


def test_no_endpoint_ends_the_call_with_unavailable(timers: Timers) -> None:
    call = FakeCall(no_endpoint=True)
    rc, inv, _ = _retrying_call(call)
    assert inv.started == [] and rc.done()
    assert rc.code() is UNAVAILABLE
    assert "no healthy endpoint" in rc.details()
    assert call.ended == 1


@pytest.mark.parametrize(
    ("deadline", "now", "want"),
    [
        pytest.param(None, 0.0, float("inf"), id="no-deadline"),
        pytest.param(5.0, 1.5, 3.5, id="left"),
        pytest.param(5.0, 7.0, 0.0, id="past"),
    ],
)
def test_time_remaining(timers: Timers, deadline: float | None, now: float, want: float) -> None:
    call = FakeCall(deadline=deadline, now=now)
    rc, inv, _ = _retrying_call(call)
    assert rc.time_remaining() == want
    inv.last.finish(OK)


# -- server streams -----------------------------------------------------------------------------
def test_a_stream_failing_before_its_first_message_is_retried(timers: Timers) -> None:
    call = FakeCall(delays=[0.0])
    rc, inv, _ = _retrying_call(call, streaming=True)
    assert inv.last.attr is None
    inv.last.finish(UNAVAILABLE)
    assert len(inv.started) == 2
    inv.last.messages = ["m1", "m2"]
    inv.last.finish(OK)
    assert list(rc) == ["m1", "m2"]
    assert call.recorded == [("e1", "error_status", True), ("e2", "success", True)]
    assert rc.code() is OK and call.ended == 1


def test_a_stream_failing_after_a_message_is_not_retried(timers: Timers) -> None:
    call = FakeCall(delays=[0.0])
    rc, inv, _ = _retrying_call(call, streaming=True)
    first = inv.last
    first.messages = ["m1"]
    assert next(rc) == "m1"  # committed: the reader has a message
    first.finish(UNAVAILABLE, "stream broke")
    assert len(inv.started) == 1
    with pytest.raises(grpc.RpcError) as info:
        next(rc)
    assert info.value is first
    assert call.recorded == [("e1", "error_status", False)]
    assert rc.code() is UNAVAILABLE and call.ended == 1


# -- start_single -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("finish", "recorded"),
    [
        pytest.param(lambda c: c.finish(OK), ("e1", "success", False), id="ok"),
        pytest.param(
            lambda c: c.finish(UNAVAILABLE, "boom"), ("e1", "error_status", False), id="failed"
        ),
        pytest.param(lambda c: c.cancel(), ("e1", "reset", False), id="cancelled"),
    ],
)
def test_start_single_records_the_outcome_and_ends_the_call(
    finish: Callable[[FakeInner], Any], recorded: tuple[str, str, bool]
) -> None:
    call = FakeCall(delays=[0.0])
    inv, pool = FakeInvocation(), FakePool()
    inner = start_single(stream_steps(call, TARGET), call, inv, pool, "future")  # type: ignore[arg-type]
    assert inner is inv.last and inner.attr == "future"
    assert call.ended == 0 and call.recorded == []
    finish(inner)
    assert call.recorded == [recorded]  # one attempt: never retried
    assert len(inv.started) == 1
    assert call.ended == 1 and pool.ended == [None]


def test_start_single_failing_to_start_gives_back_the_endpoint() -> None:
    call = FakeCall()
    inv, pool = FakeInvocation(fail_start=RuntimeError("closed")), FakePool()
    steps = stream_steps(call, TARGET)
    with pytest.raises(RuntimeError, match="closed"):
        start_single(steps, call, inv, pool, None)  # type: ignore[arg-type]
    assert pool.ended == [None]
    assert call.recorded == [] and call.ended == 0  # the channel ends the call


def test_cancel_during_the_backoff_starts_no_other_attempt(timers: Timers) -> None:
    call = FakeCall(delays=[0.5])
    rc, inv, _ = _retrying_call(call)
    inv.last.finish(UNAVAILABLE, "first")
    assert len(timers.pending) == 1
    assert rc.cancel() is True
    # Over at once: no attempt is running to wait for.
    assert rc.done() and rc.code() is grpc.StatusCode.CANCELLED
    assert call.ended == 1
    timers.fire()  # the backoff ends
    assert len(inv.started) == 1
    assert call.recorded == [("e1", "error_status", True)]
    assert call.ended == 1


def test_cancel_while_an_attempt_is_being_started_cancels_it(timers: Timers) -> None:
    holder: list[RetryingCall] = []

    class CancelOnStart(FakeInvocation):
        def start(self, pooled: Any, timeout: float | None, *, attr: str | None = None) -> Any:
            inner = super().start(pooled, timeout, attr=attr)
            if holder:
                holder[0].cancel()  # lands before the call knows of this attempt
            return inner

    inv = CancelOnStart()
    rc, _, _ = _retrying_call(FakeCall(delays=[0.1]), inv=inv)
    holder.append(rc)
    inv.last.finish(UNAVAILABLE)
    timers.fire()
    assert len(inv.started) == 2 and inv.last.cancelled()
    assert rc.done() and rc.code() is grpc.StatusCode.CANCELLED
