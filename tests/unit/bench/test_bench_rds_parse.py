"""bench/rds_parse.py with a tiny configuration, so it cannot rot."""

from __future__ import annotations

from bench import rds_parse


def test_the_configuration_is_accepted_and_timed() -> None:
    result = rds_parse.measure(20, runs=1)
    assert result["hosts"] == 20 and result["bytes"] > 0 and result["median_s"] >= 0
