"""bench/httpx_mtls.py end to end with tiny counts, so it cannot rot.
Asserts shapes and counts, never timings."""

from __future__ import annotations

import pytest
from bench import httpx_mtls

pytestmark = pytest.mark.timeout(180)


def test_every_contender_is_measured() -> None:
    results = httpx_mtls.run(calls=50, rounds=1, warmup=5, cap=20.0, new_connection_calls=50)
    contenders = results["contenders"]
    assert set(contenders) == {
        "plain-mtls",
        "proxyless-mtls",
        "plain-mtls-new-conn",
        "proxyless-mtls-new-conn",
        "async-plain-mtls",
        "proxyless-async-mtls",
    }
    assert all(row["requests"] == 50 for row in contenders.values())
    assert contenders["plain-mtls"]["p50_ratio"] == 1.0
