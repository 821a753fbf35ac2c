"""The gRPC attempt driver (proxyless.grpc._driver), driven step by step.

The driver is a generator: these tests play the executor, sending back what
each step produced, with a fake call whose clock and retry decisions are
scripted. What is checked is the driver's own logic: which steps it asks
for, what it records for each attempt (outcome, may it be retried), what it
returns or raises, and the retry budget it holds for hedges.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from tests.unit.grpc.fakes import FakeBudget, FakeCall, FakeEndpoint

from proxyless.errors import NoHealthyEndpoints
from proxyless.grpc._driver import (
    Launch,
    Run,
    Start,
    WaitAny,
    classify_status,
    hedge_steps,
    retry_steps,
    stream_steps,
)
from proxyless.grpc._errors import XdsRpcError
from proxyless.resilience.outcome import PER_TRY_TIMEOUT, SUCCESS
from proxyless.resilience.retry import HedgePlan
from proxyless.runtime.call import Attempt

TARGET = "xds:///svc"


def _err(code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, details: str = "boom") -> Any:
    return XdsRpcError(code, details, None)


def _drive(gen: Iterator[Any], replies: list[Any]) -> tuple[list[str], Any]:
    """Play the executor: send ``replies`` in order; return the steps asked
    for (as repr) and the driver's return value, or the exception it raised."""
    steps: list[str] = []
    send: Any = None
    replies = list(replies)
    try:
        while True:
            step = gen.send(send)  # type: ignore[attr-defined]
            steps.append(repr(step))
            if isinstance(step, (Run, Start, WaitAny)):
                send = replies.pop(0)
                if callable(send):
                    send = send(step)
            else:
                send = None
    except StopIteration as stop:
        return steps, stop.value
    except grpc.RpcError as exc:
        return steps, exc


def ok(value: Any) -> Any:
    return (value, None)


def fail(code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> Any:
    return (None, _err(code))


@pytest.mark.parametrize(
    ("delays", "replies", "steps", "recorded", "result"),
    [
        pytest.param(
            [], [ok("r")], ["Run(e1)"], [("e1", "success", True)], "r", id="first-succeeds"
        ),
        pytest.param(
            [0.025],
            [fail(), ok("r")],
            ["Run(e1)", "Sleep(0.025)", "Run(e2)"],
            [("e1", "error_status", True), ("e2", "success", True)],
            "r",
            id="retry-after-backoff",
        ),
        pytest.param(
            [0.0],
            [fail(), ok("r")],
            ["Run(e1)", "Run(e2)"],
            [("e1", "error_status", True), ("e2", "success", True)],
            "r",
            id="no-sleep-for-zero-delay",
        ),
        pytest.param(
            [],
            [fail(grpc.StatusCode.INTERNAL)],
            ["Run(e1)"],
            [("e1", "error_status", True)],
            "INTERNAL",
            id="policy-stops-last-error-stands",
        ),
    ],
)
def test_retry_steps(
    delays: list[float | None],
    replies: list[Any],
    steps: list[str],
    recorded: list[tuple[str, str, bool]],
    result: Any,
) -> None:
    call = FakeCall(delays=delays)
    got_steps, got = _drive(retry_steps(call, TARGET), replies)  # type: ignore[arg-type]
    assert got_steps == steps
    assert call.recorded == recorded
    if isinstance(got, grpc.RpcError):
        assert got.code().name == result
    else:
        assert got == result


def test_budget_refusal_names_the_budget_and_keeps_the_code() -> None:
    call = FakeCall(budget_stops=True)
    _, got = _drive(retry_steps(call, TARGET), [fail(grpc.StatusCode.RESOURCE_EXHAUSTED)])  # type: ignore[arg-type]
    assert isinstance(got, XdsRpcError)
    assert got.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert got.details() == "boom (retry budget exhausted)"


def test_committed_request_is_recorded_but_not_retried() -> None:
    call = FakeCall(delays=[0.1])
    _, got = _drive(retry_steps(call, TARGET, committed=lambda: True), [fail()])  # type: ignore[arg-type]
    assert call.recorded == [("e1", "error_status", False)]
    assert isinstance(got, grpc.RpcError)


def test_fast_path_first_attempt_is_not_made_again() -> None:
    call = FakeCall(delays=[0.05])
    first = call.attempt()
    steps, got = _drive(retry_steps(call, TARGET, first=(first, _err())), [ok("r")])  # type: ignore[arg-type]
    assert steps == ["Sleep(0.05)", "Run(e2)"]
    assert call.recorded == [("e1", "error_status", True), ("e2", "success", True)]
    assert got == "r"


def test_no_endpoint_ends_the_call_unavailable_naming_the_target() -> None:
    call = FakeCall(no_endpoint=True)
    steps, got = _drive(retry_steps(call, TARGET), [])  # type: ignore[arg-type]
    assert steps == []
    assert isinstance(got, XdsRpcError)
    assert got.code() is grpc.StatusCode.UNAVAILABLE
    assert got.details().startswith("xds:///svc: cluster 'c': no healthy endpoint")
    assert isinstance(got.proxyless_error, NoHealthyEndpoints)


# -- classification -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "details", "trailing", "per_try_expired", "remaining", "kind", "extra"),
    [
        pytest.param(grpc.StatusCode.OK, "", (), False, None, "success", None, id="ok"),
        pytest.param(
            grpc.StatusCode.DEADLINE_EXCEEDED, "", (), True, 5.0, "timeout", "per_try", id="per-try"
        ),
        pytest.param(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "",
            (),
            False,
            0.0,
            "timeout",
            "overall",
            id="overall",
        ),
        pytest.param(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "",
            (),
            False,
            3.0,
            "error_status",
            "DEADLINE_EXCEEDED",
            id="server-deadline",
        ),
        pytest.param(
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses",
            (),
            False,
            None,
            "connect_failure",
            None,
            id="connect-failure",
        ),
        pytest.param(
            grpc.StatusCode.UNAVAILABLE,
            "",
            (("grpc-retry-pushback-ms", "250"),),
            False,
            None,
            "error_status",
            "UNAVAILABLE",
            id="pushback",
        ),
    ],
)
def test_classify_status(
    code: grpc.StatusCode,
    details: str,
    trailing: Any,
    per_try_expired: bool,
    remaining: float | None,
    kind: str,
    extra: str | None,
) -> None:
    call = FakeCall(deadline=remaining)
    deadline = -1.0 if per_try_expired else None  # monotonic time is far past -1
    attempt = Attempt(FakeEndpoint("e"), None, 0.1, deadline, per_try_expired)  # type: ignore[arg-type]
    outcome = classify_status(code, details, trailing, attempt, call)  # type: ignore[arg-type]
    assert outcome.kind == kind
    if kind == "timeout":
        assert outcome.per_try_timeout == (extra == "per_try")
        assert (outcome == PER_TRY_TIMEOUT) == (extra == "per_try")
    if kind == "error_status":
        assert outcome.status == extra
    if trailing:
        assert outcome.pushback == 0.25


# -- hedging -------------------------------------------------------------------------------
def _ended(*entry: Any) -> Any:
    """A WaitAny reply: (launch index, result, error) of the attempt that
    ended, or nothing for a timeout."""

    def reply(_step: Any) -> Any:
        if not entry:
            return None
        i, r, e = entry
        return (_launched[i], r, e)

    return reply


_launched: list[Attempt] = []


def _drive_hedged(gen: Any, replies: list[Any]) -> tuple[list[str], Any]:
    _launched.clear()
    steps: list[str] = []
    send: Any = None
    replies = list(replies)
    try:
        while True:
            step = gen.send(send)
            steps.append(repr(step))
            send = None
            if isinstance(step, Launch):
                _launched.append(step.attempt)
            elif isinstance(step, WaitAny):
                send = replies.pop(0)(step)
    except StopIteration as stop:
        return steps, stop.value
    except grpc.RpcError as exc:
        return steps, exc


def test_hedge_first_response_wins_and_extra_budget_is_given_back() -> None:
    call = FakeCall()
    plan = HedgePlan(initial_requests=3)
    steps, got = _drive_hedged(
        hedge_steps(call, plan, random.Random(1), TARGET),  # type: ignore[arg-type]
        [_ended(1, "second", None)],
    )
    assert steps == ["Launch(e1)", "Launch(e2)", "Launch(e3)", "WaitAny(None)"]
    assert got == "second"
    assert call.recorded == [("e2", "success", True)]
    assert call.budget.peak == 2 and call.budget.held == 0


def test_hedge_budget_limits_the_extra_attempts() -> None:
    call = FakeCall(budget=FakeBudget(1))
    steps, _ = _drive_hedged(
        hedge_steps(call, HedgePlan(initial_requests=3), random.Random(1), TARGET),  # type: ignore[arg-type]
        [_ended(0, "r", None)],
    )
    assert steps == ["Launch(e1)", "Launch(e2)", "WaitAny(None)"]


def test_hedge_failure_while_others_run_is_not_retried() -> None:
    call = FakeCall(delays=[0.5])
    steps, got = _drive_hedged(
        hedge_steps(call, HedgePlan(initial_requests=2), random.Random(1), TARGET),  # type: ignore[arg-type]
        [_ended(0, None, _err()), _ended(1, "r", None)],
    )
    assert steps == ["Launch(e1)", "Launch(e2)", "WaitAny(None)", "WaitAny(None)"]
    assert call.recorded == [("e1", "error_status", False), ("e2", "success", True)]
    assert got == "r"


def test_hedge_last_failure_backs_off_and_launches_again() -> None:
    call = FakeCall(delays=[0.2])
    steps, got = _drive_hedged(
        hedge_steps(call, HedgePlan(initial_requests=2), random.Random(1), TARGET),  # type: ignore[arg-type]
        [
            _ended(0, None, _err()),
            _ended(1, None, _err()),
            _ended(2, "r", None),
        ],
    )
    assert steps == [
        "Launch(e1)",
        "Launch(e2)",
        "WaitAny(None)",
        "WaitAny(None)",
        "Sleep(0.2)",
        "Launch(e3)",
        "WaitAny(None)",
    ]
    assert call.recorded == [
        ("e1", "error_status", False),
        ("e2", "error_status", True),
        ("e3", "success", True),
    ]
    assert got == "r"


def test_hedge_on_per_try_timeout_starts_another_without_cancelling() -> None:
    call = FakeCall(per_try=0.1, deadline=10.0)
    plan = HedgePlan(hedge_on_per_try_timeout=True)
    steps, got = _drive_hedged(
        hedge_steps(call, plan, random.Random(1), TARGET),  # type: ignore[arg-type]
        [_ended(), _ended(0, "slow one", None)],
    )
    assert steps == ["Launch(e1)", "WaitAny(0.1)", "Launch(e2)", "WaitAny(0.1)"]
    assert got == "slow one"
    # the slow attempt runs on the call's deadline, not the per-try timeout
    assert _launched[0].timeout == 10.0 and not _launched[0].per_try
    assert call.budget.held == 0


def test_hedge_stops_with_the_last_error_when_the_policy_stops() -> None:
    call = FakeCall()
    _, got = _drive_hedged(
        hedge_steps(call, HedgePlan(initial_requests=2), random.Random(1), TARGET),  # type: ignore[arg-type]
        [_ended(0, None, _err()), _ended(1, None, _err(grpc.StatusCode.INTERNAL))],
    )
    assert isinstance(got, grpc.RpcError) and got.code() is grpc.StatusCode.INTERNAL
    assert call.budget.held == 0


# -- streams ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("delays", "budget_stops", "replies", "steps", "recorded", "ends_with"),
    [
        pytest.param(
            [0.03],
            False,
            [(Any, _err(), False), (SUCCESS, None, False)],
            ["Start(e1)", "Sleep(0.03)", "Start(e2)"],
            [("e1", "error_status", True), ("e2", "success", True)],
            None,
            id="retried-before-commit",
        ),
        pytest.param(
            [0.03],
            False,
            [(Any, _err(), True)],
            ["Start(e1)"],
            [("e1", "error_status", False)],
            None,
            id="committed-recorded-only",
        ),
        pytest.param(
            [],
            True,
            [(Any, _err(), False)],
            ["Start(e1)"],
            [("e1", "error_status", True)],
            "boom (retry budget exhausted)",
            id="budget-refusal",
        ),
    ],
)
def test_stream_steps(
    delays: list[float | None],
    budget_stops: bool,
    replies: list[Any],
    steps: list[str],
    recorded: list[tuple[str, str, bool]],
    ends_with: str | None,
) -> None:
    from proxyless.resilience.outcome import Outcome

    failure = Outcome.grpc("UNAVAILABLE")
    call = FakeCall(delays=delays, budget_stops=budget_stops)
    replies = [(failure if o is Any else o, e, c) for o, e, c in replies]
    got_steps, got = _drive(stream_steps(call, TARGET), replies)  # type: ignore[arg-type]
    assert got_steps == steps
    assert call.recorded == recorded
    if ends_with is None:
        assert got is None
    else:
        assert got.details() == ends_with
