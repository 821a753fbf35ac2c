"""bench/rds_scale.py end to end with a tiny configuration, so it cannot rot.
Asserts shapes and completion, never timings."""

from __future__ import annotations

import pytest
from bench import rds_scale

pytestmark = pytest.mark.timeout(120)


def test_both_clients_ack_every_push() -> None:
    result = rds_scale.run(20, pushes=2, cap=60.0, clients=rds_scale.CLIENTS)
    rows = {row["client"]: row for row in result["rows"]}
    assert set(rows) == {"proxyless", "grpcio"}
    for row in rows.values():
        assert row["complete"], row
        assert [len(row["times_s"][k]) for k in ("cold", "update")] == [2, 2]
    report = rds_scale.report(result)
    assert "| proxyless |" in report and "proxyless / grpcio: cold" in report
