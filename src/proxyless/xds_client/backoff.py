"""Reconnect backoff for the ADS stream.

gRPC connection backoff (grpc/grpc doc/connection-backoff.md, used for xDS
streams by gRFC A57): the first retry waits ``initial`` seconds, each later
one ``multiplier`` times longer up to ``maximum``, every delay spread by
``±jitter``. The backoff resets only once a response has been received on a
stream; a stream that ends after a response reconnects at once (A57).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    initial: float = 1.0
    multiplier: float = 1.6
    maximum: float = 120.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    _current: float = 0.0

    def next_delay(self) -> float:
        """The delay before the next attempt; grows with every call until reset."""
        self._current = (
            self.initial
            if self._current == 0.0
            else min(self._current * self.multiplier, self.maximum)
        )
        spread = self._current * self.jitter
        return max(0.0, self._current + self.rng.uniform(-spread, spread))

    def reset(self) -> None:
        self._current = 0.0
