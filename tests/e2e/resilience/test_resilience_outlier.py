"""Outlier detection on the sync gRPC channel (Envoy ``outlier_detection``,
consecutive 5xx; gRFC A50 ejection times): a failing endpoint is ejected
at once after ``consecutive_5xx`` failures, gets no traffic for the
ejection time, and comes back at the first sweep after it;
``max_ejection_percent`` caps how many are ejected.

Time is a :class:`~proxyless.testing.FakeClock` on the Mesh: the sweep timer
runs on the Mesh thread when the test advances the clock, one interval at a
time, and the test waits (bounded) for each sweep before calling again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import grpc
from tests.e2e.resilience.conftest import (
    Echo,
    Service,
    backend_of,
    breaker_cluster,
    outlier_detection,
    reset_counts,
    runtime,
    wait_served,
    wait_until,
)

from proxyless.mesh import Mesh
from proxyless.resilience.outlier import OutlierDetector
from proxyless.testing import FakeClock
from proxyless.testing.backends import EchoServer

Backends = Callable[..., list[EchoServer]]

INTERVAL = 1.0
BASE_EJECTION = 10.0


def _detector(mesh: Mesh) -> OutlierDetector:
    detector = runtime(mesh).outlier
    assert detector is not None, "the cluster has no outlier detector"
    return detector


def _tick(clock: FakeClock, detector: OutlierDetector) -> None:
    """Advance one interval and wait until the Mesh thread ran that sweep."""
    clock.advance(INTERVAL)
    wait_until(
        lambda: detector.next_sweep_in(clock.monotonic()) > 0,
        what=f"the outlier sweep at t={clock.monotonic():g}",
    )


def _calls(echo: Echo, n: int) -> tuple[Counter[str], list[grpc.RpcError]]:
    served: Counter[str] = Counter()
    failed: list[grpc.RpcError] = []
    for _ in range(n):
        try:
            served[backend_of(echo(b"x", timeout=5))] += 1
        except grpc.RpcError as exc:
            failed.append(exc)
    return served, failed


def test_failing_endpoint_is_ejected_for_the_ejection_time_then_returns(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh, clock: FakeClock
) -> None:
    a, b, bad = backends("a", "b", "bad")
    od = outlier_detection(consecutive_5xx=3, interval=INTERVAL, base_ejection_time=BASE_EJECTION)
    service.publish([a, b, bad], cluster_proto=breaker_cluster(outlier=od))
    wait_served(echo, [a, b, bad])
    detector = _detector(mesh)
    served, failed = _calls(echo, 6)
    assert served == Counter(a=2, b=2, bad=2) and not failed  # round robin, all healthy
    reset_counts([a, b, bad])

    # -- ejected after exactly consecutive_5xx failures, at once ------------------------
    bad.fail_always(grpc.StatusCode.UNAVAILABLE)
    served, failed = _calls(echo, 30)
    assert bad.calls == 3, bad.calls
    assert len(failed) == 3
    assert all(e.code() is grpc.StatusCode.UNAVAILABLE for e in failed)  # type: ignore[attr-defined]
    assert set(served) == {"a", "b"} and sum(served.values()) == 27, served
    assert detector.ejected_count == 1
    assert detector.stats["ejections_enforced_consecutive_5xx"] == 1
    assert [es.address for es in detector.endpoints if es.ejected] == [bad.address]

    # -- no traffic while ejected (9 of the 10 seconds) ---------------------------------
    for _ in range(int(BASE_EJECTION) - 1):
        _tick(clock, detector)
        served, failed = _calls(echo, 6)
        assert not failed and served["bad"] == 0, (clock, served)
    assert bad.calls == 3
    assert detector.ejected_count == 1
    assert detector.stats["unejections_total"] == 0

    # -- back at the first sweep once the ejection time has passed -----------------------
    bad.fail_always(None)
    _tick(clock, detector)
    assert detector.ejected_count == 0
    assert detector.stats["unejections_total"] == 1
    served, failed = _calls(echo, 9)
    assert not failed
    assert served == Counter(a=3, b=3, bad=3), served


def test_max_ejection_percent_caps_ejections(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh
) -> None:
    good, bad1, bad2 = backends("good", "bad1", "bad2")
    od = outlier_detection(
        consecutive_5xx=3,
        interval=INTERVAL,
        base_ejection_time=BASE_EJECTION,
        max_ejection_percent=50,
    )
    service.publish([good, bad1, bad2], cluster_proto=breaker_cluster(outlier=od))
    wait_served(echo, [good, bad1, bad2])
    detector = _detector(mesh)
    reset_counts([good, bad1, bad2])

    bad1.fail_always(grpc.StatusCode.UNAVAILABLE)
    bad2.fail_always(grpc.StatusCode.UNAVAILABLE)
    _calls(echo, 30)

    # 50% of 3 endpoints: the second ejection would make 2/3 = 67% (doc table).
    assert detector.ejected_count == 1
    ejected = [es.address for es in detector.endpoints if es.ejected]
    assert len(ejected) == 1
    kept_bad = bad2 if ejected == [bad1.address] else bad1
    gone_bad = bad1 if kept_bad is bad2 else bad2
    assert gone_bad.calls == 3
    assert kept_bad.calls > 3, "the bad endpoint that could not be ejected lost its traffic"
    assert detector.stats["ejections_enforced_total"] == 1
    assert detector.stats["ejections_overflow"] >= 1
    assert good.address not in ejected
