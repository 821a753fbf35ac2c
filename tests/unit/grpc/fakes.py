"""Fakes shared by the gRPC data-path unit tests: a stand-in for
:class:`proxyless.runtime.call.Call` whose retry decisions and clock are
scripted, with the little of an endpoint, a breaker and a retry budget the
attempt driver and the call objects read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxyless.errors import NoHealthyEndpoints
from proxyless.runtime.call import Attempt

__all__ = ["FakeBudget", "FakeCall", "FakeEndpoint"]


class FakeEndpoint:
    def __init__(self, key: str) -> None:
        self.key = key
        self.active_requests = 0


class FakeBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0

    def try_acquire_retry(self) -> bool:
        if self.held >= self.limit:
            return False
        self.held += 1
        self.peak = max(self.peak, self.held)
        return True

    def release_retry(self) -> None:
        self.held -= 1


@dataclass
class _Policy:
    per_try_timeout: float | None = None
    enabled: bool = True


@dataclass
class _Breaker:
    retry_budget: FakeBudget


class _Route:
    def describe(self) -> str:
        return "route 'r'"


@dataclass
class FakeCall:
    """Stands in for runtime.call.Call: scripted retry delays, a fake clock."""

    delays: list[float | None] = field(default_factory=list)
    budget_stops: bool = False
    no_endpoint: bool = False
    deadline: float | None = None
    now: float = 0.0
    per_try: float | None = None
    budget: FakeBudget = field(default_factory=lambda: FakeBudget(10))
    recorded: list[tuple[str, str, bool]] = field(default_factory=list)
    last_error: Exception | None = None
    n: int = 0
    ended: int = 0
    obs: Any = None
    exhausted: bool = False

    def __post_init__(self) -> None:
        self.retry_policy = _Policy(self.per_try)
        self.breaker = _Breaker(self.budget)
        self.route = _Route()

    def attempt(self, hedge: bool = False) -> Attempt:
        if self.no_endpoint:
            raise NoHealthyEndpoints("cluster 'c': no healthy endpoint")
        self.n += 1
        timeout = self.per_try
        return Attempt(FakeEndpoint(f"e{self.n}"), None, timeout, None, timeout is not None)  # type: ignore[arg-type]

    def attempt_done(self, attempt: Attempt, outcome: Any, *, may_retry: bool = True) -> Any:
        self.recorded.append((attempt.endpoint.key, outcome.kind, may_retry))
        if outcome.kind == "success" or not may_retry:
            return None
        if self.budget_stops:
            self.last_error = RuntimeError("retry budget exhausted")
            return None
        return self.delays.pop(0) if self.delays else None

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.now

    def end(self) -> None:
        self.ended += 1
