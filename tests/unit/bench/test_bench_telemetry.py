"""bench/telemetry_overhead.py end to end with tiny counts, so it cannot
rot. Asserts shapes and counts, never timings."""

from __future__ import annotations

import pytest
from bench import telemetry_overhead

pytestmark = pytest.mark.timeout(120)


def test_every_mode_is_measured_and_the_settings_come_back() -> None:
    from proxyless.observability import settings

    before = vars(settings.settings).copy()
    result = telemetry_overhead.run(calls=20, rounds=1, warmup=5, cap=30.0)
    assert set(result["contenders"]) == {"grpc", "httpx"}
    for rows in result["contenders"].values():
        assert set(rows) == {"off", "default", "request-id", "sdk"}
        assert all(row["requests"] == 20 for row in rows.values())
        assert rows["off"]["p50_ratio"] == 1.0
    assert vars(settings.settings) == before
    assert "| grpc | default |" in telemetry_overhead.report(result)
