"""Mesh signals end to end on the sync gRPC channel: the values of
``proxyless.outlier.ejections``, ``proxyless.retry_budget.refusals`` and
``proxyless.circuit_breaker.overflows`` match what the calls went through,
and ``proxyless.certificate.expiry`` reports an SDS certificate's time left.

Every load is a fixed number of calls; counts are compared with the
component's own statistics and with what the calls saw, never with times.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable

import grpc
from tests.e2e.observability_signals.conftest import Metrics
from tests.e2e.resilience.conftest import (
    CLUSTER,
    Echo,
    Service,
    breaker_cluster,
    outlier_detection,
    reset_counts,
    retry_policy,
    runtime,
    wait_served,
    wait_until,
)
from tests.e2e.security_sources.test_certificate_sources import credentials, serve_cluster

from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.backends import EchoServer
from proxyless.testing.resources import SECRET_URL, certificate_secret, trust_secret, upstream_tls

Backends = Callable[..., list[EchoServer]]

EJECTIONS = "proxyless.outlier.ejections"
REFUSALS = "proxyless.retry_budget.refusals"
OVERFLOWS = "proxyless.circuit_breaker.overflows"
WEB = "spiffe://cluster.local/ns/default/sa/web"


def _calls(echo: Echo, n: int) -> list[grpc.RpcError]:
    failed = []
    for _ in range(n):
        try:
            echo(b"x", timeout=5)
        except grpc.RpcError as exc:
            failed.append(exc)
    return failed


def test_ejections_enforced_and_kept_in(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh, metrics: Metrics
) -> None:
    good, bad1, bad2, bad3 = backends("good", "bad1", "bad2", "bad3")
    # 50% of 4 endpoints: two may be ejected (K = 2); the third bad one stays in.
    od = outlier_detection(consecutive_5xx=3, max_ejection_percent=50)
    service.publish([good, bad1, bad2, bad3], cluster_proto=breaker_cluster(outlier=od))
    wait_served(echo, [good, bad1, bad2, bad3])
    reset_counts([good, bad1, bad2, bad3])
    for bad in (bad1, bad2, bad3):
        bad.fail_always(grpc.StatusCode.UNAVAILABLE)

    failed = _calls(echo, 60)

    detector = runtime(mesh).outlier
    assert detector is not None
    stats = detector.stats
    assert detector.ejected_count == 2 and stats["ejections_enforced_total"] == 2
    assert stats["ejections_overflow"] >= 1
    c5xx = {"proxyless__cluster": CLUSTER, "proxyless__outlier__reason": "consecutive_5xx"}
    assert metrics.value(EJECTIONS, **c5xx, proxyless__outlier__enforced=True) == 2
    assert (
        metrics.value(EJECTIONS, **c5xx, proxyless__outlier__enforced=False)
        == stats["ejections_detected_consecutive_5xx"] - 2
    )
    # UNAVAILABLE is also a gateway failure: detected every 5 in a row, never
    # enforced (enforcing_consecutive_gateway_failure defaults to 0).
    gateway = {"proxyless__outlier__reason": "consecutive_gateway_failure"}
    assert stats["ejections_detected_consecutive_gateway_failure"] >= 1
    assert metrics.value(EJECTIONS, **gateway, proxyless__outlier__enforced=True) == 0
    assert (
        metrics.value(EJECTIONS, **gateway, proxyless__outlier__enforced=False)
        == stats["ejections_detected_consecutive_gateway_failure"]
    )
    # Every detection counts once: enforced, or kept in by the cap or the roll.
    assert metrics.value(EJECTIONS, proxyless__outlier__enforced=False) == (
        stats["ejections_overflow"] + stats["ejections_skipped_enforcement"]
    )
    assert len(failed) == bad1.calls + bad2.calls + bad3.calls


def test_budget_refusals_one_per_failed_call(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh, metrics: Metrics
) -> None:
    (a,) = backends("a")
    service.publish([a], retry_policy=retry_policy("unavailable", 3))
    wait_served(echo, [a])
    # A budget with no room: every retry is refused.
    service.set_cluster(breaker_cluster(budget_percent=0.0, min_retry_concurrency=0))
    budget = runtime(mesh).breakers.default.retry_budget
    wait_until(lambda: budget.min_retry_concurrency == 0, what="the zero retry budget")
    a.fail_always(grpc.StatusCode.UNAVAILABLE)

    failed = _calls(echo, 7)

    assert len(failed) == 7 and a.calls == 7 + 1  # no retry was sent (the +1: the warm-up)
    assert runtime(mesh).breakers.default.stats["budget_exhausted"] == 7
    assert metrics.value(REFUSALS, proxyless__cluster=CLUSTER) == 7
    assert metrics.points(OVERFLOWS) == []


def test_breaker_overflows_one_per_refused_call(
    service: Service, backends: Backends, echo: Echo, mesh: Mesh, metrics: Metrics
) -> None:
    (a,) = backends("a")
    service.publish([a])
    wait_served(echo, [a])
    service.set_cluster(breaker_cluster(max_requests=0))
    breaker = runtime(mesh).breakers.default
    wait_until(lambda: breaker.max_requests == 0, what="max_requests=0")
    reset_counts([a])

    failed = _calls(echo, 5)

    assert len(failed) == 5 and a.calls == 0
    assert all(e.code() is grpc.StatusCode.UNAVAILABLE for e in failed)  # type: ignore[attr-defined]
    assert breaker.stats["upstream_rq_overflow"] == 5
    assert (
        metrics.value(
            OVERFLOWS, proxyless__cluster=CLUSTER, proxyless__circuit_breaker__limit="max_requests"
        )
        == 5
    )


def test_certificate_expiry_of_an_sds_secret(
    ads: AdsServer, make_mesh: Callable[..., Mesh], metrics: Metrics
) -> None:
    ca = DevCA()
    svid = ca.issue(WEB, ttl=_dt.timedelta(hours=1))
    ads.set_resources(
        SECRET_URL,
        {
            "default": certificate_secret("default", svid.chain_pem, svid.key_pem),
            "ROOTCA": trust_secret("ROOTCA", ca.roots_pem),
        },
    )
    serve_cluster(ads, upstream_tls(identity_secret="default", trust_secret="ROOTCA"))
    creds = credentials(make_mesh())
    creds.wait(5)

    points = metrics.points(
        "proxyless.certificate.expiry", proxyless__certificate__source="sds:default"
    )
    assert len(points) == 1, points
    attrs, left = points[0]
    assert attrs["proxyless.spiffe_id"] == WEB
    assert 0 < left <= 3600  # a one-hour certificate, just issued
