"""Peak-EWMA power of two choices: the latency-aware balancer of Linkerd.

Each endpoint keeps an estimate of its round-trip time (:class:`RttEwma`),
starting at ``default_rtt`` (30 ms). A finished attempt's RTT is a sample:

- a sample above the estimate replaces it (peak-sensitive: an endpoint that
  slows down is avoided at once);
- otherwise the estimate moves toward the sample with the weight of the time
  since the last update: ``decayed = exp(-elapsed / decay)``,
  ``estimate = estimate * decayed + sample * (1 - decayed)`` (``decay`` 10 s).

Reading the cost first decays the estimate toward 0 the same way, so an
endpoint that took no traffic for a while looks cheaper again and is tried.
The cost of an endpoint is ``estimate * (active_requests + 1)``; a pick draws
two distinct candidates at random (power of two choices) and takes the
cheaper one. Candidates that are not ready, not usable or in ``exclude``
are skipped, as in least request; with one candidate left it is the pick.

Every finished attempt is a sample, failures included: a timeout is a long
sample, an error that comes back at once a short one (outlier detection,
not this balancer, keeps failing endpoints out).

The samples come from the data path (``proxyless.runtime.call``): when a
cluster's policy is :class:`~proxyless.resources.model.PeakEwma` its
:class:`~proxyless.lb.cluster.ClusterLoadBalancer` carries a
:class:`LatencyFeedback`, which stamps each attempt as it starts
(:meth:`LatencyFeedback.sent`) and turns its end into a sample
(:meth:`LatencyFeedback.done`). Clusters with other policies carry None and
pay one attribute test per attempt.

Linkerd's proxy and tower's ``PeakEwma`` load were the reference for the
rule and the defaults; times here are float seconds on an injected clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Container, Sequence
from typing import Any

from proxyless.lb.pickers import EndpointKey, Picker
from proxyless.lb.state import EndpointState

__all__ = ["LatencyFeedback", "PeakEwmaPicker", "RttEwma"]


class RttEwma:
    """The peak-sensitive, decaying RTT estimate of one endpoint (seconds)."""

    __slots__ = ("estimate", "stamp")

    def __init__(self, default_rtt: float, now: float) -> None:
        self.estimate = default_rtt
        self.stamp = now

    def observe(self, rtt: float, now: float, decay: float) -> float:
        """Take a sample ``rtt`` at ``now``; return the new estimate."""
        if rtt > self.estimate:
            self.estimate = rtt
        else:
            elapsed = now - self.stamp
            weight = math.exp(-elapsed / decay) if elapsed > 0 else 1.0
            self.estimate = self.estimate * weight + rtt * (1.0 - weight)
        if now > self.stamp:
            self.stamp = now
        return self.estimate

    def cost(self, pending: int, now: float, decay: float) -> float:
        """``estimate * (pending + 1)`` after decaying the estimate to ``now``."""
        return float(self.observe(0.0, now, decay) * (pending + 1))

    def __repr__(self) -> str:
        return f"RttEwma({self.estimate * 1000:.3f} ms)"


class LatencyFeedback:
    """What the data path calls for a peak-EWMA cluster (module docstring)."""

    __slots__ = ("clock", "decay", "default_rtt")

    def __init__(self, decay: float, default_rtt: float, clock: Callable[[], float]) -> None:
        self.decay = decay
        self.default_rtt = default_rtt
        self.clock = clock

    def sent(self, attempt: Any) -> None:
        """An attempt starts: stamp it."""
        attempt.sent = self.clock()

    def done(self, attempt: Any) -> None:
        """An attempt ended: its RTT is a sample of its endpoint's estimate."""
        sent = getattr(attempt, "sent", None)
        rtt = attempt.endpoint.rtt
        if sent is None or rtt is None:
            return
        now = self.clock()
        rtt.observe(now - sent, now, self.decay)

    def attach(self, endpoints: Sequence[EndpointState]) -> None:
        """Give every endpoint an estimate (kept when it has one)."""
        now = self.clock()
        for endpoint in endpoints:
            if endpoint.rtt is None:
                endpoint.rtt = RttEwma(self.default_rtt, now)

    def __repr__(self) -> str:
        return f"LatencyFeedback(decay={self.decay:g}s, default_rtt={self.default_rtt:g}s)"


class PeakEwmaPicker(Picker):
    """Power of two choices by peak-EWMA cost (see the module docstring)."""

    __slots__ = ("_clock", "_decay", "_default_rtt")

    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        feedback: LatencyFeedback,
        *,
        panic: bool = False,
    ) -> None:
        super().__init__(endpoints, panic=panic)
        feedback.attach(self.endpoints)
        self._clock = feedback.clock
        self._decay = feedback.decay
        self._default_rtt = feedback.default_rtt

    def _cost(self, endpoint: EndpointState, now: float) -> float:
        rtt: RttEwma | None = endpoint.rtt
        if rtt is None:  # attached after this picker was built
            rtt = endpoint.rtt = RttEwma(self._default_rtt, now)
        return rtt.cost(endpoint.active_requests, now, self._decay)

    def _better(self, a: EndpointState, b: EndpointState) -> EndpointState:
        now = self._clock()
        return a if self._cost(a, now) <= self._cost(b, now) else b

    def pick(
        self,
        rng: random.Random,
        request_hash: int | None = None,
        exclude: Container[EndpointKey] = (),
    ) -> EndpointState | None:
        endpoints = self.endpoints
        n = len(endpoints)
        if n == 0:
            return None
        if n > 1:
            i = int(rng.random() * n)
            j = int(rng.random() * (n - 1))
            if j >= i:
                j += 1
            a, b = endpoints[i], endpoints[j]
            panic = self.panic
            a_ok = a.ready and (panic or a.healthy) and a.key not in exclude
            b_ok = b.ready and (panic or b.healthy) and b.key not in exclude
            if a_ok and b_ok:
                return self._better(a, b)
            if a_ok or b_ok:
                return a if a_ok else b
        candidates, _ = self.fallback(endpoints, exclude)
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        a, b = rng.sample(candidates, 2)
        return self._better(a, b)
