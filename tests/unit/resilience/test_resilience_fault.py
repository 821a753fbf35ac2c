"""Fault injection (gRFC A33, Envoy HTTP fault filter)."""

from __future__ import annotations

import random

import pytest

from proxyless.resilience import NO_FAULT, FaultDecision, FaultInjector
from proxyless.resources.model import (
    FaultAbort,
    FaultDelay,
    FaultFilterConfig,
    HeaderMatcher,
    StringMatcher,
)

PERCENT = 10_000  # per million


def test_thirty_percent_aborts_over_1000_decisions() -> None:
    injector = FaultInjector(
        FaultFilterConfig(
            abort=FaultAbort(http_status=None, grpc_status=14, per_million=30 * PERCENT)
        )
    )
    rng = random.Random(20240601)
    aborted = 0
    for _ in range(1000):
        decision = injector.decide({}, rng)
        if decision.active:
            assert decision == FaultDecision(abort_grpc=14)
            aborted += 1
            injector.end()
    assert 260 <= aborted <= 340
    assert injector.stats["aborts_injected"] == aborted
    assert injector.active_faults == 0


def test_header_controlled_delay_only_when_the_header_is_present() -> None:
    injector = FaultInjector(
        FaultFilterConfig(
            delay=FaultDelay(fixed_delay=None, per_million=100 * PERCENT, header_controlled=True)
        )
    )
    rng = random.Random(1)
    assert injector.decide({}, rng) is NO_FAULT
    assert injector.decide({"x-other": "5"}, rng) is NO_FAULT
    assert injector.decide({"x-envoy-fault-delay-request": "250"}, rng) == FaultDecision(delay=0.25)
    assert injector.stats["delays_injected"] == 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, NO_FAULT, id="no-header"),
        pytest.param({"x-envoy-fault-delay-request": "abc"}, NO_FAULT, id="garbage"),
        pytest.param({"x-envoy-fault-delay-request": "-5"}, NO_FAULT, id="negative"),
        pytest.param({"x-envoy-fault-delay-request": "0"}, NO_FAULT, id="zero-is-no-delay"),
        pytest.param(
            {"x-envoy-fault-delay-request": "100", "x-envoy-fault-delay-request-percentage": "0"},
            NO_FAULT,
            id="header-percentage-zero",
        ),
        pytest.param(
            {"x-envoy-fault-delay-request": "100", "x-envoy-fault-delay-request-percentage": "x"},
            FaultDecision(delay=0.1),
            id="bad-percentage-uses-config",
        ),
    ],
)
def test_header_delay_values(headers: dict[str, str], expected: FaultDecision) -> None:
    injector = FaultInjector(
        FaultFilterConfig(
            delay=FaultDelay(fixed_delay=None, per_million=100 * PERCENT, header_controlled=True)
        )
    )
    assert injector.decide(headers, random.Random(0)) == expected


def test_header_percentage_is_capped_by_the_config() -> None:
    injector = FaultInjector(
        FaultFilterConfig(
            delay=FaultDelay(fixed_delay=None, per_million=10 * PERCENT, header_controlled=True)
        )
    )
    rng = random.Random(3)
    headers = {
        "x-envoy-fault-delay-request": "10",
        "x-envoy-fault-delay-request-percentage": "100",
    }
    delayed = 0
    for _ in range(2000):
        if injector.decide(headers, rng).active:
            delayed += 1
            injector.end()
    assert 140 <= delayed <= 260  # 10 %, not 100 %


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, NO_FAULT, id="no-header"),
        pytest.param(
            {"x-envoy-fault-abort-request": "503"}, FaultDecision(abort_http=503), id="http"
        ),
        pytest.param(
            {"x-envoy-fault-abort-grpc-request": "14"}, FaultDecision(abort_grpc=14), id="grpc"
        ),
        pytest.param(
            {"x-envoy-fault-abort-request": "503", "x-envoy-fault-abort-grpc-request": "8"},
            FaultDecision(abort_http=503, abort_grpc=8),
            id="both",
        ),
        pytest.param({"x-envoy-fault-abort-request": "700"}, NO_FAULT, id="http-out-of-range"),
        pytest.param({"x-envoy-fault-abort-request": "199"}, NO_FAULT, id="http-below-200"),
        pytest.param({"x-envoy-fault-abort-grpc-request": "17"}, NO_FAULT, id="grpc-out-of-range"),
        pytest.param(
            {
                "x-envoy-fault-abort-request": "503",
                "x-envoy-fault-abort-request-percentage": "0",
            },
            NO_FAULT,
            id="percentage-zero",
        ),
    ],
)
def test_header_controlled_abort(headers: dict[str, str], expected: FaultDecision) -> None:
    injector = FaultInjector(
        FaultFilterConfig(
            abort=FaultAbort(
                http_status=None,
                grpc_status=None,
                per_million=100 * PERCENT,
                header_controlled=True,
            )
        )
    )
    assert injector.decide(headers, random.Random(0)) == expected


def test_headers_gate() -> None:
    marker = HeaderMatcher(
        name="X-Chaos", kind="exact", string_matcher=StringMatcher("exact", "on")
    )
    injector = FaultInjector(
        FaultFilterConfig(
            delay=FaultDelay(fixed_delay=1.5, per_million=100 * PERCENT), headers=(marker,)
        )
    )
    rng = random.Random(0)
    assert injector.decide({}, rng) is NO_FAULT
    assert injector.decide({"x-chaos": "off"}, rng) is NO_FAULT
    assert injector.decide({"x-chaos": "on"}, rng) == FaultDecision(delay=1.5)


def test_upstream_cluster_and_downstream_nodes() -> None:
    injector = FaultInjector(
        FaultFilterConfig(
            abort=FaultAbort(http_status=503, grpc_status=None, per_million=100 * PERCENT),
            upstream_cluster="reviews",
            downstream_nodes=("productpage",),
        )
    )
    rng = random.Random(0)
    node = {"x-envoy-downstream-service-node": "productpage"}
    assert injector.decide(node, rng, cluster="ratings") is NO_FAULT
    assert injector.decide(node, rng) is NO_FAULT
    assert injector.decide({}, rng, cluster="reviews") is NO_FAULT
    assert injector.decide(node, rng, cluster="reviews") == FaultDecision(abort_http=503)


def test_delay_and_abort_together() -> None:
    injector = FaultInjector(
        FaultFilterConfig(
            delay=FaultDelay(fixed_delay=0.2, per_million=100 * PERCENT),
            abort=FaultAbort(http_status=500, grpc_status=None, per_million=100 * PERCENT),
        )
    )
    assert injector.decide({}, random.Random(0)) == FaultDecision(delay=0.2, abort_http=500)
    assert injector.stats == {"delays_injected": 1, "aborts_injected": 1, "faults_overflow": 0}
    assert injector.active_faults == 1


def test_max_active_faults() -> None:
    injector = FaultInjector(
        FaultFilterConfig(
            delay=FaultDelay(fixed_delay=1.0, per_million=100 * PERCENT), max_active_faults=2
        )
    )
    rng = random.Random(0)
    assert injector.decide({}, rng).active
    assert injector.decide({}, rng).active
    assert injector.decide({}, rng) is NO_FAULT
    assert injector.stats["faults_overflow"] == 1
    injector.end()
    assert injector.decide({}, rng).active
    assert injector.active_faults == 2


def test_no_fault_configured_or_zero_percent() -> None:
    rng = random.Random(0)
    assert FaultInjector(FaultFilterConfig()).decide({}, rng) is NO_FAULT
    zero = FaultInjector(FaultFilterConfig(delay=FaultDelay(fixed_delay=1.0, per_million=0)))
    assert all(zero.decide({}, rng) is NO_FAULT for _ in range(100))


def test_injector_is_shared_per_config_object() -> None:
    config = FaultFilterConfig(delay=FaultDelay(fixed_delay=1.0, per_million=100 * PERCENT))
    assert FaultInjector.for_config(config) is FaultInjector.for_config(config)
    twin = FaultFilterConfig(delay=FaultDelay(fixed_delay=1.0, per_million=100 * PERCENT))
    assert FaultInjector.for_config(twin) is not FaultInjector.for_config(config)
