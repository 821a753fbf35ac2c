"""Reconnect backoff of the ADS stream: 1,000 clients that lose their control
plane at the same instant do not come back in lockstep.

gRPC connection backoff (grpc doc/connection-backoff.md, used for xDS
streams by gRFC A57): 1 s initial, x1.6, at most 120 s, each delay spread
by +-20 %. Each client has its own random source (a Mesh's ``rng``), here
seeded per client so the figures are the same on every run. Pure: no
clock, no sleeping; reconnect times are the running sums of the delays.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from proxyless.xds_client.backoff import Backoff

CLIENTS = 1000
ATTEMPTS = 6
WINDOW = 0.010  # seconds: how close two reconnects must be to count as "together"


def _reconnect_times(jitter: float) -> list[list[float]]:
    """Per client, the times of its first ATTEMPTS reconnects after a failure at t=0."""
    out = []
    for client in range(CLIENTS):
        backoff = Backoff(jitter=jitter, rng=random.Random(client))
        t, times = 0.0, []
        for _ in range(ATTEMPTS):
            t += backoff.next_delay()
            times.append(t)
        out.append(times)
    return out


def _busiest_window(times: list[float]) -> int:
    """How many reconnects the busiest WINDOW-wide slot holds."""
    return max(Counter(int(t / WINDOW) for t in times).values())


def test_first_reconnects_spread_over_the_jitter_range() -> None:
    first = [times[0] for times in _reconnect_times(0.2)]
    assert 0.8 <= min(first) and max(first) <= 1.2
    assert max(first) - min(first) > 0.35  # nearly the whole 0.4 s range is used
    # uniform over 0.4 s puts ~25 clients in each 10 ms; lockstep would put 1,000
    assert _busiest_window(first) <= 50


@pytest.mark.parametrize("attempt", range(ATTEMPTS), ids=lambda a: f"attempt-{a + 1}")
def test_every_round_of_reconnects_is_spread(attempt: int) -> None:
    times = [t[attempt] for t in _reconnect_times(0.2)]
    assert _busiest_window(times) <= 50
    assert len({round(t, 6) for t in times}) > 0.99 * CLIENTS


def test_all_reconnects_together_never_crowd_one_slot() -> None:
    every = [t for times in _reconnect_times(0.2) for t in times]
    assert _busiest_window(every) <= 60  # 6,000 reconnects over ~30 s


def test_without_jitter_the_clients_come_back_in_lockstep() -> None:
    """The contrast that makes the figures above mean something."""
    first = [times[0] for times in _reconnect_times(0.0)]
    assert _busiest_window(first) == CLIENTS


@pytest.mark.parametrize(
    ("attempt", "base"),
    [pytest.param(n, min(1.6 ** (n - 1), 120.0), id=f"attempt-{n}") for n in (1, 2, 5, 12, 13, 20)],
)
def test_each_delay_is_the_grpc_delay_within_twenty_percent(attempt: int, base: float) -> None:
    for client in range(50):
        backoff = Backoff(rng=random.Random(client))
        delay = [backoff.next_delay() for _ in range(attempt)][-1]
        assert base * 0.8 <= delay <= base * 1.2
