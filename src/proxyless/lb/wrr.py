"""Client-side weighted round robin from backend load reports (gRFC A58).

Each endpoint's weight comes from the ORCA load reports (gRFC A51) its
server attaches to responses (trailing metadata ``endpoint-load-metrics-bin``,
read by the transport and handed to :meth:`EndpointWeight.report`):

    weight = qps / (utilization + eps / qps * error_utilization_penalty)

where utilization is ``application_utilization`` when set, else
``cpu_utilization``, and qps is ``rps_fractional``. A report with zero qps
or zero utilization is ignored (:func:`orca_weight` returns 0). A weight is
used only after the endpoint has reported for ``blackout_period`` without a
gap of ``weight_expiration_period``; a weight older than
``weight_expiration_period`` is dropped and the blackout starts again with
the next report (A58 "Subchannel Weights").

:class:`WeightedRoundRobinPicker` recomputes the weights every
``weight_update_period`` on the first pick after it is due (no timer: the
pick that finds the schedule due rebuilds it, a few microseconds per
endpoint). Endpoints without a usable weight get the mean of the known
weights; with fewer than two known weights every endpoint weighs the same
and the picker is round robin (A58). The scheduler is the
earliest-deadline-first schedule A58 describes (each endpoint due every
``1/weight``, first deadlines at a random phase), the one proxyless' round
robin uses for EDS weights (:class:`~proxyless.lb.pickers.EdfSchedule`),
not C-core's static stride scheduler. Picks skip endpoints that are not
ready or usable, as round robin does.

With ``enable_oob_load_report`` the reports come instead from an ORCA
``StreamCoreMetrics`` stream per endpoint, asking for one every
``oob_reporting_period`` (gRFC A51), and per-request reports are not read
(A58); the transport runs the stream (``proxyless.grpc._orca_client``) and
:meth:`EndpointWeight.stop` ends it. Not done:
``metric_names_for_computing_utilization``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Container, Sequence
from typing import Any

from proxyless.lb.pickers import EdfSchedule, EndpointKey, Picker
from proxyless.lb.state import EndpointState
from proxyless.resources.model import ClientSideWeightedRoundRobin

__all__ = [
    "EndpointWeight",
    "WeightedRoundRobinPicker",
    "orca_weight",
    "scheduling_weights",
]

_NEVER = float("-inf")


def orca_weight(qps: float, eps: float, utilization: float, penalty: float) -> float:
    """A58's weight of one report; 0 when qps or utilization is not > 0."""
    if qps <= 0 or utilization <= 0:
        return 0.0
    return qps / (utilization + eps / qps * penalty)


class EndpointWeight:
    """The load-report weight of one endpoint, kept across picker rebuilds
    and EDS updates (the :attr:`EndpointState.orca` of a WRR cluster)."""

    __slots__ = (
        "clock",
        "last_updated",
        "non_empty_since",
        "oob_period",
        "penalty",
        "stream",
        "weight",
    )

    def __init__(
        self, penalty: float, clock: Callable[[], float], oob_period: float | None = None
    ) -> None:
        self.penalty = penalty
        self.clock = clock
        #: out-of-band reporting: the period to ask for (None: per-request reports)
        self.oob_period = oob_period
        #: the transport's out-of-band stream feeding this weight (``cancel()``), if any
        self.stream: Any = None
        self.weight = 0.0
        self.last_updated = _NEVER
        self.non_empty_since = _NEVER

    def stop(self) -> None:
        """Stop the out-of-band stream, if one runs (the endpoint left, or
        its cluster's policy or reporting mode changed)."""
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.cancel()

    def report(self, qps: float, eps: float, utilization: float) -> None:
        """Take one load report (A58 ``UpdateWeight``)."""
        weight = orca_weight(qps, eps, utilization, self.penalty)
        if weight <= 0:
            return
        now = self.clock()
        if self.non_empty_since == _NEVER:
            self.non_empty_since = now
        self.last_updated = now
        self.weight = weight

    def value(self, now: float, expiration: float, blackout: float) -> float:
        """The weight to schedule with at ``now``, 0 when unknown (A58 ``GetWeight``)."""
        if now - self.last_updated >= expiration:
            self.non_empty_since = _NEVER
            return 0.0
        if blackout > 0 and now - self.non_empty_since < blackout:
            return 0.0
        return self.weight

    def __repr__(self) -> str:
        return f"EndpointWeight({self.weight:g})"


def scheduling_weights(weights: Sequence[float]) -> list[float] | None:
    """The weights to schedule with: unknown (0) ones replaced by the mean of
    the known ones; None when fewer than two are known (round robin)."""
    known = [w for w in weights if w > 0]
    if len(known) < 2:
        return None
    mean = sum(known) / len(known)
    return [w if w > 0 else mean for w in weights]


class WeightedRoundRobinPicker(Picker):
    """gRFC A58's picker (see the module docstring)."""

    __slots__ = ("_clock", "_due", "_next", "_policy", "_schedule")

    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        rng: random.Random,
        policy: ClientSideWeightedRoundRobin,
        clock: Callable[[], float],
        *,
        panic: bool = False,
    ) -> None:
        super().__init__(endpoints, panic=panic)
        self._policy = policy
        self._clock = clock
        self._next = rng.randrange(len(self.endpoints)) if self.endpoints else 0
        self._schedule: EdfSchedule | None = None
        self._due = _NEVER
        self.reschedule(clock(), rng)

    def reschedule(self, now: float, rng: random.Random) -> None:
        """Recompute the weights and the schedule (due every ``weight_update_period``)."""
        policy = self._policy
        self._due = now + policy.weight_update_period
        weights = [
            e.orca.value(now, policy.weight_expiration_period, policy.blackout_period)
            if e.orca is not None
            else 0.0
            for e in self.endpoints
        ]
        filled = scheduling_weights(weights)
        self._schedule = None if filled is None else EdfSchedule(filled, rng)

    @property
    def weights(self) -> list[float] | None:
        """The weights of the current schedule (None: round robin)."""
        schedule = self._schedule
        return None if schedule is None else schedule.weights

    def _advance(self) -> int:
        schedule = self._schedule
        if schedule is not None:
            return schedule.next()
        index = self._next
        self._next = (index + 1) % len(self.endpoints)
        return index

    def pick(
        self,
        rng: random.Random,
        request_hash: int | None = None,
        exclude: Container[EndpointKey] = (),
    ) -> EndpointState | None:
        endpoints = self.endpoints
        if not endpoints:
            return None
        now = self._clock()
        if now >= self._due:
            self.reschedule(now, rng)
        panic = self.panic
        for _ in range(len(endpoints)):
            chosen = endpoints[self._advance()]
            if chosen.ready and (panic or chosen.healthy) and chosen.key not in exclude:
                return chosen
        usable, spread = self.fallback(endpoints, exclude)
        if spread and len(usable) > 1:
            return usable[int(rng.random() * len(usable))]
        return usable[0] if usable else None
