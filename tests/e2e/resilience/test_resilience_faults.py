"""Fault injection on the sync gRPC channel (gRFC A33; Envoy HTTP fault
filter): percentage aborts with a gRPC status, and header-controlled delays
that touch only the calls carrying the header.

Delays are checked through the fault filter's counters and through call
deadlines (a marked call whose deadline is shorter than its injected delay
fails DEADLINE_EXCEEDED before reaching the backend), never by timing calls.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2
from tests.e2e.resilience.conftest import (
    SERVICE,
    TARGET,
    Echo,
    Service,
    backend_of,
    fault_filter,
    reset_counts,
    wait_served,
)

from proxyless.mesh import Mesh
from proxyless.resilience.fault import DELAY_HEADER, FaultInjector
from proxyless.testing.backends import EchoServer

Backends = Callable[..., list[EchoServer]]


def _percent(n: int) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(
        numerator=n, denominator=percent_pb2.FractionalPercent.HUNDRED
    )


def _injector(mesh: Mesh) -> FaultInjector:
    """The injector the data path uses for the listener's fault filter."""
    snap = mesh.config(SERVICE).snapshot
    assert snap is not None
    filters = mesh.target(TARGET).fault_filters(snap)
    assert len(filters) == 1, filters
    return FaultInjector.for_config(filters[0][1])


def test_aborts_at_30_percent_over_1000_calls(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    (a,) = backends("a")
    abort = fault_pb2.HTTPFault(
        abort=fault_pb2.FaultAbort(
            grpc_status=grpc.StatusCode.ABORTED.value[0], percentage=_percent(30)
        )
    )
    service.publish([a], http_filters=[fault_filter(abort)])
    wait_served(echo, [a])
    injector = _injector(mesh)
    before = injector.stats["aborts_injected"]
    reset_counts([a])

    calls = 1000
    aborted = 0
    for _ in range(calls):
        try:
            echo(b"x", timeout=5)
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.ABORTED, err  # type: ignore[attr-defined]
            assert "fault injected" in (err.details() or ""), err.details()  # type: ignore[attr-defined]
            aborted += 1

    assert 260 <= aborted <= 340, f"{aborted / 10:.1f}% aborted, expected 30 +/- 4"
    assert a.calls == calls - aborted  # aborted calls never reach the backend
    assert injector.stats["aborts_injected"] - before == aborted
    assert injector.active_faults == 0


def test_header_controlled_delay_applies_only_to_marked_calls(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    (a,) = backends("a")
    delay = fault_pb2.HTTPFault(
        delay=common_fault_pb2.FaultDelay(
            header_delay=common_fault_pb2.FaultDelay.HeaderDelay(), percentage=_percent(100)
        )
    )
    service.publish([a], http_filters=[fault_filter(delay)])
    wait_served(echo, [a])
    injector = _injector(mesh)
    reset_counts([a])
    start = injector.stats["delays_injected"]

    # Unmarked calls: no delay decided, even with a short deadline.
    for _ in range(10):
        assert backend_of(echo(b"x", timeout=5)) == "a"
    assert injector.stats["delays_injected"] == start

    # Marked with a small delay: delayed, then served.
    marked = ((DELAY_HEADER, "50"),)
    for _ in range(10):
        assert backend_of(echo(b"x", timeout=5, metadata=marked)) == "a"
    assert injector.stats["delays_injected"] == start + 10
    assert a.calls == 20

    # Marked with a delay longer than the deadline: the delay really holds the
    # call, which ends DEADLINE_EXCEEDED without reaching the backend ...
    deadline = 0.5
    long_marked = ((DELAY_HEADER, "5000"),)
    for _ in range(2):
        try:
            echo(b"x", timeout=deadline, metadata=long_marked)
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED, err  # type: ignore[attr-defined]
            assert "injected delay" in (err.details() or ""), err.details()  # type: ignore[attr-defined]
        else:
            raise AssertionError("a call delayed 5 s beat its 0.5 s deadline")
    assert a.calls == 20
    # ... while the same deadline is plenty for unmarked calls.
    for _ in range(2):
        assert backend_of(echo(b"x", timeout=deadline)) == "a"
    assert injector.stats["delays_injected"] == start + 12
    assert injector.active_faults == 0
