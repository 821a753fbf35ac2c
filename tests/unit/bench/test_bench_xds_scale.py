"""bench/xds_scale.py end to end with a tiny mesh, so it cannot rot.
Asserts shapes and completion, never timings."""

from __future__ import annotations

import pytest
from bench import xds_scale

pytestmark = pytest.mark.timeout(120)


def test_every_client_acks_the_whole_mesh() -> None:
    result = xds_scale.run([20], cap=60.0)
    rows = {row["client"]: row for row in result["rows"]}
    assert set(rows) == {"proxyless", "grpcio", "envoy"}
    assert all(row["complete"] and row["clusters"] == 20 for row in rows.values())
    assert "rss_added_mb" in rows["proxyless"] and "rss_added_mb" not in rows["envoy"]
    assert "| 20 | proxyless |" in xds_scale.report(result)
