"""The blocking executor's hedge table: attempts that ended but were never
reported to the driver are given back like cancelled losers."""

from __future__ import annotations

from typing import Any

from proxyless.grpc._invocation import Invocation
from proxyless.grpc._sync import _Hedges
from proxyless.runtime.call import Attempt


class _Endpoint:
    def __init__(self) -> None:
        self.active_requests = 1
        self.key = "e"


class _Future:
    def __init__(self, value: Any) -> None:
        self.value = value
        self.cancelled = False

    def add_done_callback(self, fn: Any) -> None:
        fn(self)  # already done

    def exception(self) -> None:
        return None

    def result(self) -> Any:
        return self.value

    def cancel(self) -> bool:
        self.cancelled = True
        return False


class _Conn:
    def callable(self, *args: Any) -> Any:
        return self

    def future(self, request: Any, **kwargs: Any) -> _Future:
        return _Future(request)


class _Pool:
    def __init__(self) -> None:
        self.ended = 0

    def call_ended(self, conn: Any) -> None:
        self.ended += 1


def test_ended_but_unreported_attempts_are_given_back() -> None:
    pool = _Pool()
    inv = Invocation("unary_unary", "/m", None, None, b"x", None, None, None, None)
    hedges = _Hedges(inv, pool)  # type: ignore[arg-type]
    a1 = Attempt(_Endpoint(), _Conn(), 1.0, None, False)  # type: ignore[arg-type]
    a2 = Attempt(_Endpoint(), _Conn(), 1.0, None, False)  # type: ignore[arg-type]
    hedges.launch(a1)
    hedges.launch(a2)
    ended = hedges.wait(None)
    assert ended is not None and ended[0] is a1 and ended[1] == b"x"
    hedges.cancel_all()  # the driver returned with a1's result
    assert pool.ended == 2
    assert a2.endpoint.active_requests == 0  # given back
    assert a1.endpoint.active_requests == 1  # the driver records the winner itself
    assert hedges.wait(0) is None
