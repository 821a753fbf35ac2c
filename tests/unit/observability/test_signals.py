"""The mesh signals (proxyless.observability.signals) recorded by the real
outlier detector, circuit breaker, retry budget and cluster credentials,
driven without threads or sockets: a fake clock, fixed enforcement rolls,
certificates from the development CA and an injected "now"."""

from __future__ import annotations

import datetime as _dt
import random
from pathlib import Path

import pytest
from cryptography import x509
from tests.unit.observability.conftest import Metrics

from proxyless.controlplane.ca import DevCA
from proxyless.lb.state import EndpointState
from proxyless.observability import instruments, signals
from proxyless.resilience import Outcome, OutlierDetector
from proxyless.resilience.breaker import CircuitBreaker
from proxyless.resources.model import (
    Endpoint,
    Locality,
    OutlierDetection,
    RetryBudget,
    Thresholds,
)
from proxyless.resources.model.security import (
    CertificateValidationContext,
    DataSource,
    TlsCertificate,
    UpstreamTlsContext,
)
from proxyless.security.credentials import ClusterCredentials, SecretSources
from proxyless.testing import FakeClock

CLUSTER = "outbound|9080||reviews"
EJECTIONS = "proxyless.outlier.ejections"
REFUSALS = "proxyless.retry_budget.refusals"
OVERFLOWS = "proxyless.circuit_breaker.overflows"
EXPIRY = signals.CERTIFICATE_EXPIRY
WEB = "spiffe://cluster.local/ns/default/sa/web"
HTTP_500 = Outcome.http(500)


class FixedRolls(random.Random):
    """An RNG whose enforcement rolls are given in advance."""

    def __init__(self, rolls: list[int]) -> None:
        super().__init__(0)
        self.rolls = list(rolls)

    def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        return self.rolls.pop(0)


def detector(
    n: int, rng: random.Random | None = None, **config: object
) -> tuple[OutlierDetector, list[EndpointState]]:
    det = OutlierDetector(
        CLUSTER,
        OutlierDetection(**config),  # type: ignore[arg-type]
        FakeClock(),
        rng if rng is not None else random.Random(1),
    )
    eps = [EndpointState(Endpoint(f"10.0.0.{i + 1}", 8080), Locality(), 0) for i in range(n)]
    det.set_endpoints(eps)
    return det, eps


# -- outlier ejections ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enforcing", "rolls", "enforced"),
    [
        pytest.param(100, [], True, id="enforcing-100"),
        pytest.param(0, [], False, id="enforcing-0"),
        pytest.param(50, [49], True, id="roll-won"),
        pytest.param(50, [50], False, id="roll-lost"),
    ],
)
def test_an_ejection_is_recorded_enforced_or_not(
    metrics: Metrics, enforcing: int, rolls: list[int], enforced: bool
) -> None:
    det, (es,) = detector(1, rng=FixedRolls(rolls), enforcing_consecutive_5xx=enforcing)
    for _ in range(5):
        det.record(es, HTTP_500)
    assert es.ejected is enforced
    point = {"proxyless__cluster": CLUSTER, "proxyless__outlier__reason": "consecutive_5xx"}
    assert metrics.value(EJECTIONS, **point, proxyless__outlier__enforced=enforced) == 1
    assert metrics.value(EJECTIONS, **point, proxyless__outlier__enforced=not enforced) == 0


def test_ejections_kept_in_by_max_ejection_percent_are_not_enforced(metrics: Metrics) -> None:
    det, eps = detector(3, max_ejection_percent=50)
    for es in eps[:2]:
        for _ in range(5 * 3):  # three detections each
            det.record(es, HTTP_500)
    enforced = det.stats["ejections_enforced_total"]
    kept_in = det.stats["ejections_overflow"]
    assert (enforced, kept_in) == (1, 3)  # the second endpoint, three times
    assert metrics.value(EJECTIONS, proxyless__outlier__enforced=True) == enforced
    assert metrics.value(EJECTIONS, proxyless__outlier__enforced=False) == kept_in


def test_consecutive_gateway_failure_is_its_own_reason(metrics: Metrics) -> None:
    det, (es,) = detector(
        1, consecutive_gateway_failure=2, enforcing_consecutive_gateway_failure=100
    )
    for _ in range(2):
        det.record(es, Outcome.http(503))
    assert es.ejected
    reasons = {a["proxyless.outlier.reason"] for a, _ in metrics.points(EJECTIONS)}
    assert reasons == {"consecutive_gateway_failure"}


def test_a_success_records_nothing(metrics: Metrics) -> None:
    det, (es,) = detector(1)
    for _ in range(100):
        det.record_success(es)
    assert metrics.points(EJECTIONS) == []


# -- circuit breakers and retry budgets ----------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "acquire"),
    [
        pytest.param("max_requests", "try_acquire_request", id="max_requests"),
        pytest.param("max_pending_requests", "try_acquire_pending", id="max_pending_requests"),
        pytest.param("max_connections", "try_acquire_connection", id="max_connections"),
    ],
)
def test_breaker_overflows_name_the_limit(metrics: Metrics, limit: str, acquire: str) -> None:
    breaker = CircuitBreaker(CLUSTER, Thresholds(**{limit: 2}))  # type: ignore[arg-type]
    results = [getattr(breaker, acquire)() for _ in range(5)]
    assert results == [True, True, False, False, False]
    assert (
        metrics.value(
            OVERFLOWS, proxyless__cluster=CLUSTER, proxyless__circuit_breaker__limit=limit
        )
        == 3
    )
    assert metrics.value(OVERFLOWS) == 3


def test_budget_refusals(metrics: Metrics) -> None:
    budget = RetryBudget(budget_percent=0.0, min_retry_concurrency=1)
    breaker = CircuitBreaker(CLUSTER, Thresholds(retry_budget=budget))
    assert breaker.retry_budget.try_acquire_retry()
    assert not breaker.retry_budget.try_acquire_retry()
    assert not breaker.retry_budget.try_acquire_retry()
    assert breaker.stats["budget_exhausted"] == 2
    assert metrics.value(REFUSALS, proxyless__cluster=CLUSTER) == 2
    assert metrics.points(OVERFLOWS) == []  # counted once, under the budget


def test_max_retries_without_a_budget_is_a_breaker_overflow(metrics: Metrics) -> None:
    breaker = CircuitBreaker(CLUSTER, Thresholds(max_retries=1, max_retries_explicit=True))
    assert breaker.retry_budget.try_acquire_retry()
    assert not breaker.retry_budget.try_acquire_retry()
    assert metrics.value(OVERFLOWS, proxyless__circuit_breaker__limit="max_retries") == 1
    assert metrics.points(REFUSALS) == []


def test_nothing_is_recorded_without_a_meter_provider() -> None:
    # No SDK configured here (and none global in the test process): no error, no work.
    assert instruments.get() is None
    breaker = CircuitBreaker(CLUSTER, Thresholds(max_requests=0))
    assert not breaker.try_acquire_request()
    signals.ejection(CLUSTER, "consecutive_5xx", enforced=True)
    signals.budget_refusal(CLUSTER)


# -- certificate expiry ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        pytest.param([], {}, id="none"),
        pytest.param([None], {}, id="no-identity"),
        pytest.param([("sds:default", WEB, 60.0)], {("sds:default", WEB): 60.0}, id="one"),
        pytest.param(
            [("sds:default", WEB, 60.0), ("sds:default", WEB, 30.0), None],
            {("sds:default", WEB): 30.0},
            id="shared-source-earliest",
        ),
        pytest.param(
            [("inline", "", -5.0), ("certificate_provider:p", WEB, 9.0)],
            {("inline", ""): -5.0, ("certificate_provider:p", WEB): 9.0},
            id="expired-and-another",
        ),
    ],
)
def test_expiry_by_source(
    entries: list[tuple[str, str, float] | None], expected: dict[tuple[str, str], float]
) -> None:
    assert signals.expiry_by_source(entries) == expected


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA()


def _context(ca: DevCA, chain: DataSource, key: DataSource) -> UpstreamTlsContext:
    return UpstreamTlsContext(
        identity=TlsCertificate(chain, key),
        validation=CertificateValidationContext(trusted_ca=DataSource(inline=ca.roots_pem)),
    )


def test_certificate_expiry_per_source(metrics: Metrics, ca: DevCA, tmp_path: Path) -> None:
    svid = ca.issue(WEB, ttl=_dt.timedelta(hours=1))
    not_after = x509.load_pem_x509_certificate(svid.chain_pem).not_valid_after_utc.timestamp()
    sources = SecretSources(clock=lambda: not_after - 1234.5)
    chain_file = tmp_path / "cert.pem"
    chain_file.write_bytes(svid.chain_pem)
    inline = ClusterCredentials(
        "a",
        _context(ca, DataSource(inline=svid.chain_pem), DataSource(inline=svid.key_pem)),
        sources,
    )
    from_file = ClusterCredentials(
        "b",
        _context(ca, DataSource(filename=str(chain_file)), DataSource(inline=svid.key_pem)),
        sources,
    )
    assert metrics.value(EXPIRY, proxyless__certificate__source="inline") == 1234.5
    points = metrics.points(EXPIRY, proxyless__certificate__source=f"file:{chain_file}")
    assert points == [
        (
            {"proxyless.certificate.source": f"file:{chain_file}", "proxyless.spiffe_id": WEB},
            1234.5,
        )
    ]
    inline.close()
    from_file.close()
    assert metrics.points(EXPIRY, proxyless__certificate__source="inline") == []
    assert metrics.points(EXPIRY, proxyless__certificate__source=f"file:{chain_file}") == []
