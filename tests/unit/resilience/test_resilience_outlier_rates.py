"""scan_rates: Envoy's success-rate and failure-percentage algorithms over one
interval's inactive buckets, without ejecting anything (gRFC A50)."""

from __future__ import annotations

import pytest

from proxyless.lb.state import EndpointState
from proxyless.resilience.outlier_rates import scan_rates
from proxyless.resilience.outlier_state import EndpointOutlierState
from proxyless.resources.model import Endpoint, Locality, OutlierDetection

OWNER = object()


def endpoints(counts: list[tuple[int, int]]) -> list[EndpointState]:
    """One endpoint per ``(total, ok)`` of external-origin calls in the last interval."""
    out = []
    for i, (total, ok) in enumerate(counts):
        es = EndpointState(Endpoint(f"10.0.0.{i + 1}", 8080), Locality(), 0)
        state = EndpointOutlierState(OWNER)  # type: ignore[arg-type]
        state.inactive.ext_total, state.inactive.ext_ok = total, ok
        es.outlier = state
        out.append(es)
    return out


CONFIG = OutlierDetection(
    success_rate_minimum_hosts=3,
    success_rate_request_volume=10,
    failure_percentage_minimum_hosts=3,
    failure_percentage_request_volume=10,
    failure_percentage_threshold=50,
)


@pytest.mark.parametrize(
    "counts, sr_outliers, fp_outliers",
    [
        pytest.param([(10, 10)] * 4, None, None, id="no-failure-no-scan"),
        pytest.param([(10, 10)] * 9 + [(10, 0)], [9], [9], id="one-bad-of-ten"),
        pytest.param([(10, 10), (10, 10), (10, 4)], [], [2], id="stdev-too-wide-for-three"),
        pytest.param([(10, 10), (10, 10), (5, 0)], [], [], id="low-volume-not-enough-hosts"),
    ],
)
def test_scan_rates(
    counts: list[tuple[int, int]], sr_outliers: list[int] | None, fp_outliers: list[int] | None
) -> None:
    eps = endpoints(counts)
    scan = scan_rates(eps, OWNER, CONFIG, local=False)
    if sr_outliers is None:
        assert scan is None
        return
    assert scan is not None
    assert [eps.index(es) for es, _ in scan.success_rate_outliers] == sr_outliers
    assert [eps.index(es) for es, _ in scan.failure_percentage_outliers] == fp_outliers


def test_scan_rates_skips_ejected_and_other_owners_and_counts_low_volume() -> None:
    eps = endpoints([(10, 10), (10, 10), (10, 10), (10, 0), (4, 1)])
    eps[3].ejected = True
    scan = scan_rates(eps, object(), CONFIG, local=False)
    assert scan is None  # none of them is this owner's
    scan = scan_rates(eps, OWNER, CONFIG, local=False)
    assert scan is not None
    assert scan.success_rate_hosts == 3 and scan.success_rate_low_volume == 1
    assert scan.success_rate_outliers == () and scan.failure_percentage_outliers == ()
