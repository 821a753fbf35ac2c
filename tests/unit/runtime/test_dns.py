"""STRICT_DNS resolution: the pure expansion, and the refresh driven by a fake clock."""

from __future__ import annotations

import queue
import socket
from collections.abc import Callable, Sequence

import pytest

from proxyless.errors import ClusterNotAvailable
from proxyless.resources.model import (
    Cluster,
    ClusterLoadAssignment,
    Endpoint,
    Locality,
    LocalityEndpoints,
)
from proxyless.runtime.dns import DnsResolution, hostnames, resolved_assignment
from proxyless.testing import FakeClock


def _assignment(*endpoints: Endpoint) -> ClusterLoadAssignment:
    return ClusterLoadAssignment(
        cluster_name="c", priorities=((LocalityEndpoints(Locality(), 1, 0, endpoints),),)
    )


def _addresses(cla: ClusterLoadAssignment) -> list[tuple[str, int, str]]:
    return [(e.address, e.port, e.hostname) for e in cla.priorities[0][0].endpoints]


@pytest.mark.parametrize(
    ("endpoints", "resolved", "expected"),
    [
        pytest.param(
            (Endpoint("backend.example", 80),),
            {"backend.example": ["10.0.0.1", "10.0.0.2"]},
            [("10.0.0.1", 80, "backend.example"), ("10.0.0.2", 80, "backend.example")],
            id="every-address-an-endpoint",
        ),
        pytest.param(
            (Endpoint("10.0.0.9", 81), Endpoint("a.example", 80)),
            {"a.example": ["10.0.0.1"]},
            [("10.0.0.9", 81, ""), ("10.0.0.1", 80, "a.example")],
            id="ip-endpoints-kept",
        ),
        pytest.param(
            (Endpoint("a.example", 80), Endpoint("b.example", 80)),
            {"a.example": ["10.0.0.1"], "b.example": ["10.0.0.1"]},
            [("10.0.0.1", 80, "a.example")],
            id="same-address-once",
        ),
        pytest.param(
            (Endpoint("a.example", 80),),
            {},
            [],
            id="unresolved-name-has-no-endpoint",
        ),
    ],
)
def test_resolved_assignment(
    endpoints: tuple[Endpoint, ...],
    resolved: dict[str, list[str]],
    expected: list[tuple[str, int, str]],
) -> None:
    assert _addresses(resolved_assignment(_assignment(*endpoints), resolved)) == expected


def test_hostnames_skips_ip_literals() -> None:
    cla = _assignment(Endpoint("::1", 1), Endpoint("a.example", 1), Endpoint("127.0.0.1", 2))
    assert hostnames(cla) == ["a.example"]


class _Harness:
    """Runs a DnsResolution with a scripted resolver; ``post`` queues to this thread."""

    def __init__(self, cluster: Cluster, answers: dict[str, Sequence[str] | OSError]) -> None:
        self.clock = FakeClock(start=0.0)
        self.answers = answers
        self.asked: list[tuple[str, int]] = []
        self.changes = 0
        self.posted: queue.Queue[Callable[[], None]] = queue.Queue()
        self.dns = DnsResolution(
            cluster,
            clock=self.clock,
            post=self.posted.put,
            on_change=self._changed,
            resolver=self._resolve,
        )

    def _changed(self) -> None:
        self.changes += 1

    def _resolve(self, host: str, family: int) -> Sequence[str]:
        self.asked.append((host, family))
        answer = self.answers[host]
        if isinstance(answer, OSError):
            raise answer
        return answer

    def settle(self) -> None:
        """Run the result of the lookup in flight on this thread (bounded wait)."""
        self.posted.get(timeout=10)()


def _cluster(*endpoints: Endpoint, refresh: float | None = None) -> Cluster:
    return Cluster(
        name="outbound|80||ext",
        type="STRICT_DNS",
        load_assignment=_assignment(*endpoints),
        dns_refresh_rate=refresh,
        dns_lookup_family="V4_ONLY",
    )


def test_resolution_refreshes_on_the_clusters_rate() -> None:
    h = _Harness(_cluster(Endpoint("ext.example", 80), refresh=2.0), {"ext.example": ["10.0.0.1"]})
    h.dns.start()
    assert h.dns.value is None  # pending until the first lookup is back
    h.settle()
    assert h.dns.value is not None and _addresses(h.dns.value) == [("10.0.0.1", 80, "ext.example")]
    assert h.changes == 1
    h.answers["ext.example"] = ["10.0.0.1", "10.0.0.2"]
    h.clock.advance(1.9)
    assert h.posted.empty() and len(h.asked) == 1
    h.clock.advance(0.1)
    h.settle()
    assert [a for a, _, _ in _addresses(h.dns.value)] == ["10.0.0.1", "10.0.0.2"]
    assert h.changes == 2
    h.clock.advance(2.0)
    h.settle()
    assert h.changes == 2  # the same answer changes nothing
    assert {family for _, family in h.asked} == {socket.AF_INET}  # V4_ONLY


def test_default_refresh_is_five_seconds() -> None:
    h = _Harness(_cluster(Endpoint("ext.example", 80)), {"ext.example": ["10.0.0.1"]})
    h.dns.start()
    h.settle()
    h.clock.advance(4.9)
    assert len(h.asked) == 1
    h.clock.advance(0.1)
    h.settle()
    assert len(h.asked) == 2


def test_first_failure_is_an_error_later_ones_keep_addresses() -> None:
    h = _Harness(_cluster(Endpoint("ext.example", 80)), {"ext.example": OSError("no such host")})
    h.dns.start()
    h.settle()
    assert isinstance(h.dns.error, ClusterNotAvailable)
    assert "ext.example: no such host" in str(h.dns.error)
    h.answers["ext.example"] = ["10.0.0.3"]
    h.clock.advance(5.0)
    h.settle()
    assert h.dns.error is None and h.dns.value is not None
    h.answers["ext.example"] = OSError("temporary failure")
    h.clock.advance(5.0)
    h.settle()
    assert h.dns.error is None and _addresses(h.dns.value) == [("10.0.0.3", 80, "ext.example")]


def test_cancel_stops_refreshing() -> None:
    h = _Harness(_cluster(Endpoint("ext.example", 80)), {"ext.example": ["10.0.0.1"]})
    h.dns.start()
    h.settle()
    h.dns.cancel()
    h.clock.advance(60.0)
    assert h.posted.empty() and len(h.asked) == 1


def test_ip_only_cluster_needs_no_lookup() -> None:
    h = _Harness(_cluster(Endpoint("10.0.0.1", 80)), {})
    h.dns.start()
    assert h.dns.value is not None and h.asked == [] and h.clock.pending() == 0
