"""Bad resilience config is NACKed by the resource parser with the field
path (gRFC A46), and calls keep working with the previous config.

Each case first serves calls with a valid config (retry policy, retry
budget, outlier detection, fault filter), then pushes one broken resource,
waits for the NACK at the ADS server and checks that the error names the
field, that the data path kept the old limits, and that calls still succeed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2
from tests.e2e.resilience.conftest import (
    CLUSTER,
    Echo,
    Service,
    backend_of,
    breaker_cluster,
    fault_filter,
    outlier_detection,
    retry_policy,
    runtime,
    wait_served,
)

from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import EchoServer
from proxyless.testing.resources import CLUSTER_URL, LISTENER_URL, ROUTE_URL, route

Backends = Callable[..., list[EchoServer]]

NEGATIVE = duration_pb2.Duration(seconds=-1)


def _good_cluster() -> Any:
    return breaker_cluster(
        max_requests=100,
        budget_percent=25.0,
        min_retry_concurrency=4,
        outlier=outlier_detection(consecutive_5xx=5, max_ejection_percent=50),
    )


def _good_retry() -> route_components_pb2.RetryPolicy:
    return retry_policy("unavailable", 2, per_try_timeout=2.0)


def _fault(delay: common_fault_pb2.FaultDelay | None = None) -> fault_pb2.HTTPFault:
    # Header-controlled abort: never fires for calls without the header.
    return fault_pb2.HTTPFault(
        abort=fault_pb2.FaultAbort(
            header_abort=fault_pb2.FaultAbort.HeaderAbort(),
            percentage=percent_pb2.FractionalPercent(numerator=100),
        ),
        delay=delay,
    )


# -- the broken pushes --------------------------------------------------------------------


def _negative_base_ejection_time(service: Service) -> None:
    c = _good_cluster()
    c.outlier_detection.base_ejection_time.CopyFrom(NEGATIVE)
    service.set_cluster(c)


def _negative_outlier_interval(service: Service) -> None:
    c = _good_cluster()
    c.outlier_detection.interval.CopyFrom(NEGATIVE)
    service.set_cluster(c)


def _max_ejection_percent_over_100(service: Service) -> None:
    c = _good_cluster()
    c.outlier_detection.max_ejection_percent.value = 150
    service.set_cluster(c)


def _enforcing_over_100(service: Service) -> None:
    c = _good_cluster()
    c.outlier_detection.enforcing_consecutive_5xx.value = 101
    service.set_cluster(c)


def _budget_percent_over_100(service: Service) -> None:
    c = _good_cluster()
    c.circuit_breakers.thresholds[0].retry_budget.budget_percent.value = 150.0
    service.set_cluster(c)


def _negative_per_try_timeout(service: Service) -> None:
    p = _good_retry()
    p.per_try_timeout.CopyFrom(NEGATIVE)
    service.set_routes([route(prefix="/", cluster=CLUSTER, retry_policy=p)])


def _negative_retry_back_off(service: Service) -> None:
    p = _good_retry()
    p.retry_back_off.base_interval.CopyFrom(NEGATIVE)
    service.set_routes([route(prefix="/", cluster=CLUSTER, retry_policy=p)])


def _negative_fault_delay(service: Service) -> None:
    delay = common_fault_pb2.FaultDelay(
        fixed_delay=NEGATIVE, percentage=percent_pb2.FractionalPercent(numerator=100)
    )
    service.set_listener([fault_filter(_fault(delay))])


CASES = [
    pytest.param(
        _negative_base_ejection_time,
        CLUSTER_URL,
        "c: outlier_detection.base_ejection_time: duration must not be negative",
        id="negative-base-ejection-time",
    ),
    pytest.param(
        _negative_outlier_interval,
        CLUSTER_URL,
        "c: outlier_detection.interval: duration must not be negative",
        id="negative-outlier-interval",
    ),
    pytest.param(
        _max_ejection_percent_over_100,
        CLUSTER_URL,
        "c: outlier_detection.max_ejection_percent: 150 is a percentage",
        id="max-ejection-percent-150",
    ),
    pytest.param(
        _enforcing_over_100,
        CLUSTER_URL,
        "c: outlier_detection.enforcing_consecutive_5xx: 101 is a percentage",
        id="enforcing-consecutive-5xx-101",
    ),
    pytest.param(
        _budget_percent_over_100,
        CLUSTER_URL,
        "c: circuit_breakers.thresholds[0].retry_budget.budget_percent.value: percent 150",
        id="budget-percent-150",
    ),
    pytest.param(
        _negative_per_try_timeout,
        ROUTE_URL,
        "svc:80-routes: virtual_hosts[0].routes[0].route.retry_policy.per_try_timeout",
        id="negative-per-try-timeout",
    ),
    pytest.param(
        _negative_retry_back_off,
        ROUTE_URL,
        "svc:80-routes: virtual_hosts[0].routes[0].route.retry_policy.retry_back_off.base_interval",
        id="negative-retry-back-off",
    ),
    pytest.param(
        _negative_fault_delay,
        LISTENER_URL,
        "svc:80: api_listener.api_listener.http_filters[0].typed_config.delay.fixed_delay",
        id="negative-fault-delay",
    ),
]


@pytest.mark.parametrize(("push_bad", "type_url", "field_path"), CASES)
def test_bad_config_is_nacked_with_field_path_and_calls_keep_working(
    service: Service,
    ads: AdsServer,
    backends: Backends,
    echo: Echo,
    mesh: Mesh,
    push_bad: Callable[[Service], None],
    type_url: str,
    field_path: str,
) -> None:
    (a,) = backends("a")
    service.publish(
        [a],
        cluster_proto=_good_cluster(),
        routes=[route(prefix="/", cluster=CLUSTER, retry_policy=_good_retry())],
        http_filters=[fault_filter(_fault())],
    )
    wait_served(echo, [a])
    rt = runtime(mesh)
    breaker = rt.breakers.default
    assert (breaker.max_requests, breaker.retry_budget.budget_percent) == (100, 25.0)
    detector = rt.outlier
    assert detector is not None and detector.config.max_ejection_percent == 50

    since = len(ads.requests)
    push_bad(service)
    nack = ads.wait_for(lambda r: r.is_nack and r.type_url == type_url, timeout=10, since=since)

    assert nack.error_detail is not None
    message = nack.error_detail.message
    assert field_path in message, message
    # The data path kept the previous config ...
    assert runtime(mesh) is rt
    assert (breaker.max_requests, breaker.retry_budget.budget_percent) == (100, 25.0)
    assert rt.outlier is detector and detector.config.max_ejection_percent == 50
    # ... and keeps serving, retries included.
    for _ in range(5):
        assert backend_of(echo(b"x", timeout=5)) == "a"
    a.fail_next(1, grpc.StatusCode.UNAVAILABLE)
    before = a.calls
    assert backend_of(echo(b"x", timeout=5)) == "a"
    assert a.calls == before + 2
