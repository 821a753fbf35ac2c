"""Reconnect backoff for the ADS stream.

gRPC connection backoff (grpc/grpc doc/connection-backoff.md, used for xDS
streams by gRFC A57): the first retry waits ``initial`` seconds (1 s), each
later one ``multiplier`` (1.6) times longer up to ``maximum`` (120 s), every
delay spread by ``±jitter`` (20 %). The backoff resets only once a response
has been received on a stream; a stream that ends after a response
reconnects at once (A57) — the client calls :meth:`Backoff.reset` then.

The exponential part is tenacity's ``wait_exponential`` (``initial *
multiplier ** (attempt - 1)``, capped at ``maximum``), evaluated for the
attempt number a ``tenacity.RetryCallState`` counts, so the growth and cap
rule is the well-tested one retry loops elsewhere use rather than our own.
The jitter is applied here: gRPC's jitter is a symmetric spread around the
delay, which tenacity's jitter strategies (full jitter, additive jitter) are
not, and they draw from the global ``random`` module while the client's
random source is injected (tests seed it). Nothing here sleeps or reads the
clock's time; the client schedules the delay on its injected clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import tenacity

__all__ = ["Backoff"]


def _first_attempt() -> tenacity.RetryCallState:
    return tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})


@dataclass(slots=True)
class Backoff:
    initial: float = 1.0
    multiplier: float = 1.6
    maximum: float = 120.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    _wait: tenacity.wait_exponential = field(init=False, repr=False)
    _attempt: tenacity.RetryCallState = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._wait = tenacity.wait_exponential(
            multiplier=self.initial, exp_base=self.multiplier, max=self.maximum
        )
        self._attempt = _first_attempt()

    def next_delay(self) -> float:
        """The delay before the next attempt; grows with every call until reset."""
        current = self._wait(self._attempt)
        self._attempt.prepare_for_next_attempt()
        spread = current * self.jitter
        return max(0.0, current + self.rng.uniform(-spread, spread))

    def reset(self) -> None:
        """Start again from ``initial`` (a response was received, gRFC A57)."""
        self._attempt = _first_attempt()
