"""Per-endpoint state of the load-aware policies, kept with the endpoint.

A cluster whose endpoint-picking policy is client-side weighted round robin
(gRFC A58, :mod:`proxyless.lb.wrr`) gives each endpoint an
:class:`~proxyless.lb.wrr.EndpointWeight` in :attr:`EndpointState.orca`: the
transport sees it and reads the ORCA report of each finished attempt into it.
A peak-EWMA cluster (:mod:`proxyless.lb.peak_ewma`) gives each endpoint an
:class:`~proxyless.lb.peak_ewma.RttEwma` in :attr:`EndpointState.rtt` and
itself a :class:`~proxyless.lb.peak_ewma.LatencyFeedback`, which the request
path calls at the start and end of each attempt. Any other policy clears
both, so its requests do nothing extra. The state survives EDS updates and
picker rebuilds that keep the endpoint, as A58 keeps weights by address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from proxyless.clock import SystemClock
from proxyless.lb.peak_ewma import LatencyFeedback
from proxyless.lb.state import EndpointState
from proxyless.lb.wrr import EndpointWeight
from proxyless.resources.model import (
    ClientSideWeightedRoundRobin,
    LbPolicy,
    PeakEwma,
    WrrLocality,
)

__all__ = ["attach_load_state", "detach_load_state", "endpoint_policy", "monotonic"]

#: The clock load-aware pickers read unless given one (monotonic seconds).
monotonic: Callable[[], float] = SystemClock().monotonic


def endpoint_policy(policy: LbPolicy) -> LbPolicy:
    """The endpoint-picking policy under any ``wrr_locality`` wrappers."""
    while isinstance(policy, WrrLocality):
        policy = policy.child
    return policy


def attach_load_state(
    groups: Iterable[tuple[LbPolicy, Sequence[EndpointState]]],
    clock: Callable[[], float] = monotonic,
) -> LatencyFeedback | None:
    """Set or clear the load state of the endpoints of each ``(policy,
    endpoints)`` group (a cluster's priorities); return the cluster's
    :class:`LatencyFeedback` when a group is peak-EWMA."""
    feedback: LatencyFeedback | None = None
    for policy, endpoints in groups:
        inner = endpoint_policy(policy)
        if isinstance(inner, ClientSideWeightedRoundRobin):
            penalty = inner.error_utilization_penalty
            oob = inner.oob_reporting_period if inner.enable_oob_load_report else None
            for endpoint in endpoints:
                endpoint.rtt = None
                weight = endpoint.orca
                if weight is None:
                    endpoint.orca = EndpointWeight(penalty, clock, oob)
                    continue
                weight.penalty = penalty
                if weight.oob_period != oob:
                    weight.stop()  # the next attempt starts a stream with the new period
                    weight.oob_period = oob
        elif isinstance(inner, PeakEwma):
            if feedback is None:
                feedback = LatencyFeedback(inner.decay, inner.default_rtt, clock)
            for endpoint in endpoints:
                detach_load_state(endpoint)
            feedback.attach(endpoints)
        else:
            for endpoint in endpoints:
                if endpoint.orca is not None:
                    detach_load_state(endpoint)
                endpoint.rtt = None
    return feedback


def detach_load_state(endpoint: EndpointState) -> None:
    """Drop ``endpoint``'s ORCA weight, ending its out-of-band stream if any
    (the endpoint left its cluster, or the policy is no longer WRR)."""
    weight, endpoint.orca = endpoint.orca, None
    if weight is not None:
        weight.stop()
