"""bench/balancing.py end to end with tiny counts, so it cannot rot: the
three variants run side by side and report shares and percentiles. Asserts
shapes and counts, never timings."""

from __future__ import annotations

import math

import pytest
from bench import balancing

pytestmark = pytest.mark.timeout(120)


def test_balancing_bench_runs_every_variant() -> None:
    result = balancing.run(rounds=1, batch=30, threads=2, warmup=1.2, slow_ms=5.0, time_cap=40.0)
    assert result["rounds"] == 1
    assert set(result["variants"]) == set(balancing.VARIANTS)
    for variant in result["variants"].values():
        assert variant["calls"] == 30
        assert sum(variant["per_backend"].values()) == 30
        assert set(variant["per_backend"]) <= {"fast-1", "fast-2", "slow"}
        assert 0.0 <= variant["slow_share"] <= 1.0
        assert not math.isnan(variant["p50_ms"]) and variant["p99_ms"] >= variant["p50_ms"]
    text = balancing.report(result)
    for name in balancing.VARIANTS:
        assert name in text
